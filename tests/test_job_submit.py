"""``ray start --head`` + ``ray job submit --working-dir .`` of the smoke sweep, as the README describes it.

The head runs from this project's environment with token authentication on (``RAY_AUTH_MODE=token``, a
throwaway token file), binds the dashboard and every service to 127.0.0.1, and lives in its own temp dir
and process group: teardown kills exactly that group. ``ray stop`` is NOT used, because it stops every Ray
process of this user on the machine, including other people's sessions on a shared host.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from matryoshka2d.testing import is_loopback, listening_sockets, make_tiny_bert, session_processes

pytestmark = pytest.mark.e2e  # starts processes: the full suite only

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rayignore_is_honoured_by_ray_packaging():
    """Ray 2.60 reads .rayignore (besides .gitignore) when it zips the working dir."""
    from ray._private.runtime_env.packaging import get_excludes_from_ignore_files

    excludes = get_excludes_from_ignore_files(ROOT, include_gitignore=False)
    assert excludes, ".rayignore was not picked up"

    def excluded(rel: str) -> bool:
        return any(fn(ROOT / rel) for fn in excludes)

    for rel in (".venv/bin/python", "mlflow.db", "mlruns/0/meta.yaml", "mlartifacts/1/x.png", "outputs/a/grid.csv",
                "ray_results/sweep/tuner.pkl", "platform/matryoshka2d/__pycache__/x.pyc", "run/checkpoints/step-5/state.pt"):
        assert excluded(rel), f"{rel} would be uploaded"
    for rel in ("experiments/sweep_weighting.py", "experiments/spaces/weighting.yaml", "platform/matryoshka2d/sweep/driver.py"):
        assert not excluded(rel), f"{rel} would be left out"


@pytest.fixture
def ray_head(tmp_path, data_dir):
    """A local head started like the README says, torn down by killing its own process group."""
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    temp_dir = tempfile.mkdtemp(prefix="m2dray-", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    dashboard = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
                "M2D_DATA_DIR": str(data_dir), "M2D_HOME": str(tmp_path / "home"),
                # loopback only, as the README's head command (see matryoshka2d.cluster)
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=2", f"--temp-dir={temp_dir}",
           "--disable-usage-stats", "--block"]
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    headers = {"Authorization": f"Bearer {token.read_text()}"}
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{address}/api/version", headers=headers, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Ray head did not come up:\n" + (tmp_path / "head.log").read_text()[-3000:])
            time.sleep(1)
        assert requests.get(f"{address}/api/version", timeout=2).status_code == 401, "token auth is off"
        yield {"address": address, "headers": headers, "env": env, "temp_dir": Path(temp_dir), "sid": head.pid}
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(1)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # stragglers of the group (raylet, gcs) after ray start exited
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_smoke_sweep(ray_head, tmp_path):
    from mlflow import MlflowClient

    tiny = make_tiny_bert(tmp_path / "tiny", num_layers=6, hidden_size=32)
    db = tmp_path / "mlflow.db"  # absolute: the job runs in a throwaway copy of the repo
    sid = f"m2d-test-{uuid.uuid4().hex[:8]}"
    submit = [str(BIN / "ray"), "job", "submit", "--address", ray_head["address"], "--working-dir", ".",
              "--submission-id", sid, "--no-wait", "--",
              "python", "experiments/sweep_weighting.py", "--smoke", "--set", f"model.name={tiny}",
              "--set", "eval.dims=[8,16,32]", "--tracking-uri", f"sqlite:///{db}", "--experiment-name", "job-test"]
    out = subprocess.run(submit, cwd=ROOT, env=ray_head["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr

    job = f"{ray_head['address']}/api/jobs/{sid}"
    deadline = time.monotonic() + 300
    status = None
    listening = {}
    while time.monotonic() < deadline:
        for pid, name, ip, port in listening_sockets(session_processes(ray_head["sid"])):  # head, workers, job driver
            listening[(ip, port)] = name
        status = requests.get(job, headers=ray_head["headers"], timeout=5).json()["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = requests.get(f"{job}/logs", headers=ray_head["headers"], timeout=10).json().get("logs", "")
    assert status == "SUCCEEDED", f"job {status}:\n{logs[-4000:]}"
    assert listening and all(is_loopback(ip) for ip, _ in listening), listening

    # the upload was the repo without .venv & co (.gitignore + .rayignore + Ray's default excludes)
    packages = [p for p in ray_head["temp_dir"].glob("session_latest/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
    assert packages and (packages[0] / "experiments" / "sweep_weighting.py").is_file()
    assert not (packages[0] / ".venv").exists() and not (packages[0] / ".git").exists()

    mlf = MlflowClient(f"sqlite:///{db}")
    exp = mlf.get_experiment_by_name("job-test")
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()  # absolute, next to the DB
    runs = mlf.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("m2d.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("m2d.kind") == "trial"]
    assert len(parents) == 1 and len(trials) == 2, [r.info.run_name for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    finished = [r for r in trials if not r.data.tags.get("m2d.stopped_early")]
    assert finished and all("grid.csv" in {a.path for a in mlf.list_artifacts(r.info.run_id)} for r in finished)
    assert "sweep: " in logs and "(* = best" in logs
