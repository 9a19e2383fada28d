"""Dataset names -> files and loaders, the data directory, path sniffing, ``hf:`` sources, and file checksums.

One table drives ``load``, ``available_sts_sets`` and ``file_checksums`` so the files a run reports
are exactly the files it read. ``hf:`` specs go to :mod:`.hf` (hub, or local files and folders by their columns).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import M2DError
from ..methods import IN_BATCH
from ._io import first_existing, sha256_prefix
from . import hf
from .nli import senteval_splits, triplets_from_senteval, load_triplet_tsv
from .retrieval import beir_files, beir_training_pairs, load_beir, load_msmarco
from .sts import SEMEVAL_SUBSETS, SICK_FILES, _semeval_files, is_sick_file, load_sick, load_semeval_sts, load_stsb, \
    semeval_subsets_in
from .types import RetrievalSet, STSPairs, Triplets

STS_AVG_SETS = ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr")
MSMARCO_FILES = {  # name -> (topics, qrels), all under <data>/msmarco/
    "msmarco-dev": ("topics.msmarco-passage.dev-subset.txt", "qrels.msmarco-passage.dev-subset.txt"),
    "dl19": ("topics.dl19-passage.txt", "qrels.dl19-passage.txt"),
    "dl20": ("topics.dl20.txt", "qrels.dl20-passage.txt"),
}
SNLI_TSV = "snli-senteval/snli_devtest_triplets.tsv.gz"


def data_dir(override: str | Path | None = None) -> Path:
    """``override``, else ``$M2D_DATA_DIR``, else ``./data``; it must exist (checked here, once, clearly)."""
    raw = override if override not in (None, "") else os.environ.get("M2D_DATA_DIR") or "data"
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise M2DError(f"data_dir: {path} does not exist; set --data-dir or M2D_DATA_DIR")
    return path.resolve()


@dataclass(frozen=True)
class Entry:
    """A named dataset: its kind, its splits, the files a split reads, and how to load it."""

    kind: str  # "sts" | "retrieval" | "triplets"
    splits: tuple[str, ...]
    files: Callable[[Path, str], list[Path]]
    loader: Callable[[Path, str], STSPairs | RetrievalSet | Triplets]


def _semeval_year(name: str) -> Entry:
    def folder(root: Path) -> Path:
        return root / "sts12-16" / name.upper()

    def files(root: Path, split: str) -> list[Path]:
        return [p for s in SEMEVAL_SUBSETS[name] for p in _semeval_files(folder(root), s)]

    return Entry("sts", ("test",), files, lambda root, split: load_semeval_sts(folder(root), name=name))


def _msmarco(name: str) -> Entry:
    topics, qrels = MSMARCO_FILES[name]

    def files(root: Path, split: str) -> list[Path]:
        return [msmarco_collection(root, name), root / "msmarco" / topics, root / "msmarco" / qrels]

    def loader(root: Path, split: str) -> RetrievalSet:
        collection, t, q = files(root, split)
        return load_msmarco(collection, t, q, name, "dev" if name == "msmarco-dev" else split)

    # MS MARCO's "dev small" is the de-facto test set, so ``load("msmarco-dev")`` (split test) works too.
    return Entry("retrieval", ("dev", "test") if name == "msmarco-dev" else ("test",), files, loader)


def msmarco_collection(root: Path, name: str = "msmarco") -> Path:
    """The passage collection, checked before anything else is read, since it is the usual missing piece."""
    found = first_existing(root / "msmarco" / "collection.tsv", root / "msmarco" / "collection.tsv.gz")
    if found is None:
        raise M2DError(f"{name}: the MS MARCO passage collection is missing: put collection.tsv (pid<TAB>passage, "
                       f"8.8M passages, from collectionandqueries.tar.gz) at {root / 'msmarco' / 'collection.tsv'}")
    return found


def _snli_files(root: Path, split: str) -> list[Path]:
    if split in ("dev", "test", "all"):
        return [root / SNLI_TSV]
    folder = root / "snli-senteval"
    if split not in senteval_splits(folder):
        raise M2DError(f"snli: split {split!r} not available in {folder} (the SNLI train split is not in this data "
                       "dir); allowed: dev, test, all")
    return [folder / f"{p}.{split}" for p in ("s1", "s2", "labels")]


def _snli_load(root: Path, split: str) -> Triplets:
    if split in ("dev", "test", "all"):
        return load_triplet_tsv(root / SNLI_TSV, split, name="snli")
    _snli_files(root, split)
    return triplets_from_senteval(root / "snli-senteval", split, name="snli")


REGISTRY: dict[str, Entry] = {
    "stsb": Entry("sts", ("train", "dev", "test"), lambda r, s: [r / "stsb" / f"sts-{s}.csv"],
                  lambda r, s: load_stsb(r / "stsb" / f"sts-{s}.csv", s)),
    **{name: _semeval_year(name) for name in SEMEVAL_SUBSETS},
    "sickr": Entry("sts", ("train", "dev", "test"), lambda r, s: [r / "sick" / SICK_FILES[s]],
                   lambda r, s: load_sick(r / "sick" / SICK_FILES[s], s)),
    "scifact": Entry("retrieval", ("test", "train"), lambda r, s: list(beir_files(r / "scifact", s)),
                     lambda r, s: load_beir(r / "scifact", s, name="scifact")),
    **{name: _msmarco(name) for name in MSMARCO_FILES},
    "snli": Entry("triplets", ("dev", "test", "all", "train"), _snli_files, _snli_load),
}
EVAL_NAMES = tuple(n for n, e in REGISTRY.items() if e.kind != "triplets")


def _entry(name: str, split: str) -> Entry:
    """Registry entry with the split checked against the ones it has."""
    entry = REGISTRY[name]
    if split not in entry.splits:
        raise M2DError(f"{name}: split {split!r} not available; allowed: {', '.join(entry.splits)}")
    return entry


def _unknown(name: str) -> M2DError:
    return M2DError(f"unknown dataset {name!r} (and no such path); allowed names: {', '.join(EVAL_NAMES)}; "
                    "or a path (BEIR folder, SemEval STS folder, STS-B .csv, SICK file) or hf:<dataset>[:<config>] "
                    "(a hub id, or a .parquet/.jsonl/.json/.csv file, a folder of them or a save_to_disk folder)")


def _root(override: str | Path | None) -> Path | None:
    """The data dir for ``hf:`` paths: a given one must exist; the default one may be absent (then: none)."""
    if override not in (None, ""):
        return data_dir(override)
    try:
        return data_dir(None)
    except M2DError:
        return None


def _existing_path(name: str, root: str | Path | None) -> Path | None:
    """``name`` as a path: as given, else relative to the data dir (when one is configured)."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if not path.is_absolute():
        try:
            candidate = data_dir(root) / path
        except M2DError:
            return None
        if candidate.exists():
            return candidate
    return None


def _sniff(path: Path, split: str) -> tuple[list[Path], Callable[[], STSPairs | RetrievalSet]]:
    """(files, loader) for an evaluation dataset given by path, recognised by its contents."""
    if path.is_dir():
        if first_existing(path / "corpus.jsonl", path / "corpus.jsonl.gz"):
            return list(beir_files(path, split)), lambda: load_beir(path, split)
        found = semeval_subsets_in(path)
        if found:
            return [p for _, i, g in found for p in (i, g)], lambda: load_semeval_sts(path)
        if (path / f"sts-{split}.csv").is_file():
            return [path / f"sts-{split}.csv"], lambda: load_stsb(path / f"sts-{split}.csv", split)
        if split in SICK_FILES and (path / SICK_FILES[split]).is_file():
            return [path / SICK_FILES[split]], lambda: load_sick(path / SICK_FILES[split], split)
        raise M2DError(f"{path}: cannot tell the dataset format (expected corpus.jsonl[.gz], STS.input.*.txt, "
                       f"sts-{split}.csv or a SICK file)")
    if is_sick_file(path):
        return [path], lambda: load_sick(path, split if split in SICK_FILES else None, name=path.stem)
    if path.suffix == ".csv":
        return [path], lambda: load_stsb(path, name=path.stem)
    raise M2DError(f"{path}: cannot tell the dataset format (expected a .csv STS-B file, a SICK file with a "
                   "pair_ID header, or a folder)")


def load(name_or_path: str, split: str = "test", data_dir: str | Path | None = None) -> STSPairs | RetrievalSet:
    """An evaluation dataset by registry name, ``hf:`` spec, or path (format recognised from contents)."""
    name = str(name_or_path)
    if name.startswith("hf:"):
        return hf.load_hf(name, split, _root(data_dir), want="eval")  # type: ignore[return-value]
    if name in REGISTRY:
        entry = _entry(name, split)
        if entry.kind == "triplets":
            raise M2DError(f"{name}: is a training set of triplets, not an evaluation set; use load_triplets")
        return entry.loader(_data_dir(data_dir), split)  # type: ignore[return-value]
    path = _existing_path(name, data_dir)
    if path is None:
        raise _unknown(name)
    return _sniff(path, split)[1]()


def _data_dir(override: str | Path | None) -> Path:
    """``data_dir`` for functions whose public ``data_dir=`` parameter shadows it."""
    return data_dir(override)


def available_sts_sets(data_dir: str | Path | None = None) -> list[str]:
    """The ``STS_AVG_SETS`` whose test files are all present (the STS average is over these)."""
    root = _data_dir(data_dir)
    present = []
    for name in STS_AVG_SETS:
        try:
            files = REGISTRY[name].files(root, "test")
        except M2DError:
            continue
        if all(p.is_file() for p in files):
            present.append(name)
    return present


def expand_eval_names(names: list[str], data_dir: str | Path | None = None) -> tuple[list[str], bool]:
    """``sts-avg`` stands for every STS set available under the data dir, plus their per-cell mean (the second
    value: whether the mean was asked for)."""
    if "sts-avg" not in names:
        return list(dict.fromkeys(names)), False
    expanded: list[str] = []
    for name in names:
        expanded.extend(available_sts_sets(data_dir) if name == "sts-avg" else [name])
    if not expanded:
        raise M2DError("sts-avg: no STS set found under the data dir")
    return list(dict.fromkeys(expanded)), True


def load_scored_pairs(name_or_path: str = "stsb", split: str = "train",
                      data_dir: str | Path | None = None) -> STSPairs:
    """Scored pairs for training (e.g. STS-B train, CoSENT/AnglE-style losses)."""
    if str(name_or_path).startswith("hf:"):
        return hf.load_hf(str(name_or_path), split, _root(data_dir), want="pairs")  # type: ignore[return-value]
    data = load(name_or_path, split, data_dir)
    if not isinstance(data, STSPairs):
        raise M2DError(f"{name_or_path}: is a retrieval set, not scored sentence pairs")
    return data


def load_triplets(name_or_path: str = "snli", split: str = "dev", data_dir: str | Path | None = None) -> Triplets:
    """NLI triplets: ``snli``, a triplet tsv[.gz], a SentEval SNLI folder (derived the same way), or ``hf:`` pairs or
    triplets (anchor, positive[, negative] and their aliases)."""
    name = str(name_or_path)
    if name.startswith("hf:"):
        return hf.load_hf(name, split, _root(data_dir), want="triplets")  # type: ignore[return-value]
    if name in REGISTRY:
        if REGISTRY[name].kind != "triplets":
            raise M2DError(f"{name}: not a triplet set; allowed: snli, a triplet .tsv[.gz] or a SentEval SNLI folder")
        return _entry(name, split).loader(_data_dir(data_dir), split)  # type: ignore[return-value]
    path = _existing_path(name, data_dir)
    if path is None:
        raise M2DError(f"unknown triplet set {name!r} (and no such path); allowed: snli, a triplet .tsv[.gz], "
                       "a SentEval SNLI folder (s1.<split>, s2.<split>, labels.<split>) or hf:<dataset>[:<config>]")
    if path.is_dir():
        return triplets_from_senteval(path, split)
    return load_triplet_tsv(path, split)


def load_retrieval_train(name: str = "scifact", data_dir: str | Path | None = None, split: str = "train") -> Triplets:
    """(query, positive doc) pairs from a BEIR set's (or an ``hf:`` retrieval set's) training qrels; negatives empty
    (in-batch negatives)."""
    if name.startswith("hf:"):
        return hf.load_hf(name, split, _root(data_dir), want="triplets")  # type: ignore[return-value]
    if name in REGISTRY and REGISTRY[name].kind == "retrieval" and name not in MSMARCO_FILES:
        return beir_training_pairs(_data_dir(data_dir) / name, split, name=name)
    path = _existing_path(name, data_dir)
    if path is None or not path.is_dir():
        raise M2DError(f"unknown retrieval training set {name!r}; allowed: scifact or a BEIR folder with qrels/{split}.tsv")
    return beir_training_pairs(path, split)


def dataset_files(name_or_path: str, split: str = "test", data_dir: str | Path | None = None) -> list[Path]:
    """The files ``load``/``load_triplets`` read for this dataset and split."""
    name = str(name_or_path)
    if name.startswith("hf:"):
        return hf.files(name, split, _root(data_dir))
    if name in REGISTRY:
        return _entry(name, split).files(_data_dir(data_dir), split)
    path = _existing_path(name, data_dir)
    if path is None:
        raise _unknown(name)
    if path.is_dir() and senteval_splits(path) and not semeval_subsets_in(path):
        return [path / f"{p}.{s}" for s in (senteval_splits(path) if split == "all" else [split])
                for p in ("s1", "s2", "labels")]
    if path.is_file() and path.name.endswith((".tsv", ".tsv.gz")):
        return [path]
    return _sniff(path, split)[0]


def train_source(task_loss: str, name: str, split: str, data_dir: str | Path | None = None) -> tuple[str, str, str]:
    """What a training run reads: (kind, dataset, split). ``mnrl`` / ``ce`` take triplets or, for a BEIR set (``scifact``
    or a BEIR folder), (query, positive) pairs of its training qrels; score losses take scored pairs (``snli`` has
    none, so they train on STS-B train). An ``hf:`` source reads split ``train`` for ``all`` (the default), else the
    split given; it is a retrieval set when its columns say so."""
    if name.startswith("hf:"):
        split = "train" if split == "all" else split
        if task_loss not in IN_BATCH:
            return "pairs", name, split
        return ("retrieval" if _hf_retrieval(name, data_dir) else "triplets"), name, split
    if task_loss in IN_BATCH:
        if name in REGISTRY and REGISTRY[name].kind == "retrieval":
            return "retrieval", name, "train"
        path = None if name in REGISTRY else _existing_path(name, data_dir)
        if path is not None and path.is_dir() and first_existing(path / "corpus.jsonl", path / "corpus.jsonl.gz"):
            return "retrieval", name, "train"
        return "triplets", name, split
    return "pairs", "stsb" if name == "snli" else name, "train"


def _hf_retrieval(name: str, data_dir: str | Path | None) -> bool:
    """Whether an ``hf:`` source is a retrieval set; one that cannot be read is not (its loader says why)."""
    try:
        return hf.is_retrieval(hf.parse(name, _root(data_dir)))
    except M2DError:
        return False


def load_train_source(task_loss: str, name: str, split: str, data_dir: str | Path | None = None):
    """The training set of :func:`train_source` (``Triplets`` or ``STSPairs``)."""
    kind, name, split = train_source(task_loss, name, split, data_dir)
    if kind == "retrieval":
        return load_retrieval_train(name, data_dir=data_dir, split=split)
    if kind == "triplets":
        return load_triplets(name, split=split, data_dir=data_dir)
    return load_scored_pairs(name, split=split, data_dir=data_dir)


def check_files(field: str, name: str, split: str, data_dir: str | Path | None = None) -> list[Path]:
    """The files a dataset split reads, each present; else one line naming ``field`` and the first missing file.
    Cheap: nothing is parsed (the loaders check contents line by line)."""
    try:
        files = dataset_files(name, split, data_dir)
    except M2DError as err:
        raise M2DError(f"{field}: {err}") from None
    for path in files:
        if not path.is_file():
            raise M2DError(f"{field}: {name!r} ({split}) reads {path}, which does not exist")
    return files


def file_checksums(name: str, split: str, data_dir: str | Path | None = None) -> dict[str, str]:
    """``{file: sha256[:16]}`` for run tracking; keys are relative to the data dir when inside it.

    A hub ``hf:`` dataset has no local files: its entries are ``{hf:<id>:<config>/<split>: revision or fingerprint}``.
    """
    files = dataset_files(name, split, data_dir)
    try:
        root: Path | None = _data_dir(data_dir)
    except M2DError:
        root = None
    out = {}
    for path in files:
        if not path.is_file():
            raise M2DError(f"{name}: {path} not found")
        resolved = path.resolve()
        key = str(resolved.relative_to(root)) if root and resolved.is_relative_to(root) else str(resolved)
        out[key] = sha256_prefix(path)
    if name.startswith("hf:"):
        out.update(hf.fingerprints(name, split, _root(data_dir)))
    return out
