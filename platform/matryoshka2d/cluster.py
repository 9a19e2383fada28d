"""Starting or joining Ray, and what fits on the cluster: the one place that decides how a local cluster listens.

A local cluster (no ``--address``, no ``$RAY_ADDRESS``) listens on loopback only. Ray 2.60 resolves a
``node_ip_address`` of 127.0.0.1 back to the machine's network address (``resolve_ip_for_localhost``),
so ``ray.init(_node_ip_address="127.0.0.1")`` does not help; its single-node mode does: with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` the node IP is 127.0.0.1, the GCS, raylet and core-worker gRPC
servers bind 127.0.0.1 instead of ``*``, and the dashboard, dashboard agent, runtime-env agent and
metrics exporters follow the node IP. One socket stays wide: torch.distributed's rendezvous store
(``TCPStore``, opened by rank 0 of a trial with several workers for that trial's lifetime) binds every
interface, and torch 2.13 has no setting for its bind address. Ray reads the variable once, at import, into
``ray_constants.ENABLE_RAY_CLUSTER`` (looked up at call time), and its processes inherit it, so
:func:`loopback_only` sets both before the local cluster starts.

Token authentication stays on (Ray's default for a local cluster); where no token exists yet, the one
Ray would generate with the umask's mode is created here first, readable by its owner only.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

from .errors import M2DError

SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def will_start_local(address: str | None) -> bool:
    return not (address or os.environ.get("RAY_ADDRESS"))


def loopback_only() -> None:
    """Make the local cluster this process starts next listen on 127.0.0.1."""
    os.environ[SINGLE_NODE_ENV] = "0"
    # multi-worker trials: gloo's and NCCL's own sockets on the loopback interface too (one node, nothing to reach)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray already imported (tests, notebooks): its constant was read at import
        constants.ENABLE_RAY_CLUSTER = False


def ensure_token() -> Path | None:
    """Where Ray would generate ``~/.ray/auth_token`` itself, write it first with mode 0600; returns the path
    created, None when a token is configured already or auth is not in token mode."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = Path.home() / ".ray" / "auth_token"
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created concurrently: that one is used
        return None
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    # RAY_AUTH_MODE stays unset: ray.init then turns token mode on itself, in this process's cached RayConfig
    # as well as the env its GCS inherits (setting the env here, after ray was imported, left the two apart)
    return path


def start_or_join(address: str | None = None, **init_kwargs) -> bool:
    """Join ``address`` / ``$RAY_ADDRESS`` (``ray job submit`` sets it), else start a loopback-only local Ray.

    Returns True when this call started a local cluster (the caller shuts it down).
    """
    if will_start_local(address):
        loopback_only()
        ensure_token()
    import ray

    if ray.is_initialized():
        return False
    if not will_start_local(address):
        ray.init(address=address or "auto", **init_kwargs)
        return False
    ray.init(**init_kwargs)
    return True


# -- what fits -------------------------------------------------------------------------------------------
def unschedulable(nodes: list[dict[str, float]], bundles: list[dict[str, float]]) -> str | None:
    """None if the bundles fit on these nodes at once (first fit, largest bundle first), else what is missing,
    e.g. ``"a trial needs 4 CPU, 0 GPU (5 bundle(s), each on one node); the cluster has 2 CPU, 0 GPU on 1 node(s),
    the largest 2 CPU, 0 GPU"``."""
    free = [dict(n) for n in nodes]
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0), -b.get("CPU", 0))):
        node = next((n for n in free if all(n.get(k, 0) + 1e-9 >= v for k, v in bundle.items())), None)
        if node is None:
            need = {k: sum(b.get(k, 0) for b in bundles) for k in ("CPU", "GPU")}
            have = {k: sum(n.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
            big = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            return (f"a trial needs {need['CPU']:g} CPU, {need['GPU']:g} GPU ({len(bundles)} bundle(s), each on one "
                    f"node); the cluster has {have['CPU']:g} CPU, {have['GPU']:g} GPU on {len(nodes)} node(s), "
                    f"the largest {big.get('CPU', 0):g} CPU, {big.get('GPU', 0):g} GPU")
        for k, v in bundle.items():
            node[k] = node.get(k, 0) - v
    return None


def max_concurrent(cluster: dict[str, float], workers: int, cpus_per_worker: float, gpus_per_trial: float) -> int:
    """How many trials fit at once: ``ray.cluster_resources()`` CPU (and GPU) over one trial's need, at least 1
    (an autoscaling cluster may report 0 before it scales up)."""
    fits = [int(cluster.get("CPU", 0) // (workers * cpus_per_worker))]
    if gpus_per_trial:
        fits.append(int(cluster.get("GPU", 0) // gpus_per_trial))
    return max(1, min(fits))


def local_resources() -> dict[str, float]:
    """What ``ray.init()`` gives a local cluster: every CPU of this machine, its CUDA GPUs."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def refuse_unschedulable(nodes: list[dict], bundles: list[dict], where: str) -> None:
    problem = unschedulable(nodes, bundles)
    if problem:
        raise M2DError(f"--workers-per-trial/--cpus-per-worker/--gpus-per-trial: {problem} ({where}); lower them "
                       "or join a bigger cluster with --address")


def wait_for_resources(bundles: list[dict], timeout: float) -> None:
    """On a cluster this driver joined, which may autoscale: ask the autoscaler for one trial's resources and wait
    up to ``timeout`` s for them to appear (a fixed cluster never grows: the wait ends in one line). The request
    is withdrawn once a trial holds resources, so the autoscaler follows the trials' own demand from then on."""
    import threading

    import ray
    from ray.autoscaler.sdk import request_resources

    def alive_nodes() -> list[dict]:
        return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]

    problem = unschedulable(alive_nodes(), bundles)
    if problem is None:
        return
    print(f"sweep: waiting up to {timeout:g} s (--schedule-timeout) for the cluster to grow: {problem}", flush=True)
    request_resources(bundles=bundles)
    deadline = time.monotonic() + timeout
    while (problem := unschedulable(alive_nodes(), bundles)) and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    if problem:
        request_resources(bundles=[])
        raise M2DError(f"--schedule-timeout: after {timeout:g} s, {problem}; lower --workers-per-trial/"
                       "--cpus-per-worker/--gpus-per-trial or let the cluster grow")

    def release() -> None:  # daemon: ends with the driver at the latest
        end = time.monotonic() + timeout
        while time.monotonic() < end and ray.is_initialized():
            total, free = ray.cluster_resources(), ray.available_resources()
            if any(free.get(k, 0) < total.get(k, 0) - 1e-6 for k in ("CPU", "GPU")):
                break
            time.sleep(1.0)
        if ray.is_initialized():
            request_resources(bundles=[])

    threading.Thread(target=release, daemon=True, name="m2d-release-request").start()
