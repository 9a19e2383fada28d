"""Grid evaluator: one-pass grid == naive per-cell re-encoding; metrics == scipy / BEIR; Ray == in-process."""

from __future__ import annotations

import copy
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from matryoshka2d import data
from matryoshka2d.data.types import RetrievalSet, STSPairs
from matryoshka2d.encoder import load_encoder
from matryoshka2d.errors import M2DError
from matryoshka2d.evaluate import CSV_HEADER, evaluate_grid, retrieval_metrics, summarize
from matryoshka2d.evaluate import retrieval as rt
from matryoshka2d.evaluate import sts as st
from matryoshka2d.testing import make_tiny_bert

LAYERS = [0, 1, 2, 3]
DIMS = [8, 16, 32]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", num_layers=3, hidden_size=32)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return load_encoder(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def stsb_small(data_dir) -> STSPairs:
    full = data.load("stsb", split="test", data_dir=data_dir)
    n = 300
    return STSPairs("stsb", "test", full.sentences1[:n], full.sentences2[:n], full.scores[:n])


@pytest.fixture(scope="module")
def scifact_small(data_dir) -> RetrievalSet:
    """30 SciFact test queries, their relevant docs and 300 other docs (fixed seed)."""
    full = data.load("scifact", split="test", data_dir=data_dir)
    qids = sorted(full.qrels)[:30]
    relevant = {d for q in qids for d in full.qrels[q]}
    others = sorted(set(full.corpus) - relevant)
    keep = relevant | set(random.Random(0).sample(others, 300))
    corpus = {d: full.corpus[d] for d in full.corpus if d in keep}
    return RetrievalSet("scifact", "test", corpus, {q: full.queries[q] for q in qids},
                        {q: full.qrels[q] for q in qids})


@pytest.fixture(scope="module")
def grid(encoder, stsb_small, scifact_small):
    return evaluate_grid(encoder, [stsb_small, scifact_small], LAYERS, DIMS, batch_size=32)


# ---------------------------------------------------------------- naive reference (plain HF, per cell)

def _naive_embed(base_model, tokenizer, layer: int, texts: list[str], max_length: int) -> torch.Tensor:
    """A copy of the model cut to its first ``layer`` blocks, plain forward, mean pooling, input-order batches."""
    model = copy.deepcopy(base_model)
    model.encoder.layer = torch.nn.ModuleList(list(model.encoder.layer)[:layer])
    model.config.num_hidden_layers = layer
    model.config.output_hidden_states = False
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 50):
            batch = tokenizer(texts[i:i + 50], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def _beir_scores(qrels, run):
    from beir.retrieval.evaluation import EvaluateRetrieval

    ndcg, _, recall, _ = EvaluateRetrieval.evaluate(qrels, copy.deepcopy(run), [10, 100])
    mrr = EvaluateRetrieval.evaluate_custom(qrels, run, [10], metric="mrr")
    return {"ndcg@10": ndcg["NDCG@10"], "mrr@10": mrr["MRR@10"], "recall@100": recall["Recall@100"]}


def test_grid_equals_naive_per_cell(grid, encoder, tiny_dir, stsb_small, scifact_small):
    """Every cell equals an independent reference: truncated HF model, plain forward, mean pooling, slice to d.

    The reference encodes once per layer (the truncated model does not depend on d) to keep the test fast.
    """
    from transformers import AutoModel, AutoTokenizer

    base, tok = AutoModel.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)
    qids = list(scifact_small.queries)
    doc_ids, doc_texts = scifact_small.doc_texts()
    texts = {"s1": stsb_small.sentences1, "s2": stsb_small.sentences2,
             "q": [scifact_small.queries[i] for i in qids], "c": doc_texts}
    normalize = torch.nn.functional.normalize
    for layer in LAYERS:
        emb = {k: _naive_embed(base, tok, layer, v, encoder.max_length) for k, v in texts.items()}
        for dim in DIMS:
            cos = torch.nn.functional.cosine_similarity(emb["s1"][:, :dim], emb["s2"][:, :dim]).numpy()
            expected = spearmanr(cos, stsb_small.scores).statistic
            assert grid.cell("stsb", "spearman", layer, dim) == pytest.approx(expected, abs=1e-5)

            scores = (normalize(emb["q"][:, :dim], dim=-1) @ normalize(emb["c"][:, :dim], dim=-1).T).tolist()
            run = {qid: dict(rt.trec_order(zip(doc_ids, row))[:100]) for qid, row in zip(qids, scores)}
            for metric, value in _beir_scores(scifact_small.qrels, run).items():
                assert grid.cell("scifact", metric, layer, dim) == pytest.approx(value, abs=1e-5), (metric, layer, dim)


def test_sts_spearman_equals_scipy(encoder, stsb_small, grid):
    texts, i1, i2 = st.unique_sentences(stsb_small)
    assert len(texts) < len(stsb_small.sentences1) + len(stsb_small.sentences2)  # STS-B repeats sentences
    emb = encoder.encode_layers(texts, [2], batch_size=32)[0]
    cos = st.pair_cosines(emb, i1, i2, 16)
    ref = torch.nn.functional.cosine_similarity(emb[i1, :16], emb[i2, :16]).numpy()
    np.testing.assert_allclose(cos, ref, atol=1e-6)
    assert st.spearman(cos, stsb_small.scores) == spearmanr(cos, stsb_small.scores).statistic
    assert grid.cell("stsb", "spearman", 2, 16) == pytest.approx(spearmanr(cos, stsb_small.scores).statistic, abs=1e-12)
    assert math.isnan(st.spearman([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))


def test_retrieval_metrics_equal_beir(encoder, scifact_small):
    qids, qtexts, doc_ids, doc_texts, qrels = rt.prepare(scifact_small)
    q = encoder.encode_layers(qtexts, [3])[0]
    c = encoder.encode_layers(doc_texts, [3])[0]
    for dim, chunk in [(8, 37), (32, 50_000)]:  # a small chunk exercises the running top-k merge
        qs, cs = (torch.nn.functional.normalize(x[:, :dim], dim=-1) for x in (q, c))
        s, i = rt.search(qs, cs, 100, chunk_size=chunk)
        full = (qs @ cs.T).topk(100, dim=1)
        torch.testing.assert_close(s, full.values)
        run = rt.build_run(qids, doc_ids, s, i, 100)
        ours = retrieval_metrics(qrels, run)
        beir = _beir_scores(qrels, run)
        for metric in beir:
            assert ours[metric] == pytest.approx(beir[metric], abs=6e-6), metric


def test_dot_similarity_skips_renormalisation(encoder, scifact_small):
    """``similarity="dot"`` scores raw truncated vectors (Tevatron-style); ``cos`` renormalises them."""
    qids, qtexts, doc_ids, doc_texts, qrels = rt.prepare(scifact_small)
    q, c = encoder.encode_layers(qtexts, [2])[0, :, :8], encoder.encode_layers(doc_texts, [2])[0, :, :8]
    expected = {}
    for sim, (qs, cs) in {"dot": (q, c), "cos": (torch.nn.functional.normalize(q, dim=-1),
                                                 torch.nn.functional.normalize(c, dim=-1))}.items():
        run = {qid: dict(rt.trec_order(zip(doc_ids, row))[:100]) for qid, row in zip(qids, (qs @ cs.T).tolist())}
        expected[sim] = _beir_scores(qrels, run)
        res = evaluate_grid(encoder, [scifact_small], [2], [8], similarity=sim)
        for metric, value in expected[sim].items():
            assert res.cell("scifact", metric, 2, 8) == pytest.approx(value, abs=1e-5), (sim, metric)
    assert expected["dot"] != expected["cos"]
    with pytest.raises(M2DError, match="similarity"):
        evaluate_grid(encoder, [scifact_small], [2], [8], similarity="l2")


def test_retrieval_ties_and_self_matches():
    """Tied scores rank as trec_eval does in every metric; a doc equal to the query id is dropped (BEIR)."""
    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"x": 1}}
    run = {"q1": {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.1}, "q2": {"q2": 0.9, "y": 0.5, "x": 0.4}}
    ordered = {q: dict(rt.trec_order(d.items())) for q, d in run.items()}
    ordered["q2"].pop("q2")
    ours = retrieval_metrics(qrels, ordered)
    beir = _beir_scores(qrels, ordered)
    assert ours == pytest.approx(beir, abs=6e-6)
    assert ours["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)  # q1 ties rank c, b, a (id descending); q2: y, x
    ids = ["q2", "y", "x"]
    s, i = torch.tensor([[0.9, 0.5, 0.4]]), torch.tensor([[0, 1, 2]])
    assert list(rt.build_run(["q2"], ids, s, i, 2)["q2"]) == ["y", "x"]


def test_result_api(grid, tmp_path):
    rows = grid.rows
    assert len(rows) == len(LAYERS) * len(DIMS) * (1 + 3)
    path = grid.to_csv(tmp_path / "g.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_HEADER) and len(lines) == 1 + len(rows)
    layers, dims, m = grid.matrix("scifact", "ndcg@10")
    assert (layers, dims, m.shape) == (LAYERS, DIMS, (4, 3))
    assert m[1, 2] == grid.cell("scifact", "ndcg@10", 1, 32)
    frame = grid.as_frame()
    assert list(frame.columns) == list(CSV_HEADER) and len(frame) == len(rows)
    summary = summarize(grid)["stsb"]["spearman"]
    _, _, s = grid.matrix("stsb", "spearman")
    assert summary == pytest.approx({"grid_mean": s.mean(), "sublayer_mean": s[:-1].mean(),
                                     "lowdim_mean": s[:, :-1].mean(), "full": s[-1, -1], "worst_cell": s[:-1].min()})
    assert summarize(grid, flat=True)["scifact/recall@100/full"] == grid.cell("scifact", "recall@100", 3, 32)
    assert set(grid.timings) >= {"encode_s", "score_s", "total_s"}


def test_sts_avg_and_input_checks(encoder, stsb_small):
    other = STSPairs("other", "test", stsb_small.sentences1[:80], stsb_small.sentences2[:80], stsb_small.scores[:80])
    small = STSPairs("stsb", "test", stsb_small.sentences1[:80], stsb_small.sentences2[:80][::-1], stsb_small.scores[:80])
    res = evaluate_grid(encoder, [small, other], [1, 3], [8, 32], sts_avg=True)
    for layer in (1, 3):
        for dim in (8, 32):
            mean = (res.cell("stsb", "spearman", layer, dim) + res.cell("other", "spearman", layer, dim)) / 2
            assert res.cell("sts-avg", "spearman", layer, dim) == pytest.approx(mean)
    with pytest.raises(M2DError, match="dim 64"):
        evaluate_grid(encoder, [small], [1], [64])
    with pytest.raises(M2DError, match="layer 4"):
        evaluate_grid(encoder, [small], [4], [8])
    with pytest.raises(M2DError, match="given twice"):
        evaluate_grid(encoder, [small, small], [1], [8])


@pytest.mark.e2e
def test_ray_equals_in_process(encoder, stsb_small, scifact_small, grid, monkeypatch):
    ray = pytest.importorskip("ray")
    from matryoshka2d.evaluate import parallel

    puts = []
    def counting_put(obj, _put=ray.put):  # the evaluator's own puts (Ray's libraries may put things of their own)
        if sys._getframe(1).f_globals.get("__name__") == "matryoshka2d.evaluate.parallel":
            puts.append(1)
        return _put(obj)

    monkeypatch.setattr(ray, "put", counting_put)
    from matryoshka2d.cluster import start_or_join

    assert start_or_join(None, num_cpus=2, include_dashboard=False, log_to_driver=False)  # as `m2d eval --ray`
    try:
        assert ray.is_initialized()
        res = evaluate_grid(encoder, [stsb_small, scifact_small], LAYERS, DIMS, batch_size=32,
                            executor=parallel.ray_tasks)
        import psutil

        from matryoshka2d.testing import is_loopback, listening_sockets

        mine = [psutil.Process()] + psutil.Process().children(recursive=True)  # this driver and the Ray it started
        sockets = listening_sockets(mine)
        assert sockets and all(is_loopback(ip) for _, _, ip, _ in sockets), sockets
    finally:
        ray.shutdown()
    assert len(puts) == 2  # the embeddings go to the object store once per dataset, not once per cell
    assert [(r.dataset, r.metric, r.layer, r.dim) for r in res.rows] == \
           [(r.dataset, r.metric, r.layer, r.dim) for r in grid.rows]
    np.testing.assert_allclose([r.value for r in res.rows], [r.value for r in grid.rows], atol=1e-9)
