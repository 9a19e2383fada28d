"""Real faults: ``bench/faults.py --short`` end to end, and the Reporter's outbox across a real MLflow outage.

The bench test runs the whole fault bench as a subprocess (baseline, worker SIGKILL, driver SIGKILL + --resume,
MLflow server SIGKILL + restart; ~5-7 min on 2 busy cores) and checks every goal and that every fault really
happened. The Reporter test kills and restarts a real ``mlflow server`` (~1 min, mostly its start-ups).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from matryoshka2d.errors import M2DError

pytestmark = pytest.mark.e2e  # starts processes: the full suite only

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "faults.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("m2d_bench_faults", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(1800)
def test_fault_bench_short_meets_every_goal(tmp_path, data_dir):
    out = tmp_path / "faults.json"
    env = {**os.environ, "M2D_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    # the killed worker and the killed driver; the server outage is the reporter's test below (a real server killed
    # mid-run) and the bench's own full run (docs/reliability.md): its sweep-level row costs ~90 s more here
    proc = subprocess.Popen([sys.executable, str(BENCH), "--short", "--faults", "worker,driver", "--json", str(out)],
                            env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the bench kills its sweeps and server on the way out
        log, _ = proc.communicate(timeout=120)
        pytest.fail("bench/faults.py --short ran over 25 min:\n" + log[-4000:])
    assert out.is_file(), log[-6000:]
    report = json.loads(out.read_text())
    rows = {r["fault"]: r for r in report["rows"]}
    assert list(rows) == ["baseline", "worker SIGKILL", "driver SIGKILL+resume"], log[-3000:]
    for fault, row in rows.items():
        assert row["completed"] and row["once"], (fault, row)
        assert row["duplicate_runs"] == 0 and row["running"] == 0 and row["steps_lost"] == 0, (fault, row)
        assert row["grid_equal"] and row["grid_max_diff"] <= 1e-4, (fault, row)
    assert proc.returncode == 0, log[-3000:]

    every = report["plan"]["every"]
    worker = rows["worker SIGKILL"]["evidence"]
    assert "ImplicitFunc" in worker["process"] and worker["died"], worker
    resumed = int(worker["resumed_from_step"])
    assert resumed % every == 0 and every <= resumed < worker["killed_after_step"], worker
    assert worker["resumed_from"] == "tune", worker  # Tune's checkpoint, not the trial folder's fallback

    driver = rows["driver SIGKILL+resume"]["evidence"]
    assert driver["first_exit"] == -9 and driver["processes_killed"] > 0, driver  # its local Ray went with it
    assert driver["running_after_kill"] >= 1 and driver["said_resuming"], driver
    assert int(driver["resumed_from_step"]) % every == 0, driver  # continued from a checkpoint, in its own run



def test_reporter_buffers_through_a_real_server_outage(tmp_path, monkeypatch, capsys):
    """Kill the server mid-run: reports go on (buffered, one warning line), a bounded final wait gives up
    cleanly, and the final report waits for the restart and sends every step exactly once, in order."""
    from matryoshka2d import tracking
    from matryoshka2d.sweep.reporter import Reporter, WorkerSetup

    server = bench_module().MlflowServer(tmp_path / "mlflow").start()
    try:
        mlf = tracking.client(server.uri)
        run_id = mlf.create_run(mlf.create_experiment("outbox")).info.run_id
        sent = []
        reporter = Reporter(0, WorkerSetup(server.uri, run_id, str(tmp_path)),
                            lambda metrics, checkpoint: sent.append(metrics["step"]))
        for step in (1, 2):
            reporter({"step": step, "loss": 1.0 / step}, None)
        server.kill()
        for step in (3, 4):
            reporter({"step": step, "loss": 1.0 / step}, None)
        assert sent == [1, 2, 3, 4], "Tune must keep getting reports while MLflow is down"

        monkeypatch.setenv(tracking.WAIT_ENV, "2")
        started = time.monotonic()
        with pytest.raises(M2DError, match="unreachable for 2 s"):
            reporter.flush(wait=True)
        assert time.monotonic() - started < 30

        monkeypatch.setenv(tracking.WAIT_ENV, "240")
        restart = threading.Thread(target=server.start)
        restart.start()
        try:
            reporter({"step": 5, "loss": 0.2, "final": True}, None)  # waits for the server
        finally:
            restart.join()
        history = mlf.get_metric_history(run_id, "loss")
        assert [m.step for m in history] == [1, 2, 3, 4, 5]
        assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
        assert "m2d/loop_s" in mlf.get_run(run_id).data.metrics
    finally:
        server.kill()
    out, err = capsys.readouterr()
    assert out.count("tracking: warning: MLflow unreachable (connection refused)") == 1, out
    assert out.count("reachable again") == 1, out
    assert "Traceback" not in out + err and "Retrying" not in err, err[-2000:]
