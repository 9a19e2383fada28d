"""Checkpoints and exact resume: a step's full state (weights, optimiser, schedule, every RNG) written atomically,
read back newest-first past unreadable ones, and only into the same training (``check_resume``); ``restart``
moves a previous run aside, never deletes it."""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import storage
from ..config import Config
from ..encoder import Encoder
from ..errors import M2DError
from ..losses import Matryoshka2DLoss


def save_checkpoint(path: Path, step: int, encoder: Encoder, opt, sched, loss: Matryoshka2DLoss,
                    history: list[dict] | None = None) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({
        "step": step,
        "model": encoder.module.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                "loss": loss.rng.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }, tmp / storage.STATE)
    (tmp / storage.HISTORY).write_text(json.dumps(history or []))  # a resumed run keeps the steps before it
    (tmp / storage.META).write_text(json.dumps({"step": step}))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)  # atomic: a killed run never leaves a half-written checkpoint behind
    return path


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's state, whole, or an exception (truncated file, bad pickle, missing parts)."""
    state = torch.load(Path(path) / storage.STATE, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "scheduler", "rng"} <= set(state):
        raise ValueError("incomplete state")
    return state


def apply_checkpoint(state: dict, encoder: Encoder, opt, sched, loss: Matryoshka2DLoss) -> int:
    encoder.module.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    loss.rng.setstate(rng["loss"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"])


def checkpoints(folder: Path) -> list[Path]:
    """``step-N`` folders with a state file, newest first."""
    found = [p for p in Path(folder).glob("step-*") if (p / storage.STATE).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def latest_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[0] if found else None


def resume_from(candidates: list[Path], encoder: Encoder, opt, sched, loss: Matryoshka2DLoss
                ) -> tuple[int, Path | None]:
    """Load the first readable checkpoint of ``candidates`` (newest first); an unreadable one is skipped with a
    one-line warning, and none readable among several is an error. (0, None): start from scratch."""
    skipped: list[str] = []
    for path in candidates:
        try:
            state = read_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file: fall back to the previous checkpoint
            text = str(err).strip()
            skipped.append(f"{Path(path).name} ({text.splitlines()[0][:100] if text else type(err).__name__})")
            continue
        for name in skipped:
            print(f"train: warning: checkpoint {name} is unreadable; resuming from {Path(path).name}",
                  file=sys.stderr, flush=True)
        return apply_checkpoint(state, encoder, opt, sched, loss), Path(path)
    if candidates:
        raise M2DError(f"checkpoints: none of the {len(candidates)} checkpoint(s) under {Path(candidates[0]).parent} "
                       f"is readable (newest: {skipped[0]}); start over with --restart (the old run is moved aside) "
                       "or a new --out")
    return 0, None


def check_resume(out: Path, cfg: Config, candidates: list[Path]) -> None:
    """A run dir with checkpoints resumes only the same training: the saved config must agree with ``cfg`` in every
    field that can change the weights (``config.RESUME_SAFE`` lists the others), checked before anything is
    loaded or written."""
    from ..config import resume_conflicts

    saved_file = out / storage.CONFIG
    if not candidates:
        return
    how = "use a new --out, or --restart to move the old run aside"
    if not saved_file.is_file():
        raise M2DError(f"{out}: has checkpoints but no config.yaml to check them against; {how}")
    try:
        saved = yaml.safe_load(saved_file.read_text())
    except yaml.YAMLError:
        saved = None
    if not isinstance(saved, dict):
        raise M2DError(f"{saved_file}: unreadable, so its checkpoints cannot be checked; {how}")
    conflicts = resume_conflicts(saved, cfg)
    if conflicts:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in conflicts[:8])
        more = f" (and {len(conflicts) - 8} more)" if len(conflicts) > 8 else ""
        raise M2DError(f"{out}: holds a run with another config, resuming it would mix two trainings: {listed}{more}; "
                       f"{how}")
    steps = [int(p.name[5:]) for p in candidates if p.name[5:].isdigit()]
    if steps and max(steps) > cfg.train.max_steps:
        raise M2DError(f"train.max_steps: {cfg.train.max_steps} is below step {max(steps)} already trained in {out}; "
                       f"raise it, or {how}")


def restart(out: Path) -> Path | None:
    """``--restart``: move a previous run in ``out`` aside (``<out>.prev-<time>``), never delete it."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return None
    aside = out.with_name(f"{out.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{out.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    out.rename(aside)
    return aside


def prune(folder: Path, keep: int) -> None:
    for old in checkpoints(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
