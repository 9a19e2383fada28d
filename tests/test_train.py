"""The trainer: presets learn, resume is exact, the saved model loads in sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from matryoshka2d.config import deep_merge, load_config, parse_overrides
from matryoshka2d.encoder import load_encoder
from matryoshka2d.errors import M2DError
from matryoshka2d.resolve import resolve
from matryoshka2d.testing import make_tiny_bert
from matryoshka2d.train import Hooks, evaluate_encoder, load_eval_sets, make_batches, train

PRESETS = ["full", "mrl", "v1", "v1-st6", "v2", "v2-fulldim", "starbucks", "separate"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", num_layers=4, hidden_size=64)


def _overrides(model, data_dir, **extra):
    base = {"model": {"name": str(model), "max_length": 32},
            "data": {"data_dir": str(data_dir), "max_train_examples": 1000},
            "train": {"max_steps": 25, "batch_size": 16, "lr": 5e-4, "log_every": 1000, "column_chunks": 1},
            "eval": {"max_examples": 300, "dims": "8,16,32,64"}}
    for section, values in extra.items():
        base.setdefault(section, {}).update(values)
    return base


def _cells(grid):
    return {(r.layer, r.dim): r.value for r in grid.rows if r.metric == "spearman"}


@pytest.fixture(scope="module")
def untrained_grid(tiny, data_dir):
    cfg = load_config("full", _overrides(tiny, data_dir))
    encoder = load_encoder(str(tiny), max_length=32)
    return _cells(evaluate_encoder(encoder, resolve(cfg), load_eval_sets(cfg)))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_improves_the_cells_it_trains(preset, tiny, data_dir, untrained_grid, tmp_path):
    method = {"pca_align": {"k": 16}, "last_layer_dims": "16,H", "prior_dims": 16} if preset.startswith("v2") else {}
    if preset == "separate":  # one evaluated cell: a 2-block sub-model at 32 dims
        method = {"pairs": [[2, 32]], "pairs_reference": None}
    cfg = load_config(preset, _overrides(tiny, data_dir, method=method))
    summary = train(cfg, tmp_path, Hooks(show_progress=False))
    after = _cells(summary["grid"])
    layers = 2 if cfg.method.truncate_model else 4
    trained = [c for c in cfg.method.resolve(layers, 64).trained_cells if c in after and c[0] >= 1]
    assert trained, "the preset trains no evaluated cell"
    before = np.mean([untrained_grid[c] for c in trained])
    gained = np.mean([after[c] for c in trained]) - before
    assert gained > 0.01, f"{preset}: mean STS-B dev Spearman on trained cells moved {gained:+.3f} from {before:.3f}"
    assert (tmp_path / "grid.csv").read_text().startswith("dataset,split,metric,layer,dim,value")
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "model" / "modules.json").is_file()


def test_resume_reproduces_uninterrupted_run(tiny, data_dir, tmp_path):
    over = _overrides(tiny, data_dir, train={"max_steps": 6, "checkpoint_every": 3, "batch_size": 8},
                      data={"max_train_examples": 200}, eval={"max_examples": 50})
    cfg = load_config("v1", over)  # sampled cells + KL: the loss's own RNG must be restored too
    train(cfg, tmp_path / "straight", Hooks(show_progress=False))

    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return calls["n"] == 3

    train(cfg, tmp_path / "resumed", Hooks(show_progress=False, stop=stop_after_three))
    assert (tmp_path / "resumed" / "checkpoints" / "step-3" / "state.pt").is_file()
    train(cfg, tmp_path / "resumed", Hooks(show_progress=False))  # picks up step-3

    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"


def test_saved_model_loads_in_sentence_transformers(tiny, data_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    cfg = load_config("mrl", _overrides(tiny, data_dir, train={"max_steps": 2}, eval={"max_examples": 20}))
    train(cfg, tmp_path, Hooks(show_progress=False))
    texts = ["A man is playing a guitar.", "Two dogs run through a field of snow."]
    st = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    ours = load_encoder(str(tmp_path / "model")).encode_layers(texts, [4])[0]
    theirs = st.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(theirs.cpu(), ours, atol=1e-5, rtol=1e-4)


def test_length_sorted_column_chunks_equal_one_padded_forward(tiny):
    """``forward_texts`` with chunks: the embeddings (input order, every layer) and gradients of one padded call,
    with fewer padding tokens counted."""
    encoder = load_encoder(str(tiny), device="cpu", max_length=32)
    encoder.eval()  # no dropout: both paths must see the same network
    texts = ["a", "a much longer sentence with many more tokens in it than the others", "two words",
             "a medium length sentence here", "x y z", "one more text of some length"]
    features = encoder.tokenize(texts)
    reference = encoder(features, [0, 2, 4])
    chunked, real, padded = encoder.forward_texts(texts, [0, 2, 4], chunks=3)
    torch.testing.assert_close(chunked, reference, atol=1e-5, rtol=1e-5)
    assert real == int(features["attention_mask"].sum()) and real < padded < features["attention_mask"].numel()
    grads = [torch.autograd.grad(out.sum(), encoder.model.embeddings.word_embeddings.weight)[0]
             for out in (reference, chunked)]
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)
    assert encoder.forward_texts(texts, [4], chunks=1)[1:] == (real, features["attention_mask"].numel())


def test_make_batches_is_deterministic_and_bucketed():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(5, 120, size=2000)]
    a = make_batches(lengths, 32, seed=1, epoch=0)
    assert a == make_batches(lengths, 32, seed=1, epoch=0)
    assert a != make_batches(lengths, 32, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == sorted(set(i for b in a for i in b))  # no repeats
    assert all(len(b) == 32 for b in a) and len(a) == 2000 // 32

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths[i] for b in batches for i in b)

    plain = make_batches(lengths, 32, seed=1, epoch=0, bucketing=False)
    assert padding(a) < 1.1 < padding(plain)


@pytest.mark.parametrize("overrides, field", [
    ({"train": {"batch_size": 1}}, "train.batch_size"),
    ({"train": {"bf16": "maybe"}}, "train.bf16"),
    ({"train": {"max_step": 10}}, "train.max_step"),
    ({"method": {"layer_weighting": "cubic"}}, "method.layer_weighting"),
    ({"method": {"kl": {"temperature": -1}}}, "method.kl.temperature"),
    ({"method": {"n_dims_per_step": 0}}, "method.n_dims_per_step"),
    ({"model": {"pooling": "median"}}, "model.pooling"),
])
def test_invalid_config_is_one_line_naming_the_field(overrides, field):
    with pytest.raises(M2DError) as err:
        load_config("v2", overrides)
    assert "\n" not in str(err.value) and str(err.value).startswith(field), str(err.value)


@pytest.mark.parametrize("sets, field", [
    (["method.last_layer_dims=8,1000"], "method.last_layer_dims: dim 1000 is out of range; allowed 1..64"),
    (["method.prior_layers=0..9"], "method.prior_layers: layer 5 is out of range; allowed 0..4"),
    (["method.prior_layers=1..L"], "method.prior_layers: must not contain the last layer 4"),
    (["method.last_layer_weight=0", "method.prior_layers=none"], "method: empty cell set"),
    (["method.pca_align.k=65"], "method.pca_align.k: 65 is out of range; allowed 1..64"),
])
def test_invalid_method_for_the_model_is_one_line(sets, field, tiny, data_dir, tmp_path):
    cfg = load_config("v2", deep_merge(_overrides(tiny, data_dir), parse_overrides(sets)))
    with pytest.raises(M2DError) as err:
        train(cfg, tmp_path, Hooks(show_progress=False))
    assert "\n" not in str(err.value) and str(err.value).startswith(field), str(err.value)
    assert not (tmp_path / "model").exists()


def test_unknown_preset_lists_the_presets():
    with pytest.raises(M2DError, match="presets: full, mrl, separate, starbucks, v1, v1-st6, v2, v2-fulldim"):
        load_config("v3")


def test_cli_train_writes_model_grid_config_and_resolves_overrides(tiny, data_dir, tmp_path, capsys):
    from matryoshka2d.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--config", "v2", "--data-dir", str(data_dir), "--out", str(out),
               "--set", f"model.name={tiny}", "--set", "model.max_length=32", "--set", "train.max_steps=2",
               "--set", "train.batch_size=8", "--set", "data.max_train_examples=64", "--set", "eval.max_examples=40",
               "--set", "method.pca_align.k=16", "--set", "method.last_layer_dims=16,H", "--set", "method.prior_dims=16"])
    assert rc == 0
    assert (out / "model" / "model.safetensors").is_file()
    header, *rows = (out / "grid.csv").read_text().splitlines()
    assert header == "dataset,split,metric,layer,dim,value" and len(rows) == 4 * 4  # layers 1..4 x dims 8..64
    resolved = (out / "config.yaml").read_text()
    assert "k: 16" in resolved and "max_steps: 2" in resolved
    assert "stsb/spearman/grid_mean" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--set", "method.layer_weighting=cubic"], "m2d: error: method.layer_weighting: unknown scheme 'cubic'"),
    (["--set", "train.max_steps"], "m2d: error: --set 'train.max_steps': expected key=value"),
    (["--set", "method.last_layer_dims=4096"], "m2d: error: method.last_layer_dims: dim 4096 is out of range"),
])
def test_cli_train_bad_input_is_one_line_exit_2(args, message, tiny, data_dir, tmp_path, capsys):
    from matryoshka2d.cli import main

    rc = main(["train", "--config", "mrl", "--out", str(tmp_path), "--data-dir", str(data_dir),
               "--set", f"model.name={tiny}", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(message) and "\n" not in err, err
