"""``m2d report``: one self-contained HTML page (figures inlined as data URIs) for a sweep or a reproduction study.

It opens from disk with no server and no network: no scripts, no external stylesheets or fonts.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Iterable

from .. import storage
from ..errors import M2DError

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:12px}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}figure{margin:1em 0}figcaption{color:#555;font-size:12px}
.holds{color:#176a1a;font-weight:600}.does-not-hold{color:#a11;font-weight:600}.inconclusive{color:#8a6100}
code{background:#f5f5f5;padding:0 3px}details{margin:.6em 0}
"""


def image(path: Path, caption: str = "") -> str:
    """``path`` inlined as a data URI, once :func:`check_png` has read it whole: never a broken image on the page."""
    check_png(path)
    data = base64.b64encode(Path(path).read_bytes()).decode()
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption or Path(path).stem)}" src="data:image/png;base64,{data}">{cap}</figure>'


def check_png(path: Path) -> None:
    """A PNG that decodes to its last pixel (a truncated or corrupt file, a JPEG named .png: one line naming it)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            kind = img.format
            img.verify()  # chunk structure and checksums
        with Image.open(path) as img:
            img.load()  # every pixel: a file cut short fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise M2DError(f"{path}: not a readable PNG image ({err}); write the figure again or remove it") from None
    if kind != "PNG":
        raise M2DError(f"{path}: a {kind} image, not a PNG (the page inlines figures as PNG)")


def table(rows: list[dict], columns: Iterable[str] | None = None) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    columns = list(columns or rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def markdown(text: str) -> str:
    """The markdown our own reports use (headings, pipe tables, lists, paragraphs, inline code), as HTML."""
    out, para, rows, items = [], [], [], []

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)

    def flush() -> None:
        if para:
            out.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()
        if rows:
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows
                     if not re.fullmatch(r"\|?[\s:|-]+\|?", r.strip())]
            head = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            rows.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            if para or items:
                flush()
            rows.append(stripped)
        elif m := re.match(r"(#{1,6})\s+(.*)", stripped):
            flush()
            level = min(len(m.group(1)) + 1, 6)  # the page's own title is the only h1
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif re.match(r"[-*]\s+", stripped):
            if para or rows:
                flush()
            items.append(re.sub(r"^[-*]\s+", "", stripped))
        elif not stripped:
            flush()
        else:
            if rows:
                flush()
            para.append(stripped)
    flush()
    return "\n".join(out)


def document(title: str, sections: list[str]) -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) +
            "\n</body></html>\n")


# -- what a page holds ------------------------------------------------------------------------------------
def study_page(folder: Path) -> str:
    """A reproduction study's output folder (``tables/`` of its run dir, or ``experiments/results/<name>``):
    claims (from ``claims.json``), every figure, then ``report.md``."""
    folder = folder / storage.TABLES if (folder / storage.TABLES / storage.REPORT).is_file() else folder
    text = storage.read_text(folder / storage.REPORT, storage.REPORT)
    title = (text.splitlines() or ["Reproduction"])[0].lstrip("# ").strip()
    sections = [f"<p>From <code>{html.escape(str(folder))}</code>.</p>"]
    claims = folder / storage.CLAIMS
    if claims.is_file():
        sections.append("<h2>Claims</h2>" + _verdicts(table(claim_rows(claims))))
    figures = sorted(folder.glob("*.png"))
    if figures:
        sections.append("<h2>Figures</h2>" + "".join(image(p, p.stem.replace("_", " ")) for p in figures))
    sections.append("<h2>Report</h2>" + markdown("\n".join(text.splitlines()[1:])))
    return document(title, sections)


def claim_rows(path: Path) -> list[dict]:
    """``claims.json`` (a list of claim objects, as :mod:`..study.report` writes it) as table rows; a file cut short
    or of another shape is one line naming it."""
    rows = []
    for k, c in enumerate(storage.read_json(path, storage.CLAIMS, list), 1):
        where = f"{path}: claim {k}"
        if not isinstance(c, dict):
            raise M2DError(f"{where} is a {storage.JSON_TYPES.get(type(c), 'value')}, not an object")
        for key in ("id", "text"):
            if not isinstance(c.get(key), (str, int)) or isinstance(c.get(key), bool):
                raise M2DError(f"{where}: {key!r} is missing or not text")
        ci = c.get("ci")
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(_is_number(v) for v in ci)):
            raise M2DError(f"{where}: 'ci' must be a list of two numbers, got {ci!r}"[:300])
        for key in ("a", "b", "margin"):
            if isinstance(c.get(key), (list, dict)):
                raise M2DError(f"{where}: {key!r} must be a name or a number, not a {type(c[key]).__name__}")
        rows.append({"claim": str(c["id"]), "statement": str(c["text"]), "metric": c.get("metric", ""),
                     "a": c.get("a"), "b": c.get("b"), "margin": c.get("margin"),
                     "95% CI": "[{:+.4f}, {:+.4f}]".format(*ci) if ci else "", "verdict": c.get("verdict", "")})
    return rows


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _verdicts(markup: str) -> str:
    for verdict in ("does not hold", "holds", "inconclusive"):
        markup = markup.replace(f"<td>{verdict}</td>", f'<td class="{verdict.replace(" ", "-")}">{verdict}</td>')
    return markup


def comparison_page(title: str, entries, written: dict, baseline: int) -> str:
    """A sweep's (or any set of runs') comparison: the leaderboards, then each dataset x metric's figures."""
    from . import compare

    runs = [{"#": i + 1, "run": e.label, "status": e.status, "method": e.method, "source": e.source}
            for i, e in enumerate(entries)]
    sections = [f"<p>{len(entries)} runs; baseline: <b>{html.escape(entries[baseline].label)}</b>.</p>",
                "<h2>Runs</h2>" + table(runs)]
    figures = {(ds, m, kind): path for ds, m, kind, path in written["figures"]}
    captions = {"runs": "every run, one colour scale", "vs_baseline": "each run minus the baseline",
                "best_run": "the best run per cell and its margin over the runner-up"}
    for ds, metric, rows in written["leaderboards"]:
        sections.append(f"<h2>{html.escape(ds)} {html.escape(metric)}</h2>" + table(
            rows, ["run", "status", "sublayer_mean", "grid_mean", "full", "worst_cell", "cells_won", "vs_baseline"]))
        for kind in compare.FIGURES:
            if (ds, metric, kind) in figures:
                sections.append(image(figures[(ds, metric, kind)], f"{ds} {metric}: {captions[kind]}"))
    cells = written["tables"][0]
    sections.append(f"<details><summary>Every cell of every run ({html.escape(cells.name)})</summary>"
                    + table(_csv_rows(cells)) + "</details>")
    return document(title, sections)


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with Path(path).open(newline="") as fh:
        return [{k: (float(v) if _is_float(v) and k not in ("layer", "dim") else v) for k, v in row.items()}
                for row in csv.DictReader(fh)]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sweep_folder(path: Path) -> list[Path]:
    """A sweep's run dir -> its trial folders that have a grid (the trials under ``trials/``)."""
    trials = sorted(p for p in (path / storage.TRIALS).glob("*")
                    if (p / storage.GRID).is_file() or (p / storage.STAGE / storage.GRID).is_file())
    if not trials:
        raise M2DError(f"{path}: no trial with a grid.csv under trials/")
    return trials
