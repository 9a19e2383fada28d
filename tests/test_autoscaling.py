"""Autoscaling proven locally: the real Ray autoscaler (fake nodes on this machine) under the smoke sweep.

Runs ``experiments/autoscale_local.py`` (the documented command, see README.md, "Autoscaling, proven locally") as a user
would: it starts ``ray.cluster_utils.AutoscalingCluster`` with a 0-CPU head and a ``cpu_worker`` type of at
most 2 nodes, runs ``experiments/sweep_weighting.py --smoke --address ...`` against it, and records Ray's own
state. Here the evidence is asserted: worker nodes launched by the autoscaler, every trial's actor on one of
them (never on the head), all of them removed by the autoscaler after the idle timeout, nothing left running.
About 1.5 minutes on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts processes: the full suite only

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "autoscale_local.py"
IDLE_TIMEOUT_MIN = 0.1  # 6 s


def _kill_leftovers(workdir: Path) -> list[int]:
    """Last resort after a hard kill of the script: its sweep and its cluster's processes (session, temp dir)."""
    info_file = workdir / "cluster.json"
    if not info_file.is_file():
        return []
    info = json.loads(info_file.read_text())
    found = []
    sweep = Path(f"/proc/{info.get('sweep_pid', 0)}/cmdline")
    try:
        if info.get("sweep_pid") and str(workdir).encode() in sweep.read_bytes():  # that sweep, not a reused pid
            found.append(info["sweep_pid"])
    except OSError:
        pass
    found += _script().own_processes(info.get("sid"), info["temp_dir"])
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return found


def _script():
    """experiments/autoscale_local.py as a module (its process finder), without running it."""
    spec = importlib.util.spec_from_file_location("autoscale_local", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_autoscaling_cluster_runs_the_smoke_sweep_on_launched_workers(tmp_path, data_dir):
    workdir = tmp_path / "work"
    evidence_file = tmp_path / "evidence.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "M2D_DATA_DIR": str(data_dir), "M2D_HOME": str(tmp_path / "home"),
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(SCRIPT), "--workdir", str(workdir), "--json", str(evidence_file),
           "--idle-timeout-minutes", str(IDLE_TIMEOUT_MIN), "--max-workers", "2", "--num-samples", "2"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the script stops its cluster and sweep on SIGTERM
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail("autoscale_local.py ran past 480 s:\n" + out[-6000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = _kill_leftovers(workdir)
    print(out)  # the printed evidence, shown with -s or on failure
    assert not leftovers, f"the script left cluster processes behind: {leftovers}"
    assert evidence_file.is_file(), out[-6000:]
    ev = json.loads(evidence_file.read_text())
    assert proc.returncode == 0 and ev["failures"] == [], (ev.get("failures"), out[-6000:])
    assert ev["sweep_rc"] == 0, ev.get("sweep_log_tail")

    # the head offers no CPU: nothing of a trial can run there
    assert len(ev["head"]) == 1 and ev["head"][0]["resources_total"].get("CPU", 0) == 0
    head_id = ev["head"][0]["node_id"]

    # the autoscaler launched cpu_worker nodes (Ray's node table; seen ALIVE while the sweep ran), never more than 2
    # alive at once; one that went idle between the two trials may have been replaced by a new launch
    workers = {n["node_id"]: n for n in ev["workers"]}
    assert 1 <= len(workers) <= 2 + len(ev["trials"]), workers
    assert set(ev["workers_seen_alive"]) <= set(workers) and 1 <= ev["peak_alive_workers"] <= 2
    assert all(n["resources_total"].get("CPU") == 1 for n in workers.values())
    assert any(re.search(r"Adding \d+ node\(s\) of type cpu_worker", line) for line in ev["autoscaler_log"]), \
        ev["autoscaler_log"]

    # every trial ran (Tune's result pids -> Ray's actor table) on a launched worker node, none on the head
    assert len(ev["trials"]) == 2, ev["trials"]
    for trial_id, runs in ev["trials"].items():
        assert runs, trial_id
        for r in runs:
            assert r["node_id"] in workers and r["node_id"] != head_id, (trial_id, r)
            assert r["actor_class"], r  # found in Ray's actor table, not guessed

    # ... and the autoscaler removed them once idle for the timeout, while the head stayed up
    assert ev["head_alive_after"]
    for node_id, n in workers.items():
        assert n["state"] == "DEAD", n
        # the autoscaler's log names each node it terminated as idle; GCS records an expected termination
        # ("Terminated by autoscaler", or "received SIGTERM" when the fake provider's SIGTERM beats the drain)
        assert node_id in ev["idle_terminated"], (node_id, ev["autoscaler_log"])
        assert n["state_message"].startswith("Expected termination"), n
        if n["trials"]:
            assert n["removed_s_after_last_result"] >= IDLE_TIMEOUT_MIN * 60 - 1, n
    assert any(re.search(r"Removing \d+ nodes? of type cpu_worker \(idle\)", line) for line in ev["autoscaler_log"])
    assert ev["leftover_processes"] == []
    assert ev["listening"] and ev["not_loopback"] == [], ev["listening"]  # head, fake nodes, workers, sweep

    # the sweep itself behaved as on any cluster: its MLflow runs are all closed
    from mlflow import MlflowClient

    mlf = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlf.get_experiment_by_name("autoscale-local")
    runs = mlf.search_runs([exp.experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("m2d.kind") == "trial"]
    parents = [r for r in runs if r.data.tags.get("m2d.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.tags["m2d.trial_id"] for r in trials} == set(ev["trials"])
