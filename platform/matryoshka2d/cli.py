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

from . import storage
from .config import POOLINGS
from .errors import M2DError, OneLineParser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:  # the sweep and study drivers parse their own flags (and print their own errors)
        from .sweep import main as sweep_main

        return sweep_main(argv[1:], prog="m2d sweep")
    if argv[:1] == ["reproduce"]:
        from .sweep.reproduce import main as reproduce_main

        return reproduce_main(argv[1:], prog="m2d reproduce")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except M2DError as err:
        print(f"m2d: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = OneLineParser(prog="m2d", description="2D Matryoshka embedding platform")
    parser.add_argument("--version", action="version", version=f"m2d (matryoshka2d) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_eval(sub)
    _add_mteb(sub)
    _add_train(sub)
    sub.add_parser("sweep", add_help=False,  # main() hands everything after "sweep" to the sweep driver
                   help="a Ray Tune sweep over config fields, every trial an MLflow run (m2d sweep --space weighting; "
                        "m2d sweep --help)")
    sub.add_parser("reproduce", add_help=False,  # main() hands everything after "reproduce" to the study driver
                   help="reproduce a study of the seed paper: its rows as one Tune grid, tables, claims, expected "
                        "results (m2d reproduce --study sts --scale smoke; m2d reproduce --help)")
    _add_compare_trials(sub)
    _add_compare(sub)
    _add_report(sub)
    _add_pick(sub)
    _add_export(sub)
    _add_data(sub)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a 2D Matryoshka method (a preset or YAML config)",
                       description="Train with one configurable 2D loss; write model/, grid.csv, config.yaml, "
                                   "checkpoints/. Re-running with the same --out resumes from the last checkpoint.")
    p.add_argument("--config", required=True, metavar="PRESET_OR_YAML",
                   help="preset name (full, mrl, v1, v1-st6, v2, v2-fulldim, starbucks, separate) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. train.max_steps=200 or method.kl.weight=0; repeatable")
    p.add_argument("--data-dir", default=None, help="data root (default: $M2D_DATA_DIR or ./data; a --set "
                                                    "data.data_dir wins)")
    p.add_argument("--out", required=True, help="output directory; one with checkpoints is resumed if its config "
                                                "agrees in every field that can change the weights")
    p.add_argument("--restart", action="store_true",
                   help="move a previous run in --out aside (to <out>.prev-<time>) and start over; nothing is deleted")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import compose
    from .evaluate import summarize
    from .resolve import check_run
    from .train import restart, train

    cfg = compose(args.config, data_dir=args.data_dir, sets=args.overrides)  # --set beats --data-dir (config.LAYERS)
    cfg = check_run(cfg).config  # model fit and data presence, before any weights load
    _quiet_transformers()
    if args.restart and (aside := restart(Path(args.out))):
        print(f"train: the previous run in {args.out} was moved to {aside}")
    out = storage.check_creatable(args.out, "--out")  # created by train() once its data checks passed
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
    p.add_argument("--model", required=True, help="model directory, alias (minilm-l6, mpnet-base) or hub name")
    p.add_argument("--data", required=True, action="append", metavar="NAME_OR_PATH",
                   help="dataset name (stsb, sts12..sts16, sickr, scifact, ...; sts-avg = all available STS sets "
                        "plus their mean) or path; repeatable")
    p.add_argument("--split", default="test")
    p.add_argument("--layers", default="all", help="'all' (1..L) or e.g. 1,3,6 (0 = embedding output)")
    p.add_argument("--dims", default="all", help="'all' (8,16,...,H) or e.g. 8,16,32")
    p.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="default: the model folder's setting, else mean (a causal LM: lasttoken)")
    p.add_argument("--prompt", action="append", default=None, metavar="NAME=TEXT",
                   help="a prompt put before inputs (query=..., document=...); replaces the folder's prompts; repeatable")
    p.add_argument("--default-prompt", default=None, metavar="NAME", help="the prompt of STS inputs (default: the folder's)")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--similarity", choices=("cos", "dot"), default=None,
                   help="retrieval scoring (STS is cosine); default: the folder's similarity_fn_name, else cos")
    p.add_argument("--fixed-docs", action="store_true",
                   help="retrieval: documents always from the last layer, queries at each (layer, dim)")
    p.add_argument("--precision", default="float32", metavar="LIST",
                   help="comma list of float32, int8, binary, int8+rescore, binary+rescore: every cell is also scored "
                        "quantized (rows '<metric>/<precision>'; '+rescore' is retrieval only)")
    p.add_argument("--rescore-multiplier", type=int, default=4, metavar="M",
                   help="+rescore: M x top-k binary/int8 candidates re-ranked by the float query (default 4)")
    p.add_argument("--data-dir", default=None, help="data root (default: $M2D_DATA_DIR or the project's data dir)")
    p.add_argument("--ray", action="store_true", help="score cells as Ray tasks (ray.init(); honours RAY_ADDRESS)")
    p.add_argument("--latency", action="store_true",
                   help="also measure query-encoding latency per layer at batch 1 and 128 on this machine "
                        "(latency.json, for m2d pick)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from . import data
    from .cells import parse_dims, parse_layers
    from .cluster import start_or_join
    from .encoder import load_encoder
    from .evaluate import check_evaluable, evaluate_grid, parallel
    from .evaluate.grid import check_precisions
    from .evaluate.plots import heatmap, heatmap_name
    from .evaluate.precision import parse_precisions
    from .resolve import check_max_length, model_shape

    if args.batch_size < 1 or (args.max_length is not None and args.max_length < 1):
        raise M2DError("--batch-size and --max-length must be positive integers")
    prompts = _prompts(args.prompt)
    _quiet_transformers()
    shape = model_shape(args.model)  # config.json only: every flag is checked before weights or data load
    layers = parse_layers(args.layers, shape.num_layers, "--layers")
    dims = parse_dims(args.dims, shape.hidden_size, "--dims")
    check_max_length(args.max_length, shape, "--max-length")
    precisions = parse_precisions(args.precision, "--precision")
    if args.rescore_multiplier < 1:
        raise M2DError(f"--rescore-multiplier: {args.rescore_multiplier} must be an integer >= 1")
    names, sts_avg = data.expand_eval_names(args.data, args.data_dir)
    datasets = [data.load(name, split=args.split, data_dir=args.data_dir) for name in names]
    for ds in datasets:
        check_evaluable(ds)
    check_precisions(datasets, precisions)
    encoder = load_encoder(args.model, pooling=args.pooling, max_length=args.max_length, prompts=prompts,
                           default_prompt_name=args.default_prompt)
    similarity = args.similarity or encoder.similarity or "cos"
    out = _make_out_dir(args.out)  # before the long encode, so an unwritable --out fails at once
    # Join $RAY_ADDRESS or start a loopback-only local Ray; shut down after only if this call started it
    started_ray = args.ray and start_or_join(None, include_dashboard=False, log_to_driver=False)
    try:
        result = evaluate_grid(encoder, datasets, layers, dims, batch_size=args.batch_size,
                               similarity=similarity, sts_avg=sts_avg,
                               executor=parallel.ray_tasks if args.ray else parallel.in_process,
                               fixed_documents=args.fixed_docs, precisions=precisions,
                               rescore_multiplier=args.rescore_multiplier)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    result.to_csv(out / storage.GRID)
    (out / storage.TIMINGS).write_text(json.dumps(result.timings, indent=2) + "\n")
    for ds in result.datasets():
        for metric in result.metrics(ds):
            heatmap(result, ds, metric, out / heatmap_name(ds, metric))
    print(format_grid(result))
    t = result.timings
    print(f"encode {t['encode_s']:.1f}s  score {t['score_s']:.1f}s  total {t['total_s']:.1f}s  -> {out}")
    if args.latency:
        _write_latency(encoder, datasets, out / storage.LATENCY)
    return 0


def _prompts(items: list[str] | None) -> dict[str, str] | None:
    """``--prompt NAME=TEXT`` flags as a mapping (None when none is given: the folder's prompts stand)."""
    if items is None:
        return None
    pairs = [item.partition("=") for item in items]
    bad = next((item for item, (name, eq, _) in zip(items, pairs) if not name or not eq), None)
    if bad is not None:
        raise M2DError(f"--prompt {bad!r}: expected NAME=TEXT, e.g. query='query: '")
    return {name: text for name, _, text in pairs}


def _add_mteb(sub) -> None:
    p = sub.add_parser("mteb", help="MTEB's own evaluators on every (layer, dim) cell, each text encoded once",
                       description="Run MTEB tasks on every (layer, dim) cell of a model from one encode of each text: "
                                   "MTEB's result files per cell under OUT/results/<model>__L<l>-d<d>/<revision>/, "
                                   "the main scores in OUT/grid.csv, both logged to one MLflow run. Needs the mteb "
                                   "extra (pip install 'matryoshka2d[mteb]').")
    p.add_argument("--model", required=True, help="model directory, alias (minilm-l6, mpnet-base) or hub name")
    p.add_argument("--task", required=True, action="append", metavar="NAME",
                   help="a set of the data dir (stsb, sts12..sts16, sickr, scifact, ...; a path or hf:, as m2d eval) "
                        "or an MTEB task name whose data is cached (STSBenchmark, SciFact, ...); repeatable")
    p.add_argument("--split", default="test", help="the data dir's sets' split (an MTEB task runs its eval splits)")
    p.add_argument("--layers", default="all", help="'all' (1..L) or e.g. 1,3,6 (0 = embedding output)")
    p.add_argument("--dims", default="all", help="'all' (8,16,...,H) or e.g. 8,16,32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--similarity", choices=("cos", "dot"), default=None,
                   help="retrieval scoring (STS is cosine), as m2d eval; default: the folder's similarity_fn_name, "
                        "else cos")
    p.add_argument("--max-examples", type=int, default=None, metavar="N",
                   help="the data dir's sets only: the first N STS pairs, or N queries with their judged documents "
                        "plus 10 N others (as eval.max_examples)")
    p.add_argument("--data-dir", default=None, help="data root (default: $M2D_DATA_DIR or the project's data dir)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI, else "
                                                        "sqlite:///$M2D_HOME/mlflow.db)")
    p.add_argument("--experiment-name", default="m2d-mteb", help="MLflow experiment (default m2d-mteb)")
    p.add_argument("--no-mlflow", action="store_true", help="write the files only")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_mteb)


def _cmd_mteb(args: argparse.Namespace) -> int:
    from functools import partial

    from . import tracking
    from .cells import parse_dims, parse_layers
    from .encoder import load_encoder, resolve_model_path
    from .resolve import model_shape
    from .train.loop import cap_eval_set

    try:
        from .evaluate import mteb_cells
    except ModuleNotFoundError as err:
        if err.name != "mteb":
            raise
        raise M2DError("m2d mteb needs the mteb extra: pip install 'matryoshka2d[mteb]'") from None
    if args.batch_size < 1 or (args.max_examples is not None and args.max_examples < 1):
        raise M2DError("--batch-size and --max-examples must be positive integers")
    _quiet_transformers()
    shape = model_shape(args.model)  # config.json only: every flag is checked before weights or data load
    layers = parse_layers(args.layers, shape.num_layers, "--layers")
    dims = parse_dims(args.dims, shape.hidden_size, "--dims")
    uri = None if args.no_mlflow else tracking.resolve_tracking_uri(args.tracking_uri)
    if uri:
        tracking.check_tracking(uri)
    out = storage.check_creatable(args.out, "--out")
    cap = partial(cap_eval_set, n=args.max_examples) if args.max_examples else None
    tasks = [mteb_cells.task_for(name, args.split, args.data_dir, cap) for name in dict.fromkeys(args.task)]
    encoder = load_encoder(args.model)
    similarity = args.similarity or getattr(encoder, "similarity", None) or "cos"  # as m2d eval scores
    label, revision = mteb_cells.model_label(args.model), mteb_cells.model_revision(resolve_model_path(args.model))
    run = mteb_cells.evaluate_cells(encoder, tasks, layers, dims, out, label, revision, similarity, args.batch_size)
    run.grid.to_csv(out / storage.GRID)
    (out / storage.TIMINGS).write_text(json.dumps(run.grid.timings, indent=2) + "\n")
    print(format_grid(run.grid))
    t = run.grid.timings
    print(f"mteb: {t['cells']} cells x {len(tasks)} task(s), {run.encoded} texts encoded once ({t['encode_s']:.1f}s), "
          f"total {t['total_s']:.1f}s -> {run.results}")
    if uri:
        params = {"model": args.model, "revision": revision, "tasks": ",".join(args.task), "layers": args.layers,
                  "dims": args.dims, "similarity": similarity, "max_examples": str(args.max_examples)}
        run_id = _log_mteb(uri, args.experiment_name, f"mteb {label}", params, out, run)
        print(f"mteb: logged to MLflow run {run_id} ({uri})")
    return 0


def _log_mteb(uri: str, experiment: str, name: str, params: dict[str, str], out: Path, run) -> str:
    """One MLflow run: each cell's main score (``<task>/<main score>/cell/L.._D..``) and its summaries, grid.csv at
    the root (``m2d compare`` reads it by run id) and MTEB's results folder under ``results/``."""
    import importlib

    from . import tracking
    from .evaluate import summarize

    importlib.import_module("mlflow")  # its import sets its loggers' level: quieted after it, before the store is made
    tracking.quiet_mlflow()
    mlf = tracking.client(uri)
    run_id = mlf.create_run(tracking.ensure_experiment(mlf, experiment, uri), run_name=name).info.run_id
    tracking.log_params(mlf, run_id, params)
    tracking.log_metrics(mlf, run_id, {**tracking.cell_metrics(run.grid), **summarize(run.grid, flat=True)}, step=0)
    mlf.log_artifact(run_id, str(out / storage.GRID))
    mlf.log_artifacts(run_id, str(run.results), artifact_path=run.results.name)
    mlf.set_terminated(run_id)
    return run_id


def _write_latency(encoder, datasets, path: Path) -> None:
    """Latency of the evaluated texts (queries for retrieval, sentences for STS), measured last: it cuts the encoder."""
    from .choose.pick import format_latency, measure_latency
    from .data.types import RetrievalSet
    from .evaluate import retrieval, sts

    texts: list[str] = []
    for ds in datasets:
        texts += retrieval.prepare(ds)[1] if isinstance(ds, RetrievalSet) else sts.unique_sentences(ds)[0]
    latency = measure_latency(encoder, texts)
    path.write_text(json.dumps(latency, indent=2) + "\n")
    print(format_latency(latency) + f"\n-> {path}")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write one (layer, dim) cell as a standalone SentenceTransformer model",
                       description="Cut the encoder to LAYER blocks and save it with truncation to DIM and "
                                   "normalisation (the grid's cell; a dot-product model is not normalised), its "
                                   "prompts and similarity; SentenceTransformer(OUT) loads it as is. "
                                   "Prints and writes OUT/export.json: sizes on disk and encode speed vs the full model.")
    p.add_argument("model", metavar="MODEL_DIR", help="m2d train output dir (its model/), model dir or alias (minilm-l6, mpnet-base)")
    p.add_argument("--layer", type=int, required=True, help="blocks to keep, 1..L")
    p.add_argument("--dim", type=int, required=True, help="embedding dims to keep, 1..H")
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.add_argument("--force", action="store_true",
                   help="replace a previous export in --out: only the files its export.json lists are replaced, any "
                        "other file there is kept")
    p.add_argument("--bench", type=int, default=256, metavar="N",
                   help="time encoding N STS-B test sentences, export vs full model (default 256; 0 skips)")
    p.add_argument("--data-dir", default=None, help="data root for --bench (default: $M2D_DATA_DIR or ./data)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .choose.export import export_cell, format_report

    _quiet_transformers()
    report = export_cell(args.model, args.layer, args.dim, args.out, force=args.force, bench=args.bench,
                         data_dir=args.data_dir)
    print(format_report(report))
    print(f"-> {args.out}")
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="what a data dir holds of each named dataset, what is missing, checksums",
                       description="For every named dataset and split: present (its files, bytes, sha256 prefix) or "
                                   "missing (which file, and where to get it). Exit 0 even when some are missing.")
    p.add_argument("--data-dir", default=None, help="data root (default: $M2D_DATA_DIR or ./data)")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=_cmd_data)


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import data_dir
    from .data.inventory import format_inventory, inventory

    report = inventory(data_dir(args.data_dir))
    print(json.dumps(report, indent=2) if args.json else format_inventory(report))
    return 0


def _add_compare_trials(sub) -> None:
    p = sub.add_parser("compare-trials", help="paired bootstrap of finished trials against a baseline trial",
                       description="Each trial's mean over a set of cells, its margin over the baseline trial and the "
                                   "95% interval of a paired bootstrap over the test items (pairs or queries). Cells: "
                                   "all, sublayer, dims<N, dims>=N, joined with _.")
    p.add_argument("--baseline", required=True, help="trial dir to compare against")
    p.add_argument("--metric", required=True, help="dataset/metric, e.g. scifact/ndcg@10 or sts-avg/spearman")
    p.add_argument("--cells", default="sublayer")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("trials", nargs="+", help="trial dirs (grid.csv + items.npz)")
    p.set_defaults(func=_cmd_compare_trials)


def _cmd_compare_trials(args: argparse.Namespace) -> int:
    from . import storage
    from .study.report import paired_difference

    rows = []  # every trial first: a bad one is refused before anything is printed
    for trial in args.trials:
        r = paired_difference(Path(trial), Path(args.baseline), args.metric, args.cells, args.bootstrap)
        params = Path(trial) / storage.PARAMS
        rows.append((trial, r, storage.read_json(params, storage.PARAMS) if params.is_file() else {}))
    print(f"{'trial':<14} {'mean':>8} {'margin':>8}  95% CI              params")
    for trial, r, labels in rows:
        print(f"{Path(trial).name:<14} {r['a_mean']:8.4f} {r['margin']:+8.4f}  [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]"
              f"  {labels}")
    return 0


def _add_sources(p) -> None:
    p.add_argument("sources", nargs="+", metavar="RUN_OR_DIR",
                   help="m2d train / m2d eval output dirs (or grid.csv files), MLflow run ids, or a sweep's parent run "
                        "id (= all its trials)")
    p.add_argument("--baseline", default=None,
                   help="the run the difference grids subtract: a label, dir or run id (default: the first run)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store for run ids (default $MLFLOW_TRACKING_URI, else "
                                                        "sqlite:///$M2D_HOME/mlflow.db)")


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="several runs' layer x dim grids side by side",
                       description="Small multiples of every run's grid on one colour scale, each run minus a "
                                   "baseline, the best run per cell, leaderboards, and cells.csv (every cell of every "
                                   "run), per dataset x metric.")
    _add_sources(p)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .choose import compare

    out = storage.check_creatable(args.out, "--out")  # created by compare.write once every run passed its checks
    entries, base, written = compare.run(args.sources, out, args.baseline, args.tracking_uri)
    for ds, metric, rows in written["leaderboards"]:
        print(compare.format_leaderboard(rows, f"{ds} {metric} (baseline {entries[base].label})") + "\n")
    print(f"compare: {len(entries)} runs, {len(written['figures'])} figures, cells.csv -> {out}")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page for a sweep or a reproduction study",
                       description="A reproduction study's folder (its run dir or experiments/results/<name>: claims, "
                                   "figures, tables) or a sweep (its run dir, its parent run id, or any runs as for "
                                   "m2d compare) as one HTML file that opens from disk with no server.")
    _add_sources(p)
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    import tempfile

    from .choose import compare, page

    out = Path(args.out).expanduser()
    if out.is_dir() or out.suffix.lower() not in (".html", ".htm"):
        raise M2DError(f"--out: {out} must be an .html file path")
    storage.check_creatable(out.parent if out.is_file() else out, "--out")  # before any work; the page is written last
    first = Path(args.sources[0]).expanduser()
    if len(args.sources) == 1 and ((first / storage.REPORT).is_file() or (first / storage.TABLES / storage.REPORT).is_file()):
        text = page.study_page(first)
    else:
        sources = args.sources
        if len(sources) == 1 and (first / storage.TRIALS).is_dir():  # a sweep's run dir
            sources = [str(p) for p in page.sweep_folder(first)]
        with tempfile.TemporaryDirectory(prefix="m2d-report-") as tmp:
            entries, base, written = compare.run(sources, Path(tmp), args.baseline, args.tracking_uri)
            title = f"Comparison of {len(entries)} runs" + (f": {first.name}" if first.exists() else "")
            text = page.comparison_page(title, entries, written, base)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as err:
        raise M2DError(f"--out: cannot write {out} ({err.strerror or err})") from None
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, self-contained)")
    return 0


def _add_pick(sub) -> None:
    p = sub.add_parser("pick", help="the best (layer, dim, precision) cell within a latency and size budget",
                       description="Every cell costs query-encoding latency (an encoder cut to its layer, measured on "
                                   "this machine: latency.json from m2d eval --latency) and bytes per vector (dim x "
                                   "bytes per value at its precision). Prints the best cell within the budget and the "
                                   "Pareto frontier of quality, latency and bytes; writes frontier.png/csv.")
    p.add_argument("source", metavar="RUN_OR_GRID", help="an m2d eval / m2d train output dir, a grid.csv, or an MLflow "
                                                          "run id (the frontier plot is logged to that run)")
    p.add_argument("--metric", default=None, help="<dataset>/<metric>, e.g. scifact/ndcg@10 (default: the grid's first)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="budget: ms per query batch (see --batch)")
    p.add_argument("--max-bytes", type=float, default=None, help="budget: bytes per stored vector")
    p.add_argument("--batch", type=int, default=1, help="the batch size whose latency counts (measured: 1 and 128)")
    p.add_argument("--latency", default=None, metavar="JSON_OR_MODEL",
                   help="latency.json, or a model dir to measure now (default: latency.json beside the grid, else "
                        "the run's model/)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store for run ids")
    p.add_argument("--out", default=None, help="where frontier.png and frontier.csv go (default: beside the grid)")
    p.set_defaults(func=_cmd_pick)


def _cmd_pick(args: argparse.Namespace) -> int:
    import tempfile

    from .choose import compare, pick

    for flag, value in (("--max-latency-ms", args.max_latency_ms), ("--max-bytes", args.max_bytes)):
        if value is not None and not value > 0:
            raise M2DError(f"{flag}: must be a positive number, got {value:g}")
    entry = compare.load([args.source], args.tracking_uri)[0]
    home = Path(entry.source) if entry.run_id is None else None
    grid = entry.grid
    metric = pick.check_metric(grid, args.metric)
    out = storage.check_creatable(args.out, "--out") if args.out else home  # created only to write into it
    latency_path, latency = _latency_file(args.latency, home, out, grid, args.batch)
    candidates = pick.cells(grid, metric, latency, args.batch)
    front = pick.frontier(candidates)
    chosen = pick.best(candidates, args.max_latency_ms, args.max_bytes)
    hw = latency["hardware"]
    where = f"{hw['processor']}, {hw['torch_threads']} threads, batch {args.batch}"
    print(f"pick: {metric}; latency from {latency_path} ({where})")
    budget = (f"<= {args.max_latency_ms:g} ms" if args.max_latency_ms else "any latency") + ", " + \
             (f"<= {args.max_bytes:g} bytes" if args.max_bytes else "any size")
    if chosen is None:
        print(f"no cell fits {budget}; the cheapest is {min(c.latency_ms for c in candidates):.2f} ms, "
              f"{min(c.bytes for c in candidates)} bytes")
    else:
        print(f"best within {budget}:\n" + pick.format_cells([chosen], metric))
    print(f"\nPareto frontier ({len(front)} of {len(candidates)} cells):\n" + pick.format_cells(front, metric))
    out = _make_out_dir(str(out)) if out else Path(tempfile.mkdtemp(prefix="m2d-pick-"))
    png = pick.plot_frontier(candidates, front, chosen, metric, where, (args.max_latency_ms, args.max_bytes),
                             out / "frontier.png")
    csv_path = pick.write_csv(front, out / "frontier.csv")
    if entry.run_id:
        from . import tracking

        mlf = tracking.read_only_client(args.tracking_uri)  # the store exists: the run was read from it
        for path in (png, csv_path, latency_path):
            mlf.log_artifact(entry.run_id, str(path), artifact_path="pick")
        print(f"pick: frontier logged to MLflow run {entry.run_id} (pick/)")
    print(f"-> {png}")
    return 0 if chosen is not None else 1


def _latency_file(given: str | None, home: Path | None, out: Path | None, grid, batch: int) -> tuple[Path, dict]:
    """The latency that prices ``grid`` and its file: ``--latency`` (a latency.json or a model dir), else the
    latency.json beside the grid, else the run's ``model/``; a model is measured now, once checked against the grid
    (before it loads). Another model's latency is refused (:func:`choose.pick.check_latency`)."""
    from .choose import pick
    from .resolve import model_shape

    source = _latency_source(given, home)
    layers = pick.grid_model_layers(home, source)  # the grid's model's layer count, where its folder says
    if source.is_dir():
        shape = model_shape(str(source))
        pick.check_layers(source, shape.num_layers, range(shape.num_layers + 1), grid.layers, layers)
        source = _measure_latency(source, out, batch)
    latency = pick.load_latency(source)
    pick.check_latency(latency, source, grid.layers, layers)
    return source, latency


def _latency_source(given: str | None, home: Path | None) -> Path:
    candidates = [Path(given).expanduser()] if given else [home / storage.LATENCY, home / storage.MODEL] if home else []
    for path in candidates:
        if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
            return path
    if given:
        raise M2DError(f"--latency: {given} is neither a latency.json nor a model folder (with config.json)")
    raise M2DError("--latency: no latency.json beside the grid and no model to measure; run m2d eval --latency, or "
                   "pass --latency latency.json|MODEL_DIR")


def _measure_latency(model: Path, out: Path | None, batch: int) -> Path:
    """Measure ``model`` now into ``out``/latency.json (else a temporary folder); the speed sample's files and
    ``--batch`` are checked before it loads, and ``out`` is created only to write the measurement."""
    import tempfile

    from . import data
    from .choose.export import bench_texts
    from .choose.pick import BATCH_SIZES, measure_latency
    from .encoder import load_encoder

    if batch not in BATCH_SIZES:
        raise M2DError(f"--batch: {batch} would not be measured; allowed {', '.join(map(str, BATCH_SIZES))}")
    data.check_files("--latency", "stsb", "test", None)  # the texts it times
    _quiet_transformers()
    print(f"pick: measuring query latency of {model} (batch {' and '.join(map(str, BATCH_SIZES))}, every layer)")
    latency = measure_latency(load_encoder(str(model)), bench_texts(512))
    target = (_make_out_dir(str(out)) if out else Path(tempfile.mkdtemp(prefix="m2d-pick-"))) / storage.LATENCY
    target.write_text(json.dumps(latency, indent=2) + "\n")
    return target


def _make_out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise M2DError(f"--out: cannot create {out} ({err.strerror or err})") from None
    return out


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
