"""The one reader of a model (``encoder.read_model``): good folders of every layout load, a broken one is refused in
one line before its weights load; ``tests/catalogue_models.py`` runs each broken file through the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from matryoshka2d.encoder import load_encoder, read_model
from matryoshka2d.errors import M2DError
from matryoshka2d.testing import make_tiny_bert

TEXTS = ["A man is playing a guitar.", "Two dogs run on the beach."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny", num_layers=2, hidden_size=32)


def copy(tiny, tmp_path, name="copy"):
    shutil.copytree(tiny, tmp_path / name)
    return tmp_path / name


def rewrite_weights(path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = change(load_file(str(path / "model.safetensors")))
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def embed(path, **kwargs) -> torch.Tensor:
    return load_encoder(str(path), device="cpu", **kwargs).encode_layers(TEXTS)


def test_good_folders_load(tiny):
    assert read_model(str(tiny)).settings == {"pooling": "mean", "include_prompt": True}
    assert load_encoder(str(tiny), device="cpu").num_layers == 2
    # the bundled MiniLM: its checkpoint holds a position_ids buffer the model does not load (unexpected: benign)
    folder = read_model("minilm-l6")
    s = folder.settings
    assert (s["pooling"], s["max_length"], s["normalize"], s["prompts"].named) == ("mean", 256, True, {})
    assert len(folder.tokenizer) > 30000
    assert load_encoder("minilm-l6", device="cpu").max_length == 256


def test_legacy_weight_names_load_as_transformers_renames_them(tiny, tmp_path):
    """A pre-training checkpoint ("bert." prefix, LayerNorm gamma/beta) is read with the loader's own renaming."""
    legacy = copy(tiny, tmp_path)

    def rename(state):
        return {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                for k, v in state.items()}

    rewrite_weights(legacy, rename)
    assert torch.allclose(embed(legacy), embed(tiny))


def test_a_missing_pooler_and_a_pytorch_bin_load(tiny, tmp_path):
    """The grid never reads the pooler; pytorch_model.bin is read like model.safetensors."""
    no_pooler = copy(tiny, tmp_path, "no-pooler")
    rewrite_weights(no_pooler, lambda state: {k: v for k, v in state.items() if not k.startswith("pooler.")})
    assert torch.allclose(embed(no_pooler), embed(tiny))
    as_bin = copy(tiny, tmp_path, "bin")
    from safetensors.torch import load_file

    torch.save(load_file(str(as_bin / "model.safetensors")), as_bin / "pytorch_model.bin")
    (as_bin / "model.safetensors").unlink()
    assert torch.allclose(embed(as_bin), embed(tiny))


def test_a_broken_folder_is_refused_before_its_weights_load(tiny, tmp_path, monkeypatch):
    from transformers import AutoModel

    from matryoshka2d.resolve import model_shape

    broken = copy(tiny, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))

    def loaded(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(AutoModel, "from_pretrained", loaded)
    for read in (model_shape, load_encoder):
        with pytest.raises(M2DError, match=r"model.safetensors lacks 16 weight\(s\) .* first encoder\.layer\.2\."):
            read(str(broken))


def test_the_load_report_refuses_what_the_header_check_cannot_judge(tiny, tmp_path, monkeypatch):
    """Without the header check (a transformers whose renaming helpers moved) the load report refuses the same way."""
    import matryoshka2d.encoder.folder as encoder

    broken = copy(tiny, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    monkeypatch.setattr(encoder, "_renamer", lambda model, expected: None)
    with pytest.raises(M2DError, match=r"model.safetensors lacks 16 weight\(s\) .* first encoder\.layer\.2\."):
        load_encoder(str(broken), device="cpu")


def test_pooling_in_either_sentence_transformers_format(tiny, tmp_path):
    folder = copy(tiny, tmp_path)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "cls"}))
    assert read_model(str(folder)).settings["pooling"] == "cls"
    assert load_encoder(str(folder), device="cpu").pooling == "cls"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))  # legacy flags
    assert load_encoder(str(folder), device="cpu").pooling == "max"
    assert load_encoder(str(folder), pooling="mean", device="cpu").pooling == "mean"  # a choice overrides it


def test_default_max_length_stays_within_the_position_limit(tmp_path):
    short = make_tiny_bert(tmp_path / "short", num_layers=1, max_positions=64)
    assert load_encoder(str(short), device="cpu").max_length == 64


def test_eval_names_the_model_before_reading_any_data(tiny, tmp_path, capsys):
    from matryoshka2d.cli import main

    broken = copy(tiny, tmp_path)
    (broken / "tokenizer.json").unlink()
    rc = main(["eval", "--model", str(broken), "--data", "stsb", "--data-dir", str(tmp_path / "no-data"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "has no tokenizer files" in err, err
    assert not (tmp_path / "out").exists()
