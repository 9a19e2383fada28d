"""The ``m2d`` command. Thin: parse flags, call the library, write files. One subcommand per ``_cmd_*``.

Bad input (``M2DError``) is reported as one ``m2d: error: ...`` line on stderr with exit code 2,
like argparse's own usage errors, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import M2DError, OneLineParser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except M2DError as err:
        print(f"m2d: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="m2d", description="2D Matryoshka embedding platform")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_eval(sub)
    _add_train(sub)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a 2D Matryoshka method (a preset or YAML config)",
                       description="Train with one configurable 2D loss; write model/, grid.csv, config.yaml, "
                                   "checkpoints/. Re-running with the same --out resumes from the last checkpoint.")
    p.add_argument("--config", required=True, metavar="PRESET_OR_YAML",
                   help="preset name (full, mrl, v1, v1-st6, v2, v2-fulldim, starbucks, separate) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. train.max_steps=200 or method.kl.weight=0; repeatable")
    p.add_argument("--data-dir", default=None, help="data root (default: $M2D_DATA_DIR or ./data)")
    p.add_argument("--out", required=True, help="output directory; one with checkpoints is resumed if its config "
                                                "agrees in every field that can change the weights")
    p.add_argument("--restart", action="store_true",
                   help="move a previous run in --out aside (to <out>.prev-<time>) and start over; nothing is deleted")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import deep_merge, load_config, parse_overrides
    from .evaluate import summarize
    from .preflight import check_run
    from .train import restart, train

    overrides = parse_overrides(args.overrides)
    if args.data_dir:
        overrides = deep_merge(overrides, {"data": {"data_dir": args.data_dir}})
    cfg = check_run(load_config(args.config, overrides))  # model fit and data presence, before any weights load
    _quiet_transformers()
    if args.restart and (aside := restart(Path(args.out))):
        print(f"train: the previous run in {args.out} was moved to {aside}")
    out = _make_out_dir(args.out)
    result = train(cfg, out)
    print(format_grid(result["grid"]))
    summary = {k: v for k, v in result.items() if k != "grid"}
    summary.update(summarize(result["grid"], flat=True))
    print(json.dumps(summary, indent=2))
    print(f"-> {out}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate every (layer, dim) cell of a model",
                       description="Encode each dataset once for all layers, score every (layer, dim) cell, "
                                   "write grid.csv, timings.json and heatmaps.")
    p.add_argument("--model", required=True, help="model directory, alias (minilm-l6) or hub name")
    p.add_argument("--data", required=True, action="append", metavar="NAME_OR_PATH",
                   help="dataset name (stsb, sts12..sts16, sickr, scifact, ...; sts-avg = all available STS sets "
                        "plus their mean) or path; repeatable")
    p.add_argument("--split", default="test")
    p.add_argument("--layers", default="all", help="'all' (1..L) or e.g. 1,3,6 (0 = embedding output)")
    p.add_argument("--dims", default="all", help="'all' (8,16,...,H) or e.g. 8,16,32")
    p.add_argument("--pooling", choices=("mean", "cls"), default=None, help="default: the model folder's setting")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--similarity", choices=("cos", "dot"), default="cos", help="retrieval scoring (STS is cosine)")
    p.add_argument("--fixed-docs", action="store_true",
                   help="retrieval: documents always from the last layer, queries at each (layer, dim)")
    p.add_argument("--data-dir", default=None, help="data root (default: $M2D_DATA_DIR or the project's data dir)")
    p.add_argument("--ray", action="store_true", help="score cells as Ray tasks (ray.init(); honours RAY_ADDRESS)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from . import data
    from .cells import parse_dims, parse_layers
    from .encoder import load_encoder
    from .evaluate import check_evaluable, evaluate_grid
    from .plots import heatmap, heatmap_name
    from .preflight import check_max_length, model_shape

    if args.batch_size < 1 or (args.max_length is not None and args.max_length < 1):
        raise M2DError("--batch-size and --max-length must be positive integers")
    _quiet_transformers()
    shape = model_shape(args.model)  # config.json only: every flag is checked before weights or data load
    layers = parse_layers(args.layers, shape.num_layers, "--layers")
    dims = parse_dims(args.dims, shape.hidden_size, "--dims")
    check_max_length(args.max_length, shape, "--max-length")
    names, sts_avg = data.expand_eval_names(args.data, args.data_dir)
    datasets = [data.load(name, split=args.split, data_dir=args.data_dir) for name in names]
    for ds in datasets:
        check_evaluable(ds)
    encoder = load_encoder(args.model, pooling=args.pooling, max_length=args.max_length)
    out = _make_out_dir(args.out)  # before the long encode, so an unwritable --out fails at once
    started_ray = args.ray and _start_ray()
    try:
        result = evaluate_grid(encoder, datasets, layers, dims, batch_size=args.batch_size,
                               similarity=args.similarity, sts_avg=sts_avg,
                               fixed_documents=args.fixed_docs)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    result.to_csv(out / "grid.csv")
    (out / "timings.json").write_text(json.dumps(result.timings, indent=2) + "\n")
    for ds in result.datasets():
        for metric in result.metrics(ds):
            heatmap(result, ds, metric, out / heatmap_name(ds, metric))
    print(format_grid(result))
    t = result.timings
    print(f"encode {t['encode_s']:.1f}s  score {t['score_s']:.1f}s  total {t['total_s']:.1f}s  -> {out}")
    return 0


def _make_out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise M2DError(f"--out: cannot create {out} ({err.strerror or err})") from None
    return out


def _start_ray() -> bool:
    """Join ``$RAY_ADDRESS`` or start a loopback-only local Ray; True when this call started it (shut down after)."""
    from .cluster import start_or_join

    return start_or_join(None, include_dashboard=False, log_to_driver=False)


def _quiet_transformers() -> None:
    """No weight-loading bars or info chatter on stderr: an error must be the only line there."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def format_grid(result) -> str:
    """One layer x dim table per dataset and metric."""
    blocks = []
    for ds in result.datasets():
        for metric in result.metrics(ds):
            layers, dims, values = result.matrix(ds, metric)
            lines = [f"{ds} {metric}", "layer " + "".join(f"{d:>8}" for d in dims)]
            lines += [f"{layer:>5} " + "".join(f"{v:8.4f}" for v in row) for layer, row in zip(layers, values)]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


if __name__ == "__main__":
    sys.exit(main())
