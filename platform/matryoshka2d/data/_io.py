"""Line-level file reading shared by every loader.

All bad-input failures (missing file, bad gzip, bad UTF-8) become one-line ``M2DError``s here,
with the line number, so the loaders above never leak a bare traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matryoshka2d.errors import M2DError


def where(path: Path | str, lineno: int | None = None) -> str:
    """The location prefix of every error message: ``file`` or ``file line N``."""
    return f"{path} line {lineno}" if lineno is not None else str(path)


def _open_binary(path: Path):
    """Open plain or gzip (by suffix); OS errors become M2DError."""
    try:
        if path.is_dir():
            raise M2DError(f"{path}: is a directory, expected a file")
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except FileNotFoundError:
        raise M2DError(f"{path}: file not found") from None
    except OSError as err:
        raise M2DError(f"{path}: cannot open ({err.strerror or err})") from None


def iter_lines(path: Path | str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` with the line ending removed; ``.gz`` is decompressed on the fly.

    Decoding is per line (strict UTF-8, BOM dropped) so a bad byte is reported with its line number,
    and big files (the MS MARCO collection) are streamed rather than read whole.
    """
    path = Path(path)
    fh = _open_binary(path)
    with fh:
        lineno = 0
        while True:
            try:
                raw = fh.readline()
            except (OSError, EOFError, zlib.error) as err:
                raise M2DError(f"{where(path, lineno + 1)}: not a valid gzip file ({err})") from None
            if not raw:
                return
            lineno += 1
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise M2DError(f"{where(path, lineno)}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
            yield lineno, text.rstrip("\r\n")


def read_lines(path: Path | str, allow_empty: bool = False) -> list[str]:
    """All lines of a small file; an empty (or whitespace-only) file is an error unless allowed."""
    lines = [text for _, text in iter_lines(path)]
    if not allow_empty and not any(line.strip() for line in lines):
        raise M2DError(f"{path}: file is empty")
    return lines


def iter_jsonl(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank JSON line; anything but an object is an error."""
    seen = False
    for lineno, text in iter_lines(path):
        if not text.strip():
            continue
        seen = True
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise M2DError(f"{where(path, lineno)}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise M2DError(f"{where(path, lineno)}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj
    if not seen:
        raise M2DError(f"{path}: file is empty")


def parse_score(text: str, path: Path | str, lineno: int, lo: float, hi: float, field: str = "score") -> float:
    """A finite float within ``lo..hi``; the message says which line and value failed."""
    try:
        value = float(text)
    except ValueError:
        raise M2DError(f"{where(path, lineno)}: {field} {text.strip()!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise M2DError(f"{where(path, lineno)}: {field} {text.strip()} out of range {lo:g}..{hi:g}")
    return value


def parse_int(text: str, path: Path | str, lineno: int, field: str) -> int:
    """An integer field (qrel grade, pid); a float-looking ``1.0`` is not accepted silently."""
    try:
        return int(text)
    except ValueError:
        raise M2DError(f"{where(path, lineno)}: {field} {text.strip()!r} is not an integer") from None


def require_file(path: Path, what: str) -> Path:
    """Fail early, naming the file and what it is for, instead of deep inside a loader."""
    if not path.is_file():
        raise M2DError(f"{what}: {path} not found")
    return path


def first_existing(*candidates: Path) -> Path | None:
    """The first path that exists (used for ``x.jsonl`` vs ``x.jsonl.gz``)."""
    return next((p for p in candidates if p.exists()), None)


def sha256_prefix(path: Path, n: int = 16) -> str:
    """Hex sha256 of the file bytes as stored (compressed files are hashed compressed)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise M2DError(f"{path}: cannot read for checksum ({err.strerror or err})") from None
    return digest.hexdigest()[:n]
