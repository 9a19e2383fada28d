"""One table of architectures (tiny random models): for each, a grid cell (l, d) equals plain sentence-transformers
encoding the exported cell (embeddings to 1e-5, Spearman equal), and two training steps of ``v2`` run.

Decoders (Llama, Qwen2, Qwen3) are ``*ForCausalLM`` checkpoints without a Pooling module: last-token pooling, as
sentence-transformers chooses, their final norm applied to every layer (what the cut model returns), padded on
either side.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matryoshka2d import data
from matryoshka2d.choose.export import export_cell
from matryoshka2d.config import load_config
from matryoshka2d.encoder import load_encoder
from matryoshka2d.evaluate import evaluate_grid
from matryoshka2d.evaluate.sts import spearman, unique_sentences
from matryoshka2d.testing import ARCHITECTURES, DECODERS, make_tiny_model
from matryoshka2d.train import Hooks, train

CASES = [(arch, "right") for arch in ARCHITECTURES] + [(arch, "left") for arch in DECODERS]
LAYERS, HIDDEN = 3, 32


@pytest.fixture(scope="module")
def pairs(data_dir):
    full = data.load("stsb", split="test", data_dir=data_dir)
    return type(full)("stsb", "test", full.sentences1[:40], full.sentences2[:40], full.scores[:40])


@pytest.mark.parametrize(("arch", "side"), CASES, ids=[f"{a}-{s}" for a, s in CASES])
def test_grid_cell_is_sentence_transformers_on_the_exported_cell(arch, side, pairs, tmp_path):
    from sentence_transformers import SentenceTransformer

    source = make_tiny_model(tmp_path / "src", arch, LAYERS, HIDDEN, padding_side=side)
    encoder = load_encoder(str(source), device="cpu")
    assert encoder.pooling == ("lasttoken" if arch in DECODERS else "mean")
    assert encoder.tokenizer.padding_side == side
    layer, dim = 1, 8  # below the last layer: a decoder's final norm must be applied to it too
    grid = evaluate_grid(encoder, [pairs], [layer, LAYERS], [dim, HIDDEN], batch_size=16)
    texts, idx1, idx2 = unique_sentences(pairs)
    ours = torch.nn.functional.normalize(encoder.encode_layers(texts, [layer], batch_size=16)[0, :, :dim], dim=-1)

    export_cell(str(source), layer, dim, tmp_path / "cell", bench=0)
    model = SentenceTransformer(str(tmp_path / "cell"), device="cpu")
    theirs = model.encode(texts, batch_size=8, convert_to_tensor=True)
    assert theirs.shape == ours.shape
    assert torch.allclose(theirs, ours, atol=1e-5), float((theirs - ours).abs().max())
    cosines = model.similarity_pairwise(theirs[idx1], theirs[idx2]).numpy()
    assert spearman(cosines, pairs.scores) == pytest.approx(grid.cell("stsb", "spearman", layer, dim), abs=1e-6)
    assert np.isfinite(grid.cell("stsb", "spearman", LAYERS, HIDDEN))


def _train(arch: str, preset: str, data_dir, tmp_path, **sets):
    source = make_tiny_model(tmp_path / "src", arch, LAYERS, HIDDEN)
    cfg = load_config(preset, {"model": {"name": str(source), "max_length": 24},
                               "data": {"data_dir": str(data_dir), "max_train_examples": 16},
                               "train": {"max_steps": 2, "batch_size": 8, "log_every": 1000},
                               "eval": {"max_examples": 8, "dims": "8,32"}, **sets})
    before = load_encoder(str(source), device="cpu").module.state_dict()
    summary = train(cfg, tmp_path / "out", Hooks(show_progress=False, device="cpu"))
    assert summary["steps"] == 2
    after = load_encoder(str(tmp_path / "out" / "model"), device="cpu")
    moved = [k for k, v in after.module.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert moved, "no weight changed in two steps"
    return after


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_two_training_steps_of_v2(arch, data_dir, tmp_path):
    after = _train(arch, "v2", data_dir, tmp_path)
    assert after.pooling == ("lasttoken" if arch in DECODERS else "mean")


PRESETS = ["full", "mrl", "v1", "v1-st6", "v2-fulldim", "starbucks", "separate"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_a_decoder(preset, data_dir, tmp_path):
    """Qwen3 (per-block attention kinds in its config): ``separate`` cuts it to one block before training."""
    sets = {"method": {"pairs": [[1, "H"]], "pairs_reference": None}} if preset == "separate" else {}
    after = _train("qwen3", preset, data_dir, tmp_path, **sets)
    if preset == "separate":
        assert after.num_layers == 1 and len(after.config.layer_types) == 1  # the cut kept the config whole
