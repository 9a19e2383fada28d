"""matryoshka2d: one encoder, every (layer, dim) cell usable.

The core knows nothing of Ray or MLflow: ``cells`` (the one layer/dim grammar), ``methods`` and ``config`` (typed
configs; ``presets`` ships the bundled YAML), ``resolve`` (a config made concrete for one model, once per run, and the
preflight checks), ``encoder``, ``losses``, ``data``, ``evaluate`` (grids, plots), ``train`` (the loop, checkpoints,
mining) and ``storage`` (the names of a run folder's files). Around it, at the edges: ``sweep`` (Ray Tune + Train, the
``m2d sweep`` and ``m2d reproduce`` drivers), ``tracking`` (MLflow), ``cluster`` (starting or joining Ray), ``study``
(reproduction specs, claims, the report), ``choose`` (compare, page, pick, export: choosing and shipping a cell) and
``cli`` (``m2d``).
Imports point from the edges to the core, never back (``tests/test_layout.py``).
"""

__version__ = "0.1.0"
