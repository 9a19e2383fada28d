"""Starting or joining Ray: the one place that decides how a local cluster listens.

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
from pathlib import Path

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
