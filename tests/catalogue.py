"""One row of the bad-input catalogue (``tests/test_bad_input.py`` runs every row; ``catalogue_*.py`` hold the rows
of the analysis side): the tool, its arguments (``{placeholders}`` filled from the fixtures) and what the one error
line must name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    tool: str  # eval | train | sweep | compare | report | pick | export | reproduce
    args: tuple[str, ...]
    needle: str  # what the one line must name (a field, flag or file)
    space: str | None = None  # sweep: a search-space file with this text
    creates: bool = False  # the case may write into its own fresh --out (a run that fails mid-training)


def E(id, *args, needle):  # noqa: N802 - table constructors
    return Case(id, "eval", args, needle)


def T(id, *args, needle, creates=False):  # noqa: N802
    return Case(id, "train", args, needle, creates=creates)


def S(id, *args, needle, space=None):  # noqa: N802
    return Case(id, "sweep", args, needle, space)


def R(id, tool, *args, needle, creates=False):  # noqa: N802 - compare | report | pick | export | reproduce
    return Case(id, tool, args, needle, creates=creates)
