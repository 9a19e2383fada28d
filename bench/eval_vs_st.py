"""Benchmark: our whole (layer x dim) grid vs sentence-transformers' evaluators scoring ONE cell.

    python bench/eval_vs_st.py [--data stsb --data scifact] [--repeat N] [--batch-size 64] [--json OUT]
    python bench/eval_vs_st.py --smoke        # a tiny version (300 STS pairs; 20 SciFact queries, 250 docs)

Ours: ``matryoshka2d.evaluate.evaluate_grid`` with the bundled all-MiniLM-L6-v2 (``load_encoder("minilm-l6")``),
every layer x dims 8,16,32,64,128,256,384 (42 cells). Theirs: sentence-transformers 6.2's
``EmbeddingSimilarityEvaluator`` (STS-B test) and ``InformationRetrievalEvaluator`` (SciFact test) on the same
model, scoring the one cell it can: the full model (last layer, 384 dims, ``truncate_dim=384``). Both read the
data through our loaders (``matryoshka2d.data.load``), so they get the same pairs / queries / corpus / qrels, run
on the same device with the same batch size and the same max length (our loader's, i.e. the model folder's
``max_seq_length``: 256), and both times include tokenising, encoding and scoring, not loading the model.
``--repeat N`` alternates ours / theirs N times and keeps the best of each (load drift hits both alike).
Goal: ours (42 cells) / theirs (1 cell) <= 1.0 in wall time; and the metrics both compute for the full cell
(our layer 6 / dim 384 spearman, ndcg@10, mrr@10, recall@100 vs their spearman_cosine, cosine_ndcg@10,
cosine_mrr@10, cosine_recall@100) equal to 1e-4.

Their evaluators' settings: STS ``similarity_fn_names=["cosine"]`` (what we compute; by default it would also
compute the model's other functions); IR ``corpus_chunk_size`` 50,000 (the default: SciFact's 5,183 documents are
one chunk; since 6.x ties at a chunk's top-k boundary are re-selected, so the chunking cannot change the metrics),
``mrr_at_k=[10]``, ``ndcg_at_k=[10]``, ``precision_recall_at_k=[100]``, ``map_at_k=[100]`` (retrieval depth
max(k) = 100, our depth) and ``accuracy_at_k=[1]`` (cannot be empty; a cheap extra), ``write_csv=False``,
``show_progress_bar=False``. ``relevant_docs`` = the qrels' documents with grade > 0 (their nDCG is binary; it
counts every listed document as relevant). Where the two disagree, the "our scorer on their embeddings" row
(their evaluator's own embeddings, captured during the timed call, scored by our cell scorer) tells scoring
conventions (that row equals theirs) from encoding numerics (that row equals ours) apart. Known convention
differences: exact score ties are ranked by doc id descending in ours (trec_eval) and ascending in theirs; we drop
a retrieved document whose id equals the query id (BEIR), they do not (the script counts such ids).

Wall and CPU time (this process, all threads) are both reported: on a shared machine wall time swings with other
users' load, CPU time mostly measures our own work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # the project's shared data checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from matryoshka2d import data  # noqa: E402
from matryoshka2d.cells import parse_dims, parse_layers  # noqa: E402
from matryoshka2d.data.types import RetrievalSet, STSPairs  # noqa: E402
from matryoshka2d.encoder import Encoder, load_encoder, resolve_model_path  # noqa: E402
from matryoshka2d.evaluate import evaluate_grid  # noqa: E402
from matryoshka2d.evaluate import retrieval as our_retrieval  # noqa: E402
from matryoshka2d.evaluate import sts as our_sts  # noqa: E402

CLOCKS = ("wall_s", "cpu_s")
TOL = 1e-4
SMOKE = {"max_pairs": 300, "max_queries": 20, "max_docs": 250}
# (our metric, their metric key without the evaluator's name prefix)
STS_PAIRS = [("spearman", "spearman_cosine")]
IR_PAIRS = [("ndcg@10", "cosine_ndcg@10"), ("mrr@10", "cosine_mrr@10"), ("recall@100", "cosine_recall@100")]


def timed(fn, *args, **kwargs) -> tuple[object, dict[str, float]]:
    """``fn(...)`` with its wall time and the CPU time of this process (CUDA work is waited for)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


# -- the data, capped for a smoke run ---------------------------------------------------------------------------
def cap_sts(ds: STSPairs, n: int | None) -> STSPairs:
    if not n or len(ds) <= n:
        return ds
    return STSPairs(ds.name, ds.split, ds.sentences1[:n], ds.sentences2[:n], ds.scores[:n])


def cap_retrieval(ds: RetrievalSet, max_queries: int | None, max_docs: int | None) -> RetrievalSet:
    """The first ``max_queries`` scorable queries; a corpus of their judged documents topped up, in corpus order,
    with other documents to ``max_docs`` (the judged ones are always kept)."""
    if not max_queries and not max_docs:
        return ds
    qids = [q for q in ds.qrels if q in ds.queries][:max_queries or None]
    judged = {d for q in qids for d in ds.qrels[q] if d in ds.corpus}
    room = max(0, (max_docs or len(ds.corpus)) - len(judged))
    keep = judged | set([d for d in ds.corpus if d not in judged][:room])
    return RetrievalSet(ds.name, ds.split, {d: v for d, v in ds.corpus.items() if d in keep},
                        {q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids})


# -- their side -----------------------------------------------------------------------------------------------------
def st_model(encoder: Encoder, model_name: str):
    """The same model folder as a SentenceTransformer on the encoder's device, with its max length."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(resolve_model_path(model_name), device=str(encoder.device),
                             truncate_dim=encoder.hidden_size)
    st.max_seq_length = encoder.max_length
    st.eval()
    return st


def st_evaluator(ds, batch_size: int, truncate_dim: int):
    """(evaluator, captured embeddings list, metric-key prefix) for ``ds``; the evaluator's ``embed_inputs`` is
    wrapped to keep what it returns (a reference, no copy), for the 'our scorer on their embeddings' check."""
    from sentence_transformers.sentence_transformer.evaluation import (EmbeddingSimilarityEvaluator,
                                                                       InformationRetrievalEvaluator)

    if isinstance(ds, STSPairs):
        ev = EmbeddingSimilarityEvaluator(list(ds.sentences1), list(ds.sentences2), list(ds.scores),
                                          batch_size=batch_size, similarity_fn_names=["cosine"], name=ds.name,
                                          show_progress_bar=False, write_csv=False, truncate_dim=truncate_dim)
    else:
        qids, qtexts, doc_ids, doc_texts, qrels = our_retrieval.prepare(ds)
        relevant = {q: {d for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
        ev = InformationRetrievalEvaluator(dict(zip(qids, qtexts)), dict(zip(doc_ids, doc_texts)), relevant,
                                           corpus_chunk_size=50_000, mrr_at_k=[10], ndcg_at_k=[10],
                                           accuracy_at_k=[1], precision_recall_at_k=[100], map_at_k=[100],
                                           show_progress_bar=False, batch_size=batch_size, name=ds.name,
                                           write_csv=False, truncate_dim=truncate_dim)
    captured: list = []
    inner = ev.embed_inputs

    def capture(*args, **kwargs):
        out = inner(*args, **kwargs)
        captured.append(out)
        return out

    ev.embed_inputs = capture
    return ev, captured, f"{ds.name}_"


def _numpy(x) -> np.ndarray:
    return (x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32))


def our_scorer_on(captured: list, ds, dim: int) -> dict[str, float]:
    """Our cell scorer applied to the embeddings their evaluator computed (its last call)."""
    if isinstance(ds, STSPairs):
        e1, e2 = (_numpy(x) for x in captured[-2:])
        n = len(e1)
        shared = {"emb": np.concatenate([e1, e2])[None], "idx1": np.arange(n), "idx2": n + np.arange(n),
                  "gold": np.asarray(ds.scores, dtype=np.float64)}
        return our_sts.score_cell(shared, 0, dim)
    qids, _, doc_ids, _, qrels = our_retrieval.prepare(ds)
    n_calls = 1 + -(-len(doc_ids) // 50_000)  # queries, then one call per corpus chunk
    last = captured[-n_calls:]
    shared = {"queries": _numpy(last[0])[None], "corpus": np.concatenate([_numpy(c) for c in last[1:]])[None],
              "qids": qids, "doc_ids": doc_ids, "qrels": qrels, "similarity": "cos", "ignore_identical_ids": True}
    return our_retrieval.score_cell(shared, 0, dim)


# -- one dataset ----------------------------------------------------------------------------------------------------
def bench_dataset(encoder: Encoder, st, ds, layers: list[int], dims: list[int], batch_size: int,
                  repeat: int = 1) -> dict:
    L, H = encoder.num_layers, encoder.hidden_size
    ev, captured, prefix = st_evaluator(ds, batch_size, H)
    best: dict[str, dict[str, float]] = {}
    grid = theirs = None
    for _ in range(max(1, repeat)):  # alternate, keep the best of each
        grid, t = timed(evaluate_grid, encoder, [ds], layers, dims, batch_size=batch_size, show_progress=False)
        best["ours"] = {c: min(best.get("ours", t)[c], t[c]) for c in CLOCKS}
        theirs, t = timed(ev, st)
        best["theirs"] = {c: min(best.get("theirs", t)[c], t[c]) for c in CLOCKS}
    pairs = STS_PAIRS if isinstance(ds, STSPairs) else IR_PAIRS
    on_theirs = our_scorer_on(captured, ds, H)
    metrics = []
    for ours_name, their_name in pairs:
        a, b = grid.cell(ds.name, ours_name, L, H), float(theirs[prefix + their_name])
        metrics.append({"ours": ours_name, "theirs": their_name, "ours_value": a, "theirs_value": b,
                        "our_scorer_on_their_embeddings": float(on_theirs[ours_name]),
                        "diff": a - b, "equal": abs(a - b) <= TOL})
    out = {
        "dataset": ds.name, "split": ds.split, "cells_ours": len(layers) * len(dims), "cells_theirs": 1,
        "repeat": repeat, "ours": {**best["ours"], **{k: grid.timings[k] for k in ("encode_s", "score_s")}},
        "theirs": best["theirs"], "ratio": {c: best["ours"][c] / best["theirs"][c] for c in CLOCKS},
        "metrics": metrics,
    }
    if isinstance(ds, STSPairs):
        out["size"] = {"pairs": len(ds), "unique_sentences_ours": len(our_sts.unique_sentences(ds)[0]),
                       "sentences_encoded_theirs": 2 * len(ds)}
    else:
        qids, _, doc_ids, _, qrels = our_retrieval.prepare(ds)
        out["size"] = {"queries": len(qids), "docs": len(doc_ids),
                       "queries_without_positive": sum(1 for q in qids if not any(g > 0 for g in qrels[q].values())),
                       "query_ids_also_doc_ids": len(set(qids) & set(doc_ids))}
    return out


def report(r: dict) -> str:
    lines = [f"\n== {r['dataset']} {r['split']} {r['size']}, best of {r['repeat']}",
             f"  {'':34}{'wall s':>9}{'cpu s':>9}"]
    ours_label = f"ours: all {r['cells_ours']} cells"
    lines.append(f"  {ours_label:34}{r['ours']['wall_s']:9.2f}{r['ours']['cpu_s']:9.2f}")
    lines.append(f"  {'theirs: one cell (L, H)':34}{r['theirs']['wall_s']:9.2f}{r['theirs']['cpu_s']:9.2f}")
    lines.append(f"      ours = encode {r['ours']['encode_s']:.2f}s + score {r['ours']['score_s']:.3f}s "
                 f"(wall, last run)")
    g = r["ratio"]
    met = "met" if g["wall_s"] <= 1.0 else "NOT met"
    lines.append(f"  ours / theirs = {g['wall_s']:.3f} wall, {g['cpu_s']:.3f} cpu  (goal <= 1.0 wall: {met})")
    lines.append(f"  {'full cell':12}{'ours':>12}{'theirs':>12}{'ours-theirs':>13}{'our scorer on':>15}  equal (1e-4)")
    lines.append(f"  {'':12}{'':>12}{'':>12}{'':>13}{'their emb':>15}")
    for m in r["metrics"]:
        lines.append(f"  {m['ours']:12}{m['ours_value']:12.6f}{m['theirs_value']:12.6f}{m['diff']:13.2e}"
                     f"{m['our_scorer_on_their_embeddings']:15.6f}  {'yes' if m['equal'] else 'NO'}"
                     f"   ({m['theirs']})")
    for m in r["metrics"]:
        if not m["equal"]:
            o = m["our_scorer_on_their_embeddings"]
            why = ("scoring conventions (our scorer on their embeddings gives theirs)"
                   if abs(o - m["theirs_value"]) <= TOL else
                   "encoding numerics (our scorer on their embeddings gives ours)"
                   if abs(o - m["ours_value"]) <= TOL else "both encoding and scoring")
            lines.append(f"  {m['ours']} differs: {why}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data", action="append", help="datasets (default: stsb and scifact)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-dir", default=None, help="default: $M2D_DATA_DIR, else ../shared/data")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--dims", default="8,16,32,64,128,256,384")
    ap.add_argument("--max-length", type=int, default=None, help="default: the model's (256 for minilm-l6)")
    ap.add_argument("--batch-size", type=int, default=64, help="for both sides")
    ap.add_argument("--repeat", type=int, default=1, help="alternate ours / theirs N times, keep the best of each")
    ap.add_argument("--max-pairs", type=int, default=None, help="cap STS pairs (a quick look, not the benchmark)")
    ap.add_argument("--max-queries", type=int, default=None, help="cap retrieval queries")
    ap.add_argument("--max-docs", type=int, default=None, help="cap the corpus (judged docs of kept queries first)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"tiny run: --max-pairs {SMOKE['max_pairs']} --max-queries {SMOKE['max_queries']} "
                         f"--max-docs {SMOKE['max_docs']} unless given")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)

    import sentence_transformers

    encoder = load_encoder(args.model, max_length=args.max_length, device=args.device)
    st = st_model(encoder, args.model)
    layers = parse_layers(args.layers, encoder.num_layers)
    dims = parse_dims(args.dims, encoder.hidden_size)
    data_dir = args.data_dir or os.environ.get("M2D_DATA_DIR") or DEFAULT_DATA_DIR
    datasets = []
    for name in args.data or ["stsb", "scifact"]:
        ds = data.load(name, args.split, data_dir)
        datasets.append(cap_sts(ds, args.max_pairs) if isinstance(ds, STSPairs)
                        else cap_retrieval(ds, args.max_queries, args.max_docs))
    env = {"model": args.model, "max_length": encoder.max_length, "st_max_seq_length": st.max_seq_length,
           "batch_size": args.batch_size, "device": str(encoder.device), "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "torch": torch.__version__,
           "sentence_transformers": sentence_transformers.__version__,
           "python": platform.python_version(), "layers": layers, "dims": dims, "smoke": args.smoke,
           "caps": {k: getattr(args, k) for k in SMOKE}, "loadavg_start": os.getloadavg()}
    if torch.cuda.is_available() and encoder.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    print(f"# {env}", flush=True)
    warm = ["warm up the kernels"] * 8
    encoder.encode_layers(warm, [encoder.num_layers])
    st.encode(warm)
    results = []
    for ds in datasets:
        r = bench_dataset(encoder, st, ds, layers, dims, args.batch_size, args.repeat)
        results.append(r)
        print(report(r), flush=True)
    env["loadavg_end"] = os.getloadavg()
    print(f"\n# load average start {env['loadavg_start']} end {env['loadavg_end']}")
    if args.smoke or args.max_pairs or args.max_queries or args.max_docs:
        print("# capped data: a smoke run, not the benchmark")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "results": results}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
