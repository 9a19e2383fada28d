"""The seed study reproduced end to end at smoke scale (tiny random BERT, real data, real Ray/Tune/MLflow): both
studies run, their tables / report / claims are written, and each run is checked against its expected entry in
experiments/expected/; a moved cell makes --check exit 1 naming it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts processes: the full suite only

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Both smoke studies, run at once by two drivers sharing one home (one MLflow store, one mined-negatives cache):
    a smoke trial is mostly waiting (process start-up, Tune's scheduling), so two studies overlap well on 2 cores.
    ``--study all`` (one after the other) is the same code per study; its preflight of both is in the catalogue."""
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "M2D_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # tiny models: 4 trials at a time per study on 2 cores (a trial is mostly start-up, not arithmetic)
    logs = {study: home / f"{study}.log" for study in ("sts", "retrieval")}  # files: a full pipe would stall one
    procs = {study: subprocess.Popen([sys.executable, "experiments/reproduce.py", "--study", study, "--scale", "smoke",
                                      "--bootstrap", "200", "--cpus-per-worker", "0.5"], cwd=ROOT, env=env,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT)
             for study, log in logs.items()}
    for study, proc in procs.items():
        assert proc.wait(timeout=1700) == 0, f"{study}:\n" + logs[study].read_text()[-6000:]
    runs = {p.name.split("-")[2]: p for p in sorted((home / "ray_results").glob("m2d-reproduce-*-smoke-*"))}
    assert set(runs) == {"sts", "retrieval"}, runs
    return runs, env


def _reproduce(args, env):
    return subprocess.run([sys.executable, "experiments/reproduce.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(1800)  # the first test pays for the module's smoke runs (~5 min on a quiet 2-core machine)
@pytest.mark.parametrize("study", ["sts", "retrieval"])
def test_smoke_study_writes_tables_claims_and_matches_expected(smoke_runs, study):
    runs, env = smoke_runs
    run = runs[study]
    tables = run / "tables"
    for name in ("report.md", "claims.md", "claims.json"):
        assert (tables / name).is_file(), name
    claims = json.loads((tables / "claims.json").read_text())
    assert {c["id"] for c in claims} >= {"C1", "C2", "C3"}
    for c in claims:
        if "margin" in c:
            assert c["ci"][0] <= c["margin"] <= c["ci"][1] and c["verdict"] in ("holds", "does not hold", "inconclusive")
    report = (tables / "report.md").read_text()
    assert "The seed's published numbers" in report  # ../shared/reference beside the data dir
    assert list(tables.glob("heatmap_*.png"))
    state = json.loads((run / "study.json").read_text())
    assert state["scale"] == "smoke" and state["config_hash"]
    check = _reproduce(["--check", str(run)], env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "within" in check.stdout


def test_check_names_a_moved_cell(smoke_runs, tmp_path):
    runs, env = smoke_runs
    moved = tmp_path / runs["sts"].name
    shutil.copytree(runs["sts"], moved, ignore=shutil.ignore_patterns("checkpoint_*", "model", "checkpoints"))
    grid = next(p for p in sorted((moved / "trials").glob("*/grid.csv"))
                if json.loads((p.parent / "params.json").read_text())["row"] == "v2")
    rows = list(csv.reader(grid.open()))
    for r in rows[1:]:
        if r[0] == "sts-avg" and r[3] == "2" and r[4] == "16":
            r[5] = repr(float(r[5]) + 0.5)
    with grid.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    check = _reproduce(["--check", str(moved)], env)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "v2 sts-avg/spearman L2 d16: expected" in check.stdout


def test_smoke_runs_are_logged_to_one_parent_each(smoke_runs):
    from mlflow.tracking import MlflowClient

    runs, env = smoke_runs
    client = MlflowClient(f"sqlite:///{Path(env['M2D_HOME']) / 'mlflow.db'}")
    for study, run in runs.items():
        parent = json.loads((run / "m2d_sweep.json").read_text())["parent_run_id"]
        exp = client.get_run(parent).info.experiment_id
        kids = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
        rows = {k.data.params.get("sweep.row") for k in kids}
        assert len(kids) == len(rows) == (9 if study == "sts" else 13)
        assert all(k.info.status == "FINISHED" for k in kids)
        arts = {a.path for a in client.list_artifacts(parent, "reproduction")}
        assert "reproduction/claims.md" in arts and "reproduction/report.md" in arts


def test_compare_trials_script(smoke_runs):
    """experiments/compare_trials.py: a trial against itself has margin 0; against another row, a real interval."""
    runs, env = smoke_runs
    trials = sorted((runs["retrieval"] / "trials").iterdir())
    proc = subprocess.run([sys.executable, "experiments/compare_trials.py", "--metric", "scifact/ndcg@10",
                           "--cells", "all", "--baseline", str(trials[2]), str(trials[2]), str(trials[0])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and "+0.0000  [+0.0000, +0.0000]" in lines[1]
    bad = subprocess.run([sys.executable, "experiments/compare_trials.py", "--metric", "scifact/ndcg@10",
                          "--baseline", str(trials[2]), str(runs["sts"] / "trials")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
