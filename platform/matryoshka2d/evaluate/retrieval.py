"""Retrieval scoring: exact search per (layer, dim) cell, metrics by pytrec_eval (as BEIR does).

Rankings follow trec_eval's order (score descending, ties by doc id descending) everywhere, so the
top-10 cut used for MRR@10 and any re-sorting by BEIR's own helpers agree with pytrec_eval.
"""

from __future__ import annotations

import numpy as np
import pytrec_eval
import torch

from ..cells import truncate
from ..data.types import RetrievalSet
from ..errors import M2DError
from . import quantized
from .precision import FLOAT, metric_name
from .topk import search

TOP_K = 100
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def prepare(rset: RetrievalSet) -> tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """(query ids, query texts, doc ids, doc texts, qrels) restricted to queries that have both text and qrels.

    Queries without judgements cannot be scored, so they are not encoded either.
    """
    qids = [q for q in rset.qrels if q in rset.queries]
    if not qids:
        raise M2DError(f"data: {rset.name} ({rset.split}) has no query with both text and qrels")
    doc_ids, doc_texts = rset.doc_texts()
    qrels = {q: {d: int(g) for d, g in rset.qrels[q].items()} for q in qids}
    return qids, [rset.queries[q] for q in qids], doc_ids, doc_texts, qrels


def build_run(qids: list[str], doc_ids: list[str], scores: torch.Tensor, indices: torch.Tensor, k: int,
              ignore_identical_ids: bool = True) -> dict[str, dict[str, float]]:
    """TREC-style run {qid: {doc_id: score}} with at most ``k`` docs, inserted in trec_eval order.

    With ``ignore_identical_ids`` (BEIR's default) a doc whose id equals the query id is dropped first.
    """
    run: dict[str, dict[str, float]] = {}
    for row, qid in enumerate(qids):
        hits = [(doc_ids[j], s) for j, s in zip(indices[row].tolist(), scores[row].tolist())
                if not (ignore_identical_ids and doc_ids[j] == qid)]
        run[qid] = dict(trec_order(hits)[:k])
    return run


def trec_order(hits) -> list[tuple[str, float]]:
    """Sort (doc_id, score) pairs as trec_eval does: score descending, then doc id descending."""
    return sorted(hits, key=lambda h: (h[1], h[0]), reverse=True)


def cut(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """The first ``k`` docs of each query in trec_eval order."""
    return {q: dict(trec_order(docs.items())[:k]) for q, docs in run.items()}


def per_query_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, np.ndarray]:
    """nDCG@10, MRR@10 (recip_rank on the run cut at 10) and Recall@100 by pytrec_eval, one value per query of
    ``qrels`` in its order (a query missing from the run counts 0): the per-query scores a paired bootstrap resamples."""
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut(run, 10))
    empty: dict[str, float] = {}
    return {
        "ndcg@10": np.array([main.get(q, empty).get("ndcg_cut_10", 0.0) for q in qrels]),
        "mrr@10": np.array([rr.get(q, empty).get("recip_rank", 0.0) for q in qrels]),
        "recall@100": np.array([main.get(q, empty).get("recall_100", 0.0) for q in qrels]),
    }


def retrieval_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """The means of :func:`per_query_metrics` over the qrels' queries (as BEIR's MRR divides by ``len(qrels)``)."""
    return {name: float(values.mean()) for name, values in per_query_metrics(qrels, run).items()}


def score_cell(shared: dict, pos: int, dim: int) -> dict:
    """Metrics of one cell; ``shared`` holds ``queries``/``corpus`` [layers, N, H] (numpy), ids, qrels, options.

    With ``fixed_documents`` the corpus holds one layer (the last): queries at (l, d), documents at (L, d).
    With ``per_item`` the per-query values come back too, under ``"_items"``. ``precisions`` (default float32)
    adds ``<metric>/<precision>`` rows, searched by :func:`.quantized.search` (``doc_ranks``: its tie order).
    """
    normalize = shared["similarity"] == "cos"
    q = truncate(torch.from_numpy(shared["queries"][pos]), dim, normalize)
    c = truncate(torch.from_numpy(shared["corpus"][0 if shared.get("fixed_documents") else pos]), dim, normalize)
    extra = 1 if shared["ignore_identical_ids"] else 0  # room for a dropped self-match, as BEIR retrieves deeper
    per_query: dict[str, np.ndarray] = {}
    for precision in shared.get("precisions") or (FLOAT,):
        if precision == FLOAT:
            scores, idx = search(q, c, TOP_K + extra, shared.get("chunk_size", 50_000))
        else:
            scores, idx = quantized.search(q.numpy(), c.numpy(), precision, TOP_K + extra, shared["doc_ranks"],
                                           shared.get("rescore_multiplier", 4))
        run = build_run(shared["qids"], shared["doc_ids"], scores, idx, TOP_K, shared["ignore_identical_ids"])
        per_query.update({metric_name(name, precision): values
                          for name, values in per_query_metrics(shared["qrels"], run).items()})
    out: dict = {name: float(values.mean()) for name, values in per_query.items()}
    if shared.get("per_item"):
        out["_items"] = {name: values.astype(np.float32) for name, values in per_query.items()}
    return out
