"""matryoshka2d: one encoder, every (layer, dim) cell usable.

The core knows nothing of Ray or MLflow: ``cells`` (the one layer/dim grammar), ``methods`` and ``config`` (typed
configs; ``presets`` ships the bundled YAML), ``resolve`` (a config made concrete for one model, once per run),
``encoder``, ``losses``, ``data``, ``evaluate`` and ``train`` (the loop). Around it, at the edges: ``sweep`` (Ray Tune
+ Train, the ``m2d sweep`` driver), ``tracking`` (MLflow), ``cluster`` (starting or joining Ray), ``cli`` (``m2d``),
``study``/``report`` (reproductions), ``compare``/``page``/``pick``/``export`` (choosing and shipping a cell).
Imports point from the edges to the core, never back (``tests/test_layout.py``).
"""

__version__ = "0.1.0"
