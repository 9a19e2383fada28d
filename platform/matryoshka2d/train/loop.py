"""The training loop: one function, run as is on a laptop or as a Ray Train worker.

``train(config, out_dir)`` trains, checkpoints every N steps (resume reproduces an uninterrupted run
exactly: same seed, one process), evaluates the layer x dim grid and saves a SentenceTransformer
model. The Ray glue passes a ``Hooks`` object instead of calling MLflow or Ray from here. Its steps:
:func:`prepare` (check, load, resume), :class:`BatchOrder`, :func:`optimizer_step`, :func:`after_step`
(checkpoint, evaluate, report) and :func:`finish` (model, final grid, files).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from .. import storage
from ..config import Config
from ..data.sources import TrainData
from ..encoder import Encoder, load_encoder, save_sentence_transformer, truncate_layers
from ..errors import M2DError
from ..losses import Matryoshka2DLoss
from ..resolve import ResolvedRun, resolve
from .batches import column_roles, load_train_data, make_batches, token_lengths
from .checkpoints import check_resume, checkpoints, latest_checkpoint, prune, resume_from, save_checkpoint


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
               bf16: bool = False, roles: list[str | None] | None = None) -> tuple[torch.Tensor, dict[str, float], int, int]:
    """One micro-batch: draw the step's cells, ONE forward per column pooling just the layers they need,
    then the 2D loss; ``roles`` pick each column's prompt (query, document; None: the default). Returns (loss,
    parts, real tokens, padded tokens)."""
    plan = loss_fn.plan()
    embeddings: dict[int, list[torch.Tensor]] = {layer: [] for layer in plan.layers}
    real = padded = 0
    with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=bf16):
        for column, role in zip(data.columns, roles or [None] * len(data.columns)):
            pooled, r, p = encoder.forward_texts([column[i] for i in idx], plan.layers, chunks, role)
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
    from ..evaluate import evaluate_grid

    cfg, layers, dims = run.config, run.eval_layers, run.eval_dims
    # in-process (the default executor): in a Ray Train/Tune worker the trials hold every CPU a cell task would need
    return evaluate_grid(encoder, datasets, layers, dims, batch_size=cfg.eval.batch_size, show_progress=False,
                         similarity=cfg.eval.similarity, fixed_documents=cfg.eval.fixed_documents,
                         sts_avg="sts-avg" in cfg.eval.datasets, per_item=per_item)


def cap_eval_set(ds, n: int):
    """At most ``n`` STS pairs, or ``n`` queries (those first in the qrels) with a corpus of their judged documents
    plus the first ``10 n`` others (a quick look, not the benchmark: smoke runs and periodic evaluation)."""
    from ..data.types import RetrievalSet

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
    from .. import data as d
    from ..evaluate import check_evaluable

    sets = []
    for name in d.expand_eval_names(cfg.eval.datasets, cfg.data.data_dir)[0]:
        ds = d.load(name, split=cfg.eval.split, data_dir=cfg.data.data_dir)
        if cfg.eval.max_examples:
            ds = cap_eval_set(ds, cfg.eval.max_examples)
        check_evaluable(ds)  # before training: a set that scores nan would waste the whole run
        sets.append(ds)
    return sets


@dataclass
class Session:
    """One call of :func:`train`: the resolved run, what was loaded for it and where it stands."""

    cfg: Config
    out: Path
    hooks: Hooks
    run: ResolvedRun
    encoder: Encoder
    loss_fn: Matryoshka2DLoss
    data: TrainData
    eval_sets: list
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    start: int
    history: list[dict]
    roles: list[str | None]  # each training column's prompt role

    @property
    def ckpt_dir(self) -> Path:
        return self.out / storage.CHECKPOINTS

    @property
    def finished(self) -> bool:
        return self.start >= self.cfg.train.max_steps


def prepare(cfg: Config, out: Path, hooks: Hooks) -> Session:
    """Check a resume against the saved config (before anything is loaded or written), resolve the run, load the
    model, loss, data and evaluation sets, build the optimiser and restore the newest readable checkpoint."""
    ckpt_dir = out / storage.CHECKPOINTS
    candidates = ([Path(hooks.resume_from)] if hooks.resume_from else []) + \
        (checkpoints(ckpt_dir) if hooks.local_resume else [])
    if hooks.rank == 0:
        check_resume(out, cfg, [c for c in candidates if c.parent == ckpt_dir] or candidates)
    run = resolve(cfg)  # method, evaluated cells, max length: before training, not after it
    seed_everything(cfg.train.seed)
    encoder = load_encoder(cfg.model.name, pooling=cfg.model.pooling, max_length=cfg.model.max_length,
                           prompts=cfg.model.prompts, default_prompt_name=cfg.model.default_prompt_name,
                           device=hooks.device)
    if run.truncated:  # a separately trained sub-model: the encoder is cut to its one layer
        truncate_layers(encoder, run.num_layers)
    loss_fn = Matryoshka2DLoss(run.method, seed=cfg.train.seed)
    data = load_train_data(cfg)
    eval_sets = load_eval_sets(cfg) if hooks.rank == 0 else []
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused run (data, batch size) leaves no folder behind

    encoder.model = hooks.wrap_model(encoder.model)
    opt, sched = build_optimizer(encoder.model, cfg)
    start, resumed = resume_from(candidates, encoder, opt, sched, loss_fn)
    history: list[dict] = json.loads((resumed / storage.HISTORY).read_text()) \
        if resumed is not None and (resumed / storage.HISTORY).is_file() else []
    if hooks.rank == 0:  # only now: the old run's config was checked and its checkpoint read
        (out / storage.CONFIG).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return Session(cfg, out, hooks, run, encoder, loss_fn, data, eval_sets, opt, sched, start, history,
                   column_roles(cfg, len(data.columns)))


class BatchOrder:
    """Micro-batch ``g`` of this rank: epochs of :func:`make_batches` (one epoch cached), ranks interleaved."""

    def __init__(self, s: Session):
        t = s.cfg.train
        self.train_cfg, self.rank, self.world = t, s.hooks.rank, s.hooks.world_size
        self.lengths = token_lengths(s.encoder, s.data)
        self.per_rank = len(self.lengths) // t.batch_size // self.world
        if self.per_rank < 1:
            raise M2DError(f"train.batch_size: too large for {len(s.data)} examples on {self.world} workers")
        self.cache: dict[int, list[list[int]]] = {}

    def __call__(self, g: int) -> list[int]:
        epoch, pos = divmod(g, self.per_rank)
        if epoch not in self.cache:
            self.cache.clear()
            t = self.train_cfg
            self.cache[epoch] = make_batches(self.lengths, t.batch_size, t.seed, epoch, t.length_bucketing,
                                             t.bucket_batches)
        return self.cache[epoch][pos * self.world + self.rank]


def optimizer_step(s: Session, step: int, order: BatchOrder, use_bf16: bool, stats: dict) -> dict[str, float]:
    """One optimiser step over ``train.grad_accum`` micro-batches; returns the loss parts (averaged). A non-finite
    loss stops the run before that update, naming the checkpoint kept."""
    cfg = s.cfg
    parts_sum: dict[str, float] = {}
    for micro in range(cfg.train.grad_accum):
        idx = order(step * cfg.train.grad_accum + micro)
        try:
            total, parts, real, padded = batch_loss(s.encoder, s.loss_fn, s.data, idx, cfg.train.column_chunks,
                                                    use_bf16, s.roles)
            problem = None if torch.isfinite(total.detach()).item() else f"the loss is {total.item()}"
        except torch.linalg.LinAlgError:  # PCA alignment of non-finite embeddings: the weights diverged
            problem = "the loss is not finite (PCA of non-finite embeddings)"
        if problem:
            kept = latest_checkpoint(s.ckpt_dir)
            raise M2DError(f"train: {problem} at step {step + 1}; stopped before that update (latest checkpoint "
                           f"kept: {kept.name if kept else 'none'}); lower train.lr or check the training data")
        stats["real_tokens"] += real
        stats["padded_tokens"] += padded
        (total / cfg.train.grad_accum).backward()
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + v / cfg.train.grad_accum
    torch.nn.utils.clip_grad_norm_(s.encoder.model.parameters(), cfg.train.max_grad_norm)
    s.opt.step()
    s.sched.step()
    s.opt.zero_grad(set_to_none=True)
    return parts_sum


def after_step(s: Session, done: int, parts: dict[str, float]) -> None:
    """History, then (on their steps) a checkpoint, a grid evaluation and a report to the caller's hooks."""
    cfg, hooks = s.cfg, s.hooks
    metrics = {"step": done, "loss": sum(parts.values()), "lr": s.sched.get_last_lr()[0],
               **{f"loss/{k}": v for k, v in parts.items()}}
    s.history.append(dict(metrics))
    checkpoint = None
    # the final step too: a finished run re-run trains nothing, one killed during its final save loses nothing
    is_ckpt = bool(cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0) \
        or done == cfg.train.max_steps
    if is_ckpt and hooks.rank == 0:
        checkpoint = save_checkpoint(s.ckpt_dir / f"step-{done}", done, s.encoder, s.opt, s.sched, s.loss_fn,
                                     s.history)
        prune(s.ckpt_dir, cfg.train.keep_checkpoints)
    is_eval = cfg.eval.every_steps and done % cfg.eval.every_steps == 0 and done < cfg.train.max_steps
    if is_eval and hooks.rank == 0:
        metrics["grid"] = evaluate_encoder(s.encoder, s.run, s.eval_sets)
    # the condition is the same on every rank: Ray Train's report is a barrier across workers
    if done % cfg.train.log_every == 0 or is_ckpt or is_eval:
        hooks.report(metrics, checkpoint)


def finish(s: Session, summary: dict) -> dict:
    """Rank 0: the model (unless a finished run already saved it), the final grid with its per-item values, history
    and summary files, and the final report. Other ranks report too (without the grid), so every rank makes the same
    number of report calls."""
    if s.hooks.rank != 0:
        s.hooks.report({"step": summary["steps"], "final": True, **summary}, None)
        return summary
    out = s.out
    if not (s.finished and (out / storage.MODEL / "modules.json").is_file()):
        save_sentence_transformer(s.encoder, out / storage.MODEL, s.cfg.eval.similarity)  # how it was scored
    grid = evaluate_encoder(s.encoder, s.run, s.eval_sets, per_item=True)
    grid.to_csv(out / storage.GRID)
    grid.save_items(out / storage.ITEMS)  # per pair / per query: what paired bootstraps resample
    (out / storage.HISTORY).write_text(json.dumps(s.history))
    if not s.finished:
        (out / storage.SUMMARY).write_text(json.dumps(summary, indent=2))
    s.hooks.report({"step": summary["steps"], "final": True, "grid": grid, **summary}, None)
    return {**summary, "grid": grid}


def train(cfg: Config, out_dir: str | Path, hooks: Hooks | None = None) -> dict:
    """Train ``cfg`` into ``out_dir``; returns the final summary metrics (and ``grid`` on rank 0).

    Resumes from the newest readable checkpoint of the same training (a different config is refused before
    anything is loaded or written); a finished run (its final-step checkpoint exists) trains no further.
    """
    hooks = hooks or Hooks()
    s = prepare(cfg, Path(out_dir), hooks)
    max_steps = cfg.train.max_steps
    if s.finished and hooks.rank == 0:
        print(f"train: {s.out} is already trained to step {s.start} (train.max_steps {max_steps}); "
              "no training, raise train.max_steps to continue", flush=True)
    order = BatchOrder(s) if not s.finished else None
    use_bf16 = cfg.train.bf16 is True or (cfg.train.bf16 == "auto" and s.encoder.device.type == "cuda")
    stats = {"real_tokens": 0, "padded_tokens": 0, "step_s": []}

    s.encoder.train()
    # a bar on a terminal; in a log (nohup, CI, a pipe) one plain line per log_every steps on stdout instead
    show = hooks.show_progress and hooks.rank == 0 and not s.finished
    bar = tqdm(total=max_steps, initial=s.start, desc=f"train {cfg.method.name}", unit="step",
               disable=not (show and sys.stderr.isatty()))
    step = s.start
    try:
        for step in range(s.start, max_steps):
            t0 = time.perf_counter()
            parts = optimizer_step(s, step, order, use_bf16, stats)
            stats["step_s"].append(time.perf_counter() - t0)
            loss_value = sum(parts.values())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", step_s=f"{stats['step_s'][-1]:.2f}")
            done = step + 1
            if show and bar.disable and (done % cfg.train.log_every == 0 or done == max_steps):
                print(f"train {cfg.method.name}: step {done}/{max_steps} loss {loss_value:.4f} "
                      f"{stats['step_s'][-1]:.2f} s/step", flush=True)
            after_step(s, done, parts)
            if hooks.stop():
                break
    finally:
        bar.close()
    summary = {"steps": step + 1 if max_steps > s.start else s.start,
               "padded_ratio": stats["padded_tokens"] / max(1, stats["real_tokens"]),
               "median_step_s": float(np.median(stats["step_s"])) if stats["step_s"] else 0.0}
    return finish(s, summary)
