"""Data loaders: published counts on the real files, and one-line errors on malformed fixtures."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from matryoshka2d import data as d
from matryoshka2d.errors import M2DError


def one_line_error(fn, *needles: str) -> str:
    """Run ``fn``; it must raise a single-line M2DError containing every needle."""
    with pytest.raises(M2DError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


STSB_ROW = "main-captions\tMSRvid\t2012test\t{id:04d}\t{score}\tA girl is styling her hair.\tA girl is brushing her hair."


def stsb_rows(*scores: str) -> str:
    return "".join(STSB_ROW.format(id=i, score=s) + "\n" for i, s in enumerate(scores))


def make_beir(folder: Path, qrels: str, corpus: str | None = None) -> Path:
    """A 2-doc, 2-query BEIR folder with the given qrels body (header added)."""
    docs = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]
    write(folder / "corpus.jsonl", corpus if corpus is not None else "".join(json.dumps(x) + "\n" for x in docs))
    write(folder / "queries.jsonl", '{"_id": "q1", "text": "first?"}\n{"_id": "q2", "text": "second?"}\n')
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n" + qrels)
    return folder


# ---------------------------------------------------------------- real data: published counts

@pytest.mark.parametrize("split,count", [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_stsb_counts_and_range(data_dir, split, count):
    pairs = d.load("stsb", split, data_dir=data_dir)
    assert (len(pairs), pairs.split, pairs.name) == (count, split, "stsb")
    assert all(0.0 <= s <= 5.0 for s in pairs.scores)
    assert all(pairs.sentences1) and all(pairs.sentences2)


SEMEVAL_COUNTS = {
    "sts12": (3108, [750, 750, 459, 750, 399]),
    "sts13": (1500, [189, 750, 561]),
    "sts14": (3750, [450, 300, 750, 750, 750, 750]),
    "sts15": (3000, [375, 750, 375, 750, 750]),
    "sts16": (1186, [254, 249, 230, 244, 209]),
}


@pytest.mark.parametrize("name", list(SEMEVAL_COUNTS))
def test_semeval_counts_per_subset(data_dir, name):
    pairs = d.load(name, data_dir=data_dir)
    total, per_subset = SEMEVAL_COUNTS[name]
    assert len(pairs) == total and len(pairs.subsets) == total
    assert [pairs.subsets.count(s) for s in d.SEMEVAL_SUBSETS[name]] == per_subset
    assert all(0.0 <= s <= 5.0 for s in pairs.scores)


def test_semeval_by_path_skips_license_file(data_dir):
    """STS15's folder has STS.input.answers-forums.LICENSE.txt, which has no gold file: not a subset."""
    pairs = d.load(str(data_dir / "sts12-16" / "STS15"))
    assert len(pairs) == 3000
    assert d.load_semeval_sts(data_dir / "sts12-16", year=2016).name == "sts16"


def test_sts_only_test_split(data_dir):
    one_line_error(lambda: d.load("sts12", "train", data_dir=data_dir), "sts12", "'train'", "allowed: test")


def test_available_sts_sets(data_dir):
    assert d.available_sts_sets(data_dir) == ["stsb", "sts12", "sts13", "sts14", "sts15", "sts16"]  # no SICK here
    assert d.STS_AVG_SETS == ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr")


def test_scored_pairs_stsb_train(data_dir):
    assert len(d.load_scored_pairs("stsb", "train", data_dir=data_dir)) == 5749


@pytest.mark.parametrize("split,count", [("dev", 3256), ("test", 3247), ("all", 6503)])
def test_snli_triplets(data_dir, split, count):
    trip = d.load_triplets("snli", split, data_dir=data_dir)
    assert len(trip) == len(trip.positives) == len(trip.negatives) == count


def test_snli_derived_from_senteval_equals_tsv(data_dir):
    ready = d.load_triplets("snli", "dev", data_dir=data_dir)
    derived = d.load_triplets(str(data_dir / "snli-senteval"), "dev")
    assert (derived.anchors, derived.positives, derived.negatives) == (ready.anchors, ready.positives, ready.negatives)
    assert len(d.load_triplets(str(data_dir / "snli-senteval"), "test")) == 3247


def test_snli_train_absent(data_dir):
    one_line_error(lambda: d.load_triplets("snli", "train", data_dir=data_dir), "snli", "'train'", "dev, test, all")


def test_scifact_test_and_train(data_dir):
    test = d.load("scifact", "test", data_dir=data_dir)
    assert (len(test.corpus), len(test.queries), sum(map(len, test.qrels.values()))) == (5183, 300, 339)
    assert set(test.queries) == set(test.qrels)
    train = d.load("scifact", "train", data_dir=data_dir)
    assert (len(train.queries), sum(map(len, train.qrels.values()))) == (809, 919)
    anserini = d.load_trec_topics(data_dir / "scifact" / "anserini" / "topics.beir-v1.0.0-scifact.test.tsv.gz")
    assert anserini == test.queries
    assert d.load_trec_qrels(data_dir / "scifact" / "anserini" / "qrels.beir-v1.0.0-scifact.test.txt") == test.qrels


def test_retrieval_train_pairs(data_dir):
    pairs = d.load_retrieval_train("scifact", data_dir=data_dir)
    assert len(pairs) == len(pairs.positives) == 919 and pairs.negatives == []


def test_msmarco_topics_and_qrels(data_dir):
    mm = data_dir / "msmarco"
    topics = d.load_trec_topics(mm / "topics.msmarco-passage.dev-subset.txt")
    qrels = d.load_trec_qrels(mm / "qrels.msmarco-passage.dev-subset.txt")
    assert len(topics) == 6980 and len(qrels) == 6980 and set(qrels) <= set(topics)
    assert sum(map(len, qrels.values())) == 7437
    assert topics["2"] == "Androgen receptor define"  # leading space in the file is stripped
    assert len(d.load_trec_topics(mm / "topics.dl19-passage.txt")) == 43
    assert len(d.load_trec_qrels(mm / "qrels.dl19-passage.txt")) == 43  # "Q0" in column 2
    dl20 = d.load_trec_topics(mm / "topics.dl20.txt")  # CRLF line endings
    assert len(dl20) == 200 and not any(t.endswith("\r") for t in dl20.values())
    assert len(d.load_trec_qrels(mm / "qrels.dl20-passage.txt")) == 54


@pytest.mark.parametrize("name", ["msmarco-dev", "dl19", "dl20"])
def test_msmarco_without_collection(data_dir, name):
    one_line_error(lambda: d.load(name, "dev" if name == "msmarco-dev" else "test", data_dir=data_dir),
                   name, "passage collection is missing", "collection.tsv")


def test_msmarco_with_fixture_collection(tmp_path):
    mm = tmp_path / "msmarco"
    write(mm / "collection.tsv", "0\tpassage zero\n1\tpassage one\n2\tpassage two\n")
    write(mm / "topics.dl19-passage.txt", "10\tq ten\n11\tq eleven\n12\tunjudged\n")
    write(mm / "qrels.dl19-passage.txt", "10 Q0 0 3\n10 Q0 2 0\n11 Q0 1 1\n")
    data = d.load("dl19", data_dir=tmp_path)
    assert data.queries == {"10": "q ten", "11": "q eleven"} and data.qrels["10"] == {"0": 3, "2": 0}
    assert len(data.corpus) == 3
    write(mm / "qrels.dl19-passage.txt", "10 Q0 0 3\n11 Q0 7 1\n")
    one_line_error(lambda: d.load("dl19", data_dir=tmp_path), "qrels.dl19-passage.txt line 2", "doc id '7'")


def test_file_checksums_match_manifest(data_dir):
    sums = d.file_checksums("scifact", "test", data_dir=data_dir)
    assert sums == {"scifact/corpus.jsonl.gz": "6dd07592d98253da", "scifact/queries.jsonl": "8ff84a7c903f7229",
                    "scifact/qrels/test.tsv": "68c0ac63f1c24b9e"}
    assert d.file_checksums("stsb", "test", data_dir=data_dir) == {"stsb/sts-test.csv": "affe45928a66ee5a"}
    assert len(d.file_checksums("sts12", "test", data_dir=data_dir)) == 10
    assert d.file_checksums("snli", "dev", data_dir=data_dir) == {
        "snli-senteval/snli_devtest_triplets.tsv.gz": "49584652bbaaffb7"}


def test_data_dir_resolution(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("M2D_DATA_DIR", str(data_dir))
    assert d.data_dir() == data_dir.resolve()
    assert d.data_dir(tmp_path) == tmp_path.resolve()
    one_line_error(lambda: d.data_dir(tmp_path / "nope"), "data_dir:", "nope does not exist", "M2D_DATA_DIR")
    monkeypatch.setenv("M2D_DATA_DIR", str(tmp_path / "gone"))
    one_line_error(d.data_dir, "gone does not exist")
    one_line_error(lambda: d.load("stsb"), "gone does not exist")


# ---------------------------------------------------------------- fixtures: formats and malformed input

def test_sick_fixture(tmp_path):
    path = write(tmp_path / "SICK_test_annotated.txt",
                 "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                 "1\tA dog runs.\tA dog is running.\t4.5\tENTAILMENT\n"
                 "2\tA man cooks.\tA woman sings.\t1.2\tNEUTRAL\n"
                 "3\tKids play.\tChildren are playing.\t5.0\tENTAILMENT\n")
    for pairs in (d.load_sick(path), d.load(str(path))):
        assert pairs.scores == [4.5, 1.2, 5.0] and pairs.split == "test"
        assert pairs.sentences1[1] == "A man cooks." and pairs.sentences2[2] == "Children are playing."
    assert len(d.load("sickr", data_dir=_sick_root(tmp_path, path))) == 3


def _sick_root(tmp_path: Path, path: Path) -> Path:
    """A data dir with ``sick/SICK_test_annotated.txt`` so the ``sickr`` name resolves."""
    root = tmp_path / "root"
    write(root / "sick" / path.name, path.read_text())
    assert d.available_sts_sets(root) == ["sickr"]
    return root


def test_sick_score_range(tmp_path):
    path = write(tmp_path / "s.txt", "pair_ID\tsentence_A\tsentence_B\trelatedness_score\n1\ta\tb\t0.5\n")
    one_line_error(lambda: d.load_sick(path), "s.txt line 2", "relatedness_score 0.5 out of range 1..5")


def test_stsb_nine_columns_and_quotes(tmp_path):
    row = 'g\tf\ty\t0001\t3.0\tHe said "hi.\tShe said "bye".\tsrc\tlic\n'
    pairs = d.load_stsb(write(tmp_path / "sts-dev.csv", row))
    assert pairs.split == "dev" and pairs.sentences1 == ['He said "hi.'] and pairs.scores == [3.0]


def test_stsb_six_columns(tmp_path):
    path = write(tmp_path / "sts-test.csv", stsb_rows("1.0", "2.0") + "a\tb\tc\td\t3.0\tonly one\n")
    one_line_error(lambda: d.load_stsb(path), "sts-test.csv line 3", "expected 7 or 9", "got 6")


def test_stsb_score_out_of_range(tmp_path):
    path = write(tmp_path / "sts-test.csv", stsb_rows(*["1.0"] * 16, "7.2"))
    one_line_error(lambda: d.load_stsb(path), "sts-test.csv line 17: score 7.2 out of range 0..5")


def test_stsb_non_numeric_score(tmp_path):
    path = write(tmp_path / "sts-test.csv", stsb_rows("1.0", "abc"))
    one_line_error(lambda: d.load(str(path)), "sts-test.csv line 2", "score 'abc' is not a number")


def test_empty_files(tmp_path):
    one_line_error(lambda: d.load_stsb(write(tmp_path / "sts-test.csv", "")), "sts-test.csv", "empty")
    one_line_error(lambda: d.load_trec_topics(write(tmp_path / "topics.txt", "\n")), "topics.txt", "empty")
    one_line_error(lambda: d.load_beir(make_beir(tmp_path / "b", "q1\td1\t1\n", corpus="")), "corpus.jsonl", "empty")


def test_bad_utf8_names_line(tmp_path):
    path = tmp_path / "sts-test.csv"
    path.write_bytes(stsb_rows("1.0").encode() + b"g\tf\ty\t1\t2.0\tbad \xff byte\tx\n")
    one_line_error(lambda: d.load_stsb(path), "sts-test.csv line 2", "not valid UTF-8")


def test_bad_gzip_corpus(tmp_path):
    folder = make_beir(tmp_path / "beir", "q1\td1\t1\n")
    (folder / "corpus.jsonl").rename(folder / "corpus.jsonl.gz")  # plain text under a .gz name
    one_line_error(lambda: d.load(str(folder), data_dir=tmp_path), "corpus.jsonl.gz", "not a valid gzip file")


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(b"".join(b"%d\tquery number %d\n" % (i, i) for i in range(2000)))
    path = tmp_path / "topics.tsv.gz"
    path.write_bytes(blob[: len(blob) // 2])
    one_line_error(lambda: d.load_trec_topics(path), "topics.tsv.gz line", "not a valid gzip file")


def test_gzip_corpus_ok(tmp_path):
    folder = make_beir(tmp_path / "beir", "q1\td1\t1\nq1\td2\t0\n")
    raw = (folder / "corpus.jsonl").read_bytes()
    (folder / "corpus.jsonl").unlink()
    (folder / "corpus.jsonl.gz").write_bytes(gzip.compress(raw))
    data = d.load_beir(folder, "test")
    assert data.queries == {"q1": "first?"} and data.qrels == {"q1": {"d1": 1, "d2": 0}}
    assert data.doc_texts() == (["d1", "d2"], ["T1 one", "two"])


def test_malformed_json_line(tmp_path):
    corpus = '{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"\n'
    folder = make_beir(tmp_path / "beir", "q1\td1\t1\n", corpus=corpus)
    one_line_error(lambda: d.load_beir(folder, "test"), "corpus.jsonl line 2", "malformed JSON")


def test_json_missing_id(tmp_path):
    folder = make_beir(tmp_path / "beir", "q1\td1\t1\n", corpus='{"text": "one"}\n')
    one_line_error(lambda: d.load_beir(folder, "test"), "corpus.jsonl line 1", "'_id'")


def test_qrels_unknown_query_id(tmp_path):
    folder = make_beir(tmp_path / "beir", "q1\td1\t1\nq9\td2\t1\n")
    one_line_error(lambda: d.load_beir(folder, "test"), "test.tsv line 3", "query id 'q9'", "queries.jsonl")


def test_qrels_unknown_doc_id(tmp_path):
    folder = make_beir(tmp_path / "beir", "q1\td1\t1\nq2\tdX\t1\n")
    one_line_error(lambda: d.load_beir(folder, "test"), "test.tsv line 3", "doc id 'dX'", "corpus.jsonl")


def test_qrels_bad_score_and_missing_split(tmp_path):
    folder = make_beir(tmp_path / "beir", "q1\td1\thigh\n")
    one_line_error(lambda: d.load_beir(folder, "test"), "test.tsv line 2", "score 'high' is not an integer")
    one_line_error(lambda: d.load_beir(folder, "dev"), "dev.tsv", "'dev' not available", "have: test")


def test_trec_qrels_wrong_fields(tmp_path):
    path = write(tmp_path / "qrels.txt", "1 0 d1 1\n2 0 d2\n")
    one_line_error(lambda: d.load_trec_qrels(path), "qrels.txt line 2", "expected 4 fields")


def test_semeval_line_count_mismatch(tmp_path):
    write(tmp_path / "STS.input.news.txt", "a\tb\nc\td\ne\tf\n")
    write(tmp_path / "STS.gs.news.txt", "1.0\n2.0\n")
    one_line_error(lambda: d.load_semeval_sts(tmp_path), "STS.gs.news.txt", "2 lines", "STS.input.news.txt has 3")


def test_semeval_skips_unscored_and_checks_range(tmp_path):
    write(tmp_path / "STS2016.input.qa.txt", "a\tb\ts\ts\nc\td\ts\ts\ne\tf\ts\ts\n")
    write(tmp_path / "STS2016.gs.qa.txt", "1.0\n\n4\n")
    pairs = d.load(str(tmp_path))
    assert pairs.scores == [1.0, 4.0] and pairs.sentences1 == ["a", "e"] and pairs.subsets == ["qa", "qa"]
    write(tmp_path / "STS2016.gs.qa.txt", "1.0\n\n5.5\n")
    one_line_error(lambda: d.load_semeval_sts(tmp_path), "STS2016.gs.qa.txt line 3", "5.5 out of range 0..5")


def test_unknown_dataset_name(data_dir):
    msg = one_line_error(lambda: d.load("stsx", data_dir=data_dir), "unknown dataset 'stsx'", "stsb", "scifact")
    assert "msmarco-dev" in msg and "hf:" in msg
    one_line_error(lambda: d.load_triplets("mnli", data_dir=data_dir), "unknown triplet set 'mnli'", "snli")


def test_hf_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    start = time.monotonic()
    one_line_error(lambda: d.load("hf:m2d-nonexistent/sts-offline-probe", "test"),
                   "hf:m2d-nonexistent/sts-offline-probe", "HF_HUB_OFFLINE")
    assert time.monotonic() - start < 30


def test_triplet_tsv_and_senteval_fixtures(tmp_path):
    tsv = tmp_path / "t.tsv.gz"
    tsv.write_bytes(gzip.compress(b"split\tanchor\tentailment\tcontradiction\ndev\ta\te\tc\ntest\tb\tf\td\n"))
    trip = d.load_triplets(str(tsv), "test")
    assert (trip.anchors, trip.positives, trip.negatives) == (["b"], ["f"], ["d"])
    one_line_error(lambda: d.load_triplets(str(tsv), "train"), "t.tsv.gz", "no triplets for split 'train'")
    bad = write(tmp_path / "bad.tsv", "anchor\tpos\tneg\n")
    one_line_error(lambda: d.load_triplets(str(bad)), "bad.tsv line 1", "expected header")
    sent = tmp_path / "senteval"
    write(sent / "s1.dev", "P . \nP . \nP . \nQ .\n")
    write(sent / "s2.dev", "e1\nc1\ne2\nx\n")
    write(sent / "labels.dev", "entailment\ncontradiction\nentailment\nneutral\n")
    trip = d.load_triplets(str(sent), "dev")
    assert list(zip(trip.anchors, trip.positives, trip.negatives)) == [("P .", "e1", "c1"), ("P .", "e2", "c1")]
    write(sent / "labels.dev", "entailment\ncontradiction\nmaybe\nneutral\n")
    one_line_error(lambda: d.load_triplets(str(sent), "dev"), "labels.dev line 3", "'maybe'")


def test_msmarco_triples(tmp_path):
    path = write(tmp_path / "triples.tsv", "q\tpos\tneg\nq2\tp2\tn2\n")
    assert len(d.load_msmarco_triples(path)) == 2
    write(path, "q\tpos\tneg\nq2\tp2\n")
    one_line_error(lambda: d.load_msmarco_triples(path), "triples.tsv line 2", "expected 3")
