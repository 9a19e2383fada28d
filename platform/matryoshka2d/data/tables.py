"""Column tables from local files and ``datasets`` objects, for ``hf:`` sources.

A ``Table`` is one split as named columns. Text files are read by our own readers (not ``datasets``' builders) so a
bad row is reported with its file and row, nothing is written to a cache, and ``.gz`` works like everywhere else.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matryoshka2d.errors import M2DError

from ._io import iter_jsonl, iter_lines

TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")  # each also as .gz
DATA_SUFFIXES = (".parquet",) + TEXT_SUFFIXES
ALLOWED = ".parquet, .jsonl, .json, .csv, .tsv (the text ones also .gz)"
# <split>.<ext> or a hub shard <split>-00000-of-00003.<ext>
_SPLIT_FILE = re.compile(r"^(?P<split>[^.]+?)(?:-\d{5}-of-\d{5})?\.(?:parquet|jsonl|json|csv|tsv)(?:\.gz)?$")


@dataclass
class Table:
    """One split as named columns; ``column`` reads one column (a saved or hub dataset reads only what is used)."""

    source: str  # what error lines name: a file, a folder and split, or a hub id and split
    names: list[str]
    rows: int
    column: Callable[[str], list]


def data_suffix(path: Path) -> str | None:
    """``.jsonl`` for ``x.jsonl`` and ``x.jsonl.gz``; None for anything that is not a data file."""
    name = path.name.removesuffix(".gz") if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix
    if path.name.endswith(".parquet.gz") or suffix not in DATA_SUFFIXES:
        return None
    return suffix


def read_file(path: Path) -> Table:
    """A .parquet / .jsonl / .json / .csv / .tsv file (header row for csv and tsv) as a table."""
    suffix = data_suffix(path)
    if suffix is None:
        raise M2DError(f"{path}: unsupported file type; allowed {ALLOWED}, or a datasets save_to_disk folder")
    if suffix == ".parquet":
        return _parquet(path)
    if suffix == ".csv" or suffix == ".tsv":
        return _rows_table(str(path), _delimited(path, "\t" if suffix == ".tsv" else ","))
    if suffix == ".json" and _starts_with_bracket(path):
        return _rows_table(str(path), _json_array(path))
    return _rows_table(str(path), [obj for _, obj in iter_jsonl(path)])


def _parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # ArrowInvalid, OSError: a truncated or foreign file
        raise M2DError(f"{path}: not a readable parquet file ({str(err).splitlines()[0][:200]})") from None
    return Table(str(path), list(table.column_names), table.num_rows, lambda c: table.column(c).to_pylist())


def _starts_with_bracket(path: Path) -> bool:
    for _, text in iter_lines(path):
        if text.strip():
            return text.lstrip().startswith("[")
    raise M2DError(f"{path}: file is empty")


def _json_array(path: Path) -> list[dict[str, Any]]:
    """A .json file holding one array of objects (other .json files are read as JSON lines)."""
    try:
        rows = json.loads("\n".join(text for _, text in iter_lines(path)))
    except json.JSONDecodeError as err:
        raise M2DError(f"{path} line {err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise M2DError(f"{path} row {i}: expected a JSON object, got {type(row).__name__}")
    return rows


def _delimited(path: Path, delimiter: str) -> list[dict[str, Any]]:
    """csv (standard quoting) or tsv (no quoting: texts contain ``"``), first line the header."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader((text for _, text in iter_lines(path)), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise M2DError(f"{path}: file is empty")
    header = [h.strip() for h in header]
    rows = []
    for cols in reader:
        if not any(c.strip() for c in cols):
            continue
        if len(cols) != len(header):
            raise M2DError(f"{path} line {reader.line_num}: expected {len(header)} columns ({', '.join(header)}), "
                           f"got {len(cols)}")
        rows.append(dict(zip(header, cols)))
    return rows


def _rows_table(source: str, rows: list[dict[str, Any]]) -> Table:
    """Rows of objects; the columns are every key in first-seen order (a row without one reads None)."""
    if not rows:
        raise M2DError(f"{source}: no rows")
    names = list(dict.fromkeys(k for row in rows for k in row))
    return Table(source, names, len(rows), lambda c: [row.get(c) for row in rows])


def from_dataset(ds, source: str) -> Table:
    """A ``datasets.Dataset`` (memory-mapped: a column is read when asked for; ``[:]`` reads it in one go, iterating
    a ``Column`` goes row by row, 180x slower)."""
    return Table(source, list(ds.column_names), ds.num_rows, lambda c: ds[c][:])


def concat(tables: list[Table], source: str) -> Table:
    """Tables one after the other (shards of a split, or every split for ``all``)."""
    if len(tables) == 1:
        return tables[0]
    names = list(dict.fromkeys(n for t in tables for n in t.names))
    return Table(source, names, sum(t.rows for t in tables),
                 lambda c: [v for t in tables for v in (t.column(c) if c in t.names else [None] * t.rows)])


def split_name(path: Path) -> str | None:
    """``train.parquet`` / ``train-00000-of-00002.parquet`` / ``test.jsonl.gz`` -> the split it holds."""
    match = _SPLIT_FILE.match(path.name)
    return match.group("split") if match else None


def data_files(folder: Path) -> list[Path]:
    """The data files directly in ``folder``, sorted (shards in order)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and data_suffix(p) is not None)


def split_files(folder: Path, split: str, source: str) -> list[Path]:
    """The files of ``split`` in a folder of ``<split>.<ext>`` files (``all``: every one); else one line naming the
    splits that are there."""
    files = data_files(folder)
    if split == "all" and files:
        return files
    chosen = [p for p in files if split_name(p) == split]
    if not chosen:
        have = sorted({s for p in files if (s := split_name(p))})
        raise M2DError(f"{source}: no file for split {split!r} in {folder} (files named <split>.<ext>, {ALLOWED}); "
                       f"splits here: {', '.join(have) or 'none'}")
    return chosen


def is_saved(folder: Path) -> bool:
    """A ``datasets`` ``save_to_disk`` folder (a Dataset or a DatasetDict)."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def saved_files(folder: Path, split: str) -> list[Path]:
    """The files a saved split reads (a Dataset is its one split); for checksums."""
    if (folder / "dataset_dict.json").is_file():
        have = saved_splits(folder)
        if split != "all" and split not in have:
            raise M2DError(f"{folder}: split {split!r} not available; splits: {', '.join(have)} (or all)")
        splits = have if split == "all" else [split]
        return [folder / "dataset_dict.json"] + [p for s in splits for p in sorted((folder / s).glob("*"))
                                                 if p.is_file()]
    return sorted(p for p in folder.iterdir() if p.is_file())


def saved_splits(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / "dataset_dict.json").read_text())["splits"])
    except (OSError, ValueError, KeyError, TypeError):
        raise M2DError(f"{folder / 'dataset_dict.json'}: unreadable (not written by DatasetDict.save_to_disk)"
                       ) from None
