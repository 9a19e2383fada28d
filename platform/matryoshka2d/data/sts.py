"""STS loaders: STS Benchmark csv, SemEval STS 2012-2016 raw releases, SICK.

Each returns ``STSPairs`` with gold scores in the dataset's own range (0..5, SICK 1..5);
every malformed row is reported with its file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

from matryoshka2d.errors import M2DError

from ._io import parse_score, read_lines, where
from .types import STSPairs

# SentEval's subset lists (STS13 has no SMT subset: it was withheld for licensing reasons).
SEMEVAL_SUBSETS: dict[str, tuple[str, ...]] = {
    "sts12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "sts13": ("FNWN", "headlines", "OnWN"),
    "sts14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "sts15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "sts16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}

_STSB_COLUMNS = (7, 9)  # some rows carry 2 extra source/licence columns
_INPUT_RE = re.compile(r"^(STS(?:2016)?)\.input\.(.+)\.txt$")


def load_stsb(path: str | Path, split_name: str | None = None, name: str = "stsb") -> STSPairs:
    """STS-B csv: tab-separated and *unquoted* (sentences contain ``"``), score in column 4 (0-based)."""
    path = Path(path)
    split = split_name or _split_from_stsb_name(path)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for lineno, line in enumerate(read_lines(path), start=1):
        cols = line.split("\t")
        if len(cols) not in _STSB_COLUMNS:
            raise M2DError(f"{where(path, lineno)}: expected 7 or 9 tab-separated columns, got {len(cols)}")
        scores.append(parse_score(cols[4], path, lineno, 0.0, 5.0))
        s1.append(_sentence(cols[5], path, lineno, "sentence1"))
        s2.append(_sentence(cols[6], path, lineno, "sentence2"))
    return STSPairs(name=name, split=split, sentences1=s1, sentences2=s2, scores=scores)


def _split_from_stsb_name(path: Path) -> str:
    """``sts-dev.csv`` -> ``dev``; anything else keeps its stem, so results stay traceable."""
    stem = path.stem
    return stem[4:] if stem.startswith("sts-") else stem


def _sentence(text: str, path: Path, lineno: int, field: str) -> str:
    """Stripped sentence; an empty one would silently score as a perfect or random match."""
    text = text.strip()
    if not text:
        raise M2DError(f"{where(path, lineno)}: {field} is empty")
    return text


def semeval_subsets_in(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(subset, input file, gs file)`` for every input file that has a gold file (skips LICENSE txts)."""
    found = []
    for inp in sorted(folder.iterdir()):
        match = _INPUT_RE.match(inp.name)
        if match:
            gs = folder / f"{match.group(1)}.gs.{match.group(2)}.txt"
            if gs.is_file():
                found.append((match.group(2), inp, gs))
    return found


def _semeval_files(folder: Path, subset: str) -> tuple[Path, Path]:
    """Input/gold paths for one subset; 2016 files carry the year in their prefix."""
    for prefix in ("STS", "STS2016"):
        inp, gs = folder / f"{prefix}.input.{subset}.txt", folder / f"{prefix}.gs.{subset}.txt"
        if inp.is_file():
            if not gs.is_file():
                raise M2DError(f"{gs}: gold score file not found for {inp.name}")
            return inp, gs
    raise M2DError(f"{folder}: no STS.input.{subset}.txt or STS2016.input.{subset}.txt for subset {subset!r}")


def _year_key(folder: Path) -> str | None:
    """``.../STS12`` -> ``sts12`` so a year folder uses SentEval's fixed subset list."""
    key = folder.name.lower()
    return key if key in SEMEVAL_SUBSETS else None


def load_semeval_sts(path: str | Path, year: int | str | None = None,
                     subsets: list[str] | tuple[str, ...] | None = None, name: str | None = None) -> STSPairs:
    """All subsets of one SemEval STS year, concatenated in subset order, with ``subsets`` filled.

    ``path`` is the year folder (``.../STS12``) or its parent with ``year=12``. A known year folder uses
    SentEval's subset list (so stray files do not change the benchmark); any other folder uses every
    ``STS*.input.X.txt`` that has a matching gold file. Pairs whose gold line is empty are unscored: skipped.
    """
    folder = Path(path)
    if year is not None:
        folder = folder / f"STS{int(year) % 100:02d}"
    if not folder.is_dir():
        raise M2DError(f"{folder}: SemEval STS folder not found")
    key = _year_key(folder)
    if subsets is None and key is not None:
        subsets = SEMEVAL_SUBSETS[key]
    if subsets is not None:
        files = [(s, *_semeval_files(folder, s)) for s in subsets]
    else:
        files = semeval_subsets_in(folder)
    if not files:
        years = sorted(p.name for p in folder.glob("STS1[2-6]") if p.is_dir())
        hint = f" (it has year folders {', '.join(years)}: pass year=)" if years else ""
        raise M2DError(f"{folder}: no STS.input.*.txt / STS.gs.*.txt file pairs found{hint}")
    out = STSPairs(name=name or key or folder.name, split="test", sentences1=[], sentences2=[], scores=[], subsets=[])
    for subset, inp, gs in files:
        _read_semeval_subset(subset, inp, gs, out)
    return out


def _read_semeval_subset(subset: str, inp: Path, gs: Path, out: STSPairs) -> None:
    """Append one aligned input/gold file pair to ``out``."""
    inputs, golds = read_lines(inp), read_lines(gs)
    if len(inputs) != len(golds):
        raise M2DError(f"{gs}: has {len(golds)} lines but {inp.name} has {len(inputs)}; they must align line by line")
    for lineno, (line, gold) in enumerate(zip(inputs, golds), start=1):
        if not gold.strip():
            continue
        cols = line.split("\t")
        if len(cols) not in (2, 4):
            raise M2DError(f"{where(inp, lineno)}: expected 2 (or 4, STS16) tab-separated columns, got {len(cols)}")
        out.scores.append(parse_score(gold, gs, lineno, 0.0, 5.0))
        out.sentences1.append(_sentence(cols[0], inp, lineno, "sentence1"))
        out.sentences2.append(_sentence(cols[1], inp, lineno, "sentence2"))
        out.subsets.append(subset)  # type: ignore[union-attr]


SICK_FILES = {"test": "SICK_test_annotated.txt", "train": "SICK_train.txt", "dev": "SICK_trial.txt",
              "trial": "SICK_trial.txt"}
_SICK_SETS = {"train": "TRAIN", "dev": "TRIAL", "trial": "TRIAL", "test": "TEST"}


def load_sick(path: str | Path, split: str | None = None, name: str = "sickr") -> STSPairs:
    """SICK relatedness (1..5), columns found by header name so every SICK release layout works.

    The full ``SICK.txt`` has a ``SemEval_set`` column; when ``split`` is given only that set is kept.
    """
    path = Path(path)
    lines = read_lines(path)
    header = lines[0].split("\t")
    cols = {h.strip(): i for i, h in enumerate(header)}
    missing = [c for c in ("pair_ID", "sentence_A", "sentence_B", "relatedness_score") if c not in cols]
    if missing:
        raise M2DError(f"{where(path, 1)}: SICK header lacks column(s) {', '.join(missing)}")
    keep = _SICK_SETS.get(split or "") if "SemEval_set" in cols else None
    out = STSPairs(name=name, split=split or _sick_split(path), sentences1=[], sentences2=[], scores=[])
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != len(header):
            raise M2DError(f"{where(path, lineno)}: expected {len(header)} tab-separated columns, got {len(row)}")
        if keep is not None and row[cols["SemEval_set"]].strip() != keep:
            continue
        out.scores.append(parse_score(row[cols["relatedness_score"]], path, lineno, 1.0, 5.0, "relatedness_score"))
        out.sentences1.append(_sentence(row[cols["sentence_A"]], path, lineno, "sentence_A"))
        out.sentences2.append(_sentence(row[cols["sentence_B"]], path, lineno, "sentence_B"))
    if not out.scores:
        raise M2DError(f"{path}: no SICK pairs{f' in set {keep}' if keep else ''}")
    return out


def _sick_split(path: Path) -> str:
    """Split implied by the standard SICK file names, else the file stem."""
    for split, fname in SICK_FILES.items():
        if path.name == fname:
            return split
    return path.stem


def is_sick_file(path: Path) -> bool:
    """SICK files are recognised by their header, not their name (``.txt`` says nothing)."""
    try:
        with open(path, "rb") as fh:
            return fh.readline().lstrip(b"\xef\xbb\xbf").startswith(b"pair_ID")
    except OSError:
        return False
