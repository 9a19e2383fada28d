#!/usr/bin/env python
"""Autoscaling proven locally: Ray's real autoscaler with fake nodes on this machine, driven by the smoke sweep.

    export HF_HUB_OFFLINE=1 M2D_DATA_DIR=/path/to/data
    python experiments/autoscale_local.py                       # prints the evidence, exits 0 when all is proven
    python experiments/autoscale_local.py --json evidence.json --keep-logs -- --set train.max_steps=5
                                                                # evidence file, Ray logs kept, extra sweep flags

What it does (about 1.5 minutes on 2 cores):

1. starts a local autoscaling cluster (``ray.cluster_utils.AutoscalingCluster``: ``ray start --head`` with the
   real autoscaler monitor and the ``fake_multinode`` node provider, whose "nodes" are extra raylets on this
   machine): a head with **0 CPUs**, so no trial can run there, and one worker type ``cpu_worker`` (1 CPU,
   min 0, max 2) that is removed after a few seconds idle;
2. runs ``experiments/sweep_weighting.py --smoke --address <cluster>`` (the product entrypoint, unchanged) with
   2 trials at a time on a tiny random BERT;
3. prints what Ray itself recorded: the worker nodes the autoscaler launched (state API, polled while the sweep
   runs), the node every trial's actor ran on (Tune's ``result.json`` pid joined with the state API's actors),
   the worker nodes DEAD again after the idle timeout while the head is still up, and the autoscaler's own
   log lines; then checks them and exits 0 (all proven) or 1.

Safe on a shared machine: ``AutoscalingCluster.start()`` and ``shutdown()`` run ``ray stop --force``, which
kills every Ray process on the machine that it is allowed to, and its fake nodes assume GCS port 6379. Here the
cluster gets free ports, its own ``--temp-dir`` (so ``ray.init()`` elsewhere never finds it) and its own
process session, token authentication with a fresh token, and is stopped by killing exactly its own processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # Token authentication, as on the production cluster (README.md, "Token authentication"), with a fresh token
    # for this cluster only. Ray reads RAY_AUTH_MODE when it is imported, so this must come before `import ray`.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    # Loopback only: Ray's single-node mode makes the node IP 127.0.0.1, so the head, the fake worker nodes and
    # the sweep driver bind 127.0.0.1 (matryoshka2d.cluster explains why this and not --node-ip-address).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)

import yaml  # noqa: E402
from ray.cluster_utils import AutoscalingCluster  # noqa: E402

from matryoshka2d.testing import is_loopback, listening_sockets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "sweep_weighting.py"
WORKER_TYPE = "cpu_worker"
OBJECT_STORE = 100 * 1024 * 1024  # per node; Ray's default (30% of RAM) per fake node would be absurd
# Ray 2.60's wheel does not ship fake_multi_node/example.yaml, which AutoscalingCluster reads as its base
# config; these are the same settings (the fake provider needs no SSH, updaters or launch-config checks).
BASE_CONFIG = {
    "cluster_name": "m2d-autoscale-local",
    "max_workers": 2,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "available_node_types": {},
    "head_node_type": "ray.head.default",
    "auth": {}, "docker": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
    "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def own_processes(sid: int | None, marker: str) -> list[int]:
    """Live (not zombie) processes in session ``sid`` or with ``marker`` in their command line (Linux /proc)."""
    skip, pid = set(), os.getpid()
    while pid > 1:  # never this process or its ancestors
        skip.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if (sid is not None and os.getsid(int(entry.name)) == sid) or marker in cmdline:
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


class LocalAutoscalingCluster(AutoscalingCluster):
    """``AutoscalingCluster`` (same config, same autoscaler env) that only ever touches its own processes."""

    def __init__(self, head_resources: dict, worker_node_types: dict, env: dict[str, str] | None = None,
                 **config_kwargs):
        import ray._private.services as services

        self.port = free_port()
        self.ip = services.get_node_ip_address()
        self.address = f"{self.ip}:{self.port}"
        # short: Ray's unix socket paths under <temp>/session_*/sockets must stay < 108 characters
        self.temp_dir = tempfile.mkdtemp(prefix="m2das-", dir="/tmp")
        self.env = dict(env or {})
        self.sid: int | None = None
        super().__init__(dict(head_resources), worker_node_types, **config_kwargs)
        # fake worker raylets join this GCS (the provider's default is <ip>:6379)
        self._config["provider"]["gcs_address"] = self.address

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        import ray

        if (Path(ray.__file__).parent / "autoscaler/_private/fake_multi_node/example.yaml").is_file():
            return super()._generate_config(head_resources, worker_node_types, autoscaler_v2, **config_kwargs)
        config = json.loads(json.dumps(BASE_CONFIG))
        config["available_node_types"] = {**worker_node_types,
                                          "ray.head.default": {"resources": head_resources, "node_config": {},
                                                               "max_workers": 0}}
        if autoscaler_v2:
            raise NotImplementedError("autoscaler v2 needs the fixed head node id of AutoscalingCluster.start()")
        config.update(config_kwargs)
        return config

    def start(self, _system_config=None, override_env=None, timeout: float = 180) -> None:
        config_file = Path(self.temp_dir) / "autoscaling.yaml"
        config_file.write_text(yaml.safe_dump(self._config))
        head = dict(self._head_resources)
        ray_cli = Path(sys.executable).parent / "ray"  # this interpreter's Ray, not whatever `ray` is on PATH
        ray_cli = str(ray_cli) if ray_cli.is_file() else shutil.which("ray") or "ray"
        cmd = [ray_cli, "start", "--head", f"--autoscaling-config={config_file}",
               f"--port={self.port}", f"--temp-dir={self.temp_dir}", f"--num-cpus={head.pop('CPU', 0)}",
               f"--num-gpus={head.pop('GPU', 0)}",
               f"--object-store-memory={head.pop('object_store_memory', OBJECT_STORE)}",
               f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--ray-client-server-port={free_port()}", "--disable-usage-stats"]
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        if _system_config is not None:
            cmd.append(f"--system-config={json.dumps(_system_config, separators=(',', ':'))}")
        env = {**os.environ, **self.env, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
               **(override_env or {})}
        env.pop("RAY_ADDRESS", None)
        log = Path(self.temp_dir) / "ray-start.log"
        with open(log, "w") as out:
            # own session: every process of this cluster (head services, the autoscaler and the fake nodes it
            # starts, their workers) shares this session id, which is how shutdown() finds exactly them
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.sid = proc.pid
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            raise RuntimeError(f"ray start --head failed ({rc}):\n{log.read_text()[-3000:]}")

    def processes(self) -> list[int]:
        """Pids of this cluster's live processes: in its session, or (belt and braces) naming its temp dir."""
        return own_processes(self.sid, self.temp_dir)

    def shutdown(self, keep_temp: bool = False) -> None:
        """Stop this cluster only: SIGTERM to its processes (by pid), SIGKILL what is left after 15 s."""
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            pids = self.processes()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                time.sleep(0.5)
                pids = self.processes()
            if not pids:
                break
        if not keep_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_lines(self, pattern: str, name: str = "monitor.log") -> list[str]:
        path = Path(self.temp_dir) / "session_latest" / "logs" / name
        if not path.is_file():
            return []
        return [line.rstrip() for line in path.read_text(errors="replace").splitlines() if re.search(pattern, line)]


# -- evidence from Ray's state ------------------------------------------------------------------------------
def nodes(address: str) -> list[dict]:
    from ray.util.state import list_nodes

    return [n.__dict__ if not isinstance(n, dict) else n
            for n in list_nodes(address=address, detail=True, limit=1000, raise_on_missing_output=False)]


def actors(address: str) -> list[dict]:
    from ray.util.state import list_actors

    return [a.__dict__ if not isinstance(a, dict) else a
            for a in list_actors(address=address, detail=True, limit=10000, raise_on_missing_output=False)]


def tune_results(storage: Path) -> dict[str, dict[int, float]]:
    """Tune's own record of every trial (its ``result.json`` rows): trial id -> {pid that reported: last time}."""
    out: dict[str, dict[int, float]] = {}
    for path in storage.rglob("result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                pids = out.setdefault(str(row["trial_id"]), {})
                pids[int(row["pid"])] = max(pids.get(int(row["pid"]), 0), float(row["timestamp"]))
    return out


def short(node_id: str | None) -> str:
    return f"...{node_id[-8:]}" if node_id else "?"  # fake node ids differ in their last digits only


def run(args: argparse.Namespace, ev: dict) -> dict:
    """The demo; fills and returns ``ev``, the evidence (JSON-able). Never leaves a process or a cluster behind."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="m2d-autoscale-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else None
    if model is None:
        from matryoshka2d.testing import make_tiny_bert

        # 6 blocks: the explicit layer-weight lists in experiments/spaces/weighting.yaml have 7 entries
        model = make_tiny_bert(workdir / "tiny-bert6", num_layers=6, hidden_size=32)
    # every node and client gets this process's auth settings (token auth when run as a script, see the top)
    auth = {k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH") if k in os.environ}
    os.environ.pop("RAY_ADDRESS", None)  # would override the state API's address
    node_env = {**auth, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "RAY_USAGE_STATS_ENABLED": "0",
                "TOKENIZERS_PARALLELISM": "false"}
    if os.environ.get("M2D_DATA_DIR"):
        node_env["M2D_DATA_DIR"] = os.environ["M2D_DATA_DIR"]

    cluster = LocalAutoscalingCluster(
        head_resources={"CPU": 0},
        worker_node_types={WORKER_TYPE: {"resources": {"CPU": 1, "object_store_memory": OBJECT_STORE},
                                         "node_config": {}, "min_workers": 0, "max_workers": args.max_workers}},
        env=node_env, max_workers=args.max_workers, idle_timeout_minutes=args.idle_timeout_minutes,
        upscaling_speed=1.0)
    ev.update({"address": cluster.address, "temp_dir": cluster.temp_dir, "workdir": str(workdir),
                "idle_timeout_s": args.idle_timeout_minutes * 60, "max_workers": args.max_workers})
    info = {"temp_dir": cluster.temp_dir, "script_pid": os.getpid()}

    def record(**more) -> None:  # for a caller that must clean up after a hard kill of this process (the test does)
        info.update(more)
        (workdir / "cluster.json").write_text(json.dumps(info))

    record()
    sweep = None
    t0 = time.monotonic()
    try:
        cluster.start()
        record(sid=cluster.sid)
        ev["head_started_s"] = round(time.monotonic() - t0, 1)
        print(f"autoscale: head up at {cluster.address} in {ev['head_started_s']} s (temp dir {cluster.temp_dir})",
              flush=True)

        storage = workdir / "ray_results"
        cmd = [sys.executable, str(SWEEP), "--smoke", "--address", cluster.address,
               "--num-samples", str(args.num_samples), "--workers-per-trial", "1",
               # the default (cluster CPUs over a trial's need) is 1 on a 0-CPU head: ask for what may scale up
               "--max-concurrent", str(args.max_workers),
               "--set", f"model.name={model}", "--set", "eval.dims=[8,16,32]", "--set", "eval.max_examples=50",
               "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--storage-path", str(storage),
               "--experiment-name", "autoscale-local", *args.sweep_args]
        ev["sweep_cmd"] = cmd
        sweep_log = workdir / "sweep.log"
        env = {**os.environ, **node_env, "PYTHONUNBUFFERED": "1"}
        print("autoscale: running " + " ".join(cmd[1:]), flush=True)
        started = time.monotonic()
        seen: dict[str, dict] = {}  # worker node id -> first view
        peak = 0
        listening: dict[str, str] = {}  # every listening socket of the cluster and the sweep: "ip:port" -> process
        with open(sweep_log, "w") as out:
            sweep = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
            record(sweep_pid=sweep.pid)
            while sweep.poll() is None:
                if time.monotonic() - started > args.sweep_timeout:
                    raise TimeoutError(f"sweep still running after {args.sweep_timeout} s (log {sweep_log})")
                try:
                    alive = [n for n in nodes(cluster.address) if not n["is_head_node"] and n["state"] == "ALIVE"]
                except Exception as err:  # the dashboard may be busy on 2 loaded cores; the next poll retries
                    print(f"autoscale: (state API: {err})", flush=True)
                    alive = []
                for n in alive:
                    if n["node_id"] not in seen:
                        seen[n["node_id"]] = n
                        print(f"autoscale: +{time.monotonic() - started:5.1f}s worker node {short(n['node_id'])} "
                              f"ALIVE ({n['resources_total'].get('CPU', 0):g} CPU)", flush=True)
                peak = max(peak, len(alive))
                for pid, name, ip, port in listening_sockets(cluster.processes() + [sweep.pid]):
                    listening.setdefault(f"{ip}:{port}", f"{name} (pid {pid})")
                time.sleep(2)
        sweep_s = time.monotonic() - started
        ev.update(listening=listening, not_loopback=sorted(a for a in listening if not is_loopback(a.rsplit(":", 1)[0])))
        ev.update(sweep_rc=sweep.returncode, sweep_s=round(sweep_s, 1), peak_alive_workers=peak,
                  sweep_log_tail=sweep_log.read_text(errors="replace")[-4000:])
        sweep = None
        print(f"autoscale: sweep exited {ev['sweep_rc']} after {ev['sweep_s']} s; log {sweep_log}", flush=True)

        # where the trials ran: Tune's pids -> the actors Ray recorded with those pids -> their nodes
        all_nodes = nodes(cluster.address)
        head = [n for n in all_nodes if n["is_head_node"]]
        workers = [n for n in all_nodes if not n["is_head_node"]]
        by_pid = {a["pid"]: a for a in actors(cluster.address) if a.get("pid")}
        trials = {}
        for trial_id, pids in sorted(tune_results(storage).items()):
            trials[trial_id] = [{"pid": pid, "last_result": last, "node_id": by_pid.get(pid, {}).get("node_id"),
                                 "actor_class": by_pid.get(pid, {}).get("class_name")}
                                for pid, last in sorted(pids.items())]
        ev["head"] = [{"node_id": n["node_id"], "state": n["state"], "resources_total": n["resources_total"]}
                      for n in head]
        ev["trials"] = trials
        for n in head:
            print(f"autoscale: head node {short(n['node_id'])}: {n['resources_total'].get('CPU', 0):g} CPU", flush=True)
        for trial_id, runs in trials.items():
            for r in runs:
                kind = "HEAD" if r["node_id"] in {n["node_id"] for n in head} else \
                    "worker" if r["node_id"] in {n["node_id"] for n in workers} else "unknown"
                print(f"autoscale: trial {trial_id} ran in pid {r['pid']} (actor {r['actor_class']}) on {kind} node "
                      f"{short(r['node_id'])}", flush=True)

        # scale-down: every worker node DEAD again, by the autoscaler (the head is still alive)
        ended = time.monotonic()
        deadline = ended + args.idle_timeout_minutes * 60 + args.removal_grace
        while True:
            all_nodes = nodes(cluster.address)
            workers = [n for n in all_nodes if not n["is_head_node"]]
            if all(n["state"] == "DEAD" for n in workers) or time.monotonic() > deadline:
                break
            time.sleep(2)
        ev["waited_for_removal_s"] = round(time.monotonic() - ended, 1)
        ev["workers"] = []
        for n in workers:
            last = max((r["last_result"] for runs in trials.values() for r in runs if r["node_id"] == n["node_id"]),
                       default=None)
            end = n.get("end_time_ms") / 1000 if n["state"] == "DEAD" and n.get("end_time_ms") else None
            ev["workers"].append({
                "node_id": n["node_id"], "state": n["state"], "state_message": n.get("state_message"),
                "resources_total": n["resources_total"], "labels": n.get("labels"),
                "start_time_ms": n.get("start_time_ms"), "end_time_ms": n.get("end_time_ms"),
                "trials": sorted(t for t, runs in trials.items() if any(r["node_id"] == n["node_id"] for r in runs)),
                # from its trials' last report to its removal: >= the idle timeout if the autoscaler kept it idle
                "removed_s_after_last_result": round(end - last, 1) if end and last else None})
        ev["workers_seen_alive"] = sorted(seen)
        ev["head_alive_after"] = [n["state"] for n in all_nodes if n["is_head_node"]] == ["ALIVE"]
        for n in ev["workers"]:
            up = (n["end_time_ms"] - n["start_time_ms"]) / 1000 if n["state"] == "DEAD" else None
            print(f"autoscale: worker node {short(n['node_id'])} ({n['resources_total'].get('CPU', 0):g} CPU) "
                  f"ran trials {', '.join(n['trials']) or '-'}; {n['state']} after {up if up is None else round(up, 1)}"
                  f" s up, {n['removed_s_after_last_result']} s after its last trial result "
                  f"(idle timeout {ev['idle_timeout_s']:g} s): {n['state_message']}", flush=True)
        print(f"autoscale: head still {'ALIVE' if ev['head_alive_after'] else 'NOT alive'} after the workers' "
              f"removal", flush=True)
        # the monitor writes its event summary ("Removing N nodes ... (idle)") on its next update after terminating
        # the nodes, a few seconds after they are DEAD: wait for it, bounded, before reading the log
        deadline = time.monotonic() + 20
        while not cluster.log_lines(r"Removing \d+ node") and time.monotonic() < deadline:
            time.sleep(1.0)
        ev["autoscaler_log"] = cluster.log_lines(r"Adding \d+ node|Removing \d+ node|[Tt]erminat.*idle|"
                                                 r"idle.*[Tt]erminat|launched \d+ node")[-20:]
        # per node: the autoscaler's own record of terminating it for idleness (fake node id = Ray node id)
        ev["idle_terminated"] = sorted({m.group(1) for line in cluster.log_lines(r"Terminating the node with id")
                                        if (m := re.search(r"Terminating the node with id (\w+) .*\(idle\)", line))})
        for line in ev["autoscaler_log"]:
            print(f"autoscale: monitor.log: {line}", flush=True)
        return ev
    finally:
        if sweep is not None and sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)  # lets the sweep close its MLflow runs
            try:
                sweep.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sweep.kill()
                sweep.wait()
        cluster.shutdown(keep_temp=args.keep_logs)
        left = cluster.processes()
        ev["leftover_processes"] = left
        print(f"autoscale: cluster stopped ({len(left)} process(es) left); outputs in {workdir}", flush=True)


def check(ev: dict) -> list[str]:
    """What must hold; returns the failures."""
    fails = []
    head_cpu = [h["resources_total"].get("CPU", 0) for h in ev.get("head", [])]
    if head_cpu != [0]:
        fails.append(f"one head with 0 CPU expected, got {head_cpu}")
    if ev.get("sweep_rc") != 0:
        fails.append(f"sweep exit code {ev.get('sweep_rc')}")
    workers = ev.get("workers", [])
    # at most max_workers alive at once (peak, below); over the sweep a node that went idle between two trials may be
    # terminated and another launched for the next trial: at most one launch per trial beyond max_workers
    launches = ev["max_workers"] + len(ev.get("trials") or {})
    if not 1 <= len(workers) <= launches:
        fails.append(f"1..{launches} worker nodes expected, the autoscaler launched {len(workers)}")
    if not 1 <= ev.get("peak_alive_workers", 0) <= ev["max_workers"]:
        fails.append(f"peak alive worker nodes {ev.get('peak_alive_workers')}")
    if any(n["resources_total"].get("CPU") != 1 for n in workers):
        fails.append("every worker node has 1 CPU (cpu_worker)")
    worker_ids = {n["node_id"] for n in workers}
    if not ev.get("trials"):
        fails.append("no trial results")
    for trial_id, runs in ev.get("trials", {}).items():
        for r in runs:
            if r["node_id"] not in worker_ids:
                fails.append(f"trial {trial_id} (pid {r['pid']}) ran on {r['node_id']}, not a worker node")
    if any(n["state"] != "DEAD" for n in workers):
        fails.append(f"worker nodes still alive {ev.get('waited_for_removal_s')} s after the sweep")
    for n in workers:
        # GCS says "Terminated by autoscaler" when the autoscaler's drain request won the race against the
        # fake provider's SIGTERM to the raylet, else "received SIGTERM": both expected; the log names the cause
        if n["node_id"] not in ev.get("idle_terminated", []):
            fails.append(f"worker {n['node_id']} not terminated as idle by the autoscaler (monitor.log); "
                         f"GCS: {n['state_message']}")
        if n["state"] == "DEAD" and not (n["state_message"] or "").startswith("Expected termination"):
            fails.append(f"worker {n['node_id']} died unexpectedly: {n['state_message']}")
        idle = n.get("removed_s_after_last_result")
        if n["trials"] and (idle is None or idle < ev["idle_timeout_s"] - 1):  # result timestamps are whole seconds
            fails.append(f"worker {n['node_id']} removed {idle} s after its last trial result, before the idle "
                         f"timeout ({ev['idle_timeout_s']:g} s)")
    if not any(re.search(r"Removing \d+ nodes? of type cpu_worker \(idle\)", x) for x in ev.get("autoscaler_log", [])):
        fails.append("no idle removal in the autoscaler's log")
    if not ev.get("head_alive_after"):
        fails.append("head not alive when the workers were removed (they must be removed by the autoscaler)")
    if ev.get("leftover_processes"):
        fails.append(f"cluster processes left: {ev['leftover_processes']}")
    if not ev.get("listening") or ev.get("not_loopback"):
        fails.append(f"sockets listening beyond loopback: {ev.get('not_loopback')} (of {len(ev.get('listening', {}))})")
    return fails


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir for the sweep (default: a tiny random 6-layer BERT made here)")
    p.add_argument("--workdir", help="MLflow store, Ray results, logs (default: a new temp dir)")
    p.add_argument("--max-workers", type=int, default=2, help="max worker nodes of the cpu_worker type")
    p.add_argument("--num-samples", type=int, default=2, help="sweep trials")
    p.add_argument("--idle-timeout-minutes", type=float, default=0.1, help="autoscaler idle timeout")
    p.add_argument("--removal-grace", type=float, default=90, help="seconds beyond the idle timeout to wait")
    p.add_argument("--sweep-timeout", type=float, default=420)
    p.add_argument("--json", help="write the evidence here")
    p.add_argument("--keep-logs", action="store_true", help="keep the cluster's temp dir (Ray logs)")
    p.add_argument("sweep_args", nargs="*", help="after --: extra sweep_weighting.py flags")
    args = p.parse_args(argv)
    # a SIGTERM (a test's timeout, a CI cancel) must still run run()'s cleanup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ev: dict = {}
    fails = ["aborted"]
    try:
        fails = check(run(args, ev))
    except BaseException as err:
        fails = [f"{type(err).__name__}: {err}"]
        raise
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps({**ev, "failures": fails}, indent=2, default=str))
    for f in fails:
        print(f"autoscale: FAIL: {f}", flush=True)
    if not fails:
        print(f"autoscale: PASS: {len(ev['workers'])} worker node(s) launched (peak {ev['peak_alive_workers']} "
              f"alive, max {ev['max_workers']}), {len(ev['trials'])} trials ran only on them (head: 0 CPU), all "
              f"removed by the autoscaler after the {ev['idle_timeout_s']:g} s idle timeout", flush=True)
    return 1 if fails else 0


if __name__ == "__main__":
    raise SystemExit(main())
