"""Exact top-k search by inner product, chunked over the corpus: what every retrieval cell (and mining) ranks with."""

from __future__ import annotations

import torch


def search(queries: torch.Tensor, corpus: torch.Tensor, k: int, chunk_size: int = 50_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` (scores, doc indices) per query by inner product, chunked over the corpus.

    Only a [Q, chunk] score block and the running top-k are held, so memory stays bounded on large corpora.
    """
    k = min(k, corpus.shape[0])
    best_s = torch.full((queries.shape[0], 0), float("-inf"))
    best_i = torch.zeros((queries.shape[0], 0), dtype=torch.long)
    for start in range(0, corpus.shape[0], chunk_size):
        block = queries @ corpus[start:start + chunk_size].T
        s, i = block.topk(min(k, block.shape[1]), dim=1)
        best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, order)
    return best_s, best_i
