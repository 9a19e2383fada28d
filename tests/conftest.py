"""Shared fixtures (the real data directory, read-only) and the two test tiers.

``pytest -m "not e2e"`` is the development loop: it starts no process. A test that starts one (Ray, an MLflow
server, a browser, a fresh venv, the CLI or a sweep in a subprocess), or runs real bert-base weights, carries
``@pytest.mark.e2e`` and runs in the full suite (CI); one that starts a process without the marker fails at that
moment, naming the command.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

# Absolute, so subprocesses and Ray jobs started from other working directories see the same data.
os.environ["M2D_DATA_DIR"] = str(Path(os.environ.get("M2D_DATA_DIR") or Path(__file__).parents[1].parent / "shared"
                                      / "data").resolve())
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one xdist worker per core: a second OpenMP thread per worker (and per process a test starts) only spins
    # against the other worker's (a torch job slows several-fold when two contend for the 2 cores)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# Short tools a fast test may run (no server, no Python start-up): the Dockerfile linter, git, and uname (the
# standard library's platform.processor() asks it).
FAST_TOOLS = {"hadolint", "git", "uname"}
_unmarked: list[str] = []  # the running test's name while it is not marked e2e (empty otherwise)
_popen_init = subprocess.Popen.__init__


def _guarded_init(self, args, *rest, **kwargs):
    if _unmarked:
        argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
        if Path(argv[0]).name not in FAST_TOOLS:
            pytest.fail(f"{_unmarked[0]} starts a process ({' '.join(argv)[:160]}) but is not marked "
                        "@pytest.mark.e2e: the fast tier (-m 'not e2e') starts none", pytrace=False)
    return _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _guarded_init


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown of a test not marked e2e run with the guard on (module fixtures included)."""
    if item.get_closest_marker("e2e") is None:
        _unmarked.append(item.nodeid)
    try:
        yield
    finally:
        _unmarked.clear()


# The longest modules first: the suite runs on 2 xdist workers by file in this order (``-n 2 --dist loadfile
# --no-loadscope-reorder``; xdist's default reorder puts the files with most tests first), so the two longest start at
# once instead of meeting at the end (measured: smoke reproduction ~5 min, fault bench ~3-4).
LONGEST_FIRST = ("test_reproduce.py", "test_faults.py", "test_real_mpnet.py", "test_autoscaling.py", "test_sweep.py",
                 "test_job_submit.py", "test_mlflow_ui.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module keeps its own order


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$M2D_DATA_DIR`` or ``<repo>/../shared/data``; missing real data is a failure, never a skip."""
    path = Path(os.environ["M2D_DATA_DIR"])
    if not path.is_dir():
        pytest.fail(f"real data dir {path} does not exist; set M2D_DATA_DIR to the shared data folder")
    return path
