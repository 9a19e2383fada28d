"""``m2d data``: present and missing datasets of a fixture data dir and of the real one, JSON, and its one error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from matryoshka2d.cli import main
from matryoshka2d.data import REGISTRY
from matryoshka2d.data.origins import ORIGINS

ROOT = Path(__file__).resolve().parents[1]
STSB_ROW = "main-captions\tMSRvid\t2012test\t{i:04d}\t{score}\tA man plays guitar {i}.\tA man plays the guitar {i}."


def fixture_dir(root: Path) -> Path:
    """STS-B test only, SciFact test qrels only (train missing), a stray file."""
    (root / "stsb").mkdir(parents=True)
    (root / "stsb" / "sts-test.csv").write_text("".join(STSB_ROW.format(i=i, score=s) + "\n"
                                                        for i, s in enumerate((1.0, 4.0))))
    (root / "scifact" / "qrels").mkdir(parents=True)
    (root / "scifact" / "corpus.jsonl").write_text('{"_id": "d1", "text": "doc"}\n')
    (root / "scifact" / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    (root / "scifact" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (root / "notes.txt").write_text("mine\n")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_fixture_dir_present_missing_and_checksums(tmp_path, capsys):
    root = fixture_dir(tmp_path / "data")
    rc, out, err = run(capsys, "--data-dir", str(root))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    digest = hashlib.sha256((root / "stsb" / "sts-test.csv").read_bytes()).hexdigest()[:16]
    size = (root / "stsb" / "sts-test.csv").stat().st_size
    at = lines.index(f"stsb (sts) test: present, 1 file, {size:,} bytes")
    assert lines[at + 1] == f"  stsb/sts-test.csv  {size:,}  {digest}"
    at = lines.index("stsb (sts) train: MISSING: stsb/sts-train.csv not found")
    assert lines[at + 1].startswith("  get: http://ixa2.si.ehu.es/stswiki/images/4/48/Stsbenchmark.tar.gz; ")
    assert "license: scores CC BY-SA 4.0" in lines[at + 1]
    assert any(line.startswith("scifact (retrieval) test: present, 3 files") for line in lines)
    assert any(line.startswith("scifact (retrieval) train: MISSING:") and "qrels/train.tsv" in line for line in lines)
    assert any(line.startswith("snli (triplets) dev, test, all: MISSING: snli-senteval/snli_devtest_triplets.tsv.gz")
               for line in lines)
    assert "not read by any named dataset: notes.txt" in lines
    assert lines[-1] == "2 of 18 present"


def test_json_lists_every_named_dataset(tmp_path, capsys):
    root = fixture_dir(tmp_path / "data")
    rc, out, _ = run(capsys, "--data-dir", str(root), "--json")
    report = json.loads(out)
    assert rc == 0 and report["data_dir"] == str(root.resolve()) and report["other"] == ["notes.txt"]
    assert {row["dataset"] for row in report["datasets"]} == set(REGISTRY)
    stsb = {tuple(r["splits"]): r for r in report["datasets"] if r["dataset"] == "stsb"}
    assert stsb[("test",)]["present"] and stsb[("test",)]["files"][0]["path"] == "stsb/sts-test.csv"
    assert stsb[("dev",)]["files"] == [{"path": "stsb/sts-dev.csv", "missing": True}]
    assert "get" in stsb[("dev",)] and "get" not in stsb[("test",)]
    assert report["present"] == sum(r["present"] for r in report["datasets"]) == 2


def test_real_data_dir(data_dir, capsys):
    """The shared data: checksums equal its README's manifest; SICK and the MS MARCO collection are missing."""
    rc, out, err = run(capsys, "--data-dir", str(data_dir))
    assert rc == 0 and err == ""
    for line in ("  stsb/sts-train.csv  901,177  0f71910b59aa1ad9", "  scifact/qrels/test.tsv  5,049  68c0ac63f1c24b9e",
                 "  snli-senteval/snli_devtest_triplets.tsv.gz  272,561  49584652bbaaffb7",
                 "  sts12-16/STS16/STS2016.gs.headlines.txt  1,747  01e33a95996201a6"):
        assert line in out.splitlines(), line
    assert "sickr (sts) test: MISSING: sick/SICK_test_annotated.txt not found" in out
    assert "msmarco-dev (retrieval) dev, test: MISSING: msmarco-dev: the MS MARCO passage collection is missing" in out
    assert "sts16 (sts) test: present, 10 files" in out


def test_default_data_dir_and_a_missing_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("M2D_DATA_DIR", str(fixture_dir(tmp_path / "env")))
    rc, out, _ = run(capsys)
    assert rc == 0 and out.startswith(f"data dir: {(tmp_path / 'env').resolve()}")
    rc, out, err = run(capsys, "--data-dir", str(tmp_path / "nowhere"))
    assert rc == 2 and out == ""
    assert err.strip() == f"m2d: error: data_dir: {tmp_path / 'nowhere'} does not exist; set --data-dir or M2D_DATA_DIR"


def test_every_named_dataset_has_a_documented_origin():
    """The origins ``m2d data`` prints are the ones docs/data.md shows."""
    assert set(ORIGINS) == set(REGISTRY)
    doc = (ROOT / "docs" / "data.md").read_text()
    for name, origin in ORIGINS.items():
        assert f"| `{name}` |" in doc and origin.url in doc and origin.license in doc.replace("`", ""), name
