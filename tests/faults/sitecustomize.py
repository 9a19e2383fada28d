"""Test-only fault injection, loaded by every Python process of a sweep whose PYTHONPATH starts with this folder.

With ``M2D_FAULT_AT_STEP=N`` and ``M2D_FAULT_MARKER=<file>``, the last rank of a trial exits hard (``os._exit``) at
its first report after step N, once per marker file: mid-trial, a few seconds after the checkpoint reported at N,
so Ray has registered it and must retry the worker group from there. Nothing of this is in the package: the hook
wraps ``Reporter.__call__`` when ``matryoshka2d.sweep.reporter`` is first imported.
"""

import importlib.abc
import importlib.util
import os
import sys
import time
from pathlib import Path

MODULE = "matryoshka2d.sweep.reporter"


def _inject(module) -> None:
    fault, marker = int(os.environ["M2D_FAULT_AT_STEP"]), Path(os.environ["M2D_FAULT_MARKER"])
    original = module.Reporter.__call__

    def call(self, metrics, checkpoint):
        step = int(metrics["step"])
        if step > fault and self.rank == self.setup.world_size - 1 and not marker.exists():
            marker.write_text(f"{self.setup.run_id} {step}")
            time.sleep(3)
            os._exit(1)
        return original(self, metrics, checkpoint)

    module.Reporter.__call__ = call


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _inject(module)

        loader.exec_module = exec_module
        return spec


if os.environ.get("M2D_FAULT_AT_STEP"):
    sys.meta_path.insert(0, _Finder())
