"""NLI triplets (anchor, entailment, contradiction) from the ready tsv or from SentEval's SNLI files.

The derivation mirrors sentence-transformers' all-nli "triplet" subset: for each premise, every entailment
hypothesis is paired with every contradiction hypothesis of that premise, premises in first-seen order.
"""

from __future__ import annotations

from pathlib import Path

from matryoshka2d.errors import M2DError

from ._io import iter_lines, read_lines, where
from .types import Triplets

TRIPLET_HEADER = ("split", "anchor", "entailment", "contradiction")
NLI_LABELS = ("entailment", "neutral", "contradiction")
SENTEVAL_SPLITS = ("train", "dev", "test")


def load_triplet_tsv(path: str | Path, split: str = "dev", name: str | None = None) -> Triplets:
    """The ``split, anchor, entailment, contradiction`` tsv[.gz]; ``split='all'`` keeps every row."""
    path = Path(path)
    out = Triplets(name=name or _stem(path), split=split, anchors=[], positives=[], negatives=[])
    splits_seen: set[str] = set()
    for lineno, line in iter_lines(path):
        cols = line.split("\t")
        if lineno == 1:
            if tuple(c.strip() for c in cols) != TRIPLET_HEADER:
                raise M2DError(f"{where(path, 1)}: expected header {' '.join(TRIPLET_HEADER)!r} (tab-separated)")
            continue
        if not line.strip():
            continue
        if len(cols) != 4:
            raise M2DError(f"{where(path, lineno)}: expected 4 tab-separated columns, got {len(cols)}")
        splits_seen.add(cols[0])
        if split in ("all", cols[0]):
            out.anchors.append(cols[1].strip())
            out.positives.append(cols[2].strip())
            out.negatives.append(cols[3].strip())
    if not out.anchors:
        have = ", ".join(sorted(splits_seen)) or "none (file is empty)"
        raise M2DError(f"{path}: no triplets for split {split!r} (splits in file: {have}, or 'all')")
    return out


def _stem(path: Path) -> str:
    """``x.tsv.gz`` -> ``x``."""
    name = path.name
    for suffix in (".gz", ".tsv"):
        name = name.removesuffix(suffix)
    return name


def senteval_splits(folder: Path) -> list[str]:
    """Splits that have all three SentEval files (``s1.X``, ``s2.X``, ``labels.X``)."""
    return [s for s in SENTEVAL_SPLITS if all((folder / f"{p}.{s}").is_file() for p in ("s1", "s2", "labels"))]


def triplets_from_senteval(folder: str | Path, split: str = "dev", name: str | None = None) -> Triplets:
    """Derive triplets from SentEval's aligned ``s1/s2/labels`` files (``split='all'``: every split present)."""
    folder = Path(folder)
    have = senteval_splits(folder)
    wanted = have if split == "all" else [split]
    if not wanted or any(s not in have for s in wanted):
        raise M2DError(f"{folder}: no s1.{split}/s2.{split}/labels.{split} (splits present: {', '.join(have) or 'none'})")
    out = Triplets(name=name or folder.name, split=split, anchors=[], positives=[], negatives=[])
    for s in wanted:
        for anchor, pos, neg in _derive(folder, s):
            out.anchors.append(anchor)
            out.positives.append(pos)
            out.negatives.append(neg)
    return out


def _derive(folder: Path, split: str) -> list[tuple[str, str, str]]:
    """One split's triplets; SentEval lines carry a trailing space, stripped to match the tsv."""
    paths = [folder / f"{p}.{split}" for p in ("s1", "s2", "labels")]
    s1, s2, labels = (read_lines(p) for p in paths)
    if not len(s1) == len(s2) == len(labels):
        raise M2DError(f"{folder}: s1.{split}, s2.{split}, labels.{split} have {len(s1)}, {len(s2)}, {len(labels)} "
                       "lines; they must align")
    groups: dict[str, dict[str, list[str]]] = {}
    for lineno, (premise, hyp, label) in enumerate(zip(s1, s2, labels), start=1):
        label = label.strip()
        if label not in NLI_LABELS:
            raise M2DError(f"{where(paths[2], lineno)}: label {label!r} not one of {', '.join(NLI_LABELS)}")
        groups.setdefault(premise.strip(), {lab: [] for lab in NLI_LABELS})[label].append(hyp.strip())
    return [(p, e, c) for p, g in groups.items() for e in g["entailment"] for c in g["contradiction"]]
