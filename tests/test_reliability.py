"""Runs that cannot lie: exact resume rules, checkpoint fallback, non-finite losses, the safe expression language,
the token file, trial feasibility. Real training on a tiny BERT, real Ray; seconds each."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from matryoshka2d.config import load_config, numeric_kind, resume_conflicts
from matryoshka2d.errors import M2DError
from matryoshka2d.cells import eval_expr, parse_dims, parse_layers
from matryoshka2d.testing import make_tiny_bert
from matryoshka2d.train import Hooks, checkpoints, restart, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", num_layers=4, hidden_size=32)


def config(tiny, data_dir, **train_over):
    over = {"model": {"name": str(tiny), "max_length": 32},
            "data": {"data_dir": str(data_dir), "max_train_examples": 200},
            "train": {"max_steps": 6, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, **train_over},
            "eval": {"max_examples": 50, "dims": [8, 32]}}
    return load_config("v1", over)  # sampled cells + KL: the loss's own RNG must be restored too


def stop_after(n: int):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    return stop


def weights(run) -> dict:
    return load_file(run / "model" / "model.safetensors")


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def straight(tiny, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    train(config(tiny, data_dir), out, Hooks(show_progress=False))
    return out


def test_resume_with_other_eval_and_logging_settings_is_exact(tiny, data_dir, straight, tmp_path):
    """Every field of config.RESUME_SAFE but max_steps may change on resume: the weights stay bit-identical."""
    train(config(tiny, data_dir), tmp_path, Hooks(show_progress=False, stop=stop_after(3)))
    assert [p.name for p in checkpoints(tmp_path / "checkpoints")] == ["step-2"]
    cfg = config(tiny, data_dir, log_every=5, checkpoint_every=3, keep_checkpoints=3)
    cfg.eval.every_steps, cfg.eval.dims, cfg.eval.max_examples = 1, [8, 16], 30  # evaluates at steps 3, 4, 5
    summary = train(cfg, tmp_path, Hooks(show_progress=False))
    assert_same_weights(straight, tmp_path)
    assert sorted(r.dim for r in summary["grid"].rows if r.layer == 4) == [8, 16]
    history = __import__("json").loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6], "steps before the resume were lost"


def test_finished_run_has_a_final_checkpoint_and_rerun_trains_nothing(tiny, data_dir, straight, capsys):
    assert checkpoints(straight / "checkpoints")[0].name == "step-6"
    model = straight / "model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    summary = train(config(tiny, data_dir), straight, Hooks(show_progress=False))
    assert "already trained to step 6" in capsys.readouterr().out
    assert model.stat().st_mtime_ns == stamp and summary["median_step_s"] == 0.0
    assert len(__import__("json").loads((straight / "history.json").read_text())) == 6


def test_resume_refuses_another_config_before_writing(tiny, data_dir, straight):
    before = {p: p.read_bytes() for p in straight.rglob("*") if p.is_file()}
    for cfg, field in ((config(tiny, data_dir, lr=1e-3), "train.lr: 2e-05 -> 0.001"),
                       (config(tiny, data_dir, seed=7), "train.seed: 42 -> 7"),
                       (config(tiny, data_dir, max_steps=4), "train.max_steps: 4 is below step 6")):
        with pytest.raises(M2DError, match=field.replace("(", r"\(").replace(".", r"\.")):
            train(cfg, straight, Hooks(show_progress=False))
    assert {p: p.read_bytes() for p in straight.rglob("*") if p.is_file()} == before


def test_resume_conflicts_list_only_weight_changing_fields(tiny, data_dir):
    saved = config(tiny, data_dir).model_dump(mode="json")
    new = config(tiny, data_dir, max_steps=60, log_every=3, lr=1e-4)
    new.eval.dims = [8]
    assert resume_conflicts(saved, new) == [("train.lr", 2e-05, 1e-04)]


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tiny, data_dir, straight, tmp_path, capsys):
    train(config(tiny, data_dir), tmp_path, Hooks(show_progress=False, stop=stop_after(5)))
    state = tmp_path / "checkpoints" / "step-4" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])  # a kill during a copy, a full disk
    capsys.readouterr()
    train(config(tiny, data_dir), tmp_path, Hooks(show_progress=False))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("train: warning: checkpoint step-4 (") and \
        warnings[0].endswith("is unreadable; resuming from step-2"), warnings
    assert_same_weights(straight, tmp_path)  # resumed from step 2, exactly


def test_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(tiny, data_dir, tmp_path):
    cfg = config(tiny, data_dir, lr=1e30, checkpoint_every=1)
    with pytest.raises(M2DError, match=r"train: the loss is (nan|inf|not finite).* at step \d+; stopped before") as err:
        train(cfg, tmp_path, Hooks(show_progress=False))
    step = int(str(err.value).split(" at step ")[1].split(";")[0])
    assert checkpoints(tmp_path / "checkpoints")[0].name == f"step-{step - 1}"
    assert f"latest checkpoint kept: step-{step - 1}" in str(err.value)
    assert not (tmp_path / "model").exists()


def test_restart_moves_the_old_run_aside(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("x: 1\n")
    aside = restart(run)
    assert not run.exists() and (aside / "config.yaml").read_text() == "x: 1\n"
    assert aside.name.startswith("run.prev-") and restart(run) is None


@pytest.mark.parametrize("expr, value", [("L-1", 5), ("H/2", 192), ("min(128,H)", 128), ("max(1, L-2)", 4),
                                         ("-1+L", 5), ("(L+2)*2", 16), (7, 7)])
def test_expressions(expr, value):
    assert eval_expr(expr, 6, 384, "f") == value


@pytest.mark.parametrize("expr, message", [
    ("9**9**9", "'**' is not supported"), ("2**3", "'**' is not supported"), ("H*H*H", "exceeds 1,000,000"),
    ("__import__('os').system('true')", "cannot read"), ("L.real", "cannot read"), ("3.5", "cannot read"),
    ("1e9", "cannot read"), ("L/0", "divides by zero"), ("H/5", "is not an integer"), ("min()", "cannot read"),
    ("x" * 300, "cannot read"), (True, "cannot read"), ("", "cannot read"), ("lambda: 1", "cannot read"),
])
def test_expression_errors_are_one_line_and_immediate(expr, message):
    with pytest.raises(M2DError, match=message.replace("*", r"\*").replace("(", r"\(")) as err:
        eval_expr(expr, 6, 384, "method.x")
    assert str(err.value).startswith("method.x: ") and "\n" not in str(err.value)


def test_layer_and_dim_specs_use_the_same_safe_expressions():
    assert parse_layers("1..L-1", 6, "f") == [1, 2, 3, 4, 5] and parse_dims("min(128,H),H", 384, "f") == [128, 384]
    with pytest.raises(M2DError, match=r"'\*\*'"):
        parse_layers("0..9**9", 6, "f")


def test_numeric_kinds_of_config_fields():
    assert [numeric_kind(k) for k in ("train.max_steps", "train.lr", "method.pca_align.k", "method.kl.weight",
                                      "method.layer_weighting", "train.bf16", "nope.x")] == \
        ["int", "float", "int", "float", "other", "other", None]


def test_token_file_is_created_owner_only(tmp_path, monkeypatch):
    from matryoshka2d.cluster import ensure_token

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    path = ensure_token()
    assert path == tmp_path / ".ray" / "auth_token" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text()) == 64 and "RAY_AUTH_MODE" not in os.environ  # ray.init turns token mode on
    assert ensure_token() is None  # an existing token is used as it is
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    path.unlink()
    assert ensure_token() is None and not path.exists()


@pytest.mark.e2e
def test_first_local_cluster_on_a_fresh_home_starts_with_token_auth(tmp_path):
    """Regression: with ray imported before the token was written (every driver does), the GCS got token
    mode from the env while this process's cached config said disabled, and the first run on a new home died."""
    code = ("import ray\nfrom matryoshka2d.cluster import start_or_join\n"
            "assert start_or_join(num_cpus=1, include_dashboard=False)\n"
            "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
            "assert get_authentication_mode() == AuthenticationMode.TOKEN\nprint('auth token', ray.cluster_resources())\n"
            "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "auth token" in out.stdout and (tmp_path / ".ray" / "auth_token").exists()


def test_unschedulable_names_what_the_cluster_has():
    from matryoshka2d.cluster import unschedulable
    from matryoshka2d.sweep.trial import TrialSetup, trial_bundles

    def bundles(workers, gpus=0.0, backend="torch"):
        return trial_bundles(TrialSetup("v2", {}, None, "", "", "", "", workers=workers, gpus_per_trial=gpus,
                                        backend=backend))

    two = [{"CPU": 2.0, "GPU": 0.0}]
    assert unschedulable(two, bundles(2)) is None and unschedulable(two, bundles(1, backend="inprocess")) is None
    assert "needs 4 CPU, 0 GPU" in unschedulable(two, bundles(4)) and "the cluster has 2 CPU, 0 GPU" in \
        unschedulable(two, bundles(4))
    assert "1 GPU" in unschedulable(two, bundles(1, gpus=1, backend="inprocess"))
    assert unschedulable([{"CPU": 1.0}, {"CPU": 2.0}], bundles(2)) is None  # the trial's bundles on the 2-CPU node
    assert unschedulable([{"CPU": 0.5}, {"CPU": 0.5}], bundles(1, backend="inprocess")) is not None  # one node each


@pytest.mark.e2e
def test_wait_for_resources_on_a_cluster_that_cannot_grow_ends_in_one_line():
    import ray

    from matryoshka2d.cluster import start_or_join
    from matryoshka2d.cluster import wait_for_resources

    assert start_or_join(None, num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        wait_for_resources([{"CPU": 1.0}], timeout=5)  # fits: returns at once
        with pytest.raises(M2DError, match=r"--schedule-timeout: after 3 s, a trial needs 4 CPU"):
            wait_for_resources([{"CPU": 4.0}], timeout=3)
    finally:
        ray.shutdown()
