"""What a user sees: a real ``mlflow server`` (127.0.0.1, one worker), a small sweep logged to it over HTTP, and the
MLflow UI in headless Chromium (Debian ``chromium`` driven by Playwright): the chart view shows every trial's
heatmap image and the parent's summary figures, the compare-runs page lists the trials' grid files; the
``m2d report`` page renders from disk. Screenshots are kept under ``tests/artifacts/ui`` (``$M2D_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from matryoshka2d.testing import make_tiny_bert

pytestmark = pytest.mark.e2e  # starts processes: the full suite only

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("M2D_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / "ui"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with one worker and proxied artifacts; stopped by its own pid (group)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"mlflow server did not come up: {(root / 'server.log').read_text()[-2000:]}")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def sweep(server, tmp_path_factory, data_dir):
    """Two trials (in-process) of the weighting sweep on a tiny BERT, logged to the server over HTTP."""
    tmp = tmp_path_factory.mktemp("sweep")
    tiny = make_tiny_bert(tmp / "bert6", num_layers=6, hidden_size=32)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "M2D_DATA_DIR": str(data_dir), "M2D_HOME": str(tmp / "home"),
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(ROOT / "experiments" / "sweep_weighting.py"), "--smoke", "--set", f"model.name={tiny}",
            "--set", "eval.dims=[8,16,32]", "--tracking-uri", server, "--storage-path", str(tmp / "ray"),
            "--experiment-name", "ui", "--num-samples", "2", "--scheduler", "fifo"]
    out = subprocess.run(args, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    from mlflow import MlflowClient

    mlf = MlflowClient(server)
    exp = mlf.get_experiment_by_name("ui")
    runs = mlf.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("m2d.kind") == "sweep")
    trials = [r for r in runs if r.data.tags.get("m2d.kind") == "trial"]
    assert len(trials) == 2
    return {"url": server, "experiment": exp.experiment_id, "parent": parent, "trials": trials, "dir": tmp,
            "log": out.stdout}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (.ci/setup does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def rendered_images(page) -> list[dict]:
    """Every <img> that finished loading with real pixels, with where it came from."""
    return page.eval_on_selector_all(
        "img", "els => els.filter(e => e.complete && e.naturalWidth > 0)"
               ".map(e => ({src: e.src.slice(0, 300), w: e.naturalWidth, h: e.naturalHeight}))")


def wait_for(page, predicate, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "failed.png"), full_page=True)
    pytest.fail(f"timed out waiting for {what} (screenshot {SHOTS / 'failed.png'})")


def open_chart_view(browser, sweep):
    page = browser.new_page(viewport={"width": 1700, "height": 1250})
    page.goto(f"{sweep['url']}/#/experiments/{sweep['experiment']}/runs?compareRunsMode=CHART")
    page.wait_for_selector("text=Training runs", timeout=60_000)
    close = page.get_by_role("button", name="Close")  # the assistant side panel, open by default
    if close.count():
        close.first.click()
    # the trials nest under the parent run, collapsed: expand them, as a user does
    page.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").first.click()
    return page


def open_image_card(page, key: str):
    """The chart view's image card ``key`` in full screen, its step slider moved to the last step (a click at the
    slider's right end, as a user drags it there). Returns the dialog."""
    card = page.locator("[data-testid=experiment-view-compare-runs-card]", has=page.get_by_text(key, exact=True)).first
    # sections render as they scroll into view: scroll the chart area down until the card exists
    wait_for(page, lambda: card.count() or page.mouse.move(1100, 700) or page.mouse.wheel(0, 700),
             what=f"the image card {key}")
    card.scroll_into_view_if_needed()
    card.locator("[data-component-id=fullscreen_button_chartcard]").click()
    dialog = page.get_by_role("dialog")
    handle = dialog.locator("[role=slider]").first
    handle.wait_for(timeout=30_000)
    last = handle.get_attribute("aria-valuemax")
    step_box = dialog.locator("input").last.bounding_box()  # the step's number box, right of the slider's end
    y = handle.bounding_box()["y"] + handle.bounding_box()["height"] / 2
    wait_for(page, lambda: page.mouse.click(step_box["x"] - 25, y) or
             handle.get_attribute("aria-valuenow") == last, what=f"{key}: the slider at step {last}")
    return dialog, int(last)


def heatmap_images(page, key: str) -> list[dict]:
    tag = key.replace("/", "~")
    return [i for i in rendered_images(page) if "get-artifact" in i["src"] and f"images%2F{tag}%2Bstep" in i["src"]]


def test_chart_view_shows_every_trials_heatmap_and_the_parents_summary(browser, sweep):
    page = open_chart_view(browser, sweep)
    names = [t.info.run_name.split()[0] for t in sweep["trials"]]
    wait_for(page, lambda: all(page.get_by_text(n).count() for n in names), what="the trials in the runs list")
    SHOTS.mkdir(parents=True, exist_ok=True)

    # every trial's heatmap at its last evaluation (the smoke sweep evaluates at steps 5 and 10)
    dialog, last = open_image_card(page, "heatmap/stsb/spearman")
    assert last == 10
    images = wait_for(page, lambda: (lambda found: found if len({i["src"] for i in found}) >= 2 else None)(
        heatmap_images(page, "heatmap/stsb/spearman")), what="both trials' heatmaps")
    assert all("%2Bstep%2B10%2B" in i["src"] for i in images)
    for name in names:  # each image is labelled with its run
        assert dialog.get_by_text(name).count()
    page.screenshot(path=str(SHOTS / "chart_view_heatmaps.png"))
    dialog.get_by_role("button", name="Close").first.click()

    # the parent's summary: every trial's grid as small multiples on one colour scale
    dialog, _ = open_image_card(page, "sweep/stsb/spearman/runs")
    wait_for(page, lambda: heatmap_images(page, "sweep/stsb/spearman/runs"), what="the parent's summary figure")
    assert dialog.get_by_text(sweep["parent"].info.run_name).count()
    page.screenshot(path=str(SHOTS / "chart_view_summary.png"))


def test_compare_runs_page_lists_each_trials_grid(browser, sweep):
    runs = [t.info.run_id for t in sweep["trials"]]
    page = browser.new_page(viewport={"width": 1700, "height": 1250})
    page.goto(f"{sweep['url']}/#/compare-runs?runs={json.dumps(runs)}&experiments={json.dumps([sweep['experiment']])}")
    wait_for(page, lambda: "Artifacts" in page.inner_text("body") or "artifacts" in page.inner_text("body").lower(),
             what="the compare-runs page")
    body = page.inner_text("body")
    assert "Something went wrong" not in body
    for run in sweep["trials"]:
        assert run.info.run_name.split()[0] in body
    page.screenshot(path=str(SHOTS / "compare_runs.png"), full_page=True)


def test_report_page_opens_from_disk(browser, sweep, tmp_path):
    from matryoshka2d.cli import main

    out = tmp_path / "report.html"
    assert main(["report", sweep["parent"].info.run_id, "--tracking-uri", sweep["url"], "--out", str(out)]) == 0
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(out.as_uri())
    images = rendered_images(page)
    assert len(images) == 3, images  # trials, vs_baseline, best_run for stsb spearman
    assert all(i["src"].startswith("data:image/png") for i in images)
    assert [u for u in requested if not u.startswith(("file:", "data:"))] == []  # nothing from a server
    text = page.inner_text("body")
    for run in sweep["trials"]:
        assert run.info.run_name.split()[0] in text
    page.screenshot(path=str(SHOTS / "report.png"), full_page=True)


def test_study_report_page_shows_claims_and_every_figure(browser, tmp_path):
    """The committed cpu retrieval study (real run output) as one page, opened from disk."""
    from matryoshka2d.cli import main

    folder = ROOT / "experiments" / "results" / "retrieval-cpu"
    out = tmp_path / "study.html"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(out.as_uri())
    assert len(rendered_images(page)) == len(list(folder.glob("*.png")))
    claims = json.loads((folder / "claims.json").read_text())
    cells = page.locator("table").first.inner_text()
    for claim in claims:
        assert claim["id"] in cells and claim["verdict"] in cells
    assert page.locator("td.holds").count() == sum(c["verdict"] == "holds" for c in claims)
    page.screenshot(path=str(SHOTS / "study_report.png"))


def test_pick_logs_its_frontier_to_the_trials_run(sweep, capsys):
    """``m2d pick RUN_ID``: the grid comes from the run, latency is measured on the sweep's model, the frontier plot
    goes back to the run."""
    from mlflow import MlflowClient

    from matryoshka2d.cli import main

    run = sweep["trials"][0]
    code = main(["pick", run.info.run_id, "--tracking-uri", sweep["url"], "--metric", "stsb/spearman",
                 "--latency", str(sweep["dir"] / "bert6"), "--max-bytes", "64"])
    assert code == 0, capsys.readouterr()
    assert "best within any latency, <= 64 bytes" in capsys.readouterr().out
    logged = {a.path for a in MlflowClient(sweep["url"]).list_artifacts(run.info.run_id, "pick")}
    assert logged == {"pick/frontier.png", "pick/frontier.csv", "pick/latency.json"}
