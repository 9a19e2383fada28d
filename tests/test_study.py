"""Reproduction studies: the bootstrap's exact resampled Spearman, row expansion and resolution, claims' verdicts,
per-item evaluation outputs, fixed-document evaluation, and hard-negative mining (tiny BERT, real files)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from matryoshka2d.study.bootstrap import Component, gold_ranks, replicates
from matryoshka2d.errors import M2DError
from matryoshka2d.study.report import select_cells, verdict
from matryoshka2d.study.spec import expand_rows, load_study, row_config


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    from matryoshka2d.testing import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", num_layers=3, hidden_size=32)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bert_dir):
    from matryoshka2d.encoder import load_encoder

    return load_encoder(str(tiny_bert_dir), device="cpu")


@pytest.fixture(scope="module")
def sts_small(data_dir):
    from matryoshka2d import data
    from matryoshka2d.data.types import STSPairs

    full = data.load("stsb", split="test", data_dir=data_dir)
    return STSPairs("stsb", "test", full.sentences1[:200], full.sentences2[:200], full.scores[:200])


@pytest.fixture(scope="module")
def scifact_small(data_dir):
    """40 SciFact test queries, their relevant docs and 200 others."""
    import random

    from matryoshka2d import data
    from matryoshka2d.data.types import RetrievalSet

    full = data.load("scifact", split="test", data_dir=data_dir)
    qids = sorted(full.qrels)[:40]
    relevant = {d for q in qids for d in full.qrels[q]}
    keep = relevant | set(random.Random(0).sample(sorted(set(full.corpus) - relevant), 200))
    return RetrievalSet("scifact", "test", {d: full.corpus[d] for d in full.corpus if d in keep},
                        {q: full.queries[q] for q in qids}, {q: full.qrels[q] for q in qids})


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory, data_dir):
    """A small BEIR folder (written here from SciFact: 30 train queries, their docs and 100 others)."""
    import random

    from matryoshka2d import data

    full = data.load("scifact", split="train", data_dir=data_dir)
    qids = sorted(full.qrels)[:30]
    relevant = {d for q in qids for d in full.qrels[q]}
    keep = sorted(relevant | set(random.Random(0).sample(sorted(set(full.corpus) - relevant), 100)))
    folder = tmp_path_factory.mktemp("beir") / "mini"
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for d in keep:
            fh.write(json.dumps({"_id": d, "title": full.corpus[d]["title"], "text": full.corpus[d]["text"]}) + "\n")
    with (folder / "queries.jsonl").open("w") as fh:
        for q in qids:
            fh.write(json.dumps({"_id": q, "text": full.queries[q]}) + "\n")
    with (folder / "qrels" / "train.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d, g in full.qrels[q].items():
                fh.write(f"{q}\t{d}\t{g}\n")
    return folder


# -- bootstrap ---------------------------------------------------------------------------------------------
def test_resampled_spearman_equals_scipy_on_the_materialised_resample():
    """Counts over items (duplicates) and tied gold scores: rho equals scipy's on the expanded resample."""
    rng = np.random.default_rng(0)
    n = 200
    gold = rng.integers(0, 6, n).astype(float)  # many ties, like STS gold scores
    preds = rng.normal(size=(3, n)) + gold[None] * np.array([[0.0], [0.5], [2.0]])
    comp = Component(preds, gold)
    np.testing.assert_allclose(comp.value(np.ones(n)), [spearmanr(p, gold).statistic for p in preds], atol=1e-12)
    for _ in range(5):
        idx = rng.integers(0, n, n)
        counts = np.bincount(idx, minlength=n)
        want = [spearmanr(p[idx], gold[idx]).statistic for p in preds]
        np.testing.assert_allclose(comp.value(counts), want, atol=1e-10)
    ranks = gold_ranks(gold, np.ones(n))
    np.testing.assert_allclose(ranks, __import__("scipy").stats.rankdata(gold))


def test_replicates_are_paired_and_per_query_means():
    """Row 0 is the full-data value; a vector compared with itself has a zero difference on every resample."""
    rng = np.random.default_rng(1)
    scores = rng.random((2, 50))
    reps = replicates([Component(np.stack([scores[0], scores[0], scores[1]]))], [1.0], 200, seed=3)
    assert reps.shape == (201, 3)
    np.testing.assert_allclose(reps[0], [scores[0].mean(), scores[0].mean(), scores[1].mean()])
    np.testing.assert_allclose(reps[:, 0], reps[:, 1])
    assert reps[1:, 2].std() > 0


def test_verdicts_and_cell_sets():
    assert verdict("greater", 0.01, 0.03) == "holds"
    assert verdict("greater", -0.01, 0.03) == "inconclusive"
    assert verdict("greater", -0.03, -0.01) == "does not hold"
    assert verdict("not_greater", 0.01, 0.02) == "does not hold"
    assert verdict("not_greater", -0.01, 0.02) == "holds"
    cells = {(l, d) for l in (1, 2, 3) for d in (8, 128, 384)}
    assert select_cells("sublayer_dims>=128", cells, set()) == [(1, 128), (1, 384), (2, 128), (2, 384)]
    assert select_cells("dims<128", cells, set()) == [(1, 8), (2, 8), (3, 8)]
    assert select_cells("own", cells, {(2, 384), (9, 9)}) == [(2, 384)]
    with pytest.raises(M2DError, match="unknown cell set"):
        select_cells("layers<3", cells, set())


# -- studies: rows and their resolution --------------------------------------------------------------------
def test_sts_rows_expand_per_layer_and_resolve_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("M2D_HOME", str(tmp_path))
    study = load_study("sts", "smoke", sets=["train.max_steps=3"])
    rows = expand_rows(study)
    labels = [r.label for r in rows]
    assert labels[:4] == ["full", "separate@1", "separate@2", "separate@3"]  # tiny BERT: 4 blocks
    sep = next(r for r in rows if r.label == "separate@2")
    cfg = row_config(study, sep)
    assert cfg.method.pairs == [(2, "H")] and cfg.method.truncate_model and cfg.method.pairs_reference is None
    assert cfg.train.max_steps == 3  # --set beats the scale (4)
    assert cfg.eval.datasets == ["sts-avg"] and cfg.eval.split == "test"
    v2 = row_config(study, next(r for r in rows if r.label == "v2"))
    assert v2.method.name == "v2" and v2.model.max_length == 32


def test_retrieval_separate_rows_scale_the_diagonal(tmp_path, monkeypatch):
    monkeypatch.setenv("M2D_HOME", str(tmp_path))
    rows = expand_rows(load_study("retrieval", "smoke"))
    seps = [r for r in rows if r.group == "separate"]
    assert [r.own for r in seps] == [[(1, 4)], [(1, 8)], [(2, 16)], [(3, 32)], [(3, 64)]]  # (2,32)..(10,512) of 12x768
    fixed = row_config(load_study("retrieval", "smoke"), next(r for r in rows if r.label == "fixed-doc"))
    assert fixed.method.fixed_documents and fixed.eval.fixed_documents and fixed.method.task_loss == "ce"


@pytest.mark.parametrize("args, needle", [
    (["--study", "nope"], "--study: nope is neither"),
    (["--study", "sts", "--scale", "cpu", "--rows", "v9"], "--rows: unknown v9"),
    (["--study", "retrieval", "--data", "nq"], "--data: 'nq' is not a dataset option"),
    (["--study", "sts", "--seeds", "0"], "--seeds must be >= 1"),
    (["--check", "/nonexistent"], "not a finished study run"),
])
def test_bad_study_input_is_one_line(args, needle, capsys, tmp_path, monkeypatch):
    from matryoshka2d.sweep.reproduce import main

    monkeypatch.setenv("M2D_HOME", str(tmp_path))
    assert main(args + (["--dry-run"] if "--check" not in args else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_bad_study_file_is_one_line(tmp_path, capsys):
    from matryoshka2d.sweep.reproduce import main

    bad = tmp_path / "s.yaml"
    bad.write_text("name: s\nmetric: a/b\nobjective: a/b/grid_mean\nscales: {cpu: {}}\nrows: {x: {preset: v2, sett: {}}}\n")
    assert main(["--study", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "row x" in err and "unknown: sett" in err and len(err.splitlines()) == 1


def test_gpu_scale_dry_run_resolves_every_row(tmp_path, monkeypatch, capsys):
    """The gpu scale names bert-base-uncased (not offline here): with the model swapped, every row resolves. The sts
    gpu scale trains on AllNLI, absent here: the dry run refuses it as the run would, naming data.train."""
    from matryoshka2d.sweep.reproduce import main
    from matryoshka2d.testing import make_tiny_bert

    monkeypatch.setenv("M2D_HOME", str(tmp_path))
    model = make_tiny_bert(tmp_path / "bert", num_layers=12, hidden_size=192, num_heads=4, intermediate_size=64)
    gpu = ["--scale", "gpu", "--dry-run", "--set", f"model.name={model}"]
    assert main(["--study", "sts", *gpu]) == 2
    assert "row full: data.train: unknown dataset 'all-nli-triplets.tsv.gz'" in capsys.readouterr().err
    assert main(["--study", "sts", *gpu, "--set", "data.train=snli"]) == 0
    assert main(["--study", "retrieval", *gpu]) == 0
    out = capsys.readouterr().out
    assert "separate@11" in out and "separate@6x32" in out and "steps 4400 batch 128" in out


def test_smoke_dry_run_notes_claims_a_small_model_cannot_check(tmp_path, monkeypatch, capsys):
    """tiny-bert has no dim >= 128: C5 will be 'not run' at smoke scale, said up front, not refused (CI runs it)."""
    from matryoshka2d.sweep.reproduce import main

    monkeypatch.setenv("M2D_HOME", str(tmp_path))
    assert main(["--study", "sts", "--scale", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "note: claim C5: no cell of 'sublayer_dims>=128' is shared by rows v2-fulldim and v2" in out


# -- finished runs: --analyse, --write-expected, --check (fake runs of the catalogue's study "mini") --------------
@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The catalogue's valid study on a 6 x 32 BERT, and a complete fake run of it."""
    from catalogue_study import dump, fake_run, mini_study
    from matryoshka2d.testing import make_tiny_bert

    root = tmp_path_factory.mktemp("mini")
    model = make_tiny_bert(root / "bert6", num_layers=6, hidden_size=32)
    study = dump(root / "mini.yaml", mini_study(str(model)))
    return {"root": root, "study": study, "run": fake_run(root / "run", study)}


def _reproduce(*args) -> int:
    from matryoshka2d.sweep.reproduce import main

    return main([str(a) for a in args])


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reproduce: error: "), err
    return err[0]


def _cells(path, group: str) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())["smoke"]["cells"].get(group)


def test_catalogue_fixtures_are_valid(mini, capsys, data_dir):
    """The catalogue's broken studies and runs are each one change to these: the valid ones pass every check."""
    from catalogue_study import dump, expected_entry

    assert _reproduce("--study", mini["study"], "--scale", "smoke", "--data-dir", data_dir, "--dry-run") == 0
    assert "every check of the run passed" in capsys.readouterr().out
    good = dump(mini["root"] / "good.yaml", {"smoke": expected_entry()})
    assert _reproduce("--check", mini["run"], "--expected", good) == 0
    assert "all 28 cells within +-0.005" in capsys.readouterr().out


def test_write_expected_merges_by_row_and_check_needs_every_row(mini, tmp_path, capsys):
    """A --rows run replaces its rows of the entry and keeps the others; --check of that run then names the rows it
    lacks (exit 1); --replace-entry records a run alone."""
    from catalogue_study import fake_run

    expected = tmp_path / "mini.yaml"
    assert _reproduce("--write-expected", mini["run"], "--expected", expected) == 0
    assert "recorded rows full, v2, separate of mini (smoke)" in capsys.readouterr().out
    before = _cells(expected, "separate")
    part = fake_run(tmp_path / "part", mini["study"], labels=("full", "v2"), shift=0.5)
    assert _reproduce("--write-expected", part, "--expected", expected) == 0
    assert "kept rows separate" in capsys.readouterr().out
    assert _cells(expected, "separate") == before  # not dropped
    assert _cells(expected, "full")["stsb/spearman"]["L1"] == [0.608, 0.632]  # 0.1 + 0.008 + 0.5: this run's
    import yaml

    entry = yaml.safe_load(expected.read_text())["smoke"]
    assert set(entry["config_hash"]) == {"full", "v2", "separate@1", "separate@2"}
    assert _reproduce("--check", part, "--expected", expected) == 1
    out = capsys.readouterr().out
    assert "the run lacks rows separate of mini.yaml (smoke)" in out and "within" not in out
    assert _reproduce("--check", mini["run"], "--expected", expected) == 1  # full and v2 moved by 0.5
    assert "full stsb/spearman L1 d8: expected 0.6080, got 0.1080" in capsys.readouterr().out
    assert _reproduce("--write-expected", part, "--expected", expected, "--replace-entry") == 0
    assert _cells(expected, "separate") is None and _reproduce("--check", part, "--expected", expected) == 0
    assert "all 24 cells within" in capsys.readouterr().out


def test_write_expected_refuses_incomplete_or_empty_runs(mini, tmp_path, capsys):
    """A run with a lost trial, or no finished trial at all, is never recorded; the file stays as it was."""
    import shutil

    from catalogue_study import fake_run

    expected = tmp_path / "mini.yaml"
    assert _reproduce("--write-expected", mini["run"], "--expected", expected) == 0
    capsys.readouterr()
    text = expected.read_text()
    lost = fake_run(tmp_path / "lost", mini["study"], shift=0.5)
    shutil.rmtree(sorted((lost / "trials").iterdir())[0])
    empty = fake_run(tmp_path / "empty", mini["study"])
    for trial in (empty / "trials").iterdir():
        (trial / "grid.csv").unlink()
    for run, needle in ((lost, "3 of 4 trials finished (missing: full (0 of 1))"), (empty, "0 of 4 trials finished")):
        for flag in ("--write-expected", "--replace-entry"):
            extra = ["--replace-entry"] if flag == "--replace-entry" else []
            assert _reproduce("--write-expected", run, "--expected", expected, *extra) == 2
            assert needle in _one_error(capsys)
            assert expected.read_text() == text
        assert _reproduce("--analyse", run) == 2  # as the run itself: no tables from part of a study
        assert "no tables from part of a study" in _one_error(capsys)
        assert not (run / "tables").exists()


def test_check_refuses_an_empty_entry(mini, tmp_path, capsys):
    """An entry without a cell would pass any run ("all 0 cells within"): --check refuses it in one line."""
    from catalogue_study import dump, expected_entry

    empty = dump(tmp_path / "empty.yaml", {"smoke": {**expected_entry(), "dims": [], "cells": {}}})
    assert _reproduce("--check", mini["run"], "--expected", empty) == 2
    assert "the smoke entry of" in _one_error(capsys)


def test_analyse_writes_tables_and_claims_of_a_complete_run(mini, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mini["run"], run)
    assert _reproduce("--analyse", run, "--bootstrap", "100") == 0
    claims = json.loads((run / "tables" / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["C1"] and claims[0]["verdict"] in ("holds", "does not hold", "inconclusive")
    assert (run / "tables" / "stsb_spearman.csv").read_text().count("\n") == 1 + 12 + 12 + 4


# -- per-item evaluation, fixed documents --------------------------------------------------------------------
def test_per_item_values_reproduce_every_cell(tiny_encoder, sts_small, scifact_small):
    from matryoshka2d.evaluate import evaluate_grid
    from matryoshka2d.evaluate.sts import spearman

    res = evaluate_grid(tiny_encoder, [sts_small, scifact_small], [1, 2], [8, 16], per_item=True)
    for layer in (1, 2):
        for dim in (8, 16):
            rho = spearman(res.items[f"{sts_small.name}/cosine/{layer}/{dim}"], res.items[f"{sts_small.name}/gold"])
            assert abs(rho - res.cell(sts_small.name, "spearman", layer, dim)) < 1e-6
            for metric in ("ndcg@10", "mrr@10", "recall@100"):
                per_query = res.items[f"{scifact_small.name}/{metric}/{layer}/{dim}"]
                assert len(per_query) == len(res.items[f"{scifact_small.name}/ids"])
                assert abs(per_query.mean() - res.cell(scifact_small.name, metric, layer, dim)) < 1e-6


def test_fixed_documents_score_queries_against_last_layer_documents(tiny_encoder, scifact_small):
    """(l, d) with fixed documents = queries of layer l against documents of layer L, computed by hand."""
    from matryoshka2d.evaluate import evaluate_grid
    from matryoshka2d.evaluate.retrieval import build_run, prepare, retrieval_metrics, search

    L = tiny_encoder.num_layers
    res = evaluate_grid(tiny_encoder, [scifact_small], [1, L], [8], fixed_documents=True)
    plain = evaluate_grid(tiny_encoder, [scifact_small], [1, L], [8])
    qids, qtexts, doc_ids, doc_texts, qrels = prepare(scifact_small)
    q = torch.nn.functional.normalize(tiny_encoder.encode_layers(qtexts, [1])[0][:, :8], dim=-1)
    d = torch.nn.functional.normalize(tiny_encoder.encode_layers(doc_texts, [L])[0][:, :8], dim=-1)
    s, i = search(q, d, 101)
    want = retrieval_metrics(qrels, build_run(qids, doc_ids, s, i, 100))
    assert abs(res.cell(scifact_small.name, "ndcg@10", 1, 8) - want["ndcg@10"]) < 1e-6
    assert res.cell(scifact_small.name, "ndcg@10", L, 8) == plain.cell(scifact_small.name, "ndcg@10", L, 8)
    assert res.cell(scifact_small.name, "ndcg@10", 1, 8) != plain.cell(scifact_small.name, "ndcg@10", 1, 8)


# -- hard negatives ----------------------------------------------------------------------------------------
def test_mined_negatives_exclude_positives_are_cached_and_recorded(tiny_bert_dir, beir_dir, tmp_path, monkeypatch):
    from matryoshka2d.config import load_config
    from matryoshka2d.train.mining import ensure_mined, load_mined, mined_path

    monkeypatch.setenv("M2D_HOME", str(tmp_path / "home"))
    cfg = load_config("v2-retrieval", {"model": {"name": str(tiny_bert_dir)},
                                       "data": {"data_dir": str(beir_dir.parent), "train": beir_dir.name,
                                                "hard_negatives": 2, "mine_top_k": 5}})
    path = ensure_mined(cfg)
    columns = load_mined(path)
    assert len(columns) == 4  # query, positive, 2 negatives
    meta = json.loads(path.with_suffix("").with_suffix(".json").read_text())
    assert meta["miner"] == str(tiny_bert_dir) and meta["top_k"] == 5 and meta["rows"] == len(columns[0])
    positives_of: dict[str, set] = {}
    for query, pos in zip(columns[0], columns[1]):
        positives_of.setdefault(query, set()).add(pos)
    for row in zip(*columns):
        assert not set(row[2:]) & positives_of[row[0]], "a positive of the query was mined as its negative"
    stamp = path.stat().st_mtime_ns
    assert ensure_mined(cfg) == path and path.stat().st_mtime_ns == stamp  # cached, not mined again
    other = cfg.model_copy(deep=True)
    other.data.mine_top_k = 6
    assert mined_path(other)[0] != path  # anything that decides the negatives names the file
    with gzip.open(path, "rt") as fh:
        assert fh.readline().rstrip("\n").split("\t") == ["query", "positive", "negative_1", "negative_2"]
