"""The training loop: one function, run as is on a laptop or as a Ray Train worker.

``train(config, out_dir)`` trains, checkpoints every N steps (resume reproduces an uninterrupted run
exactly: same seed, one process), evaluates the layer x dim grid and saves a SentenceTransformer
model. The Ray glue passes a ``Hooks`` object instead of calling MLflow or Ray from here.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from .config import Config
from .data.sources import TrainData, load_training
from .encoder import Encoder, load_encoder, save_sentence_transformer, truncate_layers
from .errors import M2DError
from .losses import Matryoshka2DLoss
from .resolve import ResolvedRun, resolve


# -- data -------------------------------------------------------------------------------------------------
def load_train_data(cfg: Config) -> TrainData:
    """The training columns (with mined hard negatives when ``data.hard_negatives``), capped, checked against the batch."""
    if cfg.data.hard_negatives:  # (query, positive, mined negatives...): mined once, cached
        from .mining import ensure_mined, load_mined

        out = TrainData(load_mined(ensure_mined(cfg, show_progress=False)))
    else:
        out = load_training(cfg)
    out = out.head(cfg.data.max_train_examples)
    if len(out) < cfg.train.batch_size:
        raise M2DError(f"train.batch_size: {cfg.train.batch_size} exceeds the {len(out)} training examples")
    return out


def make_batches(lengths: list, batch_size: int, seed: int, epoch: int, bucketing: bool = True,
                 bucket_batches: int = 64) -> list[list[int]]:
    """Deterministic batches for one epoch (full batches only, MNRL needs equal sizes).

    With bucketing, a random permutation is cut into buckets of ``bucket_batches`` batches, each bucket is
    sorted by length (any sortable key, e.g. (anchor tokens, other tokens)), cut into batches, and the batch
    order is shuffled: little padding, random order.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if bucketing:
        size = batch_size * bucket_batches
        order = [i for s in range(0, len(order), size) for i in sorted(order[s:s + size], key=lengths.__getitem__)]
    batches = [order[s:s + batch_size] for s in range(0, len(order) - batch_size + 1, batch_size)]
    if bucketing:
        rng.shuffle(batches)
    return batches


def token_lengths(encoder: Encoder, data: TrainData) -> list[tuple[int, int]]:
    """Sort keys (first column's tokens, the other columns' tokens), truncated as the encoder truncates: anchors
    match exactly within a batch, the shorter columns roughly; ``train.column_chunks`` removes most of the rest."""
    per_column = [encoder.token_ids(col) for col in data.columns]
    return [(len(per_column[0][i]), sum(len(c[i]) for c in per_column[1:])) for i in range(len(data))]


# -- optimisation -----------------------------------------------------------------------------------------
def build_optimizer(model: torch.nn.Module, cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr)
    total = cfg.train.max_steps
    warmup = int(math.ceil(cfg.train.warmup_ratio * total))

    def schedule(step: int) -> float:  # linear warmup, then linear decay to 0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


# -- checkpoints ------------------------------------------------------------------------------------------
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
    }, tmp / "state.pt")
    (tmp / "history.json").write_text(json.dumps(history or []))  # a resumed run keeps the steps before it
    (tmp / "meta.json").write_text(json.dumps({"step": step}))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)  # atomic: a killed run never leaves a half-written checkpoint behind
    return path


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's state, whole, or an exception (truncated file, bad pickle, missing parts)."""
    state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
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
    found = [p for p in Path(folder).glob("step-*") if (p / "state.pt").is_file() and p.name[5:].isdigit()]
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
    from .config import resume_conflicts

    saved_file = out / "config.yaml"
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


# -- the loop ---------------------------------------------------------------------------------------------
@dataclass
class Hooks:
    """What the caller plugs in: distributed wrapping and reporting. Defaults run one local process."""

    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m
    report: Callable[[dict, Path | None], None] = lambda metrics, checkpoint: None
    resume_from: Path | None = None  # a checkpoint folder (Ray hands one over after a failure)
    device: str | None = None
    show_progress: bool = True
    stop: Callable[[], bool] = lambda: False
    # False: never fall back to out_dir/checkpoints (multi-worker Ray Train: a restarted rank on another node
    # would not see them, and ranks resuming from different steps would desynchronise DDP)
    local_resume: bool = True
    extra: dict = field(default_factory=dict)


def batch_loss(encoder: Encoder, loss_fn: Matryoshka2DLoss, data: TrainData, idx: list[int], chunks: int = 1,
               bf16: bool = False) -> tuple[torch.Tensor, dict[str, float], int, int]:
    """One micro-batch: draw the step's cells, ONE forward per column pooling just the layers they need,
    then the 2D loss. Returns (loss, parts, real tokens, padded tokens)."""
    plan = loss_fn.plan()
    embeddings: dict[int, list[torch.Tensor]] = {layer: [] for layer in plan.layers}
    real = padded = 0
    with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=bf16):
        for column in data.columns:
            pooled, r, p = encoder.forward_texts([column[i] for i in idx], plan.layers, chunks)
            real, padded = real + r, padded + p
            for row, layer in enumerate(plan.layers):
                embeddings[layer].append(pooled[row].float())
    labels = torch.tensor([data.labels[i] for i in idx], device=encoder.device) if data.labels else None
    total, parts = loss_fn(embeddings, labels, plan)
    return total, parts, real, padded


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate_encoder(encoder: Encoder, run: ResolvedRun, datasets=None, per_item: bool = False):
    """Grid evaluation of the run's cells on the configured sets (loaded once and cached by the caller via ``datasets``)."""
    from .evaluate import evaluate_grid

    cfg, layers, dims = run.config, run.eval_layers, run.eval_dims
    # in-process (the default executor): in a Ray Train/Tune worker the trials hold every CPU a cell task would need
    return evaluate_grid(encoder, datasets, layers, dims, batch_size=cfg.eval.batch_size, show_progress=False,
                         similarity=cfg.eval.similarity, fixed_documents=cfg.eval.fixed_documents,
                         sts_avg="sts-avg" in cfg.eval.datasets, per_item=per_item)


def cap_eval_set(ds, n: int):
    """At most ``n`` STS pairs, or ``n`` queries (those first in the qrels) with a corpus of their judged documents
    plus the first ``10 n`` others (a quick look, not the benchmark: smoke runs and periodic evaluation)."""
    from .data.types import RetrievalSet

    if isinstance(ds, RetrievalSet):
        qids = [q for q in ds.qrels if q in ds.queries][:n]
        if len(qids) == len(ds.qrels):
            return ds
        judged = {d for q in qids for d in ds.qrels[q]}
        others = [d for d in ds.corpus if d not in judged][:10 * n]
        keep = judged | set(others)
        return RetrievalSet(ds.name, ds.split, {d: v for d, v in ds.corpus.items() if d in keep},
                            {q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids})
    if len(ds) <= n:
        return ds
    return type(ds)(ds.name, ds.split, ds.sentences1[:n], ds.sentences2[:n], ds.scores[:n])


def load_eval_sets(cfg: Config) -> list:
    from . import data as d
    from .evaluate import check_evaluable

    sets = []
    for name in d.expand_eval_names(cfg.eval.datasets, cfg.data.data_dir)[0]:
        ds = d.load(name, split=cfg.eval.split, data_dir=cfg.data.data_dir)
        if cfg.eval.max_examples:
            ds = cap_eval_set(ds, cfg.eval.max_examples)
        check_evaluable(ds)  # before training: a set that scores nan would waste the whole run
        sets.append(ds)
    return sets


def train(cfg: Config, out_dir: str | Path, hooks: Hooks | None = None) -> dict:
    """Train ``cfg`` into ``out_dir``; returns the final summary metrics.

    Resumes from the newest readable checkpoint of the same training (a different config is refused before
    anything is loaded or written); a finished run (its final-step checkpoint exists) trains no further.
    """
    hooks = hooks or Hooks()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    candidates = ([Path(hooks.resume_from)] if hooks.resume_from else []) + \
        (checkpoints(ckpt_dir) if hooks.local_resume else [])
    if hooks.rank == 0:
        check_resume(out, cfg, [c for c in candidates if c.parent == ckpt_dir] or candidates)
    run = resolve(cfg)  # method, evaluated cells, max length: before training, not after it
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)
    encoder = load_encoder(cfg.model.name, pooling=cfg.model.pooling, max_length=cfg.model.max_length,
                           device=hooks.device)
    if run.truncated:  # a separately trained sub-model: the encoder is cut to its one layer
        truncate_layers(encoder, run.num_layers)
    loss_fn = Matryoshka2DLoss(run.method, seed=cfg.train.seed)
    data = load_train_data(cfg)
    eval_sets = load_eval_sets(cfg) if hooks.rank == 0 else []

    encoder.model = hooks.wrap_model(encoder.model)
    opt, sched = build_optimizer(encoder.model, cfg)
    start, resumed = resume_from(candidates, encoder, opt, sched, loss_fn)
    history: list[dict] = json.loads((resumed / "history.json").read_text()) \
        if resumed is not None and (resumed / "history.json").is_file() else []
    if hooks.rank == 0:  # only now: the old run's config was checked and its checkpoint read
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    finished = start >= cfg.train.max_steps
    if finished and hooks.rank == 0:
        print(f"train: {out} is already trained to step {start} (train.max_steps {cfg.train.max_steps}); "
              "no training, raise train.max_steps to continue", flush=True)

    lengths = token_lengths(encoder, data) if not finished else []
    per_rank = len(lengths) // cfg.train.batch_size // hooks.world_size
    if not finished and per_rank < 1:
        raise M2DError(f"train.batch_size: too large for {len(data)} examples on {hooks.world_size} workers")
    device = encoder.device
    use_bf16 = cfg.train.bf16 is True or (cfg.train.bf16 == "auto" and device.type == "cuda")
    stats = {"real_tokens": 0, "padded_tokens": 0, "step_s": []}
    epoch_cache: dict[int, list[list[int]]] = {}

    def micro_batch(g: int) -> list[int]:
        epoch, pos = divmod(g, per_rank)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = make_batches(lengths, cfg.train.batch_size, cfg.train.seed, epoch,
                                              cfg.train.length_bucketing, cfg.train.bucket_batches)
        return epoch_cache[epoch][pos * hooks.world_size + hooks.rank]

    encoder.train()
    # a bar on a terminal; in a log (nohup, CI, a pipe) one plain line per log_every steps on stdout instead
    show = hooks.show_progress and hooks.rank == 0 and not finished
    bar = tqdm(total=cfg.train.max_steps, initial=start, desc=f"train {cfg.method.name}", unit="step",
               disable=not (show and sys.stderr.isatty()))
    step = start
    for step in range(start, cfg.train.max_steps):
        t0 = time.perf_counter()
        done = step + 1
        parts_sum: dict[str, float] = {}
        for micro in range(cfg.train.grad_accum):
            idx = micro_batch(step * cfg.train.grad_accum + micro)
            try:
                total, parts, real, padded = batch_loss(encoder, loss_fn, data, idx, cfg.train.column_chunks,
                                                        use_bf16)
                problem = None if torch.isfinite(total.detach()).item() else f"the loss is {total.item()}"
            except torch.linalg.LinAlgError:  # PCA alignment of non-finite embeddings: the weights diverged
                problem = "the loss is not finite (PCA of non-finite embeddings)"
            if problem:
                bar.close()
                kept = latest_checkpoint(ckpt_dir)
                raise M2DError(f"train: {problem} at step {done}; stopped before that update (latest checkpoint "
                               f"kept: {kept.name if kept else 'none'}); lower train.lr or check the training data")
            stats["real_tokens"] += real
            stats["padded_tokens"] += padded
            (total / cfg.train.grad_accum).backward()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / cfg.train.grad_accum
        torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), cfg.train.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        stats["step_s"].append(time.perf_counter() - t0)
        loss_value = sum(parts_sum.values())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", step_s=f"{stats['step_s'][-1]:.2f}")
        if show and bar.disable and (done % cfg.train.log_every == 0 or done == cfg.train.max_steps):
            print(f"train {cfg.method.name}: step {done}/{cfg.train.max_steps} loss {loss_value:.4f} "
                  f"{stats['step_s'][-1]:.2f} s/step", flush=True)
        metrics = {"step": done, "loss": loss_value, "lr": sched.get_last_lr()[0],
                   **{f"loss/{k}": v for k, v in parts_sum.items()}}
        history.append(dict(metrics))
        checkpoint = None
        # the final step too: a finished run re-run trains nothing, one killed during its final save loses nothing
        is_ckpt = bool(cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0) \
            or done == cfg.train.max_steps
        if is_ckpt and hooks.rank == 0:
            checkpoint = save_checkpoint(ckpt_dir / f"step-{done}", done, encoder, opt, sched, loss_fn, history)
            _prune(ckpt_dir, cfg.train.keep_checkpoints)
        is_eval = cfg.eval.every_steps and done % cfg.eval.every_steps == 0 and done < cfg.train.max_steps
        if is_eval and hooks.rank == 0:
            metrics["grid"] = evaluate_encoder(encoder, run, eval_sets)
        # the condition is the same on every rank: Ray Train's report is a barrier across workers
        if done % cfg.train.log_every == 0 or is_ckpt or is_eval:
            hooks.report(metrics, checkpoint)
        if hooks.stop():
            break
    bar.close()

    summary = {"steps": step + 1 if cfg.train.max_steps > start else start,
               "padded_ratio": stats["padded_tokens"] / max(1, stats["real_tokens"]),
               "median_step_s": float(np.median(stats["step_s"])) if stats["step_s"] else 0.0}
    if hooks.rank == 0:
        if not (finished and (out / "model" / "modules.json").is_file()):
            save_sentence_transformer(encoder, out / "model")
        grid = evaluate_encoder(encoder, run, eval_sets, per_item=True)
        grid.to_csv(out / "grid.csv")
        grid.save_items(out / "items.npz")  # per pair / per query: what paired bootstraps resample
        (out / "history.json").write_text(json.dumps(history))
        if not finished:
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
        hooks.report({"step": summary["steps"], "final": True, "grid": grid, **summary}, None)
        summary["grid"] = grid
    else:  # other ranks report too (without the grid), so every rank makes the same number of report calls
        hooks.report({"step": summary["steps"], "final": True, **summary}, None)
    return summary


def _prune(folder: Path, keep: int) -> None:
    for old in checkpoints(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
