"""Benchmark: per-trial overhead of a sweep trial, loop run in the Tune trainable vs on a 1-worker TorchTrainer.

    python bench/sweep_overhead.py [--trials 3] [--steps 10] [--model PATH] [--json OUT]

Runs the real sweep driver (``matryoshka2d.sweep``) twice on a local Ray, once per backend, with a
one-value search space, FIFO, one trial at a time, a tiny random BERT (or ``--model``), into a temporary
MLflow store. Per trial, the trainable records ``m2d/loop_s`` (``train()`` from its start to its final
report: model/data loading, steps, evaluations, MLflow logging) and ``m2d/trial_s`` (the whole trainable).
Reported per backend:

- ``in-trial overhead``   = trial_s - loop_s (MLflow run setup; for torch: controller, worker group, gloo)
- ``per-trial overhead``  = Tuner.fit wall / trials - loop_s (adds Tune's trial actor start and scheduling)

Goal: per-trial overhead <= 10 s on the 2-core dev machine. ``--workers-per-trial 1`` picks the cheaper path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def run_backend(backend: str, args, tmp: Path, model: str, uri: str) -> dict:
    from mlflow import MlflowClient

    from matryoshka2d.sweep import main

    space = tmp / "space.yaml"
    space.write_text("method.layer_weighting:\n  choice: [log]\n")
    name = f"bench-{backend}"
    argv = ["--smoke", "--num-samples", str(args.trials), "--max-concurrent", "1", "--scheduler", "fifo",
            "--backend", backend, "--workers-per-trial", "1", "--space", str(space),
            "--tracking-uri", uri, "--storage-path", str(tmp / "ray_results"), "--experiment-name", name,
            "--set", f"model.name={model}", "--set", f"train.max_steps={args.steps}",
            "--set", "eval.dims=[8,16,32]"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    code = main(argv, sweep="weighting", description="bench")
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{backend}: sweep failed with exit code {code}")
    mlf = MlflowClient(uri)
    exp = mlf.get_experiment_by_name(name)
    runs = mlf.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("m2d.kind") == "sweep")
    trials = [r for r in runs if r.data.tags.get("m2d.kind") == "trial"]
    loop = [r.data.metrics["m2d/loop_s"] for r in trials]
    trial = [r.data.metrics["m2d/trial_s"] for r in trials]
    fit = parent.data.metrics["m2d/fit_s"]
    return {"backend": backend, "trials": len(trials), "command_wall_s": wall, "fit_s": fit,
            "loop_s": statistics.mean(loop), "trial_s": statistics.mean(trial),
            "in_trial_overhead_s": statistics.mean(t - l for t, l in zip(trial, loop)),
            "per_trial_overhead_s": fit / len(trials) - statistics.mean(loop)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default=None, help="model dir or alias (default: a tiny random 6x32 BERT)")
    parser.add_argument("--data-dir", default=None, help="default $M2D_DATA_DIR")
    parser.add_argument("--backends", default="inprocess,torch")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from matryoshka2d.testing import make_tiny_bert

    rows = []
    with tempfile.TemporaryDirectory(prefix="m2d-bench-") as tmp:
        tmp = Path(tmp)
        model = args.model or str(make_tiny_bert(tmp / "tiny", num_layers=6, hidden_size=32))
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        for backend in args.backends.split(","):
            rows.append(run_backend(backend, args, tmp, model, uri))
    print(f"\nper-trial overhead, 1 worker per trial, {args.trials} trials x {args.steps} steps, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'backend':<10} {'loop s':>8} {'trial s':>8} {'in-trial ovh s':>15} {'per-trial ovh s':>16} {'fit s':>8}")
    for r in rows:
        print(f"{r['backend']:<10} {r['loop_s']:>8.2f} {r['trial_s']:>8.2f} {r['in_trial_overhead_s']:>15.2f} "
              f"{r['per_trial_overhead_s']:>16.2f} {r['fit_s']:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
