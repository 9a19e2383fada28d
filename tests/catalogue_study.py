"""Bad-input rows: m2d reproduce and m2d sweep: broken studies, run folders, expected files, state.

Every broken file is a small change to one valid fixture: the study ``mini`` (three rows on the catalogue's 6 x 32
BERT, stsb test) and a fake finished run of it (``study.json``, ``trials/<id>/{params.json, grid.csv, items.npz}``,
as a real run writes them). ``tests/test_study.py`` checks that the valid ones pass, so each row fails for its own
defect alone.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import yaml

from catalogue import R, S

DIMS = (8, 32)
LABELS = ("full", "v2", "separate@1", "separate@2")
RUN_ID = "0123456789abcdef0123456789abcdef"  # 32 hex digits, no run of any store


def mini_study(model: str) -> dict:
    """A valid study: full, v2 and two per-layer models on the tiny BERT, stsb test, one claim."""
    return {
        "name": "mini", "metric": "stsb/spearman", "objective": "stsb/spearman/sublayer_mean",
        "base": {"model": {"name": model, "max_length": 32}, "data": {"train": "snli", "max_train_examples": 64},
                 "eval": {"datasets": ["stsb"], "split": "test", "max_examples": 40, "dims": list(DIMS)},
                 "train": {"max_steps": 2, "batch_size": 8}},
        "scales": {"smoke": {}},
        "rows": {"full": {"preset": "full"},
                 "v2": {"preset": "v2", "set": {"method": {"pca_align": {"k": 16}, "last_layer_dims": "16,H",
                                                           "prior_dims": "16"}}},
                 "separate": {"preset": "separate", "each_layer": "1..2",
                              "set": {"method": {"pairs": [["{l}", "H"]], "pairs_reference": None}}}},
        "claims": [{"id": "C1", "text": "v2 beats full on sub-layers", "a": "v2", "b": "full", "cells": "sublayer",
                    "expect": "greater"}],
    }


def cell_value(label: str, layer: int, dim: int, seed: int = 0, shift: float = 0.0) -> float:
    return round(0.1 * layer + dim / 1000 + 0.01 * LABELS.index(label) + 0.001 * seed + shift, 6)


def layers_of(label: str) -> range:
    """A per-layer model (``separate@l``) is cut to block l: its grid has layers 1..l."""
    return range(1, int(label.split("@")[1]) + 1) if "@" in label else range(1, 7)


def fake_run(folder: Path, study_file: Path, labels=LABELS, seeds: int = 1, dataset: str = "stsb",
             shift: float = 0.0) -> Path:
    """A finished run of ``mini`` as the study driver leaves it: study.json, and per row and seed a trial folder
    (its cells :func:`cell_value`, moved by ``shift``)."""
    (folder / "trials").mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps(
        {"study": "mini", "study_file": str(study_file), "scale": "smoke", "data": None, "sets": [], "seeds": seeds,
         "rows": list(labels), "config_hash": {label: f"{i:012d}" for i, label in enumerate(labels)}}, indent=2))
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 20)
    for i, label in enumerate(labels):
        for seed in range(seeds):
            trial = folder / "trials" / f"trial{i}{seed}_{i * seeds + seed:05d}"
            trial.mkdir()
            params = {"row": label, **({"train.seed": 42 + seed} if seeds > 1 else {})}
            (trial / "params.json").write_text(json.dumps(params))
            lines = ["dataset,split,metric,layer,dim,value"]
            items = {f"{dataset}/gold": gold}
            for layer in layers_of(label):
                for dim in DIMS:
                    lines.append(f"{dataset},test,spearman,{layer},{dim},{cell_value(label, layer, dim, seed, shift)}")
                    items[f"{dataset}/cosine/{layer}/{dim}"] = gold + rng.normal(0, 1 + layer, gold.size)
            (trial / "grid.csv").write_text("\n".join(lines) + "\n")
            np.savez_compressed(trial / "items.npz", **items)
    return folder


def expected_entry(labels=LABELS, seeds: int = 1) -> dict:
    """The smoke entry :func:`fake_run` matches (means over seeds), in the expected file's layout."""
    cells: dict = {}
    for label in labels:
        group = label.split("@")[0]
        own = [int(label.split("@")[1])] if "@" in label else list(layers_of(label))
        for layer in own:
            values = [round(float(np.mean([cell_value(label, layer, d, s) for s in range(seeds)])), 4) for d in DIMS]
            cells.setdefault(group, {}).setdefault("stsb/spearman", {})[f"L{layer}"] = values
    return {"command": "python experiments/reproduce.py --study mini --scale smoke", "seeds": seeds,
            "tolerance": 0.005, "dims": list(DIMS), "cells": cells}


def dump(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def broken_studies(folder: Path, model: str) -> None:
    """One study YAML per defect (``<name>.yaml``)."""
    def variant(name: str, change) -> None:
        spec = mini_study(model)
        change(spec)
        dump(folder / f"{name}.yaml", spec)

    def rows(**new):
        return lambda s: s.__setitem__("rows", {**s["rows"], **new})

    def claim(**new):
        return lambda s: s["claims"][0].update(new)

    def base_eval(**new):
        return lambda s: s["base"]["eval"].update(new)

    changes = {
        "rows-list": lambda s: s.__setitem__("rows", ["full", "v2"]),
        "scales-list": lambda s: s.__setitem__("scales", ["smoke"]),
        "scale-list": lambda s: s.__setitem__("scales", {"smoke": [1, 2]}),
        "set-list": rows(v2={"preset": "v2", "set": ["train.lr=1"]}),
        "each-pair-int": rows(separate={"preset": "separate", "each_pair": 5}),
        "each-pair-short": rows(separate={"preset": "separate", "each_pair": [[1]]}),
        "each-pair-expr": rows(separate={"preset": "separate", "each_pair": [[1, "Q"]]}),
        "each-layer-range": rows(separate={"preset": "separate", "each_layer": "1..99"}),
        "each-layer-and-pair": rows(separate={"preset": "separate", "each_layer": "1..2", "each_pair": [[1, 8]]}),
        "pairs-reference-alone": rows(full={"preset": "full", "pairs_reference": [6, 32]}),
        "no-rows": lambda s: s.__setitem__("rows", {}),
        "row-string": rows(full="full"),
        "row-no-preset": rows(full={"label": "x"}),
        "row-unknown-key": rows(full={"preset": "full", "sett": {}}),
        "row-name-at": rows(**{"v2@x": {"preset": "v2"}}),
        "row-config": rows(full={"preset": "full", "set": {"train": {"lr": -1}}}),
        "top-list": None,
        "missing-objective": lambda s: s.pop("objective"),
        "unknown-key": lambda s: s.__setitem__("claim", []),
        "name-path": lambda s: s.__setitem__("name", "../mini"),
        "metrics-text": lambda s: s.__setitem__("metrics", "stsb/spearman"),
        "metric-form": lambda s: s.__setitem__("metric", "spearman"),
        "metric-not-evaluated": lambda s: s.__setitem__("metric", "stsb/ndcg@10"),
        "metric-other-dataset": lambda s: s.__setitem__("metrics", ["stsb/spearman", "sts12/spearman"]),
        "objective-form": lambda s: s.__setitem__("objective", "stsb/spearman"),
        "objective-not-evaluated": lambda s: s.__setitem__("objective", "scifact/ndcg@10/grid_mean"),
        "eval-dataset": base_eval(datasets=["nope"]),
        "eval-dims": base_eval(dims=[8, 64]),
        "claims-mapping": lambda s: s.__setitem__("claims", {"C1": s["claims"][0]}),
        "claim-row": claim(a="v3"),
        "claim-cells": claim(cells="layers<3"),
        "claim-expect": claim(expect="bigger"),
        "claim-missing-b": lambda s: s["claims"][0].pop("b"),
        "claim-same-rows": claim(b="v2"),
        "claim-twice": lambda s: s["claims"].append(copy.deepcopy(s["claims"][0])),
        "seed-reference-row": lambda s: s.__setitem__("seed_reference", {"file": "x.csv", "value": "v",
                                                                          "rows": {"bert": {"method": "full"}}}),
        "datasets-list": lambda s: s.__setitem__("datasets", ["msmarco"]),
    }
    for name, change in changes.items():
        if change is not None:
            variant(name, change)
    (folder / "top-list.yaml").write_text("- name: mini\n- rows: {}\n")
    (folder / "bad-yaml.yaml").write_text("name: mini\nrows: {full: {preset: full}\n")
    (folder / "latin1.yaml").write_bytes("name: m\xefni\nrows: {}\n".encode("latin-1"))


def broken_runs(folder: Path, good_study: Path) -> dict:
    """Finished runs of ``mini``, each with one defect; returns {name: run dir}."""
    runs = {name: fake_run(folder / name, good_study) for name in (
        "complete", "no-study-json", "json-truncated", "json-list", "json-scale", "json-seeds", "json-study-gone",
        "json-row-gone", "missing-grid", "params-truncated", "params-no-row", "grid-value", "grid-header",
        "items-bad", "items-key", "stray-trial")}
    runs["subset"] = fake_run(folder / "subset", good_study, labels=("full", "separate@1"))
    runs["two-seeds"] = fake_run(folder / "two-seeds", good_study, seeds=2)
    runs["no-cells"] = fake_run(folder / "no-cells", good_study, dataset="sts12")

    def trial(run: str, label: str) -> Path:
        return next(p.parent for p in (runs[run] / "trials").glob("*/params.json")
                    if json.loads(p.read_text())["row"] == label)

    def study_json(run: str, **change) -> None:
        path = runs[run] / "study.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))

    (runs["no-study-json"] / "study.json").unlink()
    text = (runs["json-truncated"] / "study.json").read_text()
    (runs["json-truncated"] / "study.json").write_text(text[:text.index('"config_hash"')])  # a write cut short
    (runs["json-list"] / "study.json").write_text("[1, 2]\n")
    study_json("json-scale", scale="tpu")
    study_json("json-seeds", seeds=0)
    study_json("json-study-gone", study_file=str(folder / "gone.yaml"))
    study_json("json-row-gone", rows=["full", "v9"], config_hash={"full": "0", "v9": "1"})
    (trial("missing-grid", "v2") / "grid.csv").unlink()
    (trial("params-truncated", "v2") / "params.json").write_text('{"row": "v')
    (trial("params-no-row", "v2") / "params.json").write_text('{"seed": 1}')
    grid = trial("grid-value", "v2") / "grid.csv"
    grid.write_text(grid.read_text().replace(",0.", ",zero.", 1))
    grid = trial("grid-header", "v2") / "grid.csv"
    grid.write_text("a,b\n" + grid.read_text())
    (trial("items-bad", "v2") / "items.npz").write_bytes(b"PK\x03\x04 not a zip")
    np.savez_compressed(trial("items-key", "v2") / "items.npz", other=np.zeros(3))
    stray = runs["stray-trial"] / "trials" / "extra_00099"
    stray.mkdir()
    for name in ("grid.csv", "items.npz"):
        (stray / name).write_bytes((trial("stray-trial", "full") / name).read_bytes())
    (stray / "params.json").write_text('{"row": "v9"}')
    return runs


def broken_expected(folder: Path) -> dict:
    """Expected results files: a valid one for the complete run, then one per defect; returns {name: path}."""
    good = expected_entry()
    files = {"good": dump(folder / "good.yaml", {"smoke": good}),
             "empty": dump(folder / "empty.yaml", {"smoke": {**good, "dims": [], "cells": {}}}),
             "all-null": dump(folder / "all-null.yaml", {"smoke": {**good, "cells": {"full": {"stsb/spearman": {
                 "L1": [None, None]}}}}}),
             "cpu-only": dump(folder / "cpu-only.yaml", {"cpu": good}),
             "list": dump(folder / "list.yaml", [good]),
             "entry-null": dump(folder / "entry-null.yaml", {"smoke": None}),
             "cells-list": dump(folder / "cells-list.yaml", {"smoke": {**good, "cells": [1, 2]}}),
             "values-short": dump(folder / "values-short.yaml", {"smoke": {**good, "cells": {"full": {
                 "stsb/spearman": {"L1": [0.1]}}}}}),
             "layer-key": dump(folder / "layer-key.yaml", {"smoke": {**good, "cells": {"full": {
                 "stsb/spearman": {"layer1": [0.1, 0.2]}}}}}),
             "dims-order": dump(folder / "dims-order.yaml", {"smoke": {**good, "dims": [32, 8]}}),
             "tolerance": dump(folder / "tolerance.yaml", {"smoke": {**good, "tolerance": -1}}),
             "unknown-key": dump(folder / "unknown-key.yaml", {"smoke": {**good, "tolerence": 0.1}}),
             "other-seeds": dump(folder / "other-seeds.yaml", {"smoke": expected_entry(seeds=2)})}
    text = files["good"].read_text()
    files["truncated"] = folder / "truncated.yaml"
    files["truncated"].write_text(text[:text.index("L2:") + 8])
    files["latin1"] = folder / "latin1.yaml"
    files["latin1"].write_bytes(text.replace("command", "comm\xe4nd", 1).encode("latin-1"))
    return files


def sweep_states(folder: Path) -> None:
    """Sweep run dirs whose m2d_sweep.json lacks a key --resume reads, or has one of the wrong type."""
    state = {"parent_run_id": "p", "experiment": "bad", "experiment_id": "1", "tracking_uri": "sqlite:////x/m.db",
             "argv": ["--smoke"]}
    for name, change in (("no-uri", {"tracking_uri": None}), ("argv-text", {"argv": "--smoke"}),
                         ("no-parent", {"parent_run_id": None})):
        (folder / name).mkdir(parents=True)
        bad = {k: v for k, v in {**state, **change}.items() if v is not None}
        (folder / name / "m2d_sweep.json").write_text(json.dumps(bad))


def fixtures(root: Path, ctx: dict) -> dict:
    """Write this area's broken files under ``root``; returns placeholders for the rows and ``protected``: the files
    no refusal may change."""
    root.mkdir(parents=True)
    studies, runs, expected, states = (root / n for n in ("studies", "runs", "expected", "states"))
    for folder in (studies, expected):
        folder.mkdir()
    good = dump(studies / "mini.yaml", mini_study(ctx["model"]))
    broken_studies(studies, ctx["model"])
    broken_runs(runs, good)
    broken_expected(expected)
    sweep_states(states)
    return {"st_studies": str(studies), "st_runs": str(runs), "st_expected": str(expected), "st_states": str(states),
            "protected": [root]}


def _study(id, name, *extra, needle, dry=True):  # a study YAML of studies/, dry run unless told
    args = ("--study", f"{{st_studies}}/{name}.yaml", "--scale", "smoke", "--data-dir", "{data}")
    return R(f"study-{id}", "reproduce", *args, *extra, *(("--dry-run",) if dry else ()), needle=needle)


def _run(id, action, run, *extra, needle):  # --check / --analyse / --write-expected of a run of runs/
    return R(f"study-{id}", "reproduce", f"--{action}", f"{{st_runs}}/{run}", *extra, needle=needle)


def _expected(name):
    return ("--expected", f"{{st_expected}}/{name}.yaml")


CASES: list = [
    # -- study YAML: shape (read before anything else) ------------------------------------------------------------
    _study("rows-list", "rows-list", needle="study rows-list.yaml: rows: expected a mapping of row name"),
    _study("scales-list", "scales-list", needle="scales: expected a mapping of scale"),
    _study("scale-list", "scale-list", needle="scales.smoke: expected a mapping of config sections"),
    _study("set-list", "set-list", needle="row v2: set: expected a mapping of config sections"),
    _study("each-pair-int", "each-pair-int", needle="row separate: each_pair: expected a list of [layer, dim] pairs"),
    _study("each-pair-short", "each-pair-short", needle="each_pair: expected a list of [layer, dim] pairs"),
    _study("each-pair-expr", "each-pair-expr", needle="row separate: each_pair [1, 'Q']: method.pairs: cannot read"),
    _study("each-layer-range", "each-layer-range",
           needle="each-layer-range.yaml: row separate: each_layer: layer 7 is out of range"),
    _study("each-layer-and-pair", "each-layer-and-pair", needle="each_layer and each_pair exclude each other"),
    _study("pairs-reference-alone", "pairs-reference-alone", needle="row full: pairs_reference: expected"),
    _study("no-rows", "no-rows", needle="rows: empty; a study needs at least one row"),
    _study("row-string", "row-string", needle="row full: needs a preset, e.g. {preset: full}"),
    _study("row-no-preset", "row-no-preset", needle="row full: needs a preset"),
    _study("row-unknown-key", "row-unknown-key", needle="(unknown: sett)"),
    _study("row-name-at", "row-name-at", needle="row name: 'v2@x' is not a name"),
    _study("top-list", "top-list", needle="top-list.yaml: top level must be a mapping"),
    _study("bad-yaml", "bad-yaml", needle="bad-yaml.yaml line 3: invalid YAML"),
    _study("not-utf8", "latin1", needle="latin1.yaml: not valid UTF-8"),
    _study("missing-objective", "missing-objective", needle="missing 'objective'"),
    _study("unknown-key", "unknown-key", needle="unknown key 'claim'; allowed: name, metric"),
    _study("name-path", "name-path", needle="name: '../mini' is not a name"),
    _study("metrics-text", "metrics-text", needle="metrics: expected a list of <dataset>/<metric>"),
    _study("metric-form", "metric-form", needle="metric: 'spearman' is not <dataset>/<metric>"),
    _study("claims-mapping", "claims-mapping", needle="claims: expected a list"),
    _study("claim-row", "claim-row", needle="claim C1: a: 'v3' is not a row; rows: full, v2, separate"),
    _study("claim-cells", "claim-cells", needle="claim C1: cells: unknown cell set 'layers<3'"),
    _study("claim-expect", "claim-expect", needle="claim C1: expect: 'bigger'; allowed: greater, not_less"),
    _study("claim-missing-b", "claim-missing-b", needle="claim C1: missing key 'b'"),
    _study("claim-same-rows", "claim-same-rows", needle="claim C1: a and b are the same row"),
    _study("claim-twice", "claim-twice", needle="claim C1: the id is used twice"),
    _study("seed-reference-row", "seed-reference-row", needle="seed_reference.rows: 'bert' is not a row"),
    _study("datasets-list", "datasets-list", needle="datasets: expected a mapping of --data option"),
    # -- study: what only the model, the data and the configs tell (check_study, the dry run and the run alike) --
    _study("metric-not-evaluated", "metric-not-evaluated", needle="metric 'stsb/ndcg@10' is not evaluated by row"),
    _study("metric-other-dataset", "metric-other-dataset", needle="metrics 'sts12/spearman' is not evaluated"),
    _study("objective-form", "objective-form", needle="objective: 'stsb/spearman'; expected <dataset>/<metric>/"),
    _study("objective-not-evaluated", "objective-not-evaluated",
           needle="objective 'scifact/ndcg@10' is not evaluated by row full"),
    _study("eval-dataset", "eval-dataset", needle="row full: eval.datasets: unknown dataset 'nope'"),
    _study("eval-dims", "eval-dims", needle="row full: eval.dims: dim 64 is out of range"),
    _study("row-config", "row-config", needle="row full: train.lr"),
    _study("run-metric-not-evaluated", "metric-not-evaluated", needle="metric 'stsb/ndcg@10' is not evaluated",
           dry=False),
    _study("run-objective-form", "objective-form", needle="objective: 'stsb/spearman'", dry=False),
    _study("run-claim-expect", "claim-expect", needle="claim C1: expect: 'bigger'", dry=False),
    # -- study: flags ------------------------------------------------------------------------------------------
    _study("rows-empty", "mini", "--rows", ",", needle="--rows: empty list"),
    _study("rows-unknown", "mini", "--rows", "v9", needle="--rows: unknown v9"),
    R("study-all-rows-unknown-in-second", "reproduce", "--study", "all", "--scale", "smoke", "--rows", "v2",
      "--data-dir", "{data}", needle="--rows: unknown v2; allowed: 2dmse"),  # refused before sts trains
    _study("baseline-form", "mini", "--baseline", "nope", needle="--baseline: 'nope' is none of"),
    _study("baseline-no-run", "mini", "--baseline", RUN_ID, needle=f"--baseline: no run {RUN_ID}"),
    _study("run-baseline-form", "mini", "--baseline", "v2_1", needle="--baseline: 'v2_1' is none of", dry=False),
    _study("expected-without-action", "mini", "--expected", "x.yaml", needle="--expected: only with --check"),
    _study("resume-state-no-uri", "mini", "--resume", "{st_states}/no-uri",
           needle="m2d_sweep.json is unreadable (missing or malformed tracking_uri)", dry=False),
    _run("two-actions", "check", "complete", "--analyse", "{st_runs}/complete", needle="give one of --check"),
    _run("replace-entry-with-check", "check", "complete", "--replace-entry", needle="--replace-entry: only with"),
    _run("analyse-bootstrap", "analyse", "complete", "--bootstrap", "5", needle="--bootstrap >= 100"),
    # -- run dirs: study.json, trials -----------------------------------------------------------------------------
    _run("no-study-json", "check", "no-study-json", needle="not a finished study run (no study.json)"),
    _run("json-truncated", "analyse", "json-truncated", needle="json-truncated/study.json line 14: not valid JSON"),
    _run("json-list", "check", "json-list", needle="study.json: expected a JSON object at the top level, got a list"),
    _run("json-scale", "check", "json-scale", needle="study.json: scale: 'tpu'; expected one of smoke"),
    _run("json-seeds", "write-expected", "json-seeds", *_expected("w-seeds"), needle="study.json: seeds"),
    _run("json-study-gone", "check", "json-study-gone", needle="gone.yaml: file not found"),
    _run("json-row-gone", "analyse", "json-row-gone", needle="rows v9 are no rows of"),
    _run("analyse-missing-grid", "analyse", "missing-grid", needle="3 of 4 trials finished (missing: v2 (0 of 1))"),
    _run("check-missing-grid", "check", "missing-grid", *_expected("good"), needle="no tables from part of a study"),
    _run("write-missing-grid", "write-expected", "missing-grid", *_expected("w-missing"),
         needle="no tables from part of a study"),
    _run("params-truncated", "analyse", "params-truncated", needle="params.json line 1: not valid JSON"),
    _run("params-no-row", "check", "params-no-row", needle="params.json: no 'row'"),
    _run("grid-value", "analyse", "grid-value", needle="grid.csv line 2: value 'zero.118' is not a number"),
    _run("grid-header", "check", "grid-header", needle="grid.csv: not a grid.csv"),
    _run("items-bad", "analyse", "items-bad", needle="items.npz: unreadable"),
    _run("items-key", "analyse", "items-key", needle="items.npz: no 'stsb/"),
    _run("stray-trial", "analyse", "stray-trial", needle="trials of v9, which are no rows of this run"),
    # -- expected results: --write-expected -------------------------------------------------------------------
    _run("write-part-of-a-row", "write-expected", "subset", *_expected("good"),
         needle="the run has only separate@1 of row separate"),
    _run("write-no-cells", "write-expected", "no-cells", *_expected("w-empty"),
         needle="rows full, v2, separate have no stsb/spearman cell"),
    _run("write-other-seeds", "write-expected", "complete", *_expected("other-seeds"),
         needle="this run's seeds (1) differs from the entry's (2)"),
    _run("write-two-seeds-into-one", "write-expected", "two-seeds", *_expected("good"),
         needle="--replace-entry records this run alone"),
    _run("write-expected-folder", "write-expected", "complete", "--expected", "{st_expected}",
         needle="is a folder; give the expected results file"),
    _run("write-expected-no-folder", "write-expected", "complete", "--expected", "{st_expected}/nowhere/x.yaml",
         needle="nowhere does not exist"),
    _run("write-into-broken", "write-expected", "complete", *_expected("values-short"),
         needle="expected 2 values (one per dim of [8, 32])"),
    # -- expected results: --check ----------------------------------------------------------------------------
    _run("check-empty-entry", "check", "complete", *_expected("empty"), needle="has no expected cell"),
    _run("check-all-null", "check", "complete", *_expected("all-null"), needle="has no expected cell"),
    _run("check-no-entry", "check", "complete", *_expected("cpu-only"), needle="has no smoke entry"),
    _run("check-no-file", "check", "complete", *_expected("missing"), needle="has no smoke entry"),
    _run("expected-list", "check", "complete", *_expected("list"), needle="top level must be a mapping of scale"),
    _run("expected-entry-null", "check", "complete", *_expected("entry-null"), needle="smoke: expected a mapping"),
    _run("expected-cells-list", "check", "complete", *_expected("cells-list"), needle="cells: expected a mapping"),
    _run("expected-layer-key", "check", "complete", *_expected("layer-key"), needle="cells.full.stsb/spearman.layer1"),
    _run("expected-dims-order", "check", "complete", *_expected("dims-order"), needle="dims: expected ascending"),
    _run("expected-tolerance", "check", "complete", *_expected("tolerance"), needle="tolerance: expected a positive"),
    _run("expected-unknown-key", "check", "complete", *_expected("unknown-key"), needle="unknown key 'tolerence'"),
    _run("expected-truncated", "check", "complete", *_expected("truncated"), needle="truncated.yaml line"),
    _run("expected-not-utf8", "check", "complete", *_expected("latin1"), needle="latin1.yaml: not valid UTF-8"),
    # -- m2d sweep: --baseline before any work, --resume state ----------------------------------------------------
    S("sweep-baseline-form", "--baseline", "nope", needle="--baseline: 'nope' is none of: a trial id"),
    S("sweep-baseline-short-trial", "--baseline", "abc_123", needle="--baseline: 'abc_123' is none of"),
    S("sweep-baseline-no-run", "--baseline", RUN_ID, needle=f"--baseline: no run {RUN_ID} in the tracking store"),
    S("sweep-resume-no-uri", "--resume", "{st_states}/no-uri", needle="(missing or malformed tracking_uri)"),
    S("sweep-resume-argv-text", "--resume", "{st_states}/argv-text", needle="(missing or malformed argv)"),
    S("sweep-resume-no-parent", "--resume", "{st_states}/no-parent", needle="(missing or malformed parent_run_id)"),
]
