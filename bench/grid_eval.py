"""Benchmark: one-pass grid evaluation vs a single full-model evaluation vs naive per-cell re-encoding.

    python bench/grid_eval.py [--model minilm-l6] [--data stsb --data scifact] [--max-length 256]
                              [--naive-all-cells] [--json OUT]

For each dataset it times (1) the one-pass grid (encode once for all layers + score every cell),
(2) a single full-model evaluation (last layer, full dim: encode + score one cell), and (3) naive
per-cell evaluation as the 2DMSE scripts do it: a model truncated to its first l blocks, re-encoded
for every (l, d) cell. Because (3) re-encodes the same truncated stack for every dim, by default it is
ESTIMATED as one real re-encode per layer x the number of dims (+ the real scoring of every dim);
``--naive-all-cells`` really re-encodes every cell. Goals: grid / single <= 1.10; naive / grid >= 10 on SciFact.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

from pathlib import Path

import torch

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # the project's shared data checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from matryoshka2d import data  # noqa: E402
from matryoshka2d.cells import parse_dims, parse_layers  # noqa: E402
from matryoshka2d.encoder import Encoder, load_encoder  # noqa: E402
from matryoshka2d.evaluate import evaluate_grid, summarize  # noqa: E402


def truncated_encoder(encoder: Encoder, num_blocks: int) -> Encoder:
    """A copy of ``encoder`` whose transformer keeps only its first ``num_blocks`` blocks (the naive baseline)."""
    model = copy.deepcopy(encoder.model)
    model.encoder.layer = torch.nn.ModuleList(list(model.encoder.layer)[:num_blocks])
    model.config.num_hidden_layers = num_blocks
    return Encoder(model, encoder.tokenizer, pooling=encoder.pooling, max_length=encoder.max_length).to(encoder.device)


def bench_dataset(encoder: Encoder, ds, layers: list[int], dims: list[int], batch_size: int, all_cells: bool) -> dict:
    L, H = encoder.num_layers, encoder.hidden_size
    kw = dict(batch_size=batch_size, show_progress=False)
    grid = evaluate_grid(encoder, [ds], layers, dims, **kw)
    single = evaluate_grid(encoder, [ds], [L], [H], **kw)
    naive_layers = {}
    for layer in layers:
        trunc = truncated_encoder(encoder, layer)
        if all_cells:
            cells = [evaluate_grid(trunc, [ds], [layer], [d], **kw).timings for d in dims]
            naive_layers[layer] = {"total_s": sum(t["total_s"] for t in cells), "encode_s": cells[0]["encode_s"]}
        else:
            t = evaluate_grid(trunc, [ds], [layer], dims, **kw).timings  # one real re-encode, every dim scored
            naive_layers[layer] = {"total_s": t["encode_s"] * len(dims) + t["score_s"], "encode_s": t["encode_s"]}
        del trunc
    naive_s = sum(v["total_s"] for v in naive_layers.values())
    g, s = grid.timings, single.timings
    name = ds.name
    return {
        "dataset": name, "cells": len(layers) * len(dims),
        "grid": {k: g[k] for k in ("encode_s", "score_s", "total_s")},
        "single": {k: s[k] for k in ("encode_s", "score_s", "total_s")},
        "naive": {"total_s": naive_s, "per_layer": naive_layers,
                  "method": "re-encode every cell" if all_cells else "one re-encode per layer x dims + real scoring"},
        "grid_over_single": g["total_s"] / s["total_s"],
        "naive_over_grid": naive_s / g["total_s"],
        "full_cell": {m: v["full"] for m, v in summarize(grid)[name].items()},
        "single_cell": {m: v["full"] for m, v in summarize(single)[name].items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data", action="append", help="datasets (default: stsb and scifact)")
    ap.add_argument("--data-dir", default=None, help="default: $M2D_DATA_DIR, else ../shared/data")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--dims", default="8,16,32,64,128,256,384")
    ap.add_argument("--max-length", type=int, default=None, help="default: the model's (256 for minilm-l6)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--naive-all-cells", action="store_true", help="really re-encode every cell (slow)")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    encoder = load_encoder(args.model, max_length=args.max_length)
    layers = parse_layers(args.layers, encoder.num_layers)
    dims = parse_dims(args.dims, encoder.hidden_size)
    data_dir = args.data_dir or os.environ.get("M2D_DATA_DIR") or DEFAULT_DATA_DIR
    datasets = [data.load(n, "test", data_dir) for n in (args.data or ["stsb", "scifact"])]
    env = {"model": args.model, "max_length": encoder.max_length, "batch_size": args.batch_size,
           "device": str(encoder.device), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "python": platform.python_version(), "layers": layers, "dims": dims}
    print(f"# {env}", flush=True)
    encoder.encode_layers(["warm up the kernels"] * 8, [encoder.num_layers])
    results = []
    for ds in datasets:
        t0 = time.perf_counter()
        r = bench_dataset(encoder, ds, layers, dims, args.batch_size, args.naive_all_cells)
        results.append(r)
        print(f"\n== {r['dataset']} ({r['cells']} cells; bench wall {time.perf_counter() - t0:.0f}s)")
        print(f"  (1) one-pass grid     {r['grid']['total_s']:8.2f}s  (encode {r['grid']['encode_s']:.2f}s, "
              f"score {r['grid']['score_s']:.2f}s)")
        print(f"  (2) single full model {r['single']['total_s']:8.2f}s  (encode {r['single']['encode_s']:.2f}s, "
              f"score {r['single']['score_s']:.2f}s)")
        print(f"  (3) naive per cell    {r['naive']['total_s']:8.2f}s  [{r['naive']['method']}]")
        for layer, v in r["naive"]["per_layer"].items():
            print(f"        layer {layer}: re-encode {v['encode_s']:.2f}s -> {v['total_s']:.2f}s for {len(dims)} dims")
        print(f"  grid / single = {r['grid_over_single']:.3f}  (goal <= 1.10)")
        print(f"  naive / grid  = {r['naive_over_grid']:.1f}  (goal >= 10 on SciFact)")
        print(f"  full cell (grid)   {r['full_cell']}\n  full cell (single) {r['single_cell']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "results": results}, fh, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
