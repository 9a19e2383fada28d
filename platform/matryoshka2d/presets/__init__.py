"""The one place that finds the bundled YAML: method presets, sweep spaces, reproduction studies, overlays.

They ship inside the package (``pip install .`` of a wheel has them) and ``experiments/{configs,spaces,studies}``
are symlinks to these folders, so editing ``experiments/configs/v2.yaml`` in a checkout edits the preset.
Overlays (``configs/overlays/``) are partial configs a command applies on top of a preset (sweep defaults,
``--smoke``); a subfolder, so that they are never listed as presets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import M2DError

ROOT = Path(__file__).resolve().parent
# kind -> the error lines' words: (label of a name, label of a path, one of them, all of them)
KINDS = {"configs": ("config", "config", "preset", "presets"), "spaces": ("--space", "space", "space", "spaces"),
         "studies": ("--study", "study", "study", "studies"), "overlays": ("overlay", "overlay", "overlay", "overlays")}
FOLDERS = {"overlays": Path("configs") / "overlays"}  # the other kinds' folders are their names


def folder(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"presets: unknown kind {kind!r}; one of {', '.join(KINDS)}")  # a caller's bug
    return ROOT / FOLDERS.get(kind, kind)


def names(kind: str) -> list[str]:
    """The bundled names of a kind, sorted (``*.yaml`` directly in its folder: overlays are not presets)."""
    return sorted(p.stem for p in folder(kind).glob("*.yaml"))


def find(kind: str, name_or_path: str | Path, also: Sequence[str] = ()) -> Path:
    """An existing file wins, else the bundled ``<name>.yaml``; ``also``: names the caller handles itself
    (a study's ``all``), listed in the error so it stays the whole menu."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = folder(kind) / f"{name_or_path}.yaml"
    if path.name == str(name_or_path) and candidate.is_file():  # a bare name, never ../ out of the folder
        return candidate
    label, file_label, one, many = KINDS[kind]
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:  # meant as a path: the name list is noise
        raise M2DError(f"{file_label} {name_or_path}: file not found")
    raise M2DError(f"{label}: {name_or_path} is neither a file nor a {one}; {many}: "
                   f"{', '.join([*names(kind), *also])}")
