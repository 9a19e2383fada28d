"""Choosing and shipping a cell: :mod:`.compare` (runs side by side, differences, best run per cell, leaderboards),
:mod:`.page` (one self-contained HTML report), :mod:`.pick` (latency and bytes per cell, budget, Pareto frontier),
:mod:`.export` (one (layer, dim) cell as a standalone SentenceTransformer).
"""
