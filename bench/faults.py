"""Benchmark: what a sweep keeps through real faults: a killed trial process, a killed driver, an MLflow outage.

    python bench/faults.py [--short] [--faults worker,driver,mlflow] [--model PATH] [--keep] [--json OUT]

Every scenario is the same small sweep, run as ``experiments/sweep_weighting.py`` in its own process session:
a search space written here (layer weighting x prior-layer weight), Optuna with a fixed seed, FIFO, one trial
at a time, a tiny random 6x32 BERT (or ``--model``), evaluation and checkpoints every few steps, ``loss``
logged every step, into a real ``mlflow server`` (SQLite store, artifacts served over HTTP) that the bench
starts on 127.0.0.1. First the sweep runs uninterrupted (the baseline), then once per fault:

- worker SIGKILL: once a trial has reported a checkpoint and a step after it, SIGKILL the process that runs its
  loop (with one worker per trial, the Tune trial actor ``ray::ImplicitFunc``). Tune retries it from there.
- driver SIGKILL: at the same point, SIGKILL the driver's process group and whatever is left of its session
  (its local Ray), then run the same command with ``--resume``.
- MLflow outage: once a trial has logged a few steps, SIGKILL the server's process group and start it again
  on the same port and store ``--outage`` seconds later.

Measured per scenario, from MLflow and the Tune run dir; trials are matched to the baseline's by their
sampled params:

- completed: exit code 0 and the parent run FINISHED; once: every Tune trial has exactly one FINISHED child run;
- duplicate runs: child runs beyond one per trial id; RUNNING: runs (parent or children) left RUNNING;
- steps lost: steps of ``loss`` and ``stsb/spearman/grid_mean`` the baseline logged and this sweep did not;
- steps twice: (key, step) logged more than once; informational: a retried or resumed trial logs the steps
  between its checkpoint and the kill again;
- grid = baseline: every cell of every trial's final ``grid.csv`` artifact within 1e-4 of the baseline's.

Exit code 0 only if every scenario is complete, once, with 0 duplicates, 0 RUNNING, 0 steps lost, equal grids.
Every process the bench starts (sweeps, their Ray, the server) is killed by session at the end.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # grid.csv downloads
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "sweep_weighting.py"
SPACE = "method.layer_weighting:\n  choice: [linear, log]\nmethod.prior_layers_weight:\n  uniform: [0.5, 1.5]\n"
KEYS = ("loss", "stsb/spearman/grid_mean")
TOLERANCE = 1e-4
FAULTS = {"worker": "worker SIGKILL", "driver": "driver SIGKILL+resume", "mlflow": "MLflow outage"}


@dataclasses.dataclass
class Plan:
    trials: int
    steps: int  # per trial
    every: int  # evaluation and checkpoint interval
    outage_s: float  # server down this long before the restart command (plus its start-up)


SHORT = Plan(trials=1, steps=16, every=4, outage_s=2)  # the server's own restart adds ~20 s of outage
FULL = Plan(trials=3, steps=60, every=10, outage_s=15)


# -- processes --------------------------------------------------------------------------------------------
def kill_session(sid: int) -> list[int]:
    """SIGKILL process group ``sid`` and every other process still in session ``sid`` (its leader is the caller's
    child, left for the caller's ``Popen.wait`` to reap); the pids that were alive."""
    import psutil

    from matryoshka2d.testing import session_processes

    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    procs = [p for p in session_processes(sid) if p.pid not in (sid, os.getpid())]
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=15)
    return [p.pid for p in procs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 over ``<folder>/mlflow.db``, artifacts served from ``<folder>/artifacts``,
    one worker, in its own session (so that one SIGKILL of its group takes it all)."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder, self.port = Path(folder), port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.folder.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 180) -> "MlflowServer":
        import requests

        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
               "--serve-artifacts", "--artifacts-destination", str(self.folder / "artifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey job runner processes
        with (self.folder / "server.log").open("a") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}: "
                                   + (self.folder / "server.log").read_text()[-2000:])
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server on {self.uri} not healthy after {timeout:g} s")

    def kill(self) -> list[int]:
        if self.proc is None:
            return []
        pids = kill_session(self.proc.pid)
        self.proc.wait(timeout=30)
        self.proc = None
        return pids


# -- one sweep --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, tmp: Path, model: str, data_dir: str, plan: Plan, server: MlflowServer):
        self.tmp, self.model, self.plan, self.server = tmp, model, plan, server
        (tmp / "space.yaml").write_text(SPACE)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "M2D_DATA_DIR": data_dir, "M2D_HOME": str(tmp / "home"),
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(tmp / "r"),
                    # Tune state saved every 2 s (for --resume), without a warning at every checkpoint
                    "TUNE_GLOBAL_CHECKPOINT_S": "2", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
        from mlflow import MlflowClient

        self.mlf = MlflowClient(server.uri)

    def argv(self, name: str, *extra: str) -> list[str]:
        p = self.plan
        sets = {"model.name": self.model, "eval.dims": "[8,16,32]", "train.max_steps": p.steps,
                "train.checkpoint_every": p.every, "eval.every_steps": p.every, "train.log_every": 1}
        return [sys.executable, str(SCRIPT), "--smoke", *[x for k, v in sets.items() for x in ("--set", f"{k}={v}")],
                "--space", str(self.tmp / "space.yaml"), "--num-samples", str(p.trials), "--scheduler", "fifo",
                "--max-concurrent", "1", "--seed", "7", "--max-failures", "2", "--tracking-uri", self.server.uri,
                "--storage-path", str(self.tmp / "ray" / name), "--experiment-name", f"faults-{name}", *extra]

    def start(self, name: str, *extra: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}{'-resume' if extra else ''}.log").open("w")
        proc = subprocess.Popen(self.argv(name, *extra), cwd=self.tmp, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = Path(log.name)  # type: ignore[attr-defined]
        log.close()
        return proc

    def finish(self, proc: subprocess.Popen) -> int:
        """Exit code of a started sweep (killed after a timeout); nothing of its session survives."""
        try:
            return proc.wait(timeout=240 + 90 * self.plan.trials * (1 + self.plan.steps / 20))
        except subprocess.TimeoutExpired:
            return -1
        finally:
            kill_session(proc.pid)
            proc.wait()

    def run_dir(self, name: str) -> Path | None:
        found = sorted((self.tmp / "ray" / name).glob(f"faults-{name}-*"))
        return found[-1] if found else None

    def trial_runs(self, name: str) -> list:
        exp = self.mlf.get_experiment_by_name(f"faults-{name}")
        runs = self.mlf.search_runs([exp.experiment_id], max_results=1000) if exp else []
        return [r for r in runs if r.data.tags.get("m2d.kind") == "trial"]

    def wait_mid_trial(self, name: str, proc: subprocess.Popen, after_step: int, checkpoint: bool) -> tuple:
        """The first RUNNING trial run that has logged ``loss`` beyond ``after_step`` (and whose Tune trial dir
        holds a checkpoint): (run, last logged step)."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.25)
            run_dir = self.run_dir(name)
            if run_dir is None or not list(run_dir.glob("experiment_state-*.json")):
                continue  # before the driver's first state save
            for run in self.trial_runs(name):
                if run.info.status != "RUNNING":
                    continue
                steps = [m.step for m in self.mlf.get_metric_history(run.info.run_id, "loss")]
                saved = list(run_dir.glob(f"*{run.data.tags['m2d.trial_id']}*/checkpoint_*"))  # Tune's copy
                if steps and max(steps) > after_step and (saved or not checkpoint):
                    return run, max(steps)
        raise RuntimeError(f"{name}: no trial past step {after_step} (exit {proc.poll()}): "
                           + proc.log_path.read_text()[-3000:])  # type: ignore[attr-defined]


# -- the scenarios: each returns (exit code, evidence of the fault) ---------------------------------------
def baseline(b: Bench) -> tuple[int, dict]:
    return b.finish(b.start("baseline")), {}


def worker_kill(b: Bench) -> tuple[int, dict]:
    import psutil

    from matryoshka2d.testing import session_processes

    proc = b.start("worker")
    try:
        run, step = b.wait_mid_trial("worker", proc, b.plan.every + 1, checkpoint=True)
        actors = [p for p in session_processes(proc.pid) if "ImplicitFunc" in " ".join(_cmdline(p))]
        if len(actors) != 1:
            raise RuntimeError(f"worker: expected one trial actor, found {[_cmdline(p) for p in actors]}")
        actor = actors[0]
        title = " ".join(_cmdline(actor)).strip()
        os.kill(actor.pid, signal.SIGKILL)
        try:
            actor.wait(timeout=15)
        except psutil.TimeoutExpired:
            pass
        died = not actor.is_running() or actor.status() == psutil.STATUS_ZOMBIE
        evidence = {"killed_pid": actor.pid, "process": title[:60], "died": died, "killed_after_step": step,
                    "trial_id": run.data.tags["m2d.trial_id"]}
        code = b.finish(proc)
    finally:
        kill_session(proc.pid)
    tags = b.mlf.get_run(run.info.run_id).data.tags
    evidence.update(resumed_from_step=tags.get("m2d.resumed_from_step"), resumed_from=tags.get("m2d.resumed_from"))
    return code, evidence


def driver_kill(b: Bench) -> tuple[int, dict]:
    proc = b.start("driver")
    try:
        run, step = b.wait_mid_trial("driver", proc, b.plan.every + 1, checkpoint=True)
        killed = kill_session(proc.pid)
        first_code = proc.wait(timeout=30)
    finally:
        kill_session(proc.pid)
    running = sum(r.info.status == "RUNNING" for r in b.trial_runs("driver"))
    resumed = b.start("driver", "--resume")
    code = b.finish(resumed)
    log = resumed.log_path.read_text()  # type: ignore[attr-defined]
    tags = b.mlf.get_run(run.info.run_id).data.tags
    return code, {"driver_pid": proc.pid, "first_exit": first_code, "processes_killed": len(killed),
                  "killed_after_step": step, "trial_id": run.data.tags["m2d.trial_id"],
                  "running_after_kill": running, "said_resuming": "sweep: resuming" in log,
                  "resumed_from_step": tags.get("m2d.resumed_from_step"), "resumed_from": tags.get("m2d.resumed_from")}


def mlflow_outage(b: Bench) -> tuple[int, dict]:
    proc = b.start("mlflow")
    try:
        run, step = b.wait_mid_trial("mlflow", proc, 2, checkpoint=False)
        down = time.monotonic()
        pid = b.server.proc.pid
        b.server.kill()
        time.sleep(b.plan.outage_s)
        b.server.start()
        down_s = time.monotonic() - down
        code = b.finish(proc)
    finally:
        kill_session(proc.pid)
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    return code, {"server_pid": pid, "down_s": round(down_s, 1), "killed_after_step": step,
                  "trial_id": run.data.tags["m2d.trial_id"], "warnings": log.count("tracking: warning"),
                  "recovered": log.count("reachable again"), "tracebacks": log.count("Traceback")}


SCENARIOS = {"worker": worker_kill, "driver": driver_kill, "mlflow": mlflow_outage}


def _cmdline(proc) -> list[str]:
    try:
        return proc.cmdline()
    except Exception:
        return []


# -- measuring --------------------------------------------------------------------------------------------
def collect(b: Bench, name: str) -> dict:
    """What MLflow and Tune hold for one scenario's sweep."""
    exp = b.mlf.get_experiment_by_name(f"faults-{name}")
    runs = b.mlf.search_runs([exp.experiment_id], max_results=1000) if exp else []
    parents = [r for r in runs if r.data.tags.get("m2d.kind") == "sweep"]
    run_dir = b.run_dir(name)
    tune_ids = sorted(m.group(1) for p in (run_dir.glob("run_trial_*") if run_dir else [])
                      if (m := re.match(r"run_trial_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_", p.name)))
    trials = []
    for run in (r for r in runs if r.data.tags.get("m2d.kind") == "trial"):
        rid = run.info.run_id
        history = {k: [m.step for m in b.mlf.get_metric_history(rid, k)] for k in KEYS}
        params = tuple(sorted((k, v) for k, v in run.data.params.items()
                              if k.startswith("sweep.") and k not in ("sweep.backend", "sweep.workers")))
        trials.append({"trial_id": run.data.tags.get("m2d.trial_id"), "status": run.info.status, "params": params,
                       "history": history, "grid": final_grid(b.mlf, rid, b.tmp / "grids" / rid)})
    return {"parents": [r.info.status for r in parents], "tune_ids": tune_ids, "trials": trials}


def final_grid(mlf, run_id: str, folder: Path) -> dict:
    """{(dataset, split, metric, layer, dim): value} of the run's grid.csv artifact; {} if it has none."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = mlf.download_artifacts(run_id, "grid.csv", str(folder))
    except Exception:
        return {}
    with open(path, newline="") as fh:
        return {tuple(row[:-1]): float(row[-1]) for row in list(csv.reader(fh))[1:]}


def score(fault: str, code: int, got: dict, base: dict | None, trials: int) -> dict:
    """One table row: the goals, then what was measured against the baseline (None for the baseline itself)."""
    by_id: dict[str, list] = {}
    for t in got["trials"]:
        by_id.setdefault(t["trial_id"], []).append(t)
    once = (len(got["tune_ids"]) == trials and set(by_id) == set(got["tune_ids"])
            and all(len(ts) == 1 and ts[0]["status"] == "FINISHED" for ts in by_id.values()))
    running = got["parents"].count("RUNNING") + sum(t["status"] == "RUNNING" for t in got["trials"])
    twice = sum(len(s) - len(set(s)) for t in got["trials"] for s in t["history"].values())
    row = {"fault": fault, "completed": code == 0 and got["parents"] == ["FINISHED"], "once": once,
           "duplicate_runs": sum(len(ts) - 1 for ts in by_id.values()), "running": running, "steps_twice": twice,
           "exit_code": code}
    if base is None:
        row.update(steps_lost=0, grid_equal=True, grid_max_diff=0.0)
        return row
    mine = {t["params"]: t for t in got["trials"]}
    lost, diffs, equal = 0, [], True
    for ref in base["trials"]:
        t = mine.get(ref["params"])
        for key in KEYS:
            lost += len(set(ref["history"][key]) - set(t["history"][key] if t else []))
        if t is None or not ref["grid"] or set(t["grid"]) != set(ref["grid"]):
            equal = False
            continue
        diffs += [abs(t["grid"][c] - v) for c, v in ref["grid"].items()]
    max_diff = max(diffs, default=float("inf"))
    row.update(steps_lost=lost, grid_equal=equal and len(mine) == len(base["trials"]) and max_diff <= TOLERANCE,
               grid_max_diff=max_diff)
    return row


def goals_met(row: dict) -> bool:
    return (row["completed"] and row["once"] and row["duplicate_runs"] == 0 and row["running"] == 0
            and row["steps_lost"] == 0 and row["grid_equal"])


def print_table(rows: list[dict], plan: Plan, wall: float) -> None:
    yes = lambda x: "yes" if x else "NO"  # noqa: E731
    print(f"\nfaults: {plan.trials} trials x {plan.steps} steps (eval + checkpoint every {plan.every}), 1 at a time, "
          f"outage {plan.outage_s:g} s + restart; {os.cpu_count()} CPUs; {wall:.0f} s in all")
    print(f"{'fault':<22} {'completed':>9} {'once':>5} {'dup runs':>8} {'RUNNING':>7} {'steps lost':>10} "
          f"{'steps twice':>11} {'grid = baseline':>16} {'wall s':>7}  evidence")
    for r in rows:
        grid = "(reference)" if r["fault"] == "baseline" else f"{yes(r['grid_equal'])} ({r['grid_max_diff']:.0e})"
        evidence = ", ".join(f"{k}={v}" for k, v in r["evidence"].items())
        print(f"{r['fault']:<22} {yes(r['completed']):>9} {yes(r['once']):>5} {r['duplicate_runs']:>8} "
              f"{r['running']:>7} {r['steps_lost']:>10} {r['steps_twice']:>11} {grid:>16} {r['wall_s']:>7.0f}  "
              f"{evidence}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewest steps that still exercise every fault")
    parser.add_argument("--faults", default="worker,driver,mlflow", help="comma list of worker, driver, mlflow")
    parser.add_argument("--outage", type=float, default=None, help="seconds the server stays down before restart")
    parser.add_argument("--model", default=None, help="model dir or alias (default: a tiny random 6x32 BERT)")
    parser.add_argument("--data-dir", default=os.environ.get("M2D_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores, run dirs)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    if unknown := set(faults) - set(SCENARIOS):
        parser.error(f"--faults: unknown {', '.join(sorted(unknown))}")
    plan = SHORT if args.short else FULL
    if args.outage is not None:
        plan = dataclasses.replace(plan, outage_s=args.outage)

    from matryoshka2d.testing import make_tiny_bert

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated bench still cleans up (finally)
    started = time.perf_counter()
    # under /tmp, not $TMPDIR: Ray's unix socket paths (<tmp>/r/ray/session_*/sockets/...) must stay short
    tmp = Path(tempfile.mkdtemp(prefix="m2d-faults-", dir="/tmp" if os.path.isdir("/tmp") else None))
    server, rows = None, []
    try:
        model = args.model or str(make_tiny_bert(tmp / "tiny", num_layers=6, hidden_size=32))
        server = MlflowServer(tmp / "mlflow").start()
        b = Bench(tmp, model, str(Path(args.data_dir).resolve()), plan, server)
        base = None
        for key in ["baseline", *faults]:
            t0 = time.perf_counter()
            if server.proc is None:  # a failed outage scenario left it down
                server.start()
            try:
                code, evidence = (baseline if key == "baseline" else SCENARIOS[key])(b)
            except RuntimeError as err:  # the fault could not be injected: a row that misses its goals
                code, evidence = -1, {"error": str(err).splitlines()[0][:200]}
                print(f"faults: {key}: {err}", flush=True)
            got = collect(b, key)
            row = score(FAULTS.get(key, key), code, got, base, plan.trials)
            row.update(wall_s=time.perf_counter() - t0, evidence=evidence)
            rows.append(row)
            base = base or got
            print(f"faults: {row['fault']}: {'goals met' if goals_met(row) else 'GOALS MISSED'} "
                  f"({row['wall_s']:.0f} s) {evidence}", flush=True)
    finally:
        if server is not None:
            server.kill()
        if args.keep:
            print(f"faults: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, plan, time.perf_counter() - started)
    if args.json:
        Path(args.json).write_text(json.dumps({"plan": plan.__dict__, "rows": rows}, indent=2, default=str))
    return 0 if rows and all(goals_met(r) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
