"""One order of config layers for every command: preset < overlays < study < composed < data dir < --set < point.

``m2d train``, ``m2d sweep`` and ``m2d reproduce`` all compose through ``config.compose_layers``; each is checked here
by a refusal that only the winning layer can cause (no training, no Ray: the preflight runs first).
"""

from __future__ import annotations

import pytest

from matryoshka2d.cli import main
from matryoshka2d.config import LAYERS, compose, compose_layers
from matryoshka2d.testing import make_tiny_bert


def test_layers_merge_in_the_documented_order():
    got = compose_layers(overlays=[{"train": {"lr": 1.0, "seed": 1}}, {"train": {"lr": 1.5}}],
                         study=[{"train": {"lr": 2.0}}, {"eval": {"split": "test"}}], composed={"train": {"lr": 3.0}},
                         data_dir="/from-flag", sets=["data.data_dir=/from-set", "train.lr=5.0"],
                         point={"train": {"lr": 6.0}})
    assert got == {"train": {"lr": 6.0, "seed": 1}, "eval": {"split": "test"}, "data": {"data_dir": "/from-set"}}
    assert LAYERS == ("preset", "overlays", "study", "composed", "data_dir", "sets", "point")
    cfg = compose("v2", data_dir="/d", sets=["train.max_steps=7"])
    assert (cfg.train.max_steps, cfg.data.data_dir, cfg.method.name) == (7, "/d", "v2")
    assert compose_layers(sets=["train.lr=1"]) is not compose_layers(sets=["train.lr=1"])  # a fresh dict each call


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.mark.parametrize("command", [
    ["train", "--config", "v2", "--out", "{tmp}/out"],
    ["sweep", "--space", "weighting", "--tracking-uri", "sqlite:///{tmp}/mlflow.db", "--storage-path", "{tmp}/ray"],
    ["reproduce", "--study", "sts", "--scale", "smoke", "--tracking-uri", "sqlite:///{tmp}/mlflow.db",
     "--storage-path", "{tmp}/ray"],
], ids=["train", "sweep", "reproduce"])
def test_set_beats_data_dir_in_every_command(command, tiny, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("M2D_HOME", str(tmp_path / "home"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    missing = tmp_path / "no-such-data"
    code = main(args + ["--data-dir", str(data_dir), "--set", f"data.data_dir={missing}",
                        "--set", f"model.name={tiny}"])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ray").exists()
