"""``m2d export``: a plain SentenceTransformer folder that reproduces one grid cell; bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from matryoshka2d import data
from matryoshka2d.cells import truncate
from matryoshka2d.cli import main
from matryoshka2d.data.types import STSPairs
from matryoshka2d.encoder import load_encoder
from matryoshka2d.evaluate import evaluate_grid
from matryoshka2d.evaluate.sts import pair_cosines, spearman, unique_sentences
from matryoshka2d.testing import make_tiny_bert


@pytest.fixture(scope="module")
def sts100(data_dir) -> STSPairs:
    full = data.load("stsb", split="test", data_dir=data_dir)
    return STSPairs("stsb", "test", full.sentences1[:100], full.sentences2[:100], full.scores[:100])


@pytest.fixture(scope="module", params=["mean", "cls"])
def tiny_dir(request, tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp(request.param) / "bert", num_layers=3, hidden_size=32,
                          pooling=request.param, seed=1, initializer_range=0.5)  # CLS cosines that vary


def test_export_reproduces_the_grid_cell(tiny_dir, data_dir, sts100, tmp_path, capsys):
    from safetensors import safe_open
    from sentence_transformers import SentenceTransformer

    layer, dim, out = 2, 16, tmp_path / "cell"
    assert main(["export", str(tiny_dir), "--layer", str(layer), "--dim", str(dim), "--out", str(out),
                 "--bench", "32", "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "vs full" in printed and "sentences/s" in printed
    texts, idx1, idx2 = unique_sentences(sts100)
    got = SentenceTransformer(str(out), device="cpu").encode(texts, batch_size=len(texts), convert_to_numpy=True)
    encoder = load_encoder(str(tiny_dir), device="cpu")
    expected = truncate(encoder.encode_layers(texts, [layer], batch_size=len(texts))[0], dim, normalize=True)
    assert got.shape == (len(texts), dim)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)

    grid = evaluate_grid(encoder, [sts100], layers=[layer], dims=[dim], batch_size=len(texts))
    ours = spearman(pair_cosines(torch.from_numpy(got), idx1, idx2, dim), sts100.scores)
    assert ours == pytest.approx(grid.cell("stsb", "spearman", layer, dim), abs=1e-6)

    report = json.loads((out / "export.json").read_text())
    assert (report["layer"], report["dim"], report["pooling"]) == (layer, dim, encoder.pooling)
    assert report["modules"] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert report["size_bytes"] < report["full_size_bytes"] and report["size_bytes"] < report["source_size_bytes"]
    assert report["speed"]["sentences"] == 32 and report["speed"]["export_per_s"] > 0
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == layer
    assert json.loads((out / "config_sentence_transformers.json").read_text())["truncate_dim"] == dim
    with safe_open(str(out / "model.safetensors"), "pt") as fh:  # the dropped block's weights are gone
        assert not any(".layer.2." in key for key in fh.keys()) and any(".layer.1." in key for key in fh.keys())


def test_export_of_a_train_dir_and_full_cell(tiny_dir, tmp_path):
    """A train output dir is read through its model/; the last layer at full width needs no Dense."""
    from sentence_transformers import SentenceTransformer

    shutil.copytree(tiny_dir, tmp_path / "run" / "model")
    out = tmp_path / "full"
    assert main(["export", str(tmp_path / "run"), "--layer", "3", "--dim", "32", "--out", str(out),
                 "--bench", "0"]) == 0
    report = json.loads((out / "export.json").read_text())
    assert report["modules"] == ["Transformer", "Pooling", "Normalize"] and "speed" not in report
    texts = ["a dog runs in the park", "stocks fell on monday"]
    got = SentenceTransformer(str(out), device="cpu").encode(texts)
    expected = truncate(load_encoder(str(tiny_dir), device="cpu").encode_layers(texts, [3])[0], 32)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)
    # --force replaces a previous export; nothing else is ever deleted
    assert main(["export", str(tmp_path / "run"), "--layer", "1", "--dim", "8", "--out", str(out), "--bench", "0",
                 "--force"]) == 0
    assert json.loads((out / "export.json").read_text())["layer"] == 1 and not (out / "2_Normalize").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--layer", "0", "--dim", "8"], "--layer: 0 is out of range; allowed 1..3"),
    (["--layer", "4", "--dim", "8"], "--layer: 4 is out of range; allowed 1..3"),
    (["--layer", "2", "--dim", "33"], "--dim: 33 is out of range; allowed 1..32"),
    (["--layer", "2", "--dim", "0"], "--dim: 0 is out of range"),
    (["--layer", "2", "--dim", "8", "--bench", "-1"], "--bench: -1"),
    (["--layer", "2", "--dim", "8", "--data-dir", "/no/such/dir"], "--bench: data_dir: /no/such/dir does not exist"),
])
def test_export_bad_input_is_one_line_exit_2(tiny_dir, tmp_path, capsys, flags, needle):
    assert main(["export", str(tiny_dir), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("m2d: error: ") and needle in err, err
    assert not (tmp_path / "o").exists()


def test_export_refuses_foreign_folders(tiny_dir, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    cell = tmp_path / "cell"
    assert main(["export", str(tiny_dir), "--layer", "1", "--dim", "8", "--out", str(cell), "--bench", "0"]) == 0
    capsys.readouterr()
    for args, needle in [(["--out", str(busy)], "is not empty; give a new folder, or --force"),
                         (["--out", str(busy), "--force"], "holds no export.json"),
                         (["--out", str(cell)], "is not empty"),
                         (["--out", str(tiny_dir)], "is the source model folder")]:
        assert main(["export", str(tiny_dir), "--layer", "1", "--dim", "8", "--bench", "0", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert (busy / "notes.txt").read_text() == "keep me"
    # an export is a cell, not a full encoder: exporting from it again is refused
    assert main(["export", str(cell), "--layer", "1", "--dim", "4", "--out", str(tmp_path / "again"),
                 "--bench", "0"]) == 2
    assert "Dense" in capsys.readouterr().err


def test_export_force_replaces_only_what_the_export_wrote(tiny_dir, tmp_path, capsys):
    """--force deleted the previous export folder whole, a user's files with it; now it replaces only the files the
    previous export.json lists, and refuses where a file it would write is the user's."""
    out = tmp_path / "cell"
    args = ["export", str(tiny_dir), "--out", str(out), "--bench", "0"]
    assert main(args + ["--layer", "2", "--dim", "8"]) == 0
    first = json.loads((out / "export.json").read_text())["files"]
    assert "export.json" in first and "2_Dense/model.safetensors" in first
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == first
    (out / "notes.txt").write_text("keep me")
    (out / "2_Dense" / "mine.txt").write_text("mine too")
    assert main(args + ["--layer", "3", "--dim", "32", "--force"]) == 0
    report = json.loads((out / "export.json").read_text())
    assert report["layer"] == 3 and report["modules"] == ["Transformer", "Pooling", "Normalize"]
    assert (out / "notes.txt").read_text() == "keep me" and (out / "2_Dense" / "mine.txt").read_text() == "mine too"
    assert not (out / "2_Dense" / "model.safetensors").exists() and not (out / "3_Normalize").exists()
    assert report["size_bytes"] == sum((out / f).stat().st_size for f in report["files"] if f != "export.json")
    # a file the export would write that the previous export did not: the user's, refused before anything changes
    listed = {**report, "files": [f for f in report["files"] if f != "config_sentence_transformers.json"]}
    (out / "export.json").write_text(json.dumps(listed))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(args + ["--layer", "1", "--dim", "8", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config_sentence_transformers.json is not from the previous export" in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in [*tmp_path.iterdir(), *out.iterdir()] if ".m2d-export-" in p.name]  # no staging left


def test_export_out_under_a_file_fails_before_the_weights_load(tiny_dir, tmp_path, capsys, monkeypatch):
    import matryoshka2d.encoder

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights loaded before --out was checked")

    monkeypatch.setattr(matryoshka2d.encoder, "load_encoder", no_loading)
    (tmp_path / "file.txt").write_text("x")
    assert main(["export", str(tiny_dir), "--layer", "1", "--dim", "8", "--bench", "0",
                 "--out", str(tmp_path / "file.txt" / "cell")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out:" in err and "file.txt is a file" in err, err
