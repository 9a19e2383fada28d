"""``m2d compare`` and ``m2d pick`` on real ``m2d eval`` output of two tiny BERTs: every number they print or write is
recomputed here from the runs' own grid.csv / latency.json."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from matryoshka2d.cli import main
from matryoshka2d.testing import make_tiny_bert

DIMS = [8, 16, 32]


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("beir") / "mini"
    (root / "qrels").mkdir(parents=True)
    docs = [(f"d{i}", f"title {i}", f"document number {i} about topic {i % 4} and item {i}") for i in range(24)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{k}", "text": f"topic {k} item {k}"}) + "\n"
                                                for k in range(8)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{k}\td{k}\t1\n" for k in range(8)))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, beir_dir) -> dict[str, Path]:
    """Two models' grids (float32, int8, binary) and latency, as ``m2d eval --latency`` writes them."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for seed in (0, 1):
        model = make_tiny_bert(root / f"bert{seed}", num_layers=3, hidden_size=32, seed=seed)
        out[f"run{seed}"] = root / f"run{seed}"
        assert main(["eval", "--model", str(model), "--data", str(beir_dir), "--dims", ",".join(map(str, DIMS)),
                     "--precision", "float32,int8,binary", "--latency", "--out", str(out[f"run{seed}"])]) == 0
    return out


def grid_cells(folder: Path, metric: str) -> dict[tuple[int, int], float]:
    with (folder / "grid.csv").open() as fh:
        return {(int(r["layer"]), int(r["dim"])): float(r["value"]) for r in csv.DictReader(fh) if r["metric"] == metric}


def test_compare_writes_side_by_side_cells_differences_and_winners(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(runs["run0"]), str(runs["run1"]), "--baseline", "run0", "--out", str(out)]) == 0
    a, b = grid_cells(runs["run0"], "ndcg@10"), grid_cells(runs["run1"], "ndcg@10")
    with (out / "cells.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["metric"] == "ndcg@10"]
    assert len(rows) == len(a) == 3 * len(DIMS)
    for r in rows:
        cell = (int(r["layer"]), int(r["dim"]))
        assert float(r["run0"]) == a[cell] and float(r["run1"]) == b[cell]
    with (out / "leaderboard_mini_ndcg_10.csv").open() as fh:
        board = {r["run"]: r for r in csv.DictReader(fh)}
    assert float(board["run0"]["vs_baseline"]) == 0.0
    assert float(board["run1"]["vs_baseline"]) == pytest.approx(np.mean([b[c] - a[c] for c in a]), abs=1e-12)
    wins1 = sum(b[c] > a[c] for c in a)  # ties go to the first run
    assert int(board["run1"]["cells_won"]) == wins1 and int(board["run0"]["cells_won"]) == len(a) - wins1
    sub = [v for (l, _), v in a.items() if l < 3]
    assert float(board["run0"]["sublayer_mean"]) == pytest.approx(np.mean(sub), abs=1e-12)
    for kind in ("runs", "vs_baseline", "best_run"):  # one figure of each per dataset x metric (and precision)
        assert (out / f"mini_ndcg_10_{kind}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"mini_ndcg_10_binary_{kind}.png").is_file()
    assert "run1" in capsys.readouterr().out


def test_compare_bad_baseline_and_source_are_one_line(runs, tmp_path, capsys):
    assert main(["compare", str(runs["run0"]), "--baseline", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--baseline" in err[0] and "run0" in err[0]
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "neither a run folder" in capsys.readouterr().err


def test_pick_returns_the_best_cell_within_budget_and_a_true_frontier(runs, capsys):
    run = runs["run0"]
    latency = json.loads((run / "latency.json").read_text())
    assert latency["hardware"]["processor"] and set(latency["ms_per_batch"]) == {"0", "1", "2", "3"}
    assert latency["num_layers"] == 3 and latency["model"].endswith("bert0")
    assert all(set(by) == {"1", "128"} and all(v > 0 for v in by.values()) for by in latency["ms_per_batch"].values())
    ms = {int(l): by["1"] for l, by in latency["ms_per_batch"].items()}
    size = {"ndcg@10": 4, "ndcg@10/int8": 1, "ndcg@10/binary": 1 / 8}
    cells = [(v, l, d, m) for m in size for (l, d), v in grid_cells(run, m).items()]
    max_ms, max_bytes = sorted(ms.values())[1], 16
    fits = [c for c in cells if ms[c[1]] <= max_ms and math.ceil(c[2] * size[c[3]]) <= max_bytes]
    want = max(fits, key=lambda c: (c[0], -ms[c[1]], -math.ceil(c[2] * size[c[3]])))

    assert main(["pick", str(run), "--metric", "mini/ndcg@10", "--max-latency-ms", str(max_ms),
                 "--max-bytes", str(max_bytes)]) == 0
    printed = capsys.readouterr().out.splitlines()
    best = printed[printed.index(next(l for l in printed if l.startswith("best within"))) + 2].split()
    assert (int(best[0]), int(best[1]), float(best[3])) == (want[1], want[2], pytest.approx(want[0], abs=5e-5))
    with (run / "frontier.csv").open() as fh:
        front = [(float(r["value"]), float(r["latency_ms"]), int(r["bytes"])) for r in csv.DictReader(fh)]
    costs = [(v, ms[l], math.ceil(d * size[m])) for v, l, d, m in cells]
    dominated = lambda x, y: y[0] >= x[0] and y[1] <= x[1] and y[2] <= x[2] and y != x  # noqa: E731
    assert front and all(not any(dominated(f, c) for c in costs) for f in front)
    assert len(front) == sum(not any(dominated(c, o) for o in costs) for c in costs)
    assert (run / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_pick_bad_input_is_one_line(runs, tmp_path, capsys):
    assert main(["pick", str(runs["run0"]), "--max-bytes", "0"]) == 2
    assert "--max-bytes" in capsys.readouterr().err
    assert main(["pick", str(runs["run0"]), "--metric", "mini/nope"]) == 2
    assert "allowed: mini/mrr@10, mini/ndcg@10" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "grid.csv").write_text((runs["run0"] / "grid.csv").read_text())
    assert main(["pick", str(bare)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "m2d eval --latency" in err[0]


# -- nothing lost, nothing faked: bad files and mismatched inputs are refused in one line ------------------------------
def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("m2d: error: "), err
    return err[0]


def test_a_grid_cut_mid_row_is_refused_not_read_short(runs, tmp_path, capsys):
    """A grid.csv whose last write died mid-row was read as a wrong value with the rows after it dropped, exit 0."""
    text = (runs["run0"] / "grid.csv").read_text()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "grid.csv").write_text(text[: len(text) // 2])
    lines = len(text[: len(text) // 2].splitlines())
    for argv in (["compare", str(runs["run0"]), str(cut), "--out", str(tmp_path / "cmp")],
                 ["pick", str(cut), "--latency", str(runs["run0"] / "latency.json"), "--out", str(tmp_path / "pk")]):
        assert main(argv) == 2
        assert f"grid.csv line {lines} is cut short" in one_line(capsys)
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "pk").exists()


def test_grid_reader_is_strict_and_round_trips(runs, tmp_path):
    from matryoshka2d.errors import M2DError
    from matryoshka2d.evaluate.grid import CSV_HEADER, GridResult

    grid = GridResult.from_csv(runs["run0"] / "grid.csv")
    again = GridResult.from_csv(grid.to_csv(tmp_path / "again.csv"))
    assert again.rows == grid.rows and again.layers == [1, 2, 3] and again.dims == DIMS
    header = ",".join(CSV_HEADER) + "\n"
    (tmp_path / "nan.csv").write_text(header + "a,test,m,0,8,nan\n")
    assert math.isnan(GridResult.from_csv(tmp_path / "nan.csv").cell("a", "m", 0, 8))
    for text, needle in [(header, "no rows"), (header + "a,test,m,1,8,0.5", "line 2 is cut short"),
                         (header + "a,test,m,1,8,0.5,7\n", "line 2: expected 6 columns"),
                         (header + "a,test,m,one,8,0.5\n", "line 2: layer 'one'"),
                         (header + "a,test,m,1,8,x\n", "line 2: value 'x'")]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(M2DError, match=re.escape(needle)):
            GridResult.from_csv(tmp_path / "bad.csv")


def test_pick_prices_the_layer_0_grid_that_eval_wrote(beir_dir, tmp_path, capsys):
    """m2d eval --layers 0,... --latency measures layer 0 (the embedding output) too: pick prices every cell."""
    model = make_tiny_bert(tmp_path / "bert", num_layers=2, hidden_size=32)
    run = tmp_path / "run"
    assert main(["eval", "--model", str(model), "--data", str(beir_dir), "--layers", "0,1,2", "--dims", "8,32",
                 "--latency", "--out", str(run)]) == 0
    latency = json.loads((run / "latency.json").read_text())
    assert set(latency["ms_per_batch"]) == {"0", "1", "2"} and latency["num_layers"] == 2
    assert all(ms > 0 for by in latency["ms_per_batch"].values() for ms in by.values())
    capsys.readouterr()
    assert main(["pick", str(run), "--metric", "mini/ndcg@10", "--out", str(tmp_path / "pick")]) == 0
    with (tmp_path / "pick" / "frontier.csv").open() as fh:
        assert all(float(r["latency_ms"]) > 0 for r in csv.DictReader(fh))
    assert "frontier" in capsys.readouterr().out


def test_pick_refuses_another_models_latency(runs, tmp_path, capsys):
    """A latency.json of a model with another layer count, or without a layer of the grid, never prices the grid;
    the same architecture's (run1's) does."""
    latency = json.loads((runs["run0"] / "latency.json").read_text())
    six = tmp_path / "six.json"
    six.write_text(json.dumps({**latency, "num_layers": 6, "model": "/m/six",
                               "ms_per_batch": {str(l): latency["ms_per_batch"]["1"] for l in range(7)}}))
    no_top = tmp_path / "no_top.json"
    no_top.write_text(json.dumps({**latency, "num_layers": None,
                                  "ms_per_batch": {k: v for k, v in latency["ms_per_batch"].items() if k != "3"}}))
    out = tmp_path / "pick"
    assert main(["pick", str(runs["run0"]), "--latency", str(six), "--out", str(out)]) == 2
    assert "is of a 6-layer model (/m/six), the grid is of a 3-layer model" in one_line(capsys)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "grid.csv").write_text((runs["run0"] / "grid.csv").read_text())
    assert main(["pick", str(bare), "--latency", str(no_top), "--out", str(out)]) == 2
    assert "has no layer 3 of the grid" in one_line(capsys)
    assert not out.exists()
    assert main(["pick", str(runs["run0"]), "--latency", str(runs["run1"] / "latency.json"), "--out", str(out)]) == 0
    assert (out / "frontier.csv").is_file()


def test_compare_refuses_runs_without_shared_cells_and_all_nan_runs(runs, tmp_path, capsys):
    header = "dataset,split,metric,layer,dim,value\n"
    for name, rows, needle in [("nan", "mini,test,ndcg@10,1,8,nan\n", "every value of its grid is NaN"),
                               ("other", "nli,test,spearman,1,8,0.5\n", "share no dataset/metric"),
                               ("apart", "mini,test,ndcg@10,9,8,0.5\n", "share no (layer, dim) cell")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "grid.csv").write_text(header + rows)
        assert main(["compare", str(runs["run0"]), str(tmp_path / name), "--out", str(tmp_path / "cmp")]) == 2
        assert needle in one_line(capsys) and not (tmp_path / "cmp").exists()


def test_run_id_lookups_never_create_or_change_a_store(runs, tmp_path, capsys):
    import sqlite3

    missing = tmp_path / "none" / "mlflow.db"
    assert main(["compare", "0" * 32, "--tracking-uri", f"sqlite:///{missing}", "--out", str(tmp_path / "o")]) == 2
    assert "holds no MLflow store" in one_line(capsys) and not missing.parent.exists()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE notes (text TEXT)")
    con.close()
    before = other.read_bytes()
    assert main(["pick", "0" * 32, "--tracking-uri", f"sqlite:///{other}"]) == 2
    assert "other.db holds no MLflow store" in one_line(capsys) and other.read_bytes() == before
