"""Precision as a third grid axis: checked against sentence-transformers' own quantized evaluation.

STS: our ``spearman/int8`` and ``spearman/binary`` equal ST's ``EmbeddingSimilarityEvaluator(precision=...)`` run on
the exported cell (a plain SentenceTransformer). Retrieval: our int8/binary (+rescore) metrics equal an independent
computation from ST's ``quantize_embeddings``: a full numpy ranking in trec_eval's order, scored by pytrec_eval.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from matryoshka2d import data
from matryoshka2d.cli import main
from matryoshka2d.data.types import STSPairs
from matryoshka2d.encoder import load_encoder
from matryoshka2d.errors import M2DError
from matryoshka2d.evaluate import evaluate_grid
from matryoshka2d.evaluate.precision import bytes_per_vector, metric_name, parse_precisions, split_metric
from matryoshka2d.choose.export import export_cell
from matryoshka2d.testing import make_tiny_bert

ALL = "float32,int8,binary,int8+rescore,binary+rescore"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("prec") / "bert", num_layers=3, hidden_size=32, seed=3)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return load_encoder(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def sts200(data_dir) -> STSPairs:
    full = data.load("stsb", split="test", data_dir=data_dir)
    return STSPairs("stsb", "test", full.sentences1[:200], full.sentences2[:200], full.scores[:200])


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    """300 docs and 20 queries from a small vocabulary: more docs than the top-100 cut, many near-duplicates."""
    rng = np.random.default_rng(0)
    words = "river stone cloud music engine garden winter cell protein market signal ocean paper light".split()
    root = tmp_path_factory.mktemp("beir") / "mini"
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(words, size=6))} for i in range(300)]
    queries = [{"_id": f"q{k}", "text": " ".join(rng.choice(words, size=3))} for k in range(20)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "".join(f"q{k}\td{j}\t{1 + (j % 2)}\n" for k in range(20) for j in rng.choice(300, size=4, replace=False))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def test_names_bytes_and_parsing():
    assert split_metric("spearman") == ("spearman", "float32")
    assert split_metric("ndcg@10/binary") == ("ndcg@10", "binary")
    assert split_metric("recall@100/binary+rescore") == ("recall@100", "binary+rescore")
    assert metric_name("ndcg@10", "float32") == "ndcg@10" and metric_name("mrr@10", "int8") == "mrr@10/int8"
    assert [bytes_per_vector(384, p) for p in ("float32", "int8", "binary", "binary+rescore")] == [1536, 384, 48, 48]
    assert bytes_per_vector(12, "binary") == 2  # packed bits, padded to whole bytes as np.packbits does
    assert parse_precisions(" int8, float32,int8 ") == ["int8", "float32"]
    for bad in ("fp16", "", "int8,binary4"):
        with pytest.raises(M2DError, match="allowed float32, int8, binary"):
            parse_precisions(bad, "--precision")
    with pytest.raises(M2DError, match="unknown precision 'fp16'"):
        split_metric("ndcg@10/fp16")


@pytest.mark.parametrize("layer, dim", [(2, 8), (2, 16), (3, 32)])
def test_sts_matches_sentence_transformers_evaluator(tiny_dir, encoder, sts200, tmp_path, layer, dim):
    """ST evaluates exactly cell (layer, dim): the export is the encoder cut to ``layer`` with ``truncate_dim``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    grid = evaluate_grid(encoder, [sts200], layers=[layer], dims=[dim], precisions="int8,binary", batch_size=512)
    export_cell(str(tiny_dir), layer, dim, tmp_path / "cell", bench=0)
    model = SentenceTransformer(str(tmp_path / "cell"), device="cpu")
    for ours, theirs in [("int8", "int8"), ("binary", "binary"), ("binary", "ubinary")]:
        evaluator = EmbeddingSimilarityEvaluator(sts200.sentences1, sts200.sentences2, sts200.scores, batch_size=512,
                                                 main_similarity="cosine", precision=theirs, write_csv=False)
        expected = evaluator(model)[evaluator.primary_metric]
        assert grid.cell("stsb", f"spearman/{ours}", layer, dim) == pytest.approx(expected, abs=1e-9), (ours, theirs)


def _reference_run(q: np.ndarray, c: np.ndarray, precision: str, doc_ids: list[str], qids: list[str],
                   multiplier: int) -> dict[str, dict[str, float]]:
    """An independent top-100 run: ST's quantize_embeddings, full numpy scores, trec_eval's order (score desc,
    doc id desc), rescoring transcribed from ST's semantic_search_usearch."""
    from sentence_transformers.util.quantization import _dequantize_embeddings, quantize_embeddings

    base, rescore = precision.split("+")[0], precision.endswith("+rescore")
    if base == "int8":
        codes_c = quantize_embeddings(c, precision="int8", calibration_embeddings=c)
        codes_q = quantize_embeddings(q, precision="int8", calibration_embeddings=c)
        scores = codes_q.astype(np.int64) @ codes_c.astype(np.int64).T
    else:
        codes_c, codes_q = quantize_embeddings(c, precision="ubinary"), quantize_embeddings(q, precision="ubinary")
        scores = -np.unpackbits(codes_q[:, None, :] ^ codes_c[None, :, :], axis=-1).sum(-1, dtype=np.int64)  # -hamming
    depth = 101 * multiplier if rescore else 100
    run = {}
    for i, qid in enumerate(qids):
        ranked = sorted(range(len(doc_ids)), key=lambda j: (scores[i, j], doc_ids[j]), reverse=True)[:depth]
        if rescore:
            cand = codes_c[ranked]
            cand = (np.unpackbits(cand, axis=-1)[:, :c.shape[1]].astype(int) if base == "binary"
                    else _dequantize_embeddings(cand.astype(int), "int8", np.vstack((c.min(0), c.max(0)))))
            new = cand @ q[i].astype(np.float64)
            hits = sorted(zip(ranked, new), key=lambda h: (h[1], doc_ids[h[0]]), reverse=True)[:100]
        else:
            hits = [(j, float(scores[i, j])) for j in ranked]
        run[qid] = {doc_ids[j]: float(s) for j, s in hits}
    return run


def _metrics(qrels, run) -> dict[str, float]:
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    top10 = {q: dict(sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10]) for q, d in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {"ndcg@10": np.mean([main[q]["ndcg_cut_10"] for q in qrels]),
            "recall@100": np.mean([main[q]["recall_100"] for q in qrels]),
            "mrr@10": np.mean([rr[q]["recip_rank"] for q in qrels])}


def test_retrieval_matches_reference_on_st_quantized_embeddings(encoder, beir_dir):
    from matryoshka2d.cells import truncate
    from matryoshka2d.evaluate.retrieval import prepare

    rset = data.load(str(beir_dir), split="test")
    layers, dims = [2, 3], [8, 32]
    grid = evaluate_grid(encoder, [rset], layers=layers, dims=dims, precisions=ALL, rescore_multiplier=2)
    qids, qtexts, doc_ids, doc_texts, qrels = prepare(rset)
    queries, corpus = encoder.encode_layers(qtexts, layers), encoder.encode_layers(doc_texts, layers)
    for pos, layer in enumerate(layers):
        for dim in dims:
            q, c = truncate(queries[pos], dim).numpy(), truncate(corpus[pos], dim).numpy()
            for precision in ALL.split(",")[1:]:
                expected = _metrics(qrels, _reference_run(q, c, precision, doc_ids, qids, multiplier=2))
                for metric, value in expected.items():
                    got = grid.cell(rset.name, f"{metric}/{precision}", layer, dim)
                    assert got == pytest.approx(value, abs=1e-12), (layer, dim, precision, metric)


def test_float32_rows_unchanged_by_extra_precisions(encoder, sts200, beir_dir):
    sets = [sts200, data.load(str(beir_dir), split="test")]
    plain = evaluate_grid(encoder, sets, layers=[1, 3], dims=[8, 32])
    both = evaluate_grid(encoder, sets, layers=[1, 3], dims=[8, 32], precisions=ALL, per_item=True)
    assert [r for r in both.rows if split_metric(r.metric)[1] == "float32"] == plain.rows
    metrics = {r.metric for r in both.rows}
    assert {"spearman/int8", "spearman/binary", "ndcg@10/binary+rescore", "recall@100/int8"} <= metrics
    assert "spearman/binary+rescore" not in metrics  # rescoring is a search step: retrieval only
    assert both.items["stsb/cosine/int8/3/32"].shape == (200,) and "mini/ndcg@10/binary/1/8" in both.items


def test_cli_precision_rows_and_bad_names(tiny_dir, data_dir, beir_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_dir), "--data", str(beir_dir), "--data-dir", str(data_dir),
                 "--layers", "3", "--dims", "16", "--precision", "float32,binary+rescore", "--out", str(out)]) == 0
    rows = (out / "grid.csv").read_text().splitlines()
    assert {r.split(",")[2] for r in rows[1:]} == {"ndcg@10", "mrr@10", "recall@100", "ndcg@10/binary+rescore",
                                                   "mrr@10/binary+rescore", "recall@100/binary+rescore"}
    assert (out / "heatmap_mini_ndcg@10_binary_rescore.png").is_file()
    capsys.readouterr()
    for flags, needle in [(["--precision", "float32,fp16"], "--precision: unknown precision 'fp16'; allowed"),
                          (["--rescore-multiplier", "0"], "--rescore-multiplier: 0"),
                          (["--precision", "binary+rescore"], "retrieval only ('+rescore'); the STS set stsb")]:
        assert main(["eval", "--model", str(tiny_dir), "--data", "stsb", "--data-dir", str(data_dir),
                     "--out", str(tmp_path / "bad"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("m2d: error: ") and needle in err, err
        assert not (tmp_path / "bad").exists()
