"""The package's shape: every module classified, imports point one way (between and inside packages), the core knows
nothing of Ray or MLflow, each name list exists once.

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
        "errors", "storage", "testing"}
ORCHESTRATION = {"sweep", "tracking", "cluster", "cli", "study", "choose"}
MAX_TOP_LEVEL_MODULES = 12  # __init__ included: the rest lives in packages whose names say what they hold


def _node(module: str) -> str:
    """``matryoshka2d.sweep.trial`` -> ``sweep``: a top-level module or subpackage of the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    """Every ``matryoshka2d.*`` module ``path`` imports (absolute dotted names; ``from . import x`` -> ``pkg.x``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matryoshka2d."):
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("matryoshka2d.")]
        found += targets
    return found


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _cycles(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return sorted((a, b) for a in edges for b in edges[a] if a in reachable(b))


def import_graph() -> dict[str, set[str]]:
    """Top-level module or subpackage -> those it imports (lazy imports too)."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = _node(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for target in _imports(path):
            if _node(target) != source:
                edges.setdefault(source, set()).add(_node(target))
    return edges


def test_imports_point_one_way():
    edges = import_graph()
    assert not _cycles(edges), f"import cycles between modules: {_cycles(edges)}"
    assert {"sweep", "train", "cells", "resolve"} <= set(edges), "the graph missed the package"


def test_no_import_cycle_inside_a_package():
    """Module to module inside each subpackage (its ``__init__`` is the facade, left out): ``evaluate.quantized`` and
    ``evaluate.retrieval`` importing each other would fail here."""
    for package in (p.parent for p in PACKAGE.glob("*/__init__.py")):
        prefix = f"matryoshka2d.{package.name}."
        edges: dict[str, set[str]] = {}
        for path in package.glob("*.py"):
            if path.stem == "__init__":
                continue
            source = prefix + path.stem
            for target in _imports(path):
                inner = prefix + target[len(prefix):].split(".")[0] if target.startswith(prefix) else None
                if inner and inner != source and _is_module(inner) and not inner.endswith(".__init__"):
                    edges.setdefault(source, set()).add(inner)
        assert not _cycles(edges), f"import cycles inside {package.name}/: {_cycles(edges)}"


def test_every_module_is_classified():
    """A new top-level module or package must be placed: core (no Ray, no MLflow glue) or orchestration."""
    tops = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} | \
        {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    unclassified = sorted(tops - CORE - ORCHESTRATION)
    assert not unclassified, f"modules in neither CORE nor ORCHESTRATION (tests/test_layout.py): {unclassified}"
    stale = sorted((CORE | ORCHESTRATION) - tops)
    assert not stale, f"classified names with no module: {stale}"
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, f"{len(modules)} modules directly in the package: {modules}"


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


def _string_literals(path: Path) -> list[tuple[int, str]]:
    import io
    import tokenize

    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.STRING and tok.string[:1] in "\"'" and not tok.string.startswith(('"""', "'''")):
            out.append((tok.start[0], tok.string[1:-1]))
    return out


def test_run_folder_names_and_tags_are_one_block_each():
    """A run folder's file names live in ``storage``, the ``m2d.*`` tags and ``m2d/*`` keys in ``tracking.Tag`` and
    ``tracking.Key``: no copy elsewhere."""
    from matryoshka2d import storage

    files = {v for k, v in vars(storage).items() if k.isupper() and isinstance(v, str) and "." in v.strip(".")}
    assert {"grid.csv", "config.yaml", "items.npz", "params.json"} <= files
    copies = []
    for path in PACKAGE.rglob("*.py"):
        for line, text in _string_literals(path):
            if path.name != "storage.py" and text in files:
                copies.append(f"{path.relative_to(PACKAGE)}:{line} {text!r} (storage)")
            if path.name != "tracking.py" and text.startswith(("m2d.", "m2d/")):
                copies.append(f"{path.relative_to(PACKAGE)}:{line} {text!r} (tracking.Tag / tracking.Key)")
    assert not copies, "names written outside their one block:\n" + "\n".join(copies)
