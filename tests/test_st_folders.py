"""SentenceTransformer folders x (the grid vs sentence-transformers' own encode): every pooling mode, prompts (default,
query/document, excluded from pooling), Normalize, similarity; and the folders a cell cannot honour, refused in one
line naming the module or setting. No silent difference: each accepted folder's full cell equals ST's encode, its
exported cell equals ST's encode of the export (prompts and similarity carried over)."""

from __future__ import annotations

import json

import pytest
import torch

from matryoshka2d.choose.export import export_cell
from matryoshka2d.config import POOLINGS
from matryoshka2d.data.types import RetrievalSet
from matryoshka2d.encoder import load_encoder, read_model
from matryoshka2d.errors import M2DError
from matryoshka2d.evaluate import evaluate_grid
from matryoshka2d.testing import make_tiny_model

TEXTS = ["a man is playing a guitar", "two dogs run on the beach", "the stock market fell sharply today",
         "he plays music", "a woman slices an onion", "dogs"]
TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
DENSE = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
PROMPTS = {"query": "query: ", "document": "passage: ", "sts": "represent the meaning: "}


def st_folder(path, pooling="mean", include_prompt=True, modules=(TRANSFORMER, POOLING), padding_side="right",
              **st_config):
    """A complete SentenceTransformer folder (modules.json, Pooling, max length, config_sentence_transformers.json)."""
    files = {"modules.json": list(modules), "sentence_bert_config.json": {"max_seq_length": 32},
             "1_Pooling/config.json": {"embedding_dimension": 32, "pooling_mode": pooling,
                                       "include_prompt": include_prompt},
             "config_sentence_transformers.json": {"similarity_fn_name": "cosine", **st_config}}
    if NORMALIZE in modules:
        files["2_Normalize/.keep.json"] = {}
    return make_tiny_model(path, "bert", 3, 32, padding_side=padding_side, st_files=files)


CASES = {
    **{f"pooling-{mode}": dict(pooling=mode) for mode in POOLINGS},
    "cls-left-padded": dict(pooling="cls", padding_side="left"),
    "weightedmean-left-padded": dict(pooling="weightedmean", padding_side="left"),
    "default-prompt": dict(prompts=PROMPTS, default_prompt_name="sts"),
    "prompt-not-pooled": dict(prompts=PROMPTS, default_prompt_name="sts", include_prompt=False),
    "prompt-not-pooled-lasttoken-left": dict(pooling="lasttoken", padding_side="left", prompts=PROMPTS,
                                             default_prompt_name="sts", include_prompt=False),
    "normalize": dict(modules=(TRANSFORMER, POOLING, NORMALIZE)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_grid_full_cell_equals_sentence_transformers(case, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = st_folder(tmp_path / "m", **CASES[case])
    encoder = load_encoder(str(folder), device="cpu")
    model = SentenceTransformer(str(folder), device="cpu")
    # a left-padding BERT tokenizer shifts absolute positions by each batch's padding in ST's own encode; the grid
    # pads on the right, so its reference is ST's unpadded (batch 1) encode
    batch = 1 if CASES[case].get("padding_side") == "left" else 3
    for role, encode in ((None, model.encode), ("query", model.encode_query), ("document", model.encode_document)):
        ours = encoder.encode_layers(TEXTS, [3], batch_size=4, role=role)[0]
        theirs = encode(TEXTS, batch_size=batch, convert_to_tensor=True)
        if case == "normalize":  # ST returns unit vectors; the grid's cosine cell is the same direction
            ours = torch.nn.functional.normalize(ours, dim=-1)
        assert torch.allclose(ours, theirs, atol=1e-5), (role, float((ours - theirs).abs().max()))


def _retrieval_set() -> RetrievalSet:
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(TEXTS)}
    queries = {"q1": "guitar music", "q2": "onion cooking", "q3": "animals on sand"}
    return RetrievalSet("tiny", "test", corpus, queries, {"q1": {"d0": 1, "d3": 1}, "q2": {"d4": 1}, "q3": {"d1": 1}})


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_export_carries_prompts_and_similarity(similarity, tmp_path):
    """The exported cell encodes queries and documents with the source's prompts; a dot model's export is the raw
    cut vector (not normalised) scored by dot product, a cosine model's a unit vector: either way ST's similarity on
    the export is the grid's score of the cell."""
    from sentence_transformers import SentenceTransformer

    folder = st_folder(tmp_path / "m", pooling="lasttoken", prompts=PROMPTS, similarity_fn_name=similarity)
    encoder = load_encoder(str(folder), device="cpu")
    rset = _retrieval_set()
    grid = evaluate_grid(encoder, [rset], [1], [8], similarity=encoder.similarity, per_item=True)
    export_cell(str(folder), 1, 8, tmp_path / "cell", bench=0)
    saved = json.loads((tmp_path / "cell" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == PROMPTS and saved["similarity_fn_name"] == similarity
    model = SentenceTransformer(str(tmp_path / "cell"), device="cpu")
    qids, docs = list(rset.queries), list(rset.corpus)
    q = model.encode_query([rset.queries[i] for i in qids], convert_to_tensor=True)
    d = model.encode_document([rset.corpus[i]["text"] for i in docs], convert_to_tensor=True)
    ours_q = encoder.encode_layers([rset.queries[i] for i in qids], [1], role="query")[0, :, :8]
    ours_d = encoder.encode_layers([rset.corpus[i]["text"] for i in docs], [1], role="document")[0, :, :8]
    if similarity == "cosine":
        ours_q, ours_d = (torch.nn.functional.normalize(x, dim=-1) for x in (ours_q, ours_d))
    assert torch.allclose(q, ours_q, atol=1e-5) and torch.allclose(d, ours_d, atol=1e-5)
    scores = model.similarity(q, d)
    expected = ours_q @ ours_d.T  # dot, or cosine of the normalised vectors
    assert torch.allclose(scores, expected, atol=1e-5)
    # the grid's nDCG@10 of the cell is the ranking ST's scores give
    from matryoshka2d.evaluate.retrieval import retrieval_metrics

    run = {qid: {doc: float(s) for doc, s in zip(docs, row)} for qid, row in zip(qids, scores.tolist())}
    assert retrieval_metrics(rset.qrels, run)["ndcg@10"] == pytest.approx(grid.cell("tiny", "ndcg@10", 1, 8), abs=1e-6)


def test_a_dot_trained_run_saves_dot_and_exports_unnormalised(tmp_path, data_dir):
    from matryoshka2d.config import load_config
    from matryoshka2d.train import Hooks, train

    source = make_tiny_model(tmp_path / "src", "bert", 3, 32, pooling="mean")
    cfg = load_config("v2", {"model": {"name": str(source), "max_length": 24},
                             "data": {"data_dir": str(data_dir), "max_train_examples": 16},
                             "train": {"max_steps": 1, "batch_size": 8, "log_every": 1000},
                             "eval": {"max_examples": 8, "dims": "8,32", "similarity": "dot"}})
    train(cfg, tmp_path / "run", Hooks(show_progress=False, device="cpu"))
    saved = json.loads((tmp_path / "run" / "model" / "config_sentence_transformers.json").read_text())
    assert saved["similarity_fn_name"] == "dot"
    report = export_cell(str(tmp_path / "run"), 2, 8, tmp_path / "cell", bench=0)
    assert report["similarity"] == "dot" and "Normalize" not in report["modules"]


REFUSED = {
    "dense": (dict(modules=(TRANSFORMER, POOLING, DENSE)), "names module(s) Dense"),
    "two-poolings": (dict(pooling=["cls", "mean"]), "pools by cls + mean concatenated"),
    "unknown-pooling": (dict(pooling="median"), "pooling_mode 'median' is unknown"),
    "euclidean": (dict(similarity_fn_name="euclidean"), "similarity_fn_name 'euclidean'"),
    "default-prompt-missing": (dict(prompts=PROMPTS, default_prompt_name="nope"), "default_prompt_name 'nope'"),
    "prompts-not-strings": (dict(prompts={"query": 3}), "prompts must map prompt names to strings"),
    "already-a-cell": (dict(truncate_dim=8), "truncate_dim 8: the folder is one cell already"),
    "modules-order": (dict(modules=(POOLING, TRANSFORMER)), "expected Transformer -> Pooling"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_folders_a_cell_cannot_honour_are_refused_in_one_line(case, tmp_path):
    kwargs, message = REFUSED[case]
    folder = st_folder(tmp_path / "m", **kwargs)
    with pytest.raises(M2DError) as err:
        read_model(str(folder))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert str(folder) in str(err.value)


def test_normalize_with_dot_is_refused_before_encoding(tmp_path):
    folder = st_folder(tmp_path / "m", modules=(TRANSFORMER, POOLING, NORMALIZE), similarity_fn_name="dot")
    encoder = load_encoder(str(folder), device="cpu")
    with pytest.raises(M2DError, match="normalises the full embedding before a cell cuts it"):
        evaluate_grid(encoder, [_retrieval_set()], [1], [8], similarity="dot")


def test_cli_eval_scores_by_the_folders_similarity_and_takes_prompts(tmp_path):
    """``m2d eval`` without --similarity scores retrieval as the folder says (dot here); --prompt replaces the
    folder's prompts; a malformed --prompt is one line."""
    from matryoshka2d.cli import main
    from matryoshka2d.evaluate.grid import GridResult

    rset = _retrieval_set()
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": v["text"]}) + "\n"
                                               for d, v in rset.corpus.items()))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in rset.queries.items()))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, docs in rset.qrels.items() for d, g in docs.items()))
    folder = st_folder(tmp_path / "m", prompts=PROMPTS, similarity_fn_name="dot")
    grids = {}
    for name, extra in (("folder", []), ("cos", ["--similarity", "cos"]), ("prompted", ["--prompt", "query=find: "])):
        assert main(["eval", "--model", str(folder), "--data", str(beir), "--layers", "1", "--dims", "8",
                     "--out", str(tmp_path / name), *extra]) == 0
        grids[name] = GridResult.from_csv(tmp_path / name / "grid.csv").cell("beir", "ndcg@10", 1, 8)
    rset.name = "beir"
    encoder = load_encoder(str(folder), device="cpu")
    assert grids["folder"] == pytest.approx(evaluate_grid(encoder, [rset], [1], [8], similarity="dot")
                                            .cell("beir", "ndcg@10", 1, 8), abs=1e-12)
    assert grids["cos"] == pytest.approx(evaluate_grid(encoder, [rset], [1], [8], similarity="cos")
                                         .cell("beir", "ndcg@10", 1, 8), abs=1e-12)
    prompted = load_encoder(str(folder), device="cpu", prompts={"query": "find: "})
    assert prompted.prompts.text("query") == "find: " and prompted.prompts.text("document") == ""
    assert grids["prompted"] == pytest.approx(evaluate_grid(prompted, [rset], [1], [8], similarity="dot")
                                              .cell("beir", "ndcg@10", 1, 8), abs=1e-12)
    assert main(["eval", "--model", str(folder), "--data", str(beir), "--prompt", "query", "--out",
                 str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
