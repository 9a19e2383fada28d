"""The bad-input catalogue: every case is one row (tool, arguments, the field or file the error must name).

Each case asserts exit code 2, exactly one stderr line (``<prog>: error: ...``), no traceback, that nothing
written before was changed (a finished training run, a MLflow store with a run, a sweep's Ray results folder, an
evaluation folder, and every fixture of the analysis side), that no ``--out`` was left behind, and that no MLflow
store was created. Cases run in-process (seconds for all of them); a sample runs as real processes too, where a
library could still print to the real stderr.

The rows of the analysis side (compare, report, pick, export, broken model folders, studies) live beside this file,
one module per area (``catalogue_*.py``: ``CASES`` and ``fixtures(root, ctx)``); this file runs them all.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from matryoshka2d.testing import make_tiny_bert

import catalogue_analysis
from catalogue import Case, E, S, T
import catalogue_data
import catalogue_models
import catalogue_study

AREAS = (catalogue_analysis, catalogue_models, catalogue_study, catalogue_data)

ROOT = Path(__file__).resolve().parents[1]
STSB_ROW = "main-captions\tMSRvid\t2012test\t{i:04d}\t{score}\tA man is playing a {i} guitar.\tA man plays the {i} guitar."


CASES = [
    # -- m2d eval: flags ------------------------------------------------------------------------------------
    E("eval-dim-above-H", "--dims", "8,64", needle="--dims: dim 64 is out of range; allowed 1..32"),
    E("eval-dim-zero", "--dims", "0", needle="--dims: dim 0"),
    E("eval-dims-text", "--dims", "eight", needle="--dims"),
    E("eval-dims-empty", "--dims", ",", needle="--dims: empty list"),
    E("eval-layer-above-L", "--layers", "1,9", needle="--layers: layer 9 is out of range; allowed 0..6"),
    E("eval-layer-negative", "--layers", "-1", needle="--layers: layer -1"),
    E("eval-layers-text", "--layers", "last", needle="--layers"),
    E("eval-unknown-dataset", "--data", "no-such-set", needle="no-such-set"),
    E("eval-split-not-available", "--data", "sts12", "--split", "dev", needle="sts12: split 'dev' not available"),
    E("eval-model-missing", "--model", "/nonexistent/model", needle="model"),
    E("eval-model-not-a-model", "--model", "{files}", needle="model"),
    E("eval-batch-size-zero", "--batch-size", "0", needle="--batch-size"),
    E("eval-batch-size-text", "--batch-size", "big", needle="--batch-size"),
    E("eval-max-length-zero", "--max-length", "0", needle="--max-length"),
    E("eval-max-length-above-positions", "--max-length", "100000",
      needle="--max-length: 100000 exceeds the model's position limit of 512"),
    E("eval-similarity-unknown", "--similarity", "l2", needle="--similarity"),
    E("eval-pooling-unknown", "--pooling", "median", needle="--pooling"),
    E("eval-out-under-a-file", "--out", "{files}/plain.txt/out", needle="--out"),
    E("eval-data-dir-missing", "--data-dir", "/nonexistent/data", needle="data_dir: /nonexistent/data does not exist"),
    E("eval-sts-avg-empty-data-dir", "--data", "sts-avg", "--data-dir", "{files}/empty", needle="sts-avg"),
    E("eval-unknown-flag", "--frobnicate", needle="unrecognized arguments: --frobnicate"),
    E("eval-no-model", "--model", needle="--model"),
    # -- data files ---------------------------------------------------------------------------------------
    E("data-stsb-score-out-of-range", "--data", "{files}/score-range.csv", needle="score-range.csv line 2: score 7.2"),
    E("data-stsb-score-text", "--data", "{files}/score-text.csv", needle="score-text.csv line 1: score 'high'"),
    E("data-stsb-columns", "--data", "{files}/columns.csv", needle="columns.csv line 2: expected 7 or 9"),
    E("data-stsb-empty-file", "--data", "{files}/empty.csv", needle="empty.csv: file is empty"),
    E("data-stsb-empty-sentence", "--data", "{files}/empty-sentence.csv", needle="empty-sentence.csv line 1: sentence1"),
    E("data-stsb-one-pair", "--data", "{files}/one-pair.csv", needle="1 scored pair(s); Spearman needs at least 2"),
    E("data-stsb-constant-gold", "--data", "{files}/constant.csv", needle="every gold score is 3"),
    E("data-stsb-bad-utf8", "--data", "{files}/latin1.csv", needle="latin1.csv line 1: not valid UTF-8"),
    E("data-sick-score", "--data", "{files}/SICK_bad.txt", needle="SICK_bad.txt line 2"),
    E("data-beir-malformed-json", "--data", "{files}/beir-json", needle="corpus.jsonl line 2: malformed JSON"),
    E("data-beir-json-not-object", "--data", "{files}/beir-list", needle="corpus.jsonl line 1: expected a JSON object"),
    E("data-beir-duplicate-doc", "--data", "{files}/beir-dup", needle="corpus.jsonl line 2: duplicate _id 'd0'"),
    E("data-beir-query-no-text", "--data", "{files}/beir-notext", needle="queries.jsonl line 1: missing or non-string"),
    E("data-beir-unknown-doc", "--data", "{files}/beir-unknown-doc", needle="qrels/test.tsv line 3: doc id 'd99'"),
    E("data-beir-unknown-query", "--data", "{files}/beir-unknown-query", needle="query id 'q99'"),
    E("data-beir-no-positive", "--data", "{files}/beir-zero", needle="the qrels have no positive grade"),
    E("data-beir-grade-text", "--data", "{files}/beir-grade", needle="qrels/test.tsv line 3: score 'yes'"),
    E("data-beir-qrels-columns", "--data", "{files}/beir-cols", needle="qrels/test.tsv line 3: expected 3"),
    E("data-beir-qrels-missing", "--data", "{files}/beir-noqrels", needle="qrels"),
    E("data-beir-bad-gzip", "--data", "{files}/beir-gz", needle="corpus.jsonl.gz line 1: not a valid gzip file"),
    E("data-beir-split-missing", "--data", "{files}/beir-json", "--split", "dev", needle="dev"),
    E("data-folder-unknown-format", "--data", "{files}/empty", needle="cannot tell the dataset format"),
    E("data-file-unknown-format", "--data", "{files}/plain.txt", needle="plain.txt: cannot tell the dataset format"),
    E("data-semeval-unpaired", "--data", "{files}/semeval", needle="STS.gs.MSRpar.txt"),
    # -- m2d train: config values ---------------------------------------------------------------------------
    T("train-unknown-scheme", "--set", "method.layer_weighting=cubic", needle="method.layer_weighting: unknown scheme"),
    T("train-set-without-value", "--set", "train.max_steps", needle="--set 'train.max_steps': expected key=value"),
    T("train-dim-above-H", "--set", "method.last_layer_dims=8,4096", needle="method.last_layer_dims: dim 4096"),
    T("train-lr-nan", "--set", "train.lr=.nan", needle="train.lr: Input should be a finite number"),
    T("train-lr-inf", "--set", "train.lr=.inf", needle="train.lr: Input should be a finite number"),
    T("train-lr-negative", "--set", "train.lr=-1", needle="train.lr"),
    T("train-kl-weight-nan", "--set", "method.kl.weight=.nan", needle="method.kl.weight"),
    T("train-weights-list-nan", "--set", "method.layer_weighting=[1,.nan,1,1,1,1,1]", needle="method.layer_weighting.1"),
    T("train-dim-weight-inf", "--set", "method.dim_weights={{8: .inf}}", needle="method.dim_weights.8"),
    T("train-batch-size-one", "--set", "train.batch_size=1", needle="train.batch_size"),
    T("train-bf16-maybe", "--set", "train.bf16=maybe", needle="train.bf16: allowed"),
    T("train-unknown-field", "--set", "train.max_step=10", needle="train.max_step: unknown field"),
    T("train-unknown-section", "--set", "optimizer.lr=1", needle="optimizer: unknown field"),
    T("train-set-into-a-value", "--set", "train.lr.x=1", needle="train.lr: Input should be a valid number"),
    T("train-prior-layers-range", "--set", "method.prior_layers=0..9", needle="method.prior_layers: layer 7"),
    T("train-prior-layers-last", "--set", "method.prior_layers=1..L", needle="must not contain the last layer 6"),
    T("train-expr-power", "--set", "method.prior_layers=9**9**9", needle="method.prior_layers: cannot read '9**9**9'"),
    T("train-expr-huge", "--set", "method.last_layer_dims=H*H*H*H", needle="exceeds 1,000,000"),
    T("train-expr-code", "--set", "method.pca_align.k=__import__('os')", needle="method.pca_align.k: cannot read"),
    T("train-expr-division-by-zero", "--set", "method.last_layer_dims=H/(L-L)", needle="divides by zero"),
    T("train-expr-fraction", "--set", "method.last_layer_dims=H/5", needle="method.last_layer_dims: 'H/5' = 6.4 is not an integer"),
    T("train-pca-k-above-H", "--set", "method.pca_align.k=65", needle="method.pca_align.k: 65 is out of range"),
    T("train-eval-dims", "--set", "eval.dims=[8,1000]", needle="eval.dims: dim 1000"),
    T("train-eval-layers", "--set", "eval.layers=[9]", needle="eval.layers: layer 9"),
    T("train-eval-layers-text", "--set", "eval.layers=[last]", needle="eval.layers.0"),
    T("train-eval-dataset", "--set", "eval.datasets=[nope]", needle="eval.datasets: unknown dataset 'nope'"),
    T("train-eval-split", "--set", "eval.split=bogus", needle="eval.datasets: stsb: split 'bogus'"),
    T("train-data-train", "--set", "data.train=nope", needle="data.train: unknown dataset 'nope'"),
    T("train-data-train-split", "--set", "data.train_split=bogus", needle="data.train: snli: split 'bogus'"),
    T("train-data-train-missing-file", "--set", "data.train={files}/missing.tsv", needle="data.train"),
    T("train-max-length-positions", "--set", "model.max_length=4096",
      needle="model.max_length: 4096 exceeds the model's position limit of 512"),
    T("train-max-length-small", "--set", "model.max_length=4", needle="model.max_length"),
    T("train-pooling", "--set", "model.pooling=median", needle="model.pooling"),
    T("train-model-missing", "--set", "model.name=/nonexistent/model", needle="model"),
    T("train-preset-unknown", "--config", "v3", needle="presets: full, mrl"),
    T("train-config-bad-yaml", "--config", "{files}/bad.yaml", needle="bad.yaml line 3: invalid YAML"),
    T("train-config-list", "--config", "{files}/list.yaml", needle="top level must be a mapping"),
    T("train-weights-list-length", "--set", "method.layer_weighting=[1,1]", needle="an explicit list needs 7 weights"),
    T("train-dims-per-step-zero", "--set", "method.n_dims_per_step=0", needle="method.n_dims_per_step"),
    T("train-layer-offset", "--set", "method.layer_offset=-5", needle="method.layer_offset"),
    T("train-score-align-cosent", "--set", "method.score_align.weight=1", "--set", "method.task_loss=cosent",
      needle="method.score_align"),
    T("train-empty-cell-set", "--set", "method.last_layer_weight=0", "--set", "method.prior_layers=none",
      needle="method: empty cell set"),
    T("train-hard-negatives-nli", "--set", "data.hard_negatives=1", needle="data.hard_negatives: mined from a retrieval"),
    T("train-hard-negatives-negative", "--set", "data.hard_negatives=-1", needle="data.hard_negatives"),
    T("train-fixed-docs-cosent", "--set", "method.fixed_documents=true", "--set", "method.task_loss=cosent",
      needle="method.fixed_documents: needs task_loss"),
    T("train-score-align-target", "--set", "method.score_align.target=first", needle="method.score_align.target"),
    T("train-eval-similarity", "--set", "eval.similarity=l2", needle="eval.similarity"),
    T("train-warmup-ratio", "--set", "train.warmup_ratio=2", needle="train.warmup_ratio"),
    T("train-max-examples-zero", "--set", "data.max_train_examples=0", needle="data.max_train_examples"),
    T("train-pairs-layer", "--config", "starbucks", "--set", "method.pairs=[[9,8]]", "--set",
      "method.pairs_reference=null", needle="method.pairs: layer 9"),
    T("train-batch-above-examples", "--set", "train.batch_size=64", "--set", "data.max_train_examples=20",
      needle="train.batch_size: 64 exceeds the 20 training examples"),
    T("train-out-under-a-file", "--out", "{files}/plain.txt/run", needle="--out"),
    T("train-data-dir-missing", "--data-dir", "/nonexistent/data", needle="data_dir"),
    T("train-unknown-flag", "--epochs", "3", needle="unrecognized arguments: --epochs"),
    T("train-nan-loss", "--set", "train.lr=1e30", "--set", "train.max_steps=6", "--set", "train.checkpoint_every=1",
      needle="train: the loss is", creates=True),
    # -- m2d train on a finished run: resume rules ------------------------------------------------------------
    T("resume-lr", "--out", "{prev}", "--set", "train.lr=1e-3", needle="train.lr: 2e-05 -> 0.001"),
    T("resume-seed", "--out", "{prev}", "--set", "train.seed=1", needle="train.seed: 42 -> 1"),
    T("resume-batch-size", "--out", "{prev}", "--set", "train.batch_size=4", needle="train.batch_size: 8 -> 4"),
    T("resume-method", "--out", "{prev}", "--config", "mrl", needle="method.name: 'v2' -> 'mrl'"),
    T("resume-max-length", "--out", "{prev}", "--set", "model.max_length=48", needle="model.max_length: 32 -> 48"),
    T("resume-data", "--out", "{prev}", "--set", "data.max_train_examples=100",
      needle="data.max_train_examples: 64 -> 100"),
    T("resume-model", "--out", "{prev}", "--set", "model.name={model2}", needle="model.name"),
    T("resume-below-trained-step", "--out", "{prev}", "--set", "train.max_steps=1",
      needle="train.max_steps: 1 is below step 2 already trained"),
    T("resume-restart-bad-config", "--out", "{prev}", "--restart", "--set", "train.lr=.nan", needle="train.lr"),
    T("resume-corrupt-checkpoints", "--out", "{corrupt}", needle="none of the 1 checkpoint(s)"),
    T("resume-no-config", "--out", "{noconfig}", needle="has checkpoints but no config.yaml"),
    # -- sweeps ---------------------------------------------------------------------------------------------
    S("sweep-server-dead", "--tracking-uri", "http://127.0.0.1:1", needle="tracking server http://127.0.0.1:1 unreachable"),
    S("sweep-server-not-mlflow", "--tracking-uri", "{notmlflow}", needle="answers /health but not the MLflow API"),
    S("sweep-server-silent", "--tracking-uri", "{silent}", needle="no answer within"),
    S("sweep-sqlite-not-a-db", "--tracking-uri", "sqlite:///{files}/plain.txt", needle="is not a SQLite database"),
    S("sweep-file-store", "--tracking-uri", "file:///tmp/mlruns", needle="tracking uri: 'file:///tmp/mlruns' is not supported"),
    S("sweep-storage-under-a-file", "--storage-path", "{files}/plain.txt/ray", needle="--storage-path"),
    S("sweep-num-samples-zero", "--num-samples", "0", needle="--num-samples: must be >= 1"),
    S("sweep-num-samples-text", "--num-samples", "many", needle="--num-samples"),
    S("sweep-workers-zero", "--workers-per-trial", "0", needle="--workers-per-trial: must be >= 1"),
    S("sweep-workers-above-cpus", "--workers-per-trial", str((os.cpu_count() or 2) + 2),
      needle="the cluster has"),
    S("sweep-gpu-without-gpu", "--gpus-per-trial", "1", needle="GPU"),
    S("sweep-cpus-per-worker-zero", "--cpus-per-worker", "0", needle="--cpus-per-worker"),
    S("sweep-cpus-per-worker-nan", "--cpus-per-worker", "nan", needle="--cpus-per-worker > 0, got 0 and nan"),
    S("sweep-gpus-per-trial-inf", "--gpus-per-trial", "inf", needle="--gpus-per-trial must be >= 0"),
    S("sweep-max-concurrent-zero", "--max-concurrent", "0", needle="--max-concurrent"),
    S("sweep-schedule-timeout", "--schedule-timeout", "0", needle="--schedule-timeout"),
    S("sweep-scheduler", "--scheduler", "hyperband", needle="--scheduler"),
    S("sweep-objective-form", "--objective", "spearman", needle="--objective: 'spearman'"),
    S("sweep-objective-dataset", "--objective", "sickr/spearman/grid_mean", needle="needs sickr in eval.datasets"),
    S("sweep-objective-twice", "--objective", "stsb/spearman/full", "--objective", "stsb/spearman/full",
      needle="the same metric is given twice"),
    S("sweep-preset", "--preset", "v3", needle="presets: full, mrl"),
    S("sweep-data-train", "--set", "data.train=nope", needle="data.train: unknown dataset 'nope'"),
    S("sweep-eval-datasets", "--set", "eval.datasets=[nope]", needle="eval.datasets"),
    S("sweep-max-length", "--set", "model.max_length=1024", needle="model.max_length: 1024 exceeds"),
    S("sweep-eval-dims", "--set", "eval.dims=[1000]", needle="eval.dims: dim 1000"),
    S("sweep-expr-power", "--set", "method.prior_layers=9**9**9", needle="'**' is not supported"),
    S("sweep-lr-nan", "--set", "train.lr=.nan", needle="train.lr"),
    S("sweep-data-dir", "--data-dir", "/nonexistent/data", needle="data_dir"),
    S("space-missing", "--space", "/nonexistent/space.yaml", needle="space /nonexistent/space.yaml: file not found"),
    S("space-bad-yaml", needle="line 2: invalid YAML", space="method.layer_weighting: [linear\n"),
    S("space-list", needle="expected a mapping of dotted config keys", space="- a\n- b\n"),
    S("space-no-domain", needle="method.layer_weighting: expected exactly one of choice", space="method.layer_weighting: linear\n"),
    S("space-empty-choice", needle="choice needs a non-empty list", space="method.layer_weighting:\n  choice: []\n"),
    S("space-bad-choice", needle="method.layer_weighting='cubic'", space="method.layer_weighting:\n  choice: [linear, cubic]\n"),
    S("space-uniform-order", needle="uniform needs low < high", space="method.kl.weight:\n  uniform: [1, 0]\n"),
    S("space-loguniform-zero", needle="loguniform needs low > 0", space="method.kl.weight:\n  loguniform: [0, 1]\n"),
    S("space-int-float-bounds", needle="int needs integer bounds", space="train.max_steps:\n  int: [10, 20.5]\n"),
    S("space-uniform-on-int", needle="train.max_steps is an integer field; use int",
      space="train.max_steps:\n  uniform: [10, 20]\n"),
    S("space-loguniform-on-int", needle="train.batch_size is an integer field",
      space="train.batch_size:\n  loguniform: [8, 64]\n"),
    S("space-uniform-on-text", needle="method.layer_weighting is not a numeric field",
      space="method.layer_weighting:\n  uniform: [0, 1]\n"),
    S("space-unknown-field", needle="method.no_such_field=1: method.no_such_field: unknown field",
      space="method.no_such_field:\n  choice: [1]\n"),
    S("space-list-length", needle="layer_weighting: an explicit list needs 7 weights",
      space="method.layer_weighting:\n  choice: [[1, 1]]\n"),
    S("space-choice-nan", needle="method.kl.weight", space="method.kl.weight:\n  choice: [.nan]\n"),
    S("space-expr-power", needle="'**' is not supported", space="method.prior_layers:\n  choice: ['9**9**9']\n"),
    S("space-range-end-invalid", needle="method.kl.temperature", space="method.kl.temperature:\n  uniform: [-1, 1]\n"),
    S("space-data-train", needle="data.train", space="data.train:\n  choice: [snli, nope]\n"),
    S("resume-none", "--resume", needle="--resume: no sweep of bad"),
    S("resume-not-a-run-dir", "--resume", "{files}/empty", needle="is not a sweep run dir"),
    S("resume-corrupt-state", "--resume", "{storage}/other-corrupt", needle="m2d_sweep.json is unreadable"),
    S("resume-state-missing-keys", "--resume", "{storage}/other-partial", needle="m2d_sweep.json is unreadable"),
]

CASES += [case for area in AREAS for case in area.CASES]

# one per verb that reads a different kind of input (model flags, data, a failure mid-training, a checkpoint, a
# cluster, argparse): each real process costs ~10 s of start-up; the in-process catalogue covers every row
SUBPROCESS = ["eval-dim-above-H", "data-beir-no-positive", "train-nan-loss", "resume-corrupt-checkpoints",
              "sweep-workers-above-cpus", "train-unknown-flag"]


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("bad")
    model = make_tiny_bert(root / "bert6", num_layers=6, hidden_size=32)
    model2 = make_tiny_bert(root / "bert6b", num_layers=6, hidden_size=32, seed=1)
    files = write_bad_files(root / "files")
    prev = root / "prev"
    assert main_rc(train_args(model, data_dir, prev) + ["--set", "train.max_steps=2"]) == 0
    corrupt, noconfig = root / "corrupt", root / "noconfig"
    for target in (corrupt, noconfig):
        shutil.copytree(prev, target)
    for state in corrupt.glob("checkpoints/*/state.pt"):
        state.write_bytes(state.read_bytes()[:1000])
    (noconfig / "config.yaml").unlink()
    storage = root / "storage"
    for name, text in (("other-corrupt", '{"parent_run_id": "x", "argv": ['), ("other-partial", '{"argv": []}')):
        (storage / name).mkdir(parents=True)
        (storage / name / "m2d_sweep.json").write_text(text)
    db = root / "mlflow.db"
    from mlflow import MlflowClient

    mlf = MlflowClient(f"sqlite:///{db}")
    run = mlf.create_run(mlf.create_experiment("bad", artifact_location=(root / "art").as_uri()))
    mlf.log_metric(run.info.run_id, "x", 1.0, step=1)
    mlf.set_terminated(run.info.run_id)
    evaluated = root / "evaluated"
    evaluated.mkdir()
    (evaluated / "grid.csv").write_text("dataset,split,metric,layer,dim,value\nstsb,test,spearman,1,8,0.5\n")
    servers = [serve_not_mlflow(), serve_silent()]
    ctx = {"root": root, "model": str(model), "model2": str(model2), "files": str(files), "prev": str(prev),
           "corrupt": str(corrupt), "noconfig": str(noconfig), "storage": str(storage), "db": str(db),
           "data": str(data_dir), "evaluated": str(evaluated),
           "notmlflow": f"http://127.0.0.1:{servers[0].server_address[1]}",
           "silent": f"http://127.0.0.1:{servers[1].getsockname()[1]}",
           "protected": [prev, corrupt, noconfig, storage, db, evaluated, files], "nostore": str(root / "nostore")}
    for area in AREAS:  # each area's fixtures: more placeholders and more files that no refusal may change
        extra = area.fixtures(root / area.__name__, ctx)
        ctx["protected"] += extra.pop("protected", [])
        ctx.update(extra)
    yield ctx
    servers[0].shutdown()
    servers[1].close()


def train_args(model, data_dir, out) -> list[str]:
    return ["train", "--config", "v2", "--out", str(out), "--data-dir", str(data_dir), "--set", f"model.name={model}",
            "--set", "model.max_length=32", "--set", "train.batch_size=8", "--set", "data.max_train_examples=64",
            "--set", "eval.max_examples=40", "--set", "eval.dims=[8,32]", "--set", "method.pca_align.k=16",
            "--set", "method.last_layer_dims=16,H", "--set", "method.prior_dims=16", "--set", "train.max_steps=2"]


def main_rc(argv: list[str]) -> int:
    from matryoshka2d.cli import main

    return main(argv)


def command(case: Case, ctx: dict) -> list[str]:
    """The case's full argument list (the case's own flags last: argparse keeps the last of a repeated flag)."""
    out = str(Path(ctx["root"]) / "out" / case.id)
    own = [a.format(**ctx) for a in case.args]
    if case.tool == "eval":
        base = ["eval", "--model", ctx["model"], "--data-dir", ctx["data"], "--out", out, "--dims", "8,16"]
        return base + ([] if "--data" in own else ["--data", "stsb"]) + own
    if case.tool == "train":
        return train_args(ctx["model"], ctx["data"], out) + own
    if case.tool in ANALYSIS:
        return analysis_args(case.tool, own, out, ctx)
    base = ["--smoke", "--set", f"model.name={ctx['model']}", "--set", "eval.dims=[8,16,32]",
            "--tracking-uri", f"sqlite:///{ctx['db']}", "--storage-path", ctx["storage"], "--experiment-name", "bad"]
    if case.space is not None:
        space = Path(ctx["root"]) / f"space-{case.id}.yaml"
        space.write_text(case.space)
        base += ["--space", str(space)]
    return base + own


ANALYSIS = ("compare", "report", "pick", "export", "reproduce")


def analysis_args(tool: str, own: list[str], out: str, ctx: dict) -> list[str]:
    """The case's own flags plus, unless it gives them, an --out of its own and a tracking store that must never be
    created (read-only commands create no store)."""
    args = [tool, *own]
    if "--out" not in own and tool != "reproduce":
        args += ["--out", f"{out}/page.html" if tool == "report" else out]
    if tool in ("compare", "report", "pick", "reproduce") and "--tracking-uri" not in own:
        args += ["--tracking-uri", f"sqlite:///{ctx['nostore']}/mlflow.db"]
    if tool == "export" and "--bench" not in own:
        args += ["--bench", "0"]
    if tool == "reproduce" and "--storage-path" not in own:
        args += ["--storage-path", f"{ctx['root']}/reproduce-storage"]
    return args


def snapshot(paths) -> dict[str, tuple]:
    """Every file's size and modification time (any write changes the time, to the nanosecond), every folder: cheap
    enough to take twice per case over hundreds of megabytes of fixtures."""
    out = {}
    for root in map(Path, paths):
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                st = path.stat()
                out[str(path)] = (st.st_size, st.st_mtime_ns)
            elif path.is_dir():
                out[str(path)] = "dir"
    return out


def check(case: Case, ctx: dict, rc: int, out: str, err: str, before: dict) -> None:
    lines = err.splitlines()
    assert rc == 2, f"{case.id}: exit {rc}\nstdout: {out[-1500:]}\nstderr: {err[-1500:]}"
    assert len(lines) == 1, f"{case.id}: {len(lines)} stderr lines:\n{err[-3000:]}"
    assert "Traceback" not in out + err
    prog = {"sweep": "sweep", "reproduce": "reproduce"}.get(case.tool, "m2d")
    assert lines[0].startswith(prog) and ": error: " in lines[0], lines[0]
    assert case.needle in lines[0], f"{case.id}: {case.needle!r} not in {lines[0]!r}"
    assert snapshot(ctx["protected"]) == before, f"{case.id}: an earlier run's files changed"
    fresh = Path(ctx["root"]) / "out" / case.id
    assert case.creates or not fresh.exists(), f"{case.id}: left its --out {fresh} behind"
    assert not Path(ctx["nostore"]).exists(), f"{case.id}: created a tracking store in {ctx['nostore']}"


def run_in_process(case: Case, argv: list[str]) -> int:
    """The exit code, argparse's included (it exits with SystemExit)."""
    from matryoshka2d.sweep import main

    try:
        return main(argv, sweep="weighting", description="test") if case.tool == "sweep" else main_rc(argv)
    except SystemExit as exit_:
        return int(exit_.code)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, ctx, capsys, monkeypatch):
    monkeypatch.setenv("M2D_HOME", str(Path(ctx["root"]) / "home"))
    if case.id == "sweep-gpu-without-gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    before = snapshot(ctx["protected"])
    argv = command(case, ctx)
    rc = run_in_process(case, argv)
    captured = capsys.readouterr()
    check(case, ctx, rc, captured.out, captured.err, before)


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_in_a_real_process(case_id, ctx):
    """The same cases as real processes: nothing a library prints behind Python's back reaches stderr either."""
    case = next(c for c in CASES if c.id == case_id)
    before = snapshot(ctx["protected"])
    argv = command(case, ctx)
    exe = [sys.executable, str(ROOT / "experiments" / "sweep_weighting.py")] if case.tool == "sweep" else \
        [sys.executable, "-m", "matryoshka2d.cli"]
    if case.creates:
        shutil.rmtree(Path(ctx["root"]) / "out" / case.id, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "M2D_HOME": str(Path(ctx["root"]) / "home")}
    proc = subprocess.run(exe + argv, capture_output=True, text=True, timeout=240, env=env)
    check(case, ctx, proc.returncode, proc.stdout, proc.stderr, before)


def test_catalogue_size():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
    analysis = [c for area in AREAS for c in area.CASES]
    assert len(analysis) >= 100, f"the analysis side has {len(analysis)} rows"


# -- the bad files ----------------------------------------------------------------------------------------
def write_bad_files(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "plain.txt").write_text("not a dataset\n")

    def stsb(name: str, rows: list[str]) -> None:
        (root / name).write_text("".join(r + "\n" for r in rows))

    good = [STSB_ROW.format(i=i, score=s) for i, s in enumerate((1.0, 4.0, 2.5))]
    stsb("score-range.csv", [good[0], STSB_ROW.format(i=9, score=7.2)])
    stsb("score-text.csv", [STSB_ROW.format(i=0, score="high")])
    stsb("columns.csv", [good[0], "a\tb\tc"])
    (root / "empty.csv").write_text("")
    stsb("empty-sentence.csv", ["main-captions\tMSRvid\t2012test\t0001\t1.0\t \tA man plays."])
    stsb("one-pair.csv", good[:1])
    stsb("constant.csv", [STSB_ROW.format(i=i, score=3.0) for i in range(4)])
    (root / "latin1.csv").write_bytes(STSB_ROW.format(i=0, score=1.0).replace("man", "m\xe4n").encode("latin-1") + b"\n")
    (root / "SICK_bad.txt").write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                                       "1\tA dog runs.\tA dog is running.\tnine\tENTAILMENT\n")

    def beir(name: str, corpus: str, queries: str, qrels: str | None, gz: bool = False) -> None:
        folder = root / name
        (folder / "qrels").mkdir(parents=True)
        if gz:
            (folder / "corpus.jsonl.gz").write_bytes(b"this is not gzip data\n")
        else:
            (folder / "corpus.jsonl").write_text(corpus)
        (folder / "queries.jsonl").write_text(queries)
        if qrels is not None:
            (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)

    docs = "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n" for i in range(3))
    queries = "".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(2))
    qrels = "q0\td0\t1\nq1\td1\t1\n"
    beir("beir-json", docs.splitlines()[0] + "\n{not json\n", queries, qrels)
    beir("beir-list", "[1, 2]\n", queries, qrels)
    beir("beir-dup", docs.splitlines()[0] + "\n" + docs.splitlines()[0] + "\n", queries, qrels)
    beir("beir-notext", docs, json.dumps({"_id": "q0"}) + "\n", qrels)
    beir("beir-unknown-doc", docs, queries, "q0\td0\t1\nq1\td99\t1\n")
    beir("beir-unknown-query", docs, queries, "q0\td0\t1\nq99\td1\t1\n")
    beir("beir-zero", docs, queries, "q0\td0\t0\nq1\td1\t0\n")
    beir("beir-grade", docs, queries, "q0\td0\t1\nq1\td1\tyes\n")
    beir("beir-cols", docs, queries, "q0\td0\t1\nq1\td1\n")
    beir("beir-noqrels", docs, queries, None)
    beir("beir-gz", docs, queries, qrels, gz=True)
    semeval = root / "semeval"
    semeval.mkdir()
    (semeval / "STS.input.MSRpar.txt").write_text("A man runs.\tA man is running.\nTwo dogs.\tA dog.\n")
    (semeval / "STS.gs.MSRpar.txt").write_text("4.0\n")
    (root / "bad.yaml").write_text("method:\n  name: [v2\n")
    (root / "list.yaml").write_text("- method\n- train\n")
    return root


# -- servers that are not what they claim -----------------------------------------------------------------
class _HealthOnly(http.server.BaseHTTPRequestHandler):
    """A web server with a /health page (as many have) and nothing of MLflow's API."""

    def do_GET(self):  # noqa: N802
        body = b"OK" if self.path == "/health" else b"<html>not found</html>"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "text/plain" if self.path == "/health" else "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_not_mlflow() -> http.server.HTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve_silent() -> socket.socket:
    """Accepts connections (the kernel's backlog does) and never answers: a hung server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock
