"""Bad-input rows: m2d compare, m2d report, m2d pick and m2d export: run folders, grids, params, latency files, pages.

Every broken file is read by the one validating reader of its kind (``GridResult.from_csv``, ``storage.read_json`` /
``read_params``, ``pick.load_latency``, ``page.check_png`` / ``claim_rows``, ``export.written_files``,
``tracking.read_only_client``), whichever command reads it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from catalogue import R

HEADER = "dataset,split,metric,layer,dim,value\n"
ZERO_ID = "0" * 32  # a run id no store has


def rows(dataset: str = "sts", metric: str = "spearman", layers=(1, 2, 3), dims=(8, 16), value=None) -> str:
    return "".join(f"{dataset},test,{metric},{l},{d},{round(0.1 * l + 0.01 * d, 4) if value is None else value}\n"
                   for l in layers for d in dims)


GOOD = HEADER + rows()
BAD_GRIDS = {  # folder -> (grid.csv text, what the one line must name)
    "cut": (GOOD[:-6], "g/cut/grid.csv line 7 is cut short"),
    "columns": (HEADER + "sts,test,spearman,1,8,0.5\nsts,test,spearman,2,8\n", "line 3: expected 6 columns"),
    "layer-text": (HEADER + "sts,test,spearman,last,8,0.5\n", "grid.csv line 2: layer 'last' is not an integer"),
    "layer-negative": (HEADER + "sts,test,spearman,-1,8,0.5\n", "line 2: layer -1 is out of range; allowed 0 and up"),
    "dim-zero": (HEADER + "sts,test,spearman,1,0,0.5\n", "line 2: dim 0 is out of range; allowed 1 and up"),
    "dim-float": (HEADER + "sts,test,spearman,1,8.5,0.5\n", "line 2: dim '8.5' is not an integer"),
    "value-text": (HEADER + "sts,test,spearman,1,8,high\n", "line 2: value 'high' is not a number"),
    "value-inf": (HEADER + "sts,test,spearman,1,8,inf\n", "line 2: value 'inf' is infinite"),
    "value-empty": (HEADER + "sts,test,spearman,1,8,\n", "line 2: value '' is not a number"),
    "dataset-empty": (HEADER + ",test,spearman,1,8,0.5\n", "line 2: dataset is empty"),
    "duplicate": (GOOD + "sts,test,spearman,1,8,0.9\n", "line 8: cell sts spearman layer 1 dim 8 is given again"),
    "header-only": (HEADER, "grid.csv: no rows, only the header"),
    "empty": ("", "grid.csv: file is empty"),
    "wrong-header": ("layer,dim,value\n1,8,0.5\n", "not a grid.csv (expected the header"),
    "blank-line": (HEADER + "\n" + rows(), "line 2: expected 6 columns"),
}
HARDWARE = {"device": "cpu", "processor": "test cpu", "cpu_count": 2, "torch_threads": 2}


def latency(layers=range(0, 4), num_layers: int | None = 3, **changes) -> dict:
    data = {"hardware": HARDWARE, "model": "/models/three", "num_layers": num_layers, "max_length": 32,
            "hidden_size": 32, "repeats": 5, "texts": 10,
            "ms_per_batch": {str(l): {"1": 1.0 + l, "128": 10.0 + l} for l in layers}}
    if num_layers is None:
        del data["num_layers"]
    data.update(changes)
    return data


BAD_LATENCY = {  # file -> (its text, what the one line must name)
    "no-hardware": (json.dumps({k: v for k, v in latency().items() if k != "hardware"}), "no 'hardware' object"),
    "cut": (json.dumps(latency())[:-40], "lat/cut.json line 1: not valid JSON"),
    "list": (json.dumps([latency()]), "lat/list.json: expected a JSON object at the top level"),
    "empty": ("", "lat/empty.json: file is empty"),
    "hardware-text": (json.dumps(latency(hardware="cpu")), "no 'hardware' object"),
    "no-processor": (json.dumps(latency(hardware={"torch_threads": 2})), "hardware.processor is missing"),
    "threads-text": (json.dumps(latency(hardware={**HARDWARE, "torch_threads": "two"})), "hardware.torch_threads"),
    "no-max-length": (json.dumps({k: v for k, v in latency().items() if k != "max_length"}),
                      "max_length None is not a positive integer"),
    "num-layers-zero": (json.dumps(latency(num_layers=0)), "num_layers 0 is not a positive integer"),
    "ms-missing": (json.dumps({k: v for k, v in latency().items() if k != "ms_per_batch"}), "ms_per_batch must be"),
    "ms-negative": (json.dumps(latency(ms_per_batch={"1": {"1": -2.0}})),
                    "ms_per_batch['1']['1'] = -2.0; allowed a positive number of milliseconds"),
    "ms-text": (json.dumps(latency(ms_per_batch={"1": {"1": "fast"}})), "ms_per_batch['1']['1'] = 'fast'"),
    "ms-zero": (json.dumps(latency(ms_per_batch={"1": {"1": 0}})), "ms_per_batch['1']['1'] = 0"),
    "ms-layer-list": (json.dumps(latency(ms_per_batch={"1": [1.0]})), "ms_per_batch['1'] must be an object"),
    "layer-key-text": (json.dumps(latency(ms_per_batch={"last": {"1": 1.0}})),
                       "ms_per_batch layer 'last' is not allowed"),
    "layer-above-num-layers": (json.dumps(latency(layers=(1, 7))),
                               "ms_per_batch layer '7' is not allowed; allowed 0..3"),
    "batch-key-zero": (json.dumps(latency(ms_per_batch={"1": {"0": 1.0}})),
                       "ms_per_batch['1'] batch size '0' is not allowed"),
    "mixed-batches": (json.dumps(latency(ms_per_batch={"1": {"1": 1.0}, "2": {"128": 2.0}})),
                      "different batch sizes at different layers"),
    "six-layers": (json.dumps(latency(layers=range(0, 7), num_layers=6, model="/models/six")),
                   "is of a 6-layer model (/models/six), the grid is of a 3-layer model"),
    "three-layers": (json.dumps(latency()), "is of a 3-layer model (/models/three), the grid is of a 6-layer model"),
    "two-layers-old": (json.dumps(latency(layers=(1, 2), num_layers=None)), "has no layer 3 of the grid"),
}

CASES: list = [R(f"analysis-compare-grid-{key}", "compare", "{g}/good", f"{{g}}/{key}", needle=needle)
               for key, (_, needle) in BAD_GRIDS.items()]
CASES += [
    # -- grids through the other readers' commands ------------------------------------------------------------
    R("analysis-pick-grid-cut", "pick", "{g}/cut", needle="line 7 is cut short"),
    R("analysis-pick-grid-file-header-only", "pick", "{g}/header-only/grid.csv", needle="no rows, only the header"),
    R("analysis-report-grid-cut", "report", "{g}/good", "{g}/cut", needle="line 7 is cut short"),
    R("analysis-report-grid-latin1", "report", "{g}/good", "{g}/latin1", needle="grid.csv line 3: not valid UTF-8"),
    R("analysis-report-sweep-trial-cut", "report", "{g}/sweep-cut", needle="trials/t2/grid.csv line 7 is cut short"),
    R("analysis-report-sweep-no-grid", "report", "{g}/sweep-empty", needle="no trial with a grid.csv under trials/"),
    # -- params.json --------------------------------------------------------------------------------------------
    R("analysis-compare-params-cut", "compare", "{g}/good", "{g}/params-cut",
      needle="params-cut/params.json line 1: not valid JSON (Unterminated string starting at column 14; the file is "
             "cut short?)"),
    R("analysis-compare-params-list", "compare", "{g}/good", "{g}/params-list",
      needle="params-list/params.json: expected a JSON object at the top level"),
    R("analysis-report-params-latin1", "report", "{g}/good", "{g}/params-latin1",
      needle="params.json line 1: not valid UTF-8"),
    # -- what runs can be compared ------------------------------------------------------------------------------
    R("analysis-compare-no-shared-dataset", "compare", "{g}/good", "{g}/other-dataset",
      needle="the runs share no dataset/metric with a value: good has sts/spearman; other-dataset has nli/spearman"),
    R("analysis-compare-no-shared-cell", "compare", "{g}/good", "{g}/other-cells",
      needle="the runs share no (layer, dim) cell with a value in sts/spearman"),
    R("analysis-compare-all-nan", "compare", "{g}/good", "{g}/nan", needle="/g/nan): every value of its grid is NaN"),
    R("analysis-compare-shared-cells-nan", "compare", "{g}/good", "{g}/nan-where-shared",
      needle="share no (layer, dim) cell with a value"),
    R("analysis-report-no-shared-dataset", "report", "{g}/good", "{g}/other-dataset", needle="share no dataset/metric"),
    R("analysis-report-all-nan", "report", "{g}/nan", "{g}/good", needle="every value of its grid is NaN"),
    R("analysis-compare-no-grid", "compare", "{g}/nogrid", needle="nogrid: no grid.csv"),
    R("analysis-compare-baseline-unknown", "compare", "{g}/good", "{g}/good", "--baseline", "nope",
      needle="--baseline: 'nope' is none of the compared runs"),
    # -- --out: checked, never created by a refusal -------------------------------------------------------------
    R("analysis-compare-out-under-a-file", "compare", "{g}/good", "--out", "{g}/plain.txt/cmp",
      needle="plain.txt/cmp cannot be created"),
    R("analysis-pick-out-under-a-file", "pick", "{g}/good", "--out", "{g}/plain.txt/pick", needle="--out"),
    R("analysis-report-out-under-a-file", "report", "{g}/good", "--out", "{g}/plain.txt/page.html",
      needle="plain.txt/page.html cannot be created"),
    R("analysis-report-out-not-html", "report", "{g}/good", "--out", "{root}/out/analysis-report-out-not-html/page.txt",
      needle="must be an .html file path"),
    # -- tracking stores: read-only lookups create nothing ------------------------------------------------------
    R("analysis-compare-run-id-no-store", "compare", ZERO_ID,
      needle="nostore/mlflow.db holds no MLflow store (no such file)"),
    R("analysis-pick-run-id-no-store", "pick", ZERO_ID, needle="holds no MLflow store"),
    R("analysis-report-run-id-no-store", "report", ZERO_ID, needle="holds no MLflow store"),
    R("analysis-compare-run-id-unrelated-sqlite", "compare", ZERO_ID, "--tracking-uri", "sqlite:///{g}/unrelated.db",
      needle="unrelated.db holds no MLflow store (no experiments or runs table)"),
    R("analysis-compare-run-id-empty-file", "compare", ZERO_ID, "--tracking-uri", "sqlite:///{g}/empty.db",
      needle="empty.db holds no MLflow store"),
    R("analysis-compare-run-id-not-sqlite", "compare", ZERO_ID, "--tracking-uri", "sqlite:///{g}/plain.txt",
      needle="plain.txt is not a SQLite database"),
    R("analysis-compare-run-id-unknown", "compare", ZERO_ID, "--tracking-uri", "sqlite:///{db}",
      needle=f"{ZERO_ID}: no such MLflow run"),
    R("analysis-pick-run-without-grid", "pick", "{db_run}", "--tracking-uri", "sqlite:///{db}",
      needle="the run has no grid.csv artifact"),
    # -- m2d pick: metric, budget, latency ----------------------------------------------------------------------
    R("analysis-pick-metric-unknown", "pick", "{g}/good", "--metric", "sts/pearson",
      needle="--metric: 'sts/pearson' is not in the grid; allowed: sts/spearman"),
    R("analysis-pick-metric-no-dataset", "pick", "{g}/good", "--metric", "spearman",
      needle="--metric: 'spearman' is not in the grid; allowed: sts/spearman"),
    R("analysis-pick-metric-all-nan", "pick", "{g}/half-nan", "--metric", "sts/pearson",
      needle="--metric: every sts/pearson value in the grid is NaN"),
    R("analysis-pick-grid-all-nan", "pick", "{g}/nan", needle="every value of its grid is NaN"),
    R("analysis-pick-batch-not-measured", "pick", "{g}/good", "--batch", "7",
      needle="--batch: 7 was not measured; the latency file has batch sizes 1, 128"),
    R("analysis-pick-max-latency-negative", "pick", "{g}/good", "--max-latency-ms", "-1", needle="--max-latency-ms"),
    R("analysis-pick-max-bytes-nan", "pick", "{g}/good", "--max-bytes", "nan", needle="--max-bytes"),
    R("analysis-pick-latency-missing", "pick", "{g}/good", "--latency", "{g}/lat/nope.json",
      needle="lat/nope.json is neither a latency.json nor a model folder"),
    R("analysis-pick-no-latency", "pick", "{g}/bare", needle="no latency.json beside the grid and no model to measure"),
    R("analysis-pick-layer0-old-latency", "pick", "{g}/layer0",
      needle="layer0/latency.json has no layer 0 of the grid (its layers: 1, 2, 3)"),
    R("analysis-pick-latency-other-model", "pick", "{prev}", "--latency", "{g}/lat/three-layers.json",
      needle="is of a 3-layer model (/models/three), the grid is of a 6-layer model"),
    R("analysis-pick-measure-other-model", "pick", "{prev}", "--latency", "{m3}",
      needle="bert3 is of a 3-layer model, the grid is of a 6-layer model"),
]
CASES += [R(f"analysis-pick-latency-{key}", "pick", "{g}/bare" if key == "two-layers-old" else "{g}/good",
            "--latency", f"{{g}}/lat/{key}.json", needle=needle)
          for key, (_, needle) in BAD_LATENCY.items() if key != "three-layers"]
CASES += [
    R("analysis-pick-latency-beside-grid-cut", "pick", "{g}/latency-cut", needle="latency-cut/latency.json line 1"),
    # -- m2d report on a study folder ---------------------------------------------------------------------------
    R("analysis-report-png-truncated", "report", "{g}/study-png", needle="heatmap_a.png: not a readable PNG image"),
    R("analysis-report-png-garbage", "report", "{g}/study-garbage", needle="methods.png: not a readable PNG image"),
    R("analysis-report-png-is-jpeg", "report", "{g}/study-jpeg", needle="photo.png: a JPEG image, not a PNG"),
    R("analysis-report-png-under-tables", "report", "{g}/study-run", needle="tables/heatmap_a.png: not a readable PNG"),
    R("analysis-report-claims-cut", "report", "{g}/study-claims-cut", needle="claims.json line 1: not valid JSON"),
    R("analysis-report-claims-object", "report", "{g}/study-claims-object",
      needle="claims.json: expected a JSON list at the top level"),
    R("analysis-report-claim-not-object", "report", "{g}/study-claim-text",
      needle="claims.json: claim 2 is a string, not an object"),
    R("analysis-report-claim-no-id", "report", "{g}/study-claim-no-id", needle="claims.json: claim 1: 'id' is missing"),
    R("analysis-report-claim-ci", "report", "{g}/study-claim-ci", needle="claims.json: claim 1: 'ci' must be a list"),
    R("analysis-report-md-latin1", "report", "{g}/study-latin1", needle="report.md line 3: not valid UTF-8"),
    # -- m2d export: --out and --force ---------------------------------------------------------------------------
    R("analysis-export-out-under-a-file", "export", "{model}", "--layer", "1", "--dim", "8", "--out",
      "{g}/plain.txt/cell", needle="plain.txt/cell cannot be created"),
    R("analysis-export-out-is-a-file", "export", "{model}", "--layer", "1", "--dim", "8", "--out", "{g}/plain.txt",
      needle="plain.txt cannot be created"),
    R("analysis-export-force-user-file", "export", "{model}", "--layer", "1", "--dim", "8", "--force", "--out",
      "{g}/export-user-config", needle="export-user-config/config.json is not from the previous export"),
    R("analysis-export-force-json-cut", "export", "{model}", "--layer", "1", "--dim", "8", "--force", "--out",
      "{g}/export-cut", needle="export-cut/export.json line 1: not valid JSON"),
    R("analysis-export-force-json-list", "export", "{model}", "--layer", "1", "--dim", "8", "--force", "--out",
      "{g}/export-list", needle="export.json: expected a JSON object"),
    R("analysis-export-force-no-files-list", "export", "{model}", "--layer", "1", "--dim", "8", "--force", "--out",
      "{g}/export-old", needle="export.json: no 'files' list"),
    R("analysis-export-force-files-outside", "export", "{model}", "--layer", "1", "--dim", "8", "--force", "--out",
      "{g}/export-escape", needle="lists '../plain.txt', a path outside the export folder"),
    R("analysis-export-force-foreign-folder", "export", "{model}", "--layer", "1", "--dim", "8", "--force", "--out",
      "{g}/nogrid-notes", needle="holds no export.json (not an m2d export)"),
]


# -- the broken files -------------------------------------------------------------------------------------------
def fixtures(root: Path, ctx: dict) -> dict:
    """Write this area's broken files under ``root``; returns placeholders for the rows and ``protected``: the files
    no refusal may change (all of ``root``)."""
    from matryoshka2d.testing import make_tiny_bert

    root.mkdir(parents=True)
    g = root / "g"
    (g / "lat").mkdir(parents=True)
    (g / "plain.txt").write_text("not a folder\n")
    (g / "empty.db").write_bytes(b"")
    with sqlite3.connect(g / "unrelated.db") as con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes (text) VALUES ('keep me')")
    con.close()

    def run(name: str, grid: str | bytes | None = GOOD, **files) -> Path:
        folder = g / name
        folder.mkdir(parents=True)
        if grid is not None:
            write(folder / "grid.csv", grid)
        for file, text in files.items():
            write(folder / file.replace("__", "."), text)
        return folder

    with_latency = json.dumps(latency())
    run("good", latency__json=with_latency)
    for key, (text, _) in BAD_GRIDS.items():
        run(key, text)
    run("latin1", (HEADER + "sts,test,spearman,1,8,0.5\nst\xe4,test,spearman,2,8,0.5\n").encode("latin-1"))
    run("params-cut", params__json='{"row": "a", "train.se')
    run("params-list", params__json='["row", "a"]')
    run("params-latin1", params__json='{"row": "r\xe4"}'.encode("latin-1"))
    run("other-dataset", HEADER + rows("nli"))
    run("other-cells", HEADER + rows(layers=(4, 5), dims=(24,)))
    run("nan", HEADER + rows(value="nan"), latency__json=with_latency)
    run("nan-where-shared", HEADER + rows(value="nan") + rows(layers=(4,), dims=(8,)))
    run("half-nan", GOOD + rows(metric="pearson", value="nan"), latency__json=with_latency)
    run("bare")
    run("nogrid", None)
    run("nogrid-notes", None, notes__txt="mine\n")
    run("layer0", HEADER + rows(layers=(0, 1, 2, 3)), latency__json=json.dumps(latency(layers=(1, 2, 3))))
    run("latency-cut", latency__json=with_latency[:-30])
    for key, (text, _) in BAD_LATENCY.items():
        write(g / "lat" / f"{key}.json", text)
    run("sweep-cut", None)
    for trial, text in (("t1", GOOD), ("t2", GOOD[:-6])):
        run(f"sweep-cut/trials/{trial}", text)
    run("sweep-empty/trials/t1", None, params__json='{"row": "a"}')
    study_folders(g)
    export_folders(g)
    m3 = make_tiny_bert(root / "bert3", num_layers=3, hidden_size=32)
    return {"g": str(g), "m3": str(m3), "db_run": first_run(ctx["db"]), "protected": [root]}


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def png_bytes(fmt: str = "PNG") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


CLAIM = {"id": "C1", "text": "v2 beats mrl", "a": "v2", "b": "mrl", "metric": "sts/spearman", "margin": 0.01,
         "ci": [0.001, 0.02], "verdict": "holds"}


def study_folders(g: Path) -> None:
    """Study output folders, each broken in one way (a good report.md, claims.json and figure otherwise)."""
    png, report = png_bytes(), "# Study\n\nText.\n"
    good = {"report.md": report, "claims.json": json.dumps([CLAIM]), "heatmap_a.png": png}
    broken = {
        "study-png": {"heatmap_a.png": png[: len(png) // 2]},
        "study-garbage": {"methods.png": b"\x89PNG\r\n\x1a\n" + b"not a png at all" * 8},
        "study-jpeg": {"photo.png": png_bytes("JPEG")},
        "study-run/tables": {"heatmap_a.png": png[:-20]},
        "study-claims-cut": {"claims.json": json.dumps([CLAIM])[:30]},
        "study-claims-object": {"claims.json": json.dumps({"C1": CLAIM})},
        "study-claim-text": {"claims.json": json.dumps([CLAIM, "C2 holds"])},
        "study-claim-no-id": {"claims.json": json.dumps([{k: v for k, v in CLAIM.items() if k != "id"}])},
        "study-claim-ci": {"claims.json": json.dumps([{**CLAIM, "ci": [0.1]}])},
        "study-latin1": {"report.md": "# Study\n\nR\xe9sum\xe9.\n".encode("latin-1")},
    }
    for folder, files in broken.items():
        for name, content in {**good, **files}.items():
            write(g / folder / name, content)


def export_folders(g: Path) -> None:
    """Folders a --force export must refuse: a user's file where the export writes, export.json broken in one way."""
    listed = {"files": ["export.json", "model.safetensors", "tokenizer.json"], "layer": 1, "dim": 8}
    folders = {
        "export-user-config": {"export.json": json.dumps(listed), "config.json": '{"mine": true}\n'},
        "export-cut": {"export.json": json.dumps(listed)[:25], "model.safetensors": "x"},
        "export-list": {"export.json": json.dumps([listed]), "model.safetensors": "x"},
        "export-old": {"export.json": json.dumps({"layer": 1, "dim": 8}), "model.safetensors": "x"},
        "export-escape": {"export.json": json.dumps({**listed, "files": ["export.json", "../plain.txt"]})},
    }
    for folder, files in folders.items():
        for name, content in files.items():
            write(g / folder / name, content)


def first_run(db: str) -> str:
    """The id of the one run in the catalogue's MLflow store (read with sqlite, not MLflow: nothing is written)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        (run_id,) = con.execute("SELECT run_uuid FROM runs LIMIT 1").fetchone()
    con.close()
    return run_id
