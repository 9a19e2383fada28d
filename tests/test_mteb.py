"""``m2d mteb``: MTEB's own evaluators on every (layer, dim) cell equal the grid's cells, each text encoded once.

Real data (STS-B test, SciFact test, capped), a tiny random BERT, MTEB's evaluators and result files, an MLflow
SQLite store in tmp_path; all in-process.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from matryoshka2d import data, evaluate
from matryoshka2d.cli import main
from matryoshka2d.encoder import load_encoder
from matryoshka2d.evaluate import evaluate_grid
from matryoshka2d.testing import make_tiny_bert
from matryoshka2d.train.loop import cap_eval_set

pytest.importorskip("mteb")  # the extra is in .[test]; without it only this module is skipped

LAYERS, DIMS = [1, 2, 3], [8, 32]
CELLS = [(layer, dim) for layer in LAYERS for dim in DIMS]  # a lower layer and a truncated dim among them


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("mteb") / "tiny", num_layers=3, hidden_size=32)


@pytest.fixture(scope="module")
def encoder(tiny):
    return load_encoder(str(tiny), device="cpu")


def _sets(data_dir: Path, sts_pairs: int, queries: int) -> list:
    """STS-B test's first pairs; SciFact test's first queries with their judged documents + 10 x as many others."""
    return [cap_eval_set(data.load("stsb", "test", data_dir), sts_pairs),
            cap_eval_set(data.load("scifact", "test", data_dir), queries)]


@pytest.fixture(scope="module")
def counted(encoder, data_dir, tmp_path_factory):
    """MTEB over the 6 cells on 200 STS-B pairs and 30 SciFact queries (~370 documents), with a forward hook on the
    transformer counting the texts it runs on; and the grid of the same sets."""
    from matryoshka2d.evaluate import mteb_cells

    sets = _sets(data_dir, 200, 30)
    seen: list[int] = []
    hook = encoder.module.register_forward_hook(lambda m, args, kwargs, out: seen.append(len(kwargs["input_ids"])),
                                                with_kwargs=True)
    try:
        done = mteb_cells.evaluate_cells(encoder, [mteb_cells.local_task(ds) for ds in sets], LAYERS, DIMS,
                                         tmp_path_factory.mktemp("mteb-lib"), "tiny", batch_size=32)
    finally:
        hook.remove()
    return sets, done, sum(seen), evaluate_grid(encoder, sets, LAYERS, DIMS, show_progress=False)


@pytest.fixture(scope="module")
def run(tiny, data_dir, tmp_path_factory):
    """One ``m2d mteb`` run (10 STS-B pairs, 10 SciFact queries): its folder and MLflow store."""
    root = tmp_path_factory.mktemp("mteb-run")
    db = root / "mlflow.db"
    argv = ["mteb", "--model", str(tiny), "--task", "stsb", "--task", "scifact", "--data-dir", str(data_dir),
            "--dims", ",".join(map(str, DIMS)), "--max-examples", "10", "--tracking-uri", f"sqlite:///{db}",
            "--out", str(root / "out")]
    assert main(argv) == 0
    return root / "out", db


def _rows(path: Path) -> dict[tuple[str, int, int], float]:
    with path.open() as fh:
        return {(r["dataset"], int(r["layer"]), int(r["dim"])): float(r["value"]) for r in csv.DictReader(fh)}


def _assert_equal_to_grid(mteb_cell, grid, similarity: str = "cos") -> None:
    """MTEB's main scores against the grid's cells: Spearman to 1e-6, nDCG@10 to 1e-4 (MTEB rounds retrieval
    scores to 5 decimals)."""
    for layer, dim in CELLS:
        assert mteb_cell("stsb", layer, dim) == pytest.approx(grid.cell("stsb", "spearman", layer, dim), abs=1e-6)
        assert mteb_cell("scifact", layer, dim) == pytest.approx(grid.cell("scifact", "ndcg@10", layer, dim), abs=1e-4)


def test_mteb_main_scores_equal_the_grid(counted):
    _, done, _, grid = counted
    main_score = {"stsb": "spearman", "scifact": "ndcg_at_10"}
    _assert_equal_to_grid(lambda ds, layer, dim: done.grid.cell(ds, main_score[ds], layer, dim), grid)
    # every cell its own slice: six different values, not one embedding scored six times
    assert len({round(done.grid.cell("stsb", "spearman", *c), 6) for c in CELLS}) == len(CELLS)


def test_each_text_is_encoded_once_for_every_cell(counted):
    from matryoshka2d.evaluate import retrieval, sts

    (pairs, rset), done, forwarded, _ = counted
    _, queries, _, docs, _ = retrieval.prepare(rset)
    unique = len(set(sts.unique_sentences(pairs)[0]) | set(queries) | set(docs))
    assert forwarded == done.encoded == unique  # six cells, one forward per text
    assert done.grid.timings["cells"] == len(CELLS) and done.grid.timings["texts_encoded"] == unique


def test_the_command_matches_the_grid_and_writes_mteb_files(run, encoder, tiny, data_dir):
    from mteb import ResultCache

    from matryoshka2d.evaluate.mteb_cells import model_revision

    out, _ = run
    rows = _rows(out / "grid.csv")
    assert set(rows) == {(ds, layer, dim) for ds in ("stsb", "scifact") for layer, dim in CELLS}
    _assert_equal_to_grid(lambda ds, layer, dim: rows[ds, layer, dim],
                          evaluate_grid(encoder, _sets(data_dir, 10, 10), LAYERS, DIMS, show_progress=False))
    revision = model_revision(str(tiny))
    cache = ResultCache(out)
    for layer, dim in CELLS:
        folder = out / "results" / f"tiny__L{layer}-d{dim}" / revision
        assert {"stsb.json", "scifact.json", "model_meta.json"} <= {p.name for p in folder.iterdir()}
        meta = json.loads((folder / "model_meta.json").read_text())
        assert (meta["name"], meta["embed_dim"], meta["similarity_fn_name"]) == (f"tiny/L{layer}-d{dim}", dim, "cosine")
        for task, main_score in (("stsb", "spearman"), ("scifact", "ndcg_at_10")):
            result = cache.load_task_result(task, f"tiny/L{layer}-d{dim}", revision, raise_if_not_found=True)
            scores = result.scores["test"][0]
            assert scores["main_score"] == scores[main_score] == pytest.approx(rows[task, layer, dim], abs=1e-6)


def test_the_run_is_logged_to_mlflow(run):
    from mlflow import MlflowClient

    out, db = run
    mlf = MlflowClient(f"sqlite:///{db}")
    (logged,) = mlf.search_runs([mlf.get_experiment_by_name("m2d-mteb").experiment_id])
    assert logged.info.status == "FINISHED"
    rows = _rows(out / "grid.csv")
    assert logged.data.metrics["stsb/spearman/cell/L01_D0008"] == pytest.approx(rows["stsb", 1, 8])
    assert logged.data.metrics["scifact/ndcg_at_10/cell/L03_D0032"] == pytest.approx(rows["scifact", 3, 32])
    assert "stsb/spearman/grid_mean" in logged.data.metrics
    assert {a.path for a in mlf.list_artifacts(logged.info.run_id)} == {"grid.csv", "results"}
    cells = {a.path for a in mlf.list_artifacts(logged.info.run_id, "results")}
    assert len(cells) == len(CELLS) and "results/tiny__L2-d8" in cells


def test_dot_cells_equal_the_grids_dot_scoring(encoder, data_dir, tmp_path):
    from matryoshka2d.evaluate import mteb_cells

    sets = _sets(data_dir, 10, 10)
    done = mteb_cells.evaluate_cells(encoder, [mteb_cells.local_task(ds) for ds in sets], LAYERS, DIMS, tmp_path,
                                     "tiny", similarity="dot")
    main_score = {"stsb": "spearman", "scifact": "ndcg_at_10"}
    _assert_equal_to_grid(lambda ds, layer, dim: done.grid.cell(ds, main_score[ds], layer, dim),
                          evaluate_grid(encoder, sets, LAYERS, DIMS, similarity="dot", show_progress=False))


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("m2d: error: "), err
    return err[0]


def test_an_unknown_task_is_one_line_naming_what_is_allowed(tiny, tmp_path, capsys):
    line = _refused(["mteb", "--model", str(tiny), "--task", "STSBenchmrk", "--no-mlflow", "--out",
                     str(tmp_path / "out")], capsys)
    assert "task: unknown 'STSBenchmrk'" in line and "stsb" in line and "scifact" in line
    assert "an MTEB task name" in line and "did you mean 'STSBenchmark'?" in line
    assert not (tmp_path / "out").exists()


def test_an_mteb_task_without_cached_data_is_one_line(tiny, tmp_path, capsys):
    """Offline (HF_HUB_OFFLINE=1, tests/conftest.py) with STSBenchmark not in the Hugging Face cache."""
    line = _refused(["mteb", "--model", str(tiny), "--task", "STSBenchmark", "--no-mlflow", "--out",
                     str(tmp_path / "out")], capsys)
    assert "task STSBenchmark: cannot load its data" in line and "Hugging Face cache" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--dims", "8,64"], "--dims: dim 64 is out of range"),
    (["--layers", "7"], "--layers: layer 7 is out of range"),
    (["--max-examples", "0"], "--max-examples"),
    (["--task", "stsb", "--split", "nope"], "stsb: split 'nope' not available"),
])
def test_bad_flags_are_one_line(tiny, tmp_path, capsys, flags, needle):
    argv = ["mteb", "--model", str(tiny), "--no-mlflow", "--out", str(tmp_path / "out"), *flags]
    line = _refused(argv if "--task" in flags else argv + ["--task", "stsb"], capsys)
    assert needle in line
    assert not (tmp_path / "out").exists()


def test_without_the_mteb_extra_it_says_how_to_install_it(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # import mteb now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "matryoshka2d.evaluate.mteb_cells", raising=False)
    monkeypatch.delattr(evaluate, "mteb_cells", raising=False)  # ``from .evaluate import mteb_cells`` reads this first
    line = _refused(["mteb", "--model", str(tiny), "--task", "stsb", "--no-mlflow", "--out", str(tmp_path / "o")],
                    capsys)
    assert "pip install 'matryoshka2d[mteb]'" in line
