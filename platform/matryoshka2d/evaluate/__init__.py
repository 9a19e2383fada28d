"""Grid evaluation of a 2D Matryoshka encoder: every (layer, dim) cell on STS and retrieval sets.

Each dataset is encoded once for all requested layers; a cell is a slice ``[:, :d]`` of those
embeddings, scored in-process or as Ray tasks, as the caller chooses (see :mod:`.parallel`).
"""

from .grid import CSV_HEADER, STS_AVG, GridResult, Row, check_evaluable, evaluate_grid, summarize
from .retrieval import METRICS as RETRIEVAL_METRICS
from .retrieval import retrieval_metrics

__all__ = ["CSV_HEADER", "STS_AVG", "GridResult", "Row", "check_evaluable", "evaluate_grid", "summarize", "RETRIEVAL_METRICS",
           "retrieval_metrics"]
