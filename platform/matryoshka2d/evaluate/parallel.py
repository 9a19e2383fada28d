"""Executors for the grid's independent cell-scoring functions. The caller of ``evaluate_grid`` chooses one; none
is picked by itself (inside a Ray Train/Tune worker Ray is initialised, but the trials hold every CPU, so cell
tasks would never be scheduled).

:func:`in_process` (the default) scores the cells one after another here. :func:`ray_tasks` (``m2d eval --ray``)
scores each cell as a Ray task: the shared inputs (embedding arrays, ids, qrels) go to the object store ONCE per
dataset; each task gets the ref, and Ray resolves it in the worker (numpy arrays are read zero-copy from shared
memory).
"""

from __future__ import annotations

import warnings
from typing import Callable

CellFn = Callable[[dict, int, int], dict[str, float]]
# ``executor(fn, shared, cells)``: ``fn(shared, layer_position, dim)`` of each cell, in order (one call per dataset)
Executor = Callable[[CellFn, dict, list[tuple[int, int]]], list[dict[str, float]]]


def _run_cell(fn: CellFn, shared: dict, pos: int, dim: int) -> dict[str, float]:
    with warnings.catch_warnings():  # torch warns on read-only (object-store) numpy buffers; we never write
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return fn(shared, pos, dim)


def in_process(fn: CellFn, shared: dict, cells: list[tuple[int, int]]) -> list[dict[str, float]]:
    """Every cell in this process, in order."""
    return [_run_cell(fn, shared, pos, dim) for pos, dim in cells]


_remote_cell = None


def _remote():
    global _remote_cell
    if _remote_cell is None:
        import ray

        _remote_cell = ray.remote(num_cpus=1)(_run_cell)
    return _remote_cell


def ray_tasks(fn: CellFn, shared: dict, cells: list[tuple[int, int]]) -> list[dict[str, float]]:
    """Every cell as a Ray task (one CPU each) on the Ray this process is connected to; ``shared`` put once."""
    import ray

    ref = ray.put(shared)
    task = _remote()
    return ray.get([task.remote(fn, ref, pos, dim) for pos, dim in cells])
