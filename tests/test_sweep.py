"""Sweeps end to end: Optuna + Tune + TorchTrainer (2 DDP workers) into MLflow, kill/resume, one-line errors.

Sweeps run as subprocesses of ``experiments/sweep_weighting.py`` (as a user runs them), on a local Ray, with a
tiny random 6-layer BERT and a temporary SQLite MLflow store. The slow tests are the two real sweeps
(~1.5 min and ~1 min on 2 cores); the error tests never start Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matryoshka2d.errors import M2DError
from matryoshka2d.testing import is_loopback, listening_sockets, make_tiny_bert, session_processes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "sweep_weighting.py"
DIMS = [8, 16, 32]
LAYERS = range(1, 7)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    # 6 blocks: the explicit layer-weight lists in experiments/spaces/weighting.yaml have 7 entries (0..6)
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert6", num_layers=6, hidden_size=32)


@pytest.fixture
def env(tmp_path, data_dir) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "M2D_DATA_DIR": str(data_dir), "M2D_HOME": str(tmp_path / "home"),
            "RAY_USAGE_STATS_ENABLED": "0", "TUNE_GLOBAL_CHECKPOINT_S": "2", "PYTHONUNBUFFERED": "1"}


# the one command; experiments/sweep_weighting.py is the same driver with its space as the default
M2D_SWEEP = [str(Path(sys.executable).with_name("m2d")), "sweep", "--space", "weighting"]


def sweep_args(tiny: Path, tmp_path: Path, name: str, *extra: str, command: list[str] | None = None) -> list[str]:
    return [*(command or [sys.executable, str(SCRIPT)]), "--smoke", "--set", f"model.name={tiny}", "--set", f"eval.dims={DIMS}",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "ray"),
            "--experiment-name", name, *extra]


def inject_fault(at_step: int, marker: Path) -> dict:
    """Environment for tests/faults/sitecustomize.py: the last rank of a trial dies once after ``at_step``."""
    path = [str(ROOT / "tests" / "faults")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(path),
            "M2D_FAULT_AT_STEP": str(at_step), "M2D_FAULT_MARKER": str(marker)}


def run_watching_sockets(args: list[str], env: dict, cwd: Path, timeout: float) -> tuple[int, str, dict]:
    """Run a sweep in its own session; every listening socket its processes (driver, local Ray, trials) opened."""
    log = cwd / f"sweep-{len(list(cwd.glob('sweep-*.log')))}.log"
    listening: dict[tuple[str, int], str] = {}
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                for _, name, ip, port in listening_sockets(session_processes(proc.pid)):
                    listening[(ip, port)] = name
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode, log.read_text(), listening


def assert_loopback_only(listening: dict, torch_store: int = 0) -> None:
    """Every socket on 127.0.0.0/8 or ::1, but for ``torch_store`` rendezvous stores of multi-worker trials
    (torch.distributed's TCPStore binds every interface and has no bind-address setting; README, security)."""
    assert listening, "no listening socket seen: the watcher missed the cluster"
    wide = {f"{ip}:{port}": name for (ip, port), name in listening.items() if not is_loopback(ip)}
    # /proc's comm holds 15 characters: psutil can return "ray::RayTrainWo" when the full name is not readable
    # a worker's title carries the method it runs ("ray::RayTrainWorker.poll_status"); /proc may cut it to 15 chars
    worker = "ray::RayTrainWorker"
    stores = [a for a, name in wide.items()
              if name.startswith(worker) or (worker.startswith(name) and len(name) >= 15)]
    assert len(stores) <= torch_store and len(wide) == len(stores), f"listening beyond loopback: {wide}"


def client(tmp_path: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def runs_of(mlf, name: str) -> tuple[list, list]:
    exp = mlf.get_experiment_by_name(name)
    runs = mlf.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return ([r for r in runs if r.data.tags.get("m2d.kind") == "sweep"],
            [r for r in runs if r.data.tags.get("m2d.kind") == "trial"])


@pytest.mark.e2e
def test_sweep_end_to_end_torchtrainer_two_workers(tiny, tmp_path, env):
    """2 Optuna trials x TorchTrainer(2 CPU workers, DDP/gloo); one worker is killed mid-trial and retried."""
    args = sweep_args(tiny, tmp_path, "e2e", "--workers-per-trial", "2", "--num-samples", "2", "--scheduler", "fifo")
    faulty = {**env, **inject_fault(at_step=5, marker=tmp_path / ".fault-injected")}
    rc, log, listening = run_watching_sockets(args, faulty, tmp_path, timeout=400)
    assert rc == 0, log[-6000:]
    # GCS, raylet, workers, agents, exporters, gloo on 127.0.0.1; one TCPStore per worker-group start (2 trials +
    # the retried one) is the exception
    assert_loopback_only(listening, torch_store=3)

    mlf = client(tmp_path)
    parents, trials = runs_of(mlf, "e2e")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["sweep.workers_per_trial"] == "2" and parent.data.params["sweep.backend"] == "torch"
    assert parent.data.metrics["best/stsb/spearman/grid_mean"] > 0
    assert len(trials) == 2 and {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert len({r.data.tags["m2d.trial_id"] for r in trials}) == 2
    # the parent's comparison of both trials; the baseline is the first trial (both run the base preset's method)
    summary = {a.path for a in mlf.list_artifacts(parent.info.run_id, "summary")}
    assert {f"summary/stsb_spearman_{kind}.png" for kind in ("runs", "vs_baseline", "best_run")} <= summary, summary
    assert {"summary/cells.csv", "summary/leaderboard_stsb_spearman.json"} <= summary
    first = min(trials, key=lambda r: r.info.start_time)
    assert parent.data.tags["m2d.baseline_trial"] == first.info.run_id
    board = json.loads(Path(mlf.download_artifacts(parent.info.run_id, "summary/leaderboard_stsb_spearman.json",
                                                   str(tmp_path / "board"))).read_text())
    col = board["columns"].index
    assert {row[col("run_id")] for row in board["data"]} == {r.info.run_id for r in trials}
    assert [row[col("vs_baseline")] for row in board["data"] if row[col("run_id")] == first.info.run_id] == [0.0]
    assert sum(row[col("cells_won")] for row in board["data"]) == len(LAYERS) * len(DIMS)
    for run in trials:
        assert run.info.status == "FINISHED", run.info
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["m2d.method"] == "v2" and tags["m2d.sampler_seed"] == "0"
        assert tags.get("mlflow.source.git.commit"), "git commit tag missing (the test runs in a git checkout)"
        assert tags["m2d.data.stsb/sts-dev.csv"] and any(k.startswith("m2d.data.snli") for k in tags)
        assert params["train.seed"] == "42" and params["method.layer_weighting"] and params["sweep.method.layer_weighting"]
        assert params["eval.dims"] == json.dumps(DIMS, separators=(",", ":"))
        # every configured cell at the intermediate eval (step 5) and the final one (step 10)
        names = {f"stsb/spearman/cell/L{layer:02d}_D{dim:04d}" for layer in LAYERS for dim in DIMS}
        assert names <= set(metrics), sorted(names - set(metrics))[:5]
        assert [m.step for m in mlf.get_metric_history(run.info.run_id, "stsb/spearman/cell/L03_D0016")] == [5, 10]
        for summary in ("grid_mean", "sublayer_mean", "lowdim_mean", "full", "worst_cell"):
            assert f"stsb/spearman/{summary}" in metrics
        assert {"loss", "lr", "loss/task", "m2d/loop_s"} <= set(metrics)
        artifacts = {a.path for a in mlf.list_artifacts(run.info.run_id)}
        assert {"grid.csv", "grid.json", "config.yaml", "heatmaps", "images"} <= artifacts
        assert {a.path for a in mlf.list_artifacts(run.info.run_id, "heatmaps")} == {"heatmaps/heatmap_stsb_spearman.png"}
        # the chart view's images: one heatmap per evaluation, keyed by dataset/metric, at its step
        images = [a.path for a in mlf.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
        assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images) == [5, 10], images
        assert all(p.startswith("images/heatmap~stsb~spearman+step+") for p in images), images
        assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": "grid.json", "type": "table"}]
        table = json.loads(Path(mlf.download_artifacts(run.info.run_id, "grid.json", str(tmp_path / "t"))).read_text())
        steps = [row[table["columns"].index("step")] for row in table["data"]]
        assert sorted(set(steps)) == [5, 10] and len(steps) == 2 * len(LAYERS) * len(DIMS)
        grid = Path(mlf.download_artifacts(run.info.run_id, "grid.csv", str(tmp_path / run.info.run_id)))
        rows = grid.read_text().splitlines()[1:]
        assert len(rows) == len(LAYERS) * len(DIMS)
        for row in rows:  # the logged final value of each cell is the CSV's
            ds, _, metric, layer, dim, value = row.split(",")
            assert metrics[f"{ds}/{metric}/cell/L{int(layer):02d}_D{int(dim):04d}"] == pytest.approx(float(value), abs=1e-9)
    retried = [r for r in trials if r.data.tags.get("m2d.resumed_from_step")]
    assert (tmp_path / ".fault-injected").is_file(), "the fault was never injected"
    assert len(retried) == 1, "the injected worker crash was not retried from its checkpoint"
    assert retried[0].data.tags["m2d.resumed_from_step"] == "5" and retried[0].data.tags["m2d.resumed_from"] == "ray"


def test_dead_tracking_server_is_one_line_before_training(tmp_path, env, capsys, monkeypatch):
    from matryoshka2d.sweep import main

    monkeypatch.setenv("M2D_HOME", env["M2D_HOME"])
    started = time.monotonic()
    code = main(["--smoke", "--tracking-uri", "http://127.0.0.1:1", "--storage-path", str(tmp_path / "ray")],
                sweep="weighting", description="test")
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 15
    assert err.count("\n") == 1 and err.startswith("sweep: error: tracking server http://127.0.0.1:1 unreachable"), err
    assert not (tmp_path / "ray").exists()


@pytest.mark.parametrize("text, expected", [
    ("method.layer_weighting: [linear\n", "line 2: invalid YAML"),
    ("- a\n- b\n", "expected a mapping of dotted config keys"),
    ("method.layer_weighting: linear\n", "method.layer_weighting: expected exactly one of choice"),
    ("method.layer_weighting:\n  choice: []\n", "choice needs a non-empty list"),
    ("method.layer_weighting:\n  choice: [linear, cubic]\n",
     "method.layer_weighting='cubic': method.layer_weighting: unknown scheme"),
    ("method.kl.weight:\n  uniform: [1, 0]\n", "uniform needs low < high"),
    ("method.kl.weight:\n  loguniform: [0, 1]\n", "loguniform needs low > 0"),
    ("train.max_steps:\n  int: [10, 20.5]\n", "int needs integer bounds"),
    ("method.no_such_field:\n  choice: [1]\n", "method.no_such_field=1: method.no_such_field: unknown field"),
    ("method.layer_weighting:\n  choice: [[1, 1]]\n", "layer_weighting: an explicit list needs 7 weights"),
    ("method.layer_weighting:\n  choice: [log]\nevaluate_first: [{method.layer_weighting: cubic}]\n",
     "evaluate_first: method.layer_weighting='cubic' is not in its domain (log)"),
    ("method.layer_weighting:\n  choice: [log]\nevaluate_first: [{method.kl.weight: 1}]\n",
     "evaluate_first: method.kl.weight is not a swept key"),
    ("method.layer_weighting:\n  choice: [log]\nevaluate_first: log\n", "evaluate_first: expected a list"),
])
def test_search_space_errors_are_one_line(text, expected, tiny, tmp_path, env, capsys, monkeypatch):
    from matryoshka2d.sweep import main

    monkeypatch.setenv("M2D_HOME", env["M2D_HOME"])
    monkeypatch.setenv("M2D_DATA_DIR", env["M2D_DATA_DIR"])
    space = tmp_path / "space.yaml"
    space.write_text(text)
    code = main(["--smoke", "--space", str(space), "--set", f"model.name={tiny}", "--set", f"eval.dims={DIMS}",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], sweep="weighting", description="test")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"sweep: error: space {space}") and expected in err, err
    assert not (tmp_path / "mlflow.db").exists(), "nothing may be created before the space is valid"


def test_space_choices_ranges_and_bundles(tmp_path):
    from ray import tune

    from matryoshka2d.sweep.space import load_space

    space = tmp_path / "s.yaml"
    space.write_text("method.kl:\n  choice: {'off': {weight: 0.0}, 'on': {weight: 1.0, detach_teacher: false}}\n"
                     "method.kl.temperature:\n  loguniform: [0.1, 1.0]\n"
                     "method.layer_weighting:\n  choice: [log, [1, 2, 3]]\n"
                     "train.max_steps:\n  int: [10, 20]\n")
    seen = []
    s = load_space(space, validate=seen.append)
    assert len(seen) == 2 + 2 + 2 + 2
    domains = s.tune_space()
    assert isinstance(domains["method.kl.temperature"], tune.search.sample.Float)
    assert domains["method.layer_weighting"].categories == ["log", "[1,2,3]"]
    over = s.overrides({"method.kl": "on", "method.kl.temperature": 0.5, "method.layer_weighting": "[1,2,3]",
                        "train.max_steps": 12})
    assert over == {"method": {"kl": {"weight": 1.0, "detach_teacher": False, "temperature": 0.5},
                               "layer_weighting": [1, 2, 3]}, "train": {"max_steps": 12}}


def test_evaluate_first_points_are_completed_and_reach_optuna(tmp_path):
    """``evaluate_first`` trials run before Optuna samples: keys left out get the domain's first label / low end."""
    from matryoshka2d.sweep.space import load_space
    from matryoshka2d.sweep.trial import TrialSetup
    from matryoshka2d.sweep.tuner import search_tuner

    space = tmp_path / "s.yaml"
    space.write_text("method.layer_weighting:\n  choice: [log, linear]\nmethod.kl.weight:\n  uniform: [0.5, 2.0]\n"
                     "evaluate_first: [{method.layer_weighting: linear}, {method.kl.weight: 1.5}]\n")
    s = load_space(space)
    assert s.first == [{"method.layer_weighting": "linear", "method.kl.weight": 0.5},
                       {"method.layer_weighting": "log", "method.kl.weight": 1.5}]
    setup = TrialSetup("v2", {}, s, "sqlite:///x.db", "0", "p", str(tmp_path))
    tuner = search_tuner(setup, [("stsb/spearman/grid_mean", "max")], 4, 0, "fifo", 1, str(tmp_path), "t", 10, 0)
    assert tuner._local_tuner._tune_config.search_alg._points_to_evaluate == s.first


def test_resources_and_concurrency():
    from matryoshka2d.cluster import max_concurrent
    from matryoshka2d.sweep.trial import TrialSetup, choose_backend, trial_resources, worker_resources

    assert choose_backend(1) == "inprocess" and choose_backend(2) == "torch" and choose_backend(1, "torch") == "torch"
    with pytest.raises(M2DError):
        choose_backend(2, "inprocess")
    setup = TrialSetup("v2", {}, None, "", "", "", "", workers=2, cpus_per_worker=1, backend="torch")
    # driver 0.01 + 2 workers must fit exactly on a 2-CPU node
    assert trial_resources(setup)["cpu"] + 2 * worker_resources(setup)["CPU"] <= 2.0
    assert max_concurrent({"CPU": 2.0}, 2, 1, 0) == 1 and max_concurrent({"CPU": 16.0}, 2, 1, 0) == 8
    assert max_concurrent({"CPU": 16.0, "GPU": 2.0}, 1, 1, 1) == 2 and max_concurrent({}, 1, 1, 0) == 1
