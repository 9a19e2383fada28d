"""``m2d eval``: output files on a tiny model; bad input is one stderr line and exit code 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matryoshka2d.cli import main
from matryoshka2d.testing import make_tiny_bert

HEADER = ["dataset", "split", "metric", "layer", "dim", "value"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("cli") / "bert", num_layers=3, hidden_size=32)


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    """A 3-query, 6-doc BEIR folder, to exercise a retrieval set given by path."""
    root = tmp_path_factory.mktemp("beir") / "mini"
    (root / "qrels").mkdir(parents=True)
    docs = [("d%d" % i, f"title {i}", f"document number {i} about topic {i % 3}") for i in range(6)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{k}", "text": f"topic {k}"}) + "\n" for k in range(3)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{k}\td{k}\t1\n" for k in range(3)))
    return root


def test_eval_writes_grid_timings_heatmaps(tiny_dir, data_dir, beir_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["eval", "--model", str(tiny_dir), "--data", "stsb", "--data", str(beir_dir), "--data-dir",
               str(data_dir), "--dims", "8,16,32", "--batch-size", "32", "--out", str(out)])
    assert rc == 0
    with (out / "grid.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == HEADER
    stsb = [r for r in rows[1:] if r[0] == "stsb"]
    assert len(stsb) == 3 * 3 and {r[2] for r in stsb} == {"spearman"} and {r[1] for r in stsb} == {"test"}
    assert sorted({int(r[3]) for r in stsb}) == [1, 2, 3] and sorted({int(r[4]) for r in stsb}) == [8, 16, 32]
    retrieval = [r for r in rows[1:] if r[0] != "stsb"]
    assert len(retrieval) == 3 * 3 * 3
    timings = json.loads((out / "timings.json").read_text())
    assert all(timings[k] >= 0 for k in ("encode_s", "score_s", "total_s"))
    pngs = sorted(p.name for p in out.glob("heatmap_*.png"))
    assert "heatmap_stsb_spearman.png" in pngs and len(pngs) == 4
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    printed = capsys.readouterr().out
    assert "stsb spearman" in printed and "layer" in printed


@pytest.mark.parametrize("flags, needle", [
    (["--dims", "8,64"], "dim 64"),
    (["--layers", "1,5"], "layer 5"),
    (["--data", "no-such-set"], "no-such-set"),
])
def test_eval_bad_input_is_one_line_exit_2(tiny_dir, data_dir, tmp_path, capsys, flags, needle):
    args = ["eval", "--model", str(tiny_dir), "--data-dir", str(data_dir), "--out", str(tmp_path / "o")]
    if "--data" not in flags:
        args += ["--data", "stsb"]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("m2d: error: ") and needle in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_eval_module_entry_point(tiny_dir, data_dir, tmp_path):
    """The real process: no traceback, one stderr line, exit code 2."""
    proc = subprocess.run([sys.executable, "-m", "matryoshka2d.cli", "eval", "--model", str(tiny_dir), "--data", "stsb",
                           "--data-dir", str(data_dir), "--dims", "1000", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("m2d: error: ") and "dim 1000" in lines[0], proc.stderr
