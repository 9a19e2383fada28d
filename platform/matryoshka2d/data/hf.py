"""``hf:<dataset>[:<config>]``: a dataset from the Hugging Face hub (where reachable, or its cache), or a local one.

``<dataset>`` is a path when one exists (as given, else under the data dir): a .parquet/.jsonl/.json/.csv/.tsv
file (read whatever the split), a folder of ``<split>.<ext>`` files (also ``<split>-00000-of-00001.<ext>`` shards,
also under ``data/``), a ``datasets`` ``save_to_disk`` folder, a retrieval folder (``corpus``, ``queries``, ``qrels/``),
or a clone of a hub dataset repository (a README.md with ``configs:``, loaded by ``datasets`` as the hub would). A
local ``<config>`` is a subfolder. Otherwise ``<dataset>`` is a hub id. What the data is comes from its columns
(:mod:`.columns`); the run prints which columns it read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from matryoshka2d.errors import M2DError

from . import columns
from .retrieval import qrels_pairs
from .tables import ALLOWED, Table, concat, data_files, data_suffix, from_dataset, is_saved, read_file, saved_files, \
    split_files
from .types import RetrievalSet, STSPairs, Triplets

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
PARTS = ("corpus", "queries")  # a retrieval set's other two tables (hub configs, or files / folders locally)
QRELS_FOLDERS = ("qrels", "default")
_HUB: dict[tuple[str, str | None], object] = {}  # hub id, config -> DatasetDict: one load per process


@dataclass(frozen=True)
class Source:
    spec: str  # as given: hf:...
    target: str  # hub id, or the local path as resolved (before the config)
    config: str | None
    path: Path | None  # local: the file or folder read (config applied); None: the hub
    clone: bool = False  # a local hub clone: read by datasets with its README's configs

    @property
    def by_datasets(self) -> bool:
        return self.path is None or self.clone

    @property
    def name(self) -> str:
        """A short name for grids (no ``/``: grid keys are ``dataset/metric``)."""
        base = self.target.rsplit("/", 1)[-1]
        while data_suffix(Path(base)) or base.endswith(".gz"):
            base = base.rsplit(".", 1)[0]
        return re.sub(r"[^\w.-]", "_", base + (f"-{self.config}" if self.config else ""))


def parse(spec: str, root: Path | None = None) -> Source:
    """``root``: the data dir (relative paths are also looked up there), None when there is none."""
    body = spec.removeprefix("hf:")
    target, _, config = body.partition(":")
    if not target:
        raise M2DError(f"{spec!r}: expected hf:<dataset>[:<config>], e.g. hf:sentence-transformers/stsb or "
                       "hf:./pairs.parquet")
    path = _local(target, root)
    if path is None:
        if not HUB_ID.match(target) or data_suffix(Path(target)):
            raise M2DError(f"{spec}: no such file or folder {target} (also looked under the data dir), and not a "
                           "hub id (org/name)")
        return Source(spec, target, config or None, None)
    if path.is_dir() and _has_configs(path):
        return Source(spec, str(path), config or None, path, clone=True)
    if config:
        if not (path / config).exists():
            have = sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
            raise M2DError(f"{spec}: no config {config!r}: a local config is a subfolder of {path} (there: "
                           f"{', '.join(have) or 'none'})")
        return Source(spec, str(path), config, path / config)
    return Source(spec, str(path), None, path)


def _local(target: str, root: Path | None) -> Path | None:
    path = Path(target).expanduser()
    if path.exists():
        return path
    if root is not None and not path.is_absolute() and (root / path).exists():
        return root / path
    return None


def _has_configs(folder: Path) -> bool:
    """A hub repository's README declares its configs in the YAML header."""
    readme = folder / "README.md"
    try:
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return False
    header = text.split("\n---", 1)[0] if text.startswith("---") else ""
    return re.search(r"^configs:", header, re.M) is not None


# -- tables ---------------------------------------------------------------------------------------------------------
def _dataset_dict(src: Source, config: str | None):
    """``datasets.load_dataset`` of a hub id or a clone; any failure is one line (offline: at once, no retries)."""
    key = (src.target, config)
    if src.path is None and key in _HUB:
        return _HUB[key]
    try:
        import datasets
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        loaded = datasets.load_dataset(src.target, config)
    except Exception as err:  # ConnectionError, FileNotFoundError, ValueError (unknown config), ...
        offline = " (HF_HUB_OFFLINE=1: only cached datasets load)" if os.environ.get("HF_HUB_OFFLINE") == "1" and \
            src.path is None else ""
        where = "from the Hugging Face hub" if src.path is None else "with datasets"
        what = f" config {config!r}" if config else ""
        raise M2DError(f"{src.spec}: cannot load{what} {where}{offline}: {_first_line(err)}") from None
    if src.path is None:
        _HUB[key] = loaded
    return loaded


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _pick_split(loaded, split: str, source: str) -> Table:
    """One split of a DatasetDict (``all``: every split, one after the other), or the one split of a Dataset."""
    if not hasattr(loaded, "keys"):
        return from_dataset(loaded, source)
    if split in loaded:
        return from_dataset(loaded[split], f"{source} ({split})")
    if split == "all":
        return concat([from_dataset(loaded[s], f"{source} ({s})") for s in loaded], f"{source} (all)")
    raise M2DError(f"{source}: split {split!r} not available; splits: {', '.join(loaded)} (or all)")


def _only_split(loaded, part: str, source: str) -> Table:
    """A corpus or queries config: its one split (or the one named after it)."""
    splits = list(loaded)
    if len(splits) == 1 or part in splits:
        return from_dataset(loaded[splits[0] if len(splits) == 1 else part], f"{source}:{part}")
    raise M2DError(f"{source}: config {part!r} has splits {', '.join(splits)}; expected one (or one named {part})")


def _local_table(path: Path, split: str, source: str) -> Table:
    if path.is_file():
        return read_file(path)
    if is_saved(path):
        return _pick_split(_load_saved(path, source), split, source)
    files = split_files(_data_folder(path, source), split, source)
    return concat([read_file(p) for p in files], f"{source} ({split})")


def _load_saved(path: Path, source: str):
    try:
        import datasets

        return datasets.load_from_disk(str(path))
    except Exception as err:
        raise M2DError(f"{source}: {path} cannot be read as a datasets save_to_disk folder: "
                       f"{_first_line(err)}") from None


def _data_folder(path: Path, source: str) -> Path:
    """The folder itself, or its ``data/`` (a hub repository's usual place), whichever holds data files."""
    for folder in (path, path / "data"):
        if folder.is_dir() and data_files(folder):
            return folder
    raise M2DError(f"{source}: {path} holds no data files ({ALLOWED}), is no datasets save_to_disk folder and no "
                   "retrieval folder (corpus, queries, qrels/)")


def _part(folder: Path, part: str) -> Path | None:
    """``corpus.<ext>`` or a ``corpus/`` folder (any split in it)."""
    if (folder / part).is_dir():
        return folder / part
    return next((p for p in data_files(folder) if p.name.split(".")[0] == part), None) if folder.is_dir() else None


def is_retrieval(src: Source) -> bool:
    """Locally a folder with corpus and queries; on the hub (or a clone), qrels columns in the config asked for."""
    if not src.by_datasets:
        return src.path.is_dir() and all(_part(src.path, p) for p in PARTS)  # type: ignore[union-attr]
    loaded = _dataset_dict(src, src.config)
    first = next(iter(loaded.values())) if hasattr(loaded, "values") else loaded
    return columns.match(from_dataset(first, src.spec), "qrels") is not None


def _qrels_folder(src: Source) -> Path:
    assert src.path is not None
    found = next((src.path / f for f in QRELS_FOLDERS if (src.path / f).is_dir()), None)
    if found is None:
        raise M2DError(f"{src.spec}: {src.path} has corpus and queries but no qrels/ folder (qrels/<split>.<ext>)")
    return found


def retrieval_tables(src: Source, split: str) -> tuple[Table, Table, Table]:
    """(qrels of ``split``, corpus, queries)."""
    if src.by_datasets:
        qrels = _pick_split(_dataset_dict(src, src.config), split, src.spec)
        corpus, queries = (_only_split(_dataset_dict(src, p), p, src.spec) for p in PARTS)
        return qrels, corpus, queries
    assert src.path is not None
    corpus, queries = (_local_table(_part(src.path, p), "all", f"{src.spec}:{p}")  # type: ignore[arg-type]
                       for p in PARTS)
    return _local_table(_qrels_folder(src), split, src.spec), corpus, queries


def main_table(src: Source, split: str) -> Table:
    if src.by_datasets:
        return _pick_split(_dataset_dict(src, src.config), split, src.spec)
    assert src.path is not None
    return _local_table(src.path, split, src.spec)


# -- what a run reads -----------------------------------------------------------------------------------------------
def files(spec: str, split: str, root: Path | None = None) -> list[Path]:
    """The local files a split reads (for checksums and presence checks); a hub dataset has none, but is loaded
    here so an unreachable or uncached one fails now, in one line."""
    src = parse(spec, root)
    if src.path is None:
        _dataset_dict(src, src.config)
        return []
    if src.clone:
        return sorted(p for p in src.path.rglob("*") if p.is_file() and (data_suffix(p) or p.name == "README.md")
                      and ".git" not in p.parts)
    if is_retrieval(src):
        found = []
        for part in [_part(src.path, p) for p in PARTS]:
            found += [part] if part.is_file() else _folder_files(part, "all", spec)  # type: ignore[union-attr]
        return found + _folder_files(_qrels_folder(src), split, spec)
    return [src.path] if src.path.is_file() else _folder_files(src.path, split, spec)


def _folder_files(folder: Path, split: str, spec: str) -> list[Path]:
    return saved_files(folder, split) if is_saved(folder) else split_files(_data_folder(folder, spec), split, spec)


def fingerprints(spec: str, split: str, root: Path | None = None) -> dict[str, str]:
    """``{hf:<id>:<config>/<split>: "revision <commit>" | "fingerprint <hash>"}`` of what a hub (or clone) load
    read; local files are hashed by :func:`registry.file_checksums` instead."""
    src = parse(spec, root)
    if not src.by_datasets:
        return {}
    configs = [src.config] + (list(PARTS) if is_retrieval(src) else [])
    out = {}
    for config in configs:
        loaded = _dataset_dict(src, config)
        splits = list(loaded) if config in PARTS or split == "all" else [s for s in loaded if s == split]
        for name in splits:
            ds = loaded[name]
            revision = next((part for f in ds.cache_files for part in Path(f["filename"]).parts
                             if re.fullmatch(r"[0-9a-f]{40}", part)), None)
            value = f"revision {revision}" if revision else f"fingerprint {ds._fingerprint}"
            out[f"hf:{src.target}:{config or 'default'}/{name}"] = value
    return out


def load_hf(spec: str, split: str = "test", root: Path | None = None, want: str = "eval"
            ) -> STSPairs | RetrievalSet | Triplets:
    """``want``: ``eval`` (STS pairs or a retrieval set), ``triplets`` (training pairs/triplets; a retrieval set
    gives its (query, positive document) pairs) or ``pairs`` (scored pairs). Prints the columns it read."""
    src = parse(spec, root)
    if is_retrieval(src):
        if want == "pairs":
            raise M2DError(f"{spec}: is a retrieval set, not scored sentence pairs ({columns.describe('sts')})")
        data, cols = columns.to_retrieval(*retrieval_tables(src, split), name=src.name, split=split)
        _say(spec, split, "retrieval set", cols, f"{len(data.queries)} queries, {len(data.corpus)} documents")
        if want == "triplets":
            return qrels_pairs(data)
        return data
    table = main_table(src, split)
    if want == "triplets":
        triplets, cols = columns.to_triplets(table, src.name, split)
        _say(spec, split, "training pairs" if not triplets.negatives else "training triplets", cols,
             f"{len(triplets)} rows")
        return triplets
    kind = columns.kind_of(table) if want == "eval" else "sts"
    if kind != "sts":
        held = {"triplets": "holds training pairs/triplets", "qrels": "holds qrels but no corpus and queries beside "
                "them"}.get(kind or "", "is not an evaluation set")
        raise M2DError(f"{table.source}: {held} (columns {', '.join(table.names)}); evaluation reads STS pairs "
                       f"({columns.describe('sts')}) or a retrieval set (qrels {columns.describe('qrels')}, with "
                       "corpus and queries)")
    pairs, cols = columns.to_sts(table, src.name, split)
    _say(spec, split, "scored pairs", cols, f"{len(pairs)} pairs")
    return pairs


def _say(spec: str, split: str, what: str, cols: str, size: str) -> None:
    """The one line that says which columns a run read."""
    print(f"data: {spec} ({split}): {what} from columns {cols}; {size}", flush=True)
