"""The package's shape: imports point one way, the core knows nothing of Ray or MLflow, each name list exists once.

Read from the source with ``ast`` (every import, also those inside functions), so a lazy import that closes a
cycle fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "matryoshka2d"
# the core: training, evaluation, losses, data, configs; the orchestration around it may import these, never back
CORE = {"cells", "config", "methods", "resolve", "presets", "data", "losses", "encoder", "evaluate", "train",
        "preflight", "mining", "errors", "bootstrap", "plots"}
ORCHESTRATION = {"sweep", "tracking", "cluster", "cli", "study", "report", "compare", "page"}


def _node(module: str) -> str:
    """``matryoshka2d.sweep.trial`` -> ``sweep``: a top-level module or subpackage of the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        source = _node(".".join(parts))
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matryoshka2d."):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("matryoshka2d.")]
            for target in targets:
                if _node(target) != source:
                    edges.setdefault(source, set()).add(_node(target))
    return edges


def test_imports_point_one_way():
    edges = import_graph()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted((a, b) for a in edges for b in edges[a] if a in reachable(b))
    assert not cycles, f"import cycles between modules: {cycles}"
    assert {"sweep", "train", "cells", "resolve"} <= set(edges), "the graph missed the package"


def test_the_core_imports_no_orchestration():
    edges = import_graph()
    wrong = {(a, b) for a in CORE for b in edges.get(a, ()) if b in ORCHESTRATION}
    assert not wrong, f"core modules importing Ray/MLflow glue: {sorted(wrong)}"
    # Ray only where a caller opts in: the evaluator's Ray-tasks executor (m2d eval --ray)
    opted_in = {PACKAGE / "evaluate" / "parallel.py"}
    for f in PACKAGE.rglob("*.py"):
        if (f.stem in CORE or f.parent.name in CORE) and f not in opted_in:
            text = f.read_text()
            assert "import ray" not in text and "from ray" not in text, f"{f} imports Ray"


def test_no_test_hooks_in_the_package():
    for path in PACKAGE.rglob("*.py"):
        assert "os._exit" not in path.read_text(), f"{path}: fault injection belongs in tests/faults"


def test_task_loss_names_are_one_list():
    from matryoshka2d.losses import TASK_LOSSES
    from matryoshka2d.methods import IN_BATCH, TaskLoss

    assert tuple(TASK_LOSSES) == get_args(TaskLoss) and set(IN_BATCH) <= set(TASK_LOSSES)
