"""Export one (layer, dim) cell as a standalone SentenceTransformer folder.

The encoder is cut to its first ``layer`` blocks (the dropped blocks' weights are not saved and never run; a
decoder keeps its final norm, so the cut model's output is the grid's layer), and sentence-transformers' own
modules reproduce the grid's cell. A model scored by dot product (``similarity_fn_name: dot``) is exported as
``pooled[:dim]`` (``truncate_dim``, no normalisation: the dot product is the score); a cosine model as
``normalize(pooled[:dim])``:
Transformer -> Pooling -> Dense(H -> dim) -> Normalize, plus ``truncate_dim=dim`` in
``config_sentence_transformers.json``. ST applies ``truncate_dim`` *after* every module, so Normalize alone
followed by ``truncate_dim`` would give a truncated unit vector, not a unit vector; the Dense is a bias-free
identity ``[:dim]`` rows of I_H with an Identity activation, an exact copy of the first ``dim`` values, placed
before Normalize. ``SentenceTransformer(DIR)`` loads the folder without this package.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .. import storage
from ..errors import M2DError

REPORT = storage.EXPORT


def resolve_source(name: str) -> str:
    """An ``m2d train`` output dir (its ``model/``), a model dir, an alias or a hub name."""
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and (path / storage.MODEL / "config.json").is_file():
        return str(path / storage.MODEL)
    return name


def check_cell(layer: int, dim: int, num_layers: int, hidden_size: int) -> None:
    if not 1 <= layer <= num_layers:
        raise M2DError(f"--layer: {layer} is out of range; allowed 1..{num_layers} (the model's blocks)")
    if not 1 <= dim <= hidden_size:
        raise M2DError(f"--dim: {dim} is out of range; allowed 1..{hidden_size} (the hidden size)")


# the files every export writes (whatever the tokenizer adds): checked against a --force target before weights load
ALWAYS_WRITTEN = ("config.json", "model.safetensors", "tokenizer_config.json", "modules.json",
                  "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json", REPORT)


def check_out(out: str | Path, force: bool = False, source: str | None = None) -> tuple[Path, list[str]]:
    """(``out``, the files a previous export there wrote): a new or empty folder; with ``force``, a folder holding a
    previous export, of which only the files its ``export.json`` lists will be replaced.

    Any other non-empty folder is refused even with ``force``, and so is a previous export folder in which a file
    this export writes exists but was not written by that export: a user's own files are never deleted."""
    out = storage.check_creatable(out, "--out")
    if source and Path(source).exists() and out.resolve() == Path(source).resolve():
        raise M2DError(f"--out: {out} is the source model folder; give a new folder")
    if not (out.is_dir() and any(out.iterdir())):
        return out, []
    if not force:
        raise M2DError(f"--out: {out} is not empty; give a new folder, or --force to replace a previous export")
    if not (out / REPORT).is_file():
        raise M2DError(f"--out: {out} is not empty and holds no {REPORT} (not an m2d export); --force only "
                       f"replaces a previous export, give a new folder")
    previous = written_files(out)
    check_foreign(ALWAYS_WRITTEN, out, previous)
    return out, previous


def written_files(out: Path) -> list[str]:
    """The files the export in ``out`` wrote, from its ``export.json`` (each inside ``out``)."""
    path = out / REPORT
    files = storage.read_json(path, REPORT).get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise M2DError(f"{path}: no 'files' list (what that export wrote; exports before it was recorded have none), "
                       "so --force cannot tell its files from yours; give a new folder")
    root = out.resolve()
    for name in files:
        target = (out / name).resolve()
        if Path(name).is_absolute() or target == root or not target.is_relative_to(root):
            raise M2DError(f"{path}: lists {name!r}, a path outside the export folder; give a new folder")
    return files if REPORT in files else files + [REPORT]  # its own export.json is always the tool's


def check_foreign(names, out: Path, previous: list[str]) -> None:
    """Refuse when a file the export writes exists in ``out`` and the previous export did not write it."""
    foreign = [n for n in names if (out / n).exists() and n not in previous]
    if foreign:
        raise M2DError(f"--out: {out / foreign[0]} is not from the previous export (its {REPORT} does not list it); "
                       "--force replaces only what m2d export wrote: move the file or give a new folder")


def install(stage: Path, out: Path, previous: list[str]) -> None:
    """Move the export written to ``stage`` into ``out``: the previous export's own files are deleted first (and
    the folders they leave empty); every other file in ``out`` stays."""
    for name in previous:
        target = out / name
        if target.is_file() or target.is_symlink():
            target.unlink()
        for folder in target.parents:
            if folder == out or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)
    for name in staged_files(stage):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage / name), str(out / name))


def staged_files(stage: Path) -> list[str]:
    return sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())


def folder_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path`` (recursively)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_cell(encoder, layer: int, dim: int, out: Path):
    """Cut ``encoder`` (in place) to ``layer`` blocks and save the cell to ``out`` (a new folder), with the encoder's
    prompts and similarity; returns the loaded ST model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    from ..encoder import save_sentence_transformer, truncate_layers

    hidden = encoder.hidden_size
    truncate_layers(encoder, layer)
    save_sentence_transformer(encoder, out)  # Transformer + Pooling with the source's pooling and max length
    model = SentenceTransformer(str(out), device="cpu")
    if encoder.similarity == "dot":  # the score is the raw inner product of the cut vectors
        model.truncate_dim = dim
        model.save(str(out), create_model_card=False)
        return model
    if dim < hidden:
        model.append(Dense(hidden, dim, bias=False, activation_function=torch.nn.Identity(),
                           init_weight=torch.eye(hidden)[:dim].clone()))
    model.append(Normalize())
    model.truncate_dim = dim
    model.save(str(out), create_model_card=False)
    return model


def full_model(source_path: str, encoder):
    """The source as an ST model (Transformer, Pooling, Normalize) with ``encoder``'s pooling and max length:
    the reference the export's size and speed are compared with."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(source_path, max_seq_length=encoder.max_length)
    pooling = Pooling(encoder.hidden_size, encoder.pooling, include_prompt=encoder.include_prompt)
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")


def encode_speed(model, texts: list[str], batch_size: int = 32, repeats: int = 3) -> float:
    """Sentences per second: the best of ``repeats`` timed passes after one warm-up batch (CPU time is shared)."""
    model.encode(texts[:batch_size], batch_size=batch_size)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def bench_texts(n: int, data_dir: str | None = None) -> list[str]:
    """The first ``n`` unique STS-B test sentences (the speed sample)."""
    from .. import data
    from ..evaluate.sts import unique_sentences

    return unique_sentences(data.load("stsb", split="test", data_dir=data_dir))[0][:n]


def hardware() -> dict:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"device": "cpu", "processor": cpu or platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def export_cell(source: str, layer: int, dim: int, out: str | Path, force: bool = False, bench: int = 256,
                data_dir: str | None = None, batch_size: int = 32) -> dict:
    """Write cell (``layer``, ``dim``) of ``source`` to ``out`` and return (and save as ``export.json``) its report:
    sizes on disk, the files written (what a later ``--force`` may replace) and, with ``bench`` > 0, encode speeds of
    the export and the full model on ``bench`` STS-B sentences. Every input is checked (config.json and file names
    only) before weights load; the export is written to a staging folder (in ``out`` if it exists, else beside it) and
    moved in at the end, so a failure leaves a previous export whole."""
    from ..encoder import blocks, load_encoder, resolve_model_path, save_sentence_transformer
    from ..resolve import model_shape

    name = resolve_source(source)
    shape = model_shape(name)
    check_cell(layer, dim, shape.num_layers, shape.hidden_size)
    path = resolve_model_path(name)  # model_shape has refused modules the grid cannot honour (an export's Dense)
    out, previous = check_out(out, force, path)
    if bench < 0:
        raise M2DError(f"--bench: {bench} is negative; give a number of sentences, 0 to skip timing")
    if bench:
        from .. import data

        data.check_files("--bench", "stsb", "test", data_dir)  # the speed sample; --bench 0 skips it
    encoder = load_encoder(name, device="cpu")
    blocks(encoder.module)  # a model whose blocks cannot be found cannot be cut: refused before anything is written
    pooling, max_length = encoder.pooling, encoder.max_length
    full = full_model(path, encoder) if bench else None
    beside = out if out.is_dir() else out.parent  # where check_out found it can write
    beside.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".m2d-export-", dir=beside) as tmp:
        full_bytes = folder_bytes(save_sentence_transformer(encoder, Path(tmp) / "full"))  # like-for-like size
        stage = Path(tmp) / "cell"
        model = write_cell(encoder, layer, dim, stage)
        files = sorted(staged_files(stage) + [REPORT])
        check_foreign(files, out, previous)  # the exact names, before the timing and before anything is deleted
        report = {
            "source": source, "source_path": path, "layer": layer, "dim": dim,
            "num_layers": shape.num_layers, "hidden_size": shape.hidden_size, "pooling": pooling,
            "similarity": encoder.similarity or "cos",
            "max_length": max_length, "modules": [type(m).__name__ for m in model], "size_bytes": folder_bytes(stage),
            "full_size_bytes": full_bytes, "source_size_bytes": folder_bytes(path) if Path(path).is_dir() else None,
            "files": files,
        }
        report["size_ratio"] = report["size_bytes"] / full_bytes
        if bench:
            report["speed"] = bench_report(model, full, bench_texts(bench, data_dir), batch_size)
        (stage / REPORT).write_text(json.dumps(report, indent=2) + "\n")
        install(stage, out, previous)
    return report


def bench_report(model, full, texts: list[str], batch_size: int) -> dict:
    speed = {"sentences": len(texts), "batch_size": batch_size, "export_per_s": encode_speed(model, texts, batch_size),
             "full_per_s": encode_speed(full, texts, batch_size), **hardware()}
    speed["speedup"] = speed["export_per_s"] / speed["full_per_s"]
    return speed


def format_report(report: dict) -> str:
    mb = 1 / 2**20
    lines = [f"cell layer {report['layer']}/{report['num_layers']} dim {report['dim']}/{report['hidden_size']} "
             f"({report['pooling']} pooling, max length {report['max_length']}): {' -> '.join(report['modules'])}",
             f"size {report['size_bytes'] * mb:.2f} MiB vs full {report['full_size_bytes'] * mb:.2f} MiB "
             f"({report['size_ratio']:.1%})"]
    if speed := report.get("speed"):
        lines.append(f"encode {speed['export_per_s']:.1f} sentences/s vs full {speed['full_per_s']:.1f} "
                     f"(x{speed['speedup']:.2f}; {speed['sentences']} STS-B sentences, batch {speed['batch_size']}, "
                     f"{speed['torch_threads']} torch threads, {speed['processor']})")
    return "\n".join(lines)
