"""Benchmark: one-pass grid evaluation vs a single full-model evaluation vs naive per-cell re-encoding.

    python bench/grid_eval.py [--model minilm-l6] [--data stsb --data scifact] [--max-length 256]
                              [--repeat N] [--naive-all-cells] [--json OUT]

For each dataset it times (1) the one-pass grid (encode once for all layers + score every cell),
(2) a single full-model evaluation (last layer, full dim: encode + score one cell), and (3) naive
per-cell evaluation as the 2DMSE scripts do it: a model truncated to its first l blocks, re-encoded
for every (l, d) cell. Because (3) re-encodes the same truncated stack for every dim, by default it is
ESTIMATED as, per layer, one real re-encode + one-cell score, times the number of dims;
``--naive-all-cells`` really re-encodes every cell. Goals: grid / single <= 1.10; naive / grid >= 10 on SciFact.

Wall and CPU time (this process, all threads) are both reported: on a shared machine wall time swings
with other users' load, CPU time mostly measures our own work.
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
from matryoshka2d.encoder import Encoder, load_encoder, truncate_layers  # noqa: E402
from matryoshka2d.evaluate import evaluate_grid, summarize  # noqa: E402

CLOCKS = ("wall_s", "cpu_s")


def truncated_encoder(encoder: Encoder, num_blocks: int) -> Encoder:
    """A copy of ``encoder`` whose transformer keeps only its first ``num_blocks`` blocks (the naive baseline)."""
    copied = Encoder(copy.deepcopy(encoder.model), encoder.tokenizer, pooling=encoder.pooling,
                     max_length=encoder.max_length)
    return truncate_layers(copied, num_blocks).to(encoder.device)


def timed(fn, *args, **kwargs) -> tuple[object, dict[str, float]]:
    """``fn(...)`` with its wall time and the CPU time of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def bench_dataset(encoder: Encoder, ds, layers: list[int], dims: list[int], batch_size: int, all_cells: bool,
                  repeat: int = 1) -> dict:
    L, H = encoder.num_layers, encoder.hidden_size
    kw = dict(batch_size=batch_size, show_progress=False)
    best: dict[str, dict[str, float]] = {}
    results = {}
    for _ in range(repeat):  # alternate grid and single, keep the best of each, so load drifts hit both alike
        for key, (lay, dim) in {"grid": (layers, dims), "single": ([L], [H])}.items():
            results[key], t = timed(evaluate_grid, encoder, [ds], lay, dim, **kw)
            best[key] = {c: min(best.get(key, t)[c], t[c]) for c in CLOCKS}
    naive_layers = {}
    for layer in layers:
        trunc = truncated_encoder(encoder, layer)
        if all_cells:
            cells = [timed(evaluate_grid, trunc, [ds], [layer], [d], **kw)[1] for d in dims]
            naive_layers[layer] = {c: sum(t[c] for t in cells) for c in CLOCKS}
        else:
            one = timed(evaluate_grid, trunc, [ds], [layer], [H], **kw)[1]
            naive_layers[layer] = {c: one[c] * len(dims) for c in CLOCKS}
        del trunc
    naive = {c: sum(v[c] for v in naive_layers.values()) for c in CLOCKS}
    grid, single = results["grid"], results["single"]
    return {
        "dataset": ds.name, "cells": len(layers) * len(dims), "repeat": repeat,
        "grid": {**best["grid"], "encode_s": grid.timings["encode_s"], "score_s": grid.timings["score_s"]},
        "single": {**best["single"], "encode_s": single.timings["encode_s"], "score_s": single.timings["score_s"]},
        "naive": {**naive, "per_layer": naive_layers,
                  "method": "re-encode every cell" if all_cells else "per layer: one re-encode + one-cell score, x dims"},
        "grid_over_single": {c: best["grid"][c] / best["single"][c] for c in CLOCKS},
        "naive_over_grid": {c: naive[c] / best["grid"][c] for c in CLOCKS},
        "full_cell": {m: v["full"] for m, v in summarize(grid)[ds.name].items()},
        "single_cell": {m: v["full"] for m, v in summarize(single)[ds.name].items()},
    }


def report(r: dict, n_dims: int) -> str:
    lines = [f"\n== {r['dataset']} ({r['cells']} cells, best of {r['repeat']})", f"  {'':24}{'wall s':>9}{'cpu s':>9}"]
    for key, label in [("grid", "(1) one-pass grid"), ("single", "(2) single full model"), ("naive", "(3) naive per cell")]:
        lines.append(f"  {label:24}{r[key]['wall_s']:9.1f}{r[key]['cpu_s']:9.1f}")
    lines.append(f"      grid = encode {r['grid']['encode_s']:.1f}s + score {r['grid']['score_s']:.2f}s (wall, last run)")
    lines.append(f"      naive = {r['naive']['method']}")
    for layer, v in r["naive"]["per_layer"].items():
        lines.append(f"        layer {layer}: {v['wall_s']:8.1f}s wall {v['cpu_s']:8.1f}s cpu for {n_dims} cells")
    g, n = r["grid_over_single"], r["naive_over_grid"]
    lines.append(f"  grid / single = {g['wall_s']:.3f} wall, {g['cpu_s']:.3f} cpu  (goal <= 1.10)")
    lines.append(f"  naive / grid  = {n['wall_s']:.1f} wall, {n['cpu_s']:.1f} cpu  (goal >= 10 on SciFact)")
    lines.append(f"  full cell (grid)   {r['full_cell']}\n  full cell (single) {r['single_cell']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data", action="append", help="datasets (default: stsb and scifact)")
    ap.add_argument("--data-dir", default=None, help="default: $M2D_DATA_DIR, else ../shared/data")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--dims", default="8,16,32,64,128,256,384")
    ap.add_argument("--max-length", type=int, default=None, help="default: the model's (256 for minilm-l6)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1, help="run grid and single N times (alternating), keep the best")
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
           "torch": torch.__version__, "python": platform.python_version(), "layers": layers, "dims": dims,
           "loadavg_start": os.getloadavg()}
    print(f"# {env}", flush=True)
    encoder.encode_layers(["warm up the kernels"] * 8, [encoder.num_layers])
    results = []
    for ds in datasets:
        r = bench_dataset(encoder, ds, layers, dims, args.batch_size, args.naive_all_cells, args.repeat)
        results.append(r)
        print(report(r, len(dims)), flush=True)
    env["loadavg_end"] = os.getloadavg()
    print(f"\n# load average start {env['loadavg_start']} end {env['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "results": results}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
