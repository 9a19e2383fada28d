"""The names of a run folder's files, in one place: the writers (train, eval, sweeps, studies) and the readers
(compare, report, pick, export, resume) agree by importing them from here.

A training run (``m2d train --out DIR``; a sweep or study trial ``<run dir>/trials/<id>/``)::

    config.yaml       the resolved config; a resume is checked against it
    grid.csv          every (layer, dim) cell: dataset,split,metric,layer,dim,value
    items.npz         per-pair / per-query values of every cell (what a paired bootstrap resamples)
    history.json      step, loss, lr and loss parts per logged step
    summary.json      steps, padded-token ratio, median step time
    model/            the SentenceTransformer folder
    checkpoints/step-N/{state.pt, history.json, meta.json}
    params.json       (a trial) its study row or sampled labels
    .mlflow/          (a trial) what is staged for MLflow: grid.csv, grid.json, heatmaps/, images/

An evaluation (``m2d eval --out DIR``): grid.csv, timings.json, latency.json (``--latency``), one heatmap per
dataset x metric. A sweep or study run dir: m2d_sweep.json, trials/, summary/; a study adds study.json, tables/
(claims.json, claims.md, report.md) and figures/. An export: export.json beside the model files.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import M2DError

CONFIG = "config.yaml"
GRID = "grid.csv"
GRID_TABLE = "grid.json"  # the MLflow table of every evaluation so far
ITEMS = "items.npz"
HISTORY = "history.json"
SUMMARY = "summary.json"
MODEL = "model"
CHECKPOINTS = "checkpoints"
STATE = "state.pt"  # inside a checkpoint, with HISTORY and META
META = "meta.json"
PARAMS = "params.json"
STAGE = ".mlflow"
TIMINGS = "timings.json"
LATENCY = "latency.json"
EXPORT = "export.json"
SWEEP_STATE = "m2d_sweep.json"
TRIALS = "trials"
STUDY = "study.json"
TABLES = "tables"
FIGURES = "figures"
CLAIMS = "claims.json"
REPORT = "report.md"
TIMING = "timing.json"  # a trial's loop and whole-trial seconds (bench/sweep_overhead.py)


def check_creatable(path: str | Path, flag: str) -> Path:
    """``path`` can be created (or is a writable folder), checked without creating anything: a refusal before any
    work leaves the file system as it was."""
    probe = Path(path).expanduser()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise M2DError(f"{flag}: {path} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise M2DError(f"{flag}: {probe} is not writable")
    return Path(path).expanduser()


# -- validating readers: one per file kind, shared by every command that reads it ---------------------------
def read_text(path: str | Path, what: str = "file") -> str:
    """A text file's contents; a missing, unreadable or non-UTF-8 file is one line naming it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise M2DError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise M2DError(f"{path} line {line}: not valid UTF-8 (expected UTF-8 text)") from None


JSON_TYPES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}


def read_json(path: str | Path, what: str, shape: type = dict):
    """A JSON file whose top level is ``shape`` (a dict or a list): a truncated file (a write cut short), another
    shape or non-UTF-8 bytes are one line naming ``path``, never a traceback later."""
    import json

    text = read_text(path, what)
    if not text.strip():
        raise M2DError(f"{path}: file is empty (expected JSON)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        cut = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated")
        msg = err.msg.removesuffix(" at")  # "Unterminated string starting at": the column follows
        raise M2DError(f"{path} line {err.lineno}: not valid JSON ({msg} at column {err.colno}"
                       f"{'; the file is cut short?' if cut else ''})") from None
    if not isinstance(data, shape):
        raise M2DError(f"{path}: expected a JSON {JSON_TYPES[shape]} at the top level, got a "
                       f"{JSON_TYPES.get(type(data), type(data).__name__)}")
    return data


def read_params(path: str | Path) -> dict[str, str]:
    """A trial's ``params.json`` (its study row or sampled labels) as ``{name: text}``, each value as ``str()`` gives
    it: the same text as the trial's MLflow params (``sweep.<name>``)."""
    return {k: str(v) for k, v in read_json(path, PARAMS).items()}
