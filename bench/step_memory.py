"""Peak memory of a 2D training step (v2, v2-fulldim, v1-st6) vs a plain MNRL step (the ``full`` preset), on CPU.

Each method runs in its own fresh process (peak RSS cannot be reset inside one): bundled all-MiniLM-L6-v2, batch 32
SNLI triplets, max length 64, the training loop's own ``batch_loss`` + backward + AdamW for ``--steps`` steps on the
same batches. It reports the process's peak RSS and the growth over the RSS before the first step (model and data
loaded): gradients, AdamW state and the step's activations. Ratios are to ``full``.
Goal: v2 and v2-fulldim peak <= 1.15x plain. (On GPU, bench/gpu.py reports ``max_memory_allocated``.)

    python bench/step_memory.py [--steps 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = ["full", "v1-st6", "v2", "v2-fulldim"]


def one(method: str, steps: int, data_dir: str | None) -> dict:
    """Runs in the child: ``steps`` training steps of ``method``; peak RSS in MiB."""
    import psutil
    import torch

    from matryoshka2d.config import load_config
    from matryoshka2d.encoder import load_encoder
    from matryoshka2d.losses import Matryoshka2DLoss
    from matryoshka2d.train import batch_loss, build_optimizer, load_train_data, make_batches, token_lengths

    torch.manual_seed(0)
    cfg = load_config(method, {"model": {"max_length": 64}, "data": {"data_dir": data_dir}, "train": {"batch_size": 32}})
    encoder = load_encoder("minilm-l6", max_length=64)
    encoder.train()
    loss_fn = Matryoshka2DLoss(cfg.method.resolve(encoder.num_layers, encoder.hidden_size), seed=0)
    opt, _ = build_optimizer(encoder.model, cfg)
    data = load_train_data(cfg)
    batches = make_batches(token_lengths(encoder, data), 32, seed=42, epoch=0)
    before = psutil.Process().memory_info().rss / 2**20
    for step in range(steps):
        loss, _, _, _ = batch_loss(encoder, loss_fn, data, batches[step], cfg.train.column_chunks)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_rss_mib": peak, "rss_before_mib": before}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--data-dir", default=os.environ.get("M2D_DATA_DIR"))
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one(args.child, args.steps, args.data_dir)))
        return 0
    results = {}
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--child", method, "--steps", str(args.steps),
                              *(["--data-dir", args.data_dir] if args.data_dir else [])],
                             capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{method}: {results[method]}", file=sys.stderr, flush=True)
    plain = results["full"]["peak_rss_mib"]
    growth = {m: r["peak_rss_mib"] - r["rss_before_mib"] for m, r in results.items()}
    print(f"{'method':<12}{'peak RSS MiB':>14}{'x plain':>9}{'training growth MiB':>21}{'x plain':>9}")
    for method, r in results.items():
        print(f"{method:<12}{r['peak_rss_mib']:>14.0f}{r['peak_rss_mib'] / plain:>9.3f}{growth[method]:>21.0f}"
              f"{growth[method] / growth['full']:>9.3f}")
    goals = {f"{m} <= 1.15x plain": results[m]["peak_rss_mib"] / plain <= 1.15 for m in ("v2", "v2-fulldim")}
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": results, "goals": goals, "steps": args.steps}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
