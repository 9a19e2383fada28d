"""Run independent cell-scoring functions in-process, or as Ray tasks when Ray is initialised.

The shared inputs (embedding arrays, ids, qrels) go to the object store ONCE per dataset; each task
gets the ref, and Ray resolves it in the worker (numpy arrays are read zero-copy from shared memory).
"""

from __future__ import annotations

import warnings
from typing import Callable

CellFn = Callable[[dict, int, int], dict[str, float]]


def _run_cell(fn: CellFn, shared: dict, pos: int, dim: int) -> dict[str, float]:
    with warnings.catch_warnings():  # torch warns on read-only (object-store) numpy buffers; we never write
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return fn(shared, pos, dim)


_remote_cell = None


def _remote():
    global _remote_cell
    if _remote_cell is None:
        import ray

        _remote_cell = ray.remote(num_cpus=1)(_run_cell)
    return _remote_cell


def ray_active() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def score_cells(fn: CellFn, shared: dict, cells: list[tuple[int, int]], use_ray: bool | None = None) -> list[dict[str, float]]:
    """``fn(shared, layer_position, dim)`` for each cell, in order; Ray tasks when ``use_ray`` (default: Ray is up)."""
    if use_ray is None:
        use_ray = ray_active()
    if not use_ray:
        return [_run_cell(fn, shared, pos, dim) for pos, dim in cells]
    import ray

    ref = ray.put(shared)
    task = _remote()
    return ray.get([task.remote(fn, ref, pos, dim) for pos, dim in cells])
