"""``hf:`` sources: every local form (files, folders of split files, save_to_disk folders, retrieval folders, a hub
repository's clone loaded by ``datasets`` as the hub would) loads into the right container with the right values,
training reads hf triplets and hf qrels, checksums cover what was read, and bad input is one line naming the problem.

Every fixture is written here into tmp_path; nothing downloads (HF_HUB_OFFLINE=1, see conftest)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from matryoshka2d import data as d
from matryoshka2d.config import compose
from matryoshka2d.data.columns import KINDS

from test_data import one_line_error  # the one-line check test_data.py defines

STS = [{"sentence1": f"A man plays guitar {i}.", "sentence2": f"Someone plays music {i}.", "score": s}
       for i, s in enumerate((4.5, 1.0, 3.25, 0.0))]
TRIPLETS = [{"anchor": f"anchor {i}", "positive": f"positive {i}", "negative": f"negative {i}"} for i in range(3)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """``rows`` in the format the suffix names (csv/tsv with a header row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(path)
        return path
    if name.endswith((".csv", ".tsv")):
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t" if name.endswith(".tsv") else ",",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    elif name.endswith(".json"):
        text = json.dumps(rows, indent=1)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def save_dict(path: Path, **splits: list[dict]) -> Path:
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    DatasetDict({k: Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(path))
    return path


def retrieval_rows() -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    corpus = [{"_id": f"d{i}", "title": f"Title {i}" if i % 2 else "", "text": f"document text {i}"} for i in range(4)]
    queries = [{"_id": f"q{i}", "text": f"query {i}?"} for i in range(3)]
    qrels = {"train": [{"query-id": "q0", "corpus-id": "d0", "score": 1},
                       {"query-id": "q1", "corpus-id": "d1", "score": 2},
                       {"query-id": "q1", "corpus-id": "d2", "score": 0}],
             "test": [{"query-id": "q2", "corpus-id": "d3", "score": 1.0}]}
    return corpus, queries, qrels


def mteb_clone(root: Path) -> Path:
    """A hub repository in MTEB's layout: configs corpus, queries and default (the qrels, split per file)."""
    corpus, queries, qrels = retrieval_rows()
    write_rows(root / "corpus.jsonl", corpus)
    write_rows(root / "queries.jsonl", queries)
    for split, rows in qrels.items():
        write_rows(root / "qrels" / f"{split}.jsonl", rows)
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: qrels/train.jsonl\n"
        "  - split: test\n    path: qrels/test.jsonl\n- config_name: corpus\n  data_files:\n  - split: corpus\n"
        "    path: corpus.jsonl\n- config_name: queries\n  data_files:\n  - split: queries\n    path: queries.jsonl\n"
        "---\n# a tiny MTEB-style retrieval set\n")
    return root


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """``datasets.load_dataset`` writes its Arrow cache here, not into the user's cache."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache"


# -- each form loads to the right container with the right values ---------------------------------------------------
@pytest.mark.parametrize("name", ["sts.parquet", "sts.jsonl", "sts.jsonl.gz", "sts.json", "sts.csv", "sts.tsv"])
def test_a_file_of_sts_pairs_loads_whatever_the_split(tmp_path, name, capsys):
    path = write_rows(tmp_path / name, STS)
    pairs = d.load(f"hf:{path}", "test")
    assert isinstance(pairs, d.STSPairs) and (pairs.name, pairs.split) == ("sts", "test")
    assert pairs.sentences1 == [r["sentence1"] for r in STS] and pairs.scores == [r["score"] for r in STS]
    assert "scored pairs from columns sentence1, sentence2, score; 4 pairs" in capsys.readouterr().out
    assert d.load(f"hf:{path}", "dev").scores == pairs.scores  # one file is one split


def test_score_aliases_and_a_path_under_the_data_dir(tmp_path, capsys):
    rows = [{"sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": r["score"]} for r in STS]
    write_rows(tmp_path / "data" / "glue" / "validation.parquet", rows)
    pairs = d.load("hf:glue", "validation", data_dir=tmp_path / "data")
    assert pairs.scores == [r["score"] for r in STS] and pairs.name == "glue"
    assert "score=label" in capsys.readouterr().out


def test_save_to_disk_dataset_dict_picks_the_split(tmp_path):
    folder = save_dict(tmp_path / "saved", train=STS, test=STS[:2])
    assert d.load(f"hf:{folder}", "test").sentences1 == [r["sentence1"] for r in STS[:2]]
    assert len(d.load(f"hf:{folder}", "all")) == 6
    one_line_error(lambda: d.load(f"hf:{folder}", "dev"), f"hf:{folder}", "split 'dev' not available",
                   "splits: train, test")
    files = d.dataset_files(f"hf:{folder}", "test")
    assert files[0].name == "dataset_dict.json" and all(p.parent.name == "test" for p in files[1:])


def test_save_to_disk_dataset_is_its_one_split(tmp_path):
    from datasets import Dataset

    Dataset.from_list(TRIPLETS).save_to_disk(str(tmp_path / "one"))
    trip = d.load_triplets(f"hf:{tmp_path / 'one'}", "whatever")
    assert (trip.anchors, trip.positives, trip.negatives) == tuple([r[k] for r in TRIPLETS] for k in TRIPLETS[0])


def test_a_folder_of_split_files_shards_and_data_subfolder(tmp_path):
    folder = tmp_path / "repo"
    write_rows(folder / "data" / "train-00000-of-00002.parquet", TRIPLETS[:2])
    write_rows(folder / "data" / "train-00001-of-00002.parquet", TRIPLETS[2:])
    write_rows(folder / "data" / "test.jsonl", TRIPLETS[:1])
    assert d.load_triplets(f"hf:{folder}", "train").anchors == [r["anchor"] for r in TRIPLETS]
    assert d.load_triplets(f"hf:{folder}", "test").anchors == ["anchor 0"]
    one_line_error(lambda: d.load_triplets(f"hf:{folder}", "dev"), f"hf:{folder}", "no file for split 'dev'",
                   "splits here: test, train")
    assert [p.name for p in d.dataset_files(f"hf:{folder}", "train")] == \
        ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]


def test_a_local_config_is_a_subfolder(tmp_path):
    write_rows(tmp_path / "all-nli" / "triplet" / "train.parquet", TRIPLETS)
    write_rows(tmp_path / "all-nli" / "pair-score" / "train.parquet", STS)
    trip = d.load_triplets(f"hf:{tmp_path / 'all-nli'}:triplet", "train")
    assert trip.name == "all-nli-triplet" and trip.negatives == [r["negative"] for r in TRIPLETS]
    assert d.load_scored_pairs(f"hf:{tmp_path / 'all-nli'}:pair-score", "train").scores == [r["score"] for r in STS]
    one_line_error(lambda: d.load_triplets(f"hf:{tmp_path / 'all-nli'}:pair", "train"), "no config 'pair'",
                   "pair-score, triplet")


@pytest.mark.parametrize("columns, expected", [
    ({"anchor": "a", "positive": "p"}, "anchor, positive"),
    ({"query": "a", "answer": "p"}, "anchor=query, positive=answer"),
    ({"question": "a", "passage": "p", "neg": "n"}, "anchor=question, positive=passage, negative=neg"),
    ({"query": "a", "document": "p", "negative": "n", "extra": "x"}, "anchor=query, positive=document, negative"),
])
def test_training_pair_and_triplet_aliases(tmp_path, columns, expected, capsys):
    rows = [{k: f"{v}{i}" for k, v in columns.items()} for i in range(3)]
    trip = d.load_triplets(f"hf:{write_rows(tmp_path / 'train.jsonl', rows)}", "train")
    role = {v: k for k, v in columns.items()}
    assert trip.anchors == ["a0", "a1", "a2"] and trip.positives == ["p0", "p1", "p2"]
    assert trip.negatives == (["n0", "n1", "n2"] if "n" in role else [])
    assert f"from columns {expected}; 3 rows" in capsys.readouterr().out


def test_lists_of_positives_and_negatives(tmp_path):
    rows = [{"query": "q0", "pos": ["p0", "p0b"], "neg": ["n0", "n0b"]}, {"query": "q1", "pos": ["p1"], "neg": ["n1"]}]
    trip = d.load_triplets(f"hf:{write_rows(tmp_path / 'flag.jsonl', rows)}", "train")
    assert list(zip(trip.anchors, trip.positives, trip.negatives)) == [("q0", "p0", "n0"), ("q0", "p0b", "n0"),
                                                                      ("q1", "p1", "n1")]


def test_a_local_retrieval_folder(tmp_path, capsys):
    corpus, queries, qrels = retrieval_rows()
    folder = tmp_path / "myset"
    write_rows(folder / "corpus.parquet", corpus)
    write_rows(folder / "queries.jsonl", queries)
    write_rows(folder / "qrels" / "train.parquet", qrels["train"])
    write_rows(folder / "qrels" / "test.tsv", qrels["test"])
    data = d.load(f"hf:{folder}", "test")
    assert isinstance(data, d.RetrievalSet) and data.name == "myset" and len(data.corpus) == 4
    assert data.queries == {"q2": "query 2?"} and data.qrels == {"q2": {"d3": 1}}
    assert data.corpus["d1"] == {"title": "Title 1", "text": "document text 1"}
    assert "retrieval set from columns qrels query-id, corpus-id, score; corpus _id, text, title" in \
        capsys.readouterr().out
    pairs = d.load_retrieval_train(f"hf:{folder}", split="train")
    assert list(zip(pairs.anchors, pairs.positives)) == [("query 0?", "document text 0"),
                                                         ("query 1?", "Title 1 document text 1")]  # grade 0 left out
    assert d.train_source("mnrl", f"hf:{folder}", "all") == ("retrieval", f"hf:{folder}", "train")
    assert sorted(p.name for p in d.dataset_files(f"hf:{folder}", "train")) == \
        ["corpus.parquet", "queries.jsonl", "train.parquet"]


def test_mteb_hub_layout_through_datasets(tmp_path, hf_cache, capsys):
    """A clone of a hub repository (README configs) goes through datasets.load_dataset, the hub's own code path:
    configs corpus and queries, the qrels in the default config with the split."""
    clone = mteb_clone(tmp_path / "scifact-mteb")
    data = d.load(f"hf:{clone}", "test")
    assert isinstance(data, d.RetrievalSet) and data.qrels == {"q2": {"d3": 1}} and len(data.corpus) == 4
    assert d.train_source("mnrl", f"hf:{clone}", "all")[0] == "retrieval"
    sums = d.file_checksums(f"hf:{clone}", "test")
    assert {f"hf:{clone}:default/test", f"hf:{clone}:corpus/corpus", f"hf:{clone}:queries/queries"} <= set(sums)
    assert sums[f"hf:{clone}:default/test"].startswith("fingerprint ")
    assert str(clone / "qrels" / "test.jsonl") in sums and len(sums[str(clone / "README.md")]) == 16
    one_line_error(lambda: d.load(f"hf:{clone}", "dev"), f"hf:{clone}", "split 'dev' not available", "train, test")
    assert hf_cache.is_dir()


# -- training reads them --------------------------------------------------------------------------------------------
def _cfg(data_dir: Path, *sets: str):
    return compose("v2", data_dir=str(data_dir), sets=list(sets))


def test_load_training_reads_hf_triplets_and_hf_qrels(tmp_path, hf_cache):
    write_rows(tmp_path / "nli" / "train.parquet", TRIPLETS)
    write_rows(tmp_path / "nli" / "test.parquet", TRIPLETS[:1])
    cfg = _cfg(tmp_path, "data.train=hf:nli")  # under the data dir; train_split 'all' reads train
    assert d.training_source(cfg) == ("triplets", "hf:nli", "train")
    got = d.load_training(cfg)
    assert got.columns == [[r[k] for r in TRIPLETS] for k in ("anchor", "positive", "negative")] and got.labels is None
    sums = d.checksums(cfg)  # keys relative to the data dir; only the split read
    assert len(sums["nli/train.parquet"]) == 16 and "nli/test.parquet" not in sums
    clone = mteb_clone(tmp_path / "mteb")
    cfg = _cfg(tmp_path, f"data.train=hf:{clone}", "method.task_loss=mnrl")
    assert d.training_source(cfg)[0] == "retrieval"
    assert d.load_training(cfg).columns == [["query 0?", "query 1?"], ["document text 0", "Title 1 document text 1"]]
    scored = _cfg(tmp_path, f"data.train=hf:{write_rows(tmp_path / 'pairs.csv', STS)}", "method.task_loss=cosent")
    assert d.load_training(scored).labels == [r["score"] for r in STS]
    mined = _cfg(tmp_path, f"data.train=hf:{clone}", "method.task_loss=mnrl", "data.hard_negatives=1")
    one_line_error(lambda: d.training_source(mined), "data.hard_negatives", "in-batch negatives only")


def test_m2d_train_on_hf_triplets_evaluates_hf_pairs(tmp_path, capsys):
    """The in-process training entry point, 2 steps on a tiny model: hf triplets in, an hf STS set evaluated."""
    from matryoshka2d.cli import main
    from matryoshka2d.testing import make_tiny_bert

    model = make_tiny_bert(tmp_path / "bert", num_layers=2, hidden_size=32)
    train = write_rows(tmp_path / "trip.parquet", [{"query": f"a man plays {i}", "answer": f"music {i}",
                                                    "neg": f"a cat sleeps {i}"} for i in range(16)])
    sts = write_rows(tmp_path / "sts.jsonl", STS)
    rc = main(["train", "--config", "mrl", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"),
               "--set", f"model.name={model}", "--set", "model.max_length=16", "--set", "train.max_steps=2",
               "--set", "train.batch_size=4", "--set", f"data.train=hf:{train}",
               "--set", f"eval.datasets=[hf:{sts}]", "--set", "eval.dims=[8,32]"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "training triplets from columns anchor=query, positive=answer, negative=neg; 16 rows" in out
    rows = (tmp_path / "run" / "grid.csv").read_text().splitlines()[1:]
    assert rows and all(r.startswith("sts,dev,spearman,") for r in rows)


# -- bad input: one line naming the problem -------------------------------------------------------------------------
def test_bad_sources_are_one_line(tmp_path):
    one_line_error(lambda: d.load(f"hf:{tmp_path}/nope.parquet"), "nope.parquet", "no such file or folder")
    bad = tmp_path / "sheet.xlsx"
    bad.write_text("x")
    one_line_error(lambda: d.load(f"hf:{bad}"), "sheet.xlsx", "unsupported file type", ".parquet, .jsonl")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: d.load(f"hf:{tmp_path / 'empty'}"), "holds no data files", "save_to_disk")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    one_line_error(lambda: d.load(f"hf:{broken}"), "broken.parquet", "not a readable parquet file")
    one_line_error(lambda: d.load("hf:"), "expected hf:<dataset>[:<config>]")
    one_line_error(lambda: d.load("hf:not a/hub id!"), "not a hub id")


def test_bad_columns_name_the_file_its_columns_and_the_expected_ones(tmp_path):
    path = write_rows(tmp_path / "pairs.jsonl", [{"text_a": "x", "text_b": "y"}])
    one_line_error(lambda: d.load_triplets(f"hf:{path}"), str(path), "has text_a, text_b",
                   "anchor (or query, question), positive (or answer, document, passage, pos), [negative (or neg)]")
    one_line_error(lambda: d.load(f"hf:{path}"), str(path), "is not an evaluation set", "sentence1, sentence2")
    sts = write_rows(tmp_path / "sts.parquet", STS)
    one_line_error(lambda: d.load_triplets(f"hf:{sts}"), "sentence1, sentence2, score", "cosent")
    trip = write_rows(tmp_path / "trip.parquet", TRIPLETS)
    one_line_error(lambda: d.load(f"hf:{trip}"), "holds training pairs/triplets", "evaluation reads STS pairs")
    both = write_rows(tmp_path / "both.parquet", [{"anchor": "a", "query": "q", "positive": "p"}])
    one_line_error(lambda: d.load_triplets(f"hf:{both}"), "both.parquet", "'anchor' and 'query' both mean anchor")
    qrels = write_rows(tmp_path / "qrels.parquet", retrieval_rows()[2]["test"])
    one_line_error(lambda: d.load(f"hf:{qrels}"), "holds qrels but no corpus and queries")


@pytest.mark.parametrize("rows, needles", [
    ([{"anchor": "a", "positive": " "}], ["row 1", "column 'positive' is empty"]),
    ([{"anchor": "a", "positive": "p"}, {"anchor": None, "positive": "p"}], ["row 2", "column 'anchor' is empty"]),
    ([{"anchor": "a", "positive": 7}], ["row 1", "column 'positive' is not text (int)"]),
    ([{"query": "a", "pos": []}], ["row 1", "column 'pos' is an empty list"]),
])
def test_bad_training_rows(tmp_path, rows, needles):
    path = write_rows(tmp_path / "t.jsonl", rows)
    one_line_error(lambda: d.load_triplets(f"hf:{path}"), str(path), *needles)


def test_bad_scores_and_qrels(tmp_path):
    path = write_rows(tmp_path / "s.csv", [dict(STS[0]), dict(STS[1], score="high")])
    one_line_error(lambda: d.load(f"hf:{path}"), "s.csv row 2", "column 'score' value 'high' is not a number")
    corpus, queries, qrels = retrieval_rows()
    for name, rows, needle in [("doc", [{"query-id": "q0", "corpus-id": "d9", "score": 1}], "doc id 'd9' not in"),
                               ("query", [{"query-id": "q9", "corpus-id": "d0", "score": 1}], "query id 'q9' not in"),
                               ("grade", [{"query-id": "q0", "corpus-id": "d0", "score": 0.5}], "score 0.5 is not an")]:
        folder = tmp_path / name
        write_rows(folder / "corpus.jsonl", corpus)
        write_rows(folder / "queries.jsonl", queries)
        write_rows(folder / "qrels" / "test.jsonl", rows)
        one_line_error(lambda: d.load(f"hf:{folder}"), "test.jsonl row 1", needle)
    dup = tmp_path / "dup"
    write_rows(dup / "corpus.jsonl", corpus + corpus[:1])
    write_rows(dup / "queries.jsonl", queries)
    write_rows(dup / "qrels" / "test.jsonl", qrels["test"])
    one_line_error(lambda: d.load(f"hf:{dup}"), "corpus.jsonl row 5", "duplicate _id 'd0'")
    (dup / "qrels" / "test.jsonl").unlink()
    (dup / "qrels").rmdir()
    one_line_error(lambda: d.load(f"hf:{dup}"), "has corpus and queries but no qrels/ folder")


def test_malformed_text_files_name_file_and_line(tmp_path):
    jl = tmp_path / "x.jsonl"
    jl.write_text('{"anchor": "a", "positive": "p"}\n{"anchor": \n')
    one_line_error(lambda: d.load_triplets(f"hf:{jl}"), "x.jsonl line 2", "malformed JSON")
    tsv = tmp_path / "x.tsv"
    tsv.write_text("anchor\tpositive\na\tp\nb\n")
    one_line_error(lambda: d.load_triplets(f"hf:{tsv}"), "x.tsv line 3", "expected 2 columns (anchor, positive)")


def test_the_column_table_is_the_documented_one():
    """docs/data.md shows every accepted column name; a name added here must be documented there."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    for kind, roles in KINDS.items():
        for role in roles:
            for alias in role.aliases:
                assert f"`{alias}`" in doc, f"docs/data.md does not list column {alias!r} ({kind})"
