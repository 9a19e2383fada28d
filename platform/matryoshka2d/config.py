"""Typed, validated run configuration loaded from YAML plus ``--set key=value`` overrides.

Every invalid field becomes one :class:`M2DError` line naming the field and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import presets  # the bundled presets (package data; experiments/configs links to them)
from .errors import M2DError
from .methods import MethodConfig


def m2d_home() -> Path:
    """``$M2D_HOME`` or ``~/.matryoshka2d``: the absolute home of the default MLflow store, Ray results, mined negatives
    and the smoke model."""
    return Path(os.environ.get("M2D_HOME") or "~/.matryoshka2d").expanduser().resolve()


POOLINGS = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")  # sentence-transformers' modes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # NaN is never a setting


class ModelConfig(_Strict):
    name: str = "minilm-l6"
    # None: the model folder's own setting, else mean (a causal LM: lasttoken), as sentence-transformers
    pooling: Literal[POOLINGS] | None = None
    max_length: int = Field(64, ge=8, le=8192)
    prompts: dict[str, str] | None = None  # name -> text put before each input (query, document); None: the folder's
    default_prompt_name: str | None = None  # the prompt of inputs with no role (STS, NLI)


class DataConfig(_Strict):
    data_dir: str | None = None  # None: $M2D_DATA_DIR, else ./data
    train: str = "snli"  # snli | stsb | scifact | a path; the task loss decides triplets vs scored pairs
    train_split: str = "all"
    max_train_examples: int | None = Field(None, ge=1)
    # retrieval training (BEIR qrels): negatives per (query, positive) mined by the start model from its top k
    hard_negatives: int = Field(0, ge=0, le=64)
    mine_top_k: int = Field(30, ge=2, le=1000)


class EvalConfig(_Strict):
    # names or paths; "sts-avg" = every STS set in the data dir plus their per-cell mean
    datasets: list[str] = Field(default_factory=lambda: ["stsb"])
    split: str = "dev"
    layers: str | list[int] = "all"
    dims: str | list[int] = "all"
    batch_size: int = Field(128, ge=1)
    # cap per dataset, for quick looks: n STS pairs, or n queries + their judged docs + 10 n other docs
    max_examples: int | None = Field(None, ge=1)
    every_steps: int = Field(0, ge=0)  # 0: evaluate at the end only
    similarity: Literal["cos", "dot"] = "cos"  # retrieval scoring: cos renormalises truncated vectors, dot does not
    fixed_documents: bool = False  # retrieval: documents always from the last layer, queries at (l, d)


class TrainConfig(_Strict):
    seed: int = 42
    batch_size: int = Field(32, ge=2)
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(200, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    bf16: Literal["auto", True, False] = "auto"  # auto: bf16 autocast on CUDA only
    length_bucketing: bool = True
    bucket_batches: int = Field(64, ge=1)  # batches per length-sorted bucket before shuffling batch order
    # length-sorted forward calls per text column: less padding, more calls. 1 is the fastest on CPU and GPU
    # (bench/train_step.py: 3 chunks cut padded/real tokens from 1.36 to 1.10 yet made a CPU step 7-28% slower)
    column_chunks: int = Field(1, ge=1)
    checkpoint_every: int = Field(0, ge=0)  # 0: no periodic checkpoints
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)


class Config(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def _first_error(err: ValidationError) -> str:
    errors = err.errors()
    # a union field fails once per branch (``str``, ``list[float]``): the deepest location is the branch that
    # got furthest, e.g. the NaN inside a list rather than "not a string"
    e = max((x for x in errors if x["loc"][:1] == errors[0]["loc"][:1]), key=lambda x: len(x["loc"]))
    # drop pydantic's union-branch names (``str``, ``list[...]``) from the location
    where = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool")))) or "config"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    elif e["type"] == "literal_error":
        msg = msg.replace("Input should be", "allowed:")
    got = e.get("input")
    return f"{where}: {msg}" + (f" (got {got!r})" if got is not None and not isinstance(got, dict) else "")


def build_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise M2DError(_first_error(err)) from None


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise M2DError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["train.max_steps=200", "method.kl.weight=0"]`` -> nested dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise M2DError(f"--set {pair!r}: expected key=value, e.g. train.max_steps=200")
        key, raw = pair.split("=", 1)
        _set_dotted(out, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def resolve_preset(name_or_path: str | Path) -> Path:
    return presets.find("configs", name_or_path)


def load_yaml(path: str | Path, what: str = "config", shape: str = "top level must be a mapping of sections"
              ) -> dict[str, Any]:
    """A YAML mapping (empty file: ``{}``); bad YAML is one ``<what> <path> line N: invalid YAML (...)`` line, a file
    that is not UTF-8 ``<what> <path>: not valid UTF-8 ...`` and anything but a mapping ``<what> <path>: <shape>``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise M2DError(f"{what} {path}: not valid UTF-8 (byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise M2DError(f"{what} {path}{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(data, dict):
        raise M2DError(f"{what} {path}: {shape}")
    return data


def load_overlay(name: str) -> dict[str, Any]:
    """A partial config a command applies on top of a preset (``presets/configs/overlays/<name>.yaml``: ``sweep``,
    ``smoke``), as a fresh dict."""
    return load_yaml(presets.find("overlays", name), what="overlay")


def load_config(preset: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Preset name (``v2``) or YAML path, then overrides (``--set`` strings or a nested dict)."""
    data = load_yaml(resolve_preset(preset)) if preset else {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return build_config(deep_merge(data, extra))


# THE order in which a run's config is composed, lowest first; a later layer wins field by field. Every command
# (m2d train, m2d sweep, m2d reproduce, a sweep's trials) composes through :func:`compose_layers`:
#   preset      the method preset or YAML file (under everything)
#   overlays    what a command adds to every run: sweep.yaml, then smoke.yaml with --smoke
#   study       a study's base, its scale, its --data option, then the row's own ``set``
#   composed    layers already merged by an earlier call (what a sweep hands each trial)
#   data_dir    --data-dir (or $M2D_DATA_DIR where a command makes it explicit for its workers)
#   sets        --set key=value, in the order given: the user's last word
#   point       the trial's sampled search-space point (or seed): what a sweep varies, above what it shares
LAYERS = ("preset", "overlays", "study", "composed", "data_dir", "sets", "point")


def compose_layers(*, overlays: list[dict] = (), study: list[dict] = (), composed: dict | None = None,
                   data_dir: str | None = None, sets: list[str] | dict | None = None, point: dict | None = None
                   ) -> dict:
    """Every layer above the preset merged in :data:`LAYERS` order, as one nested override dict (a fresh one)."""
    layers = [*overlays, *study, composed or {}, {"data": {"data_dir": data_dir}} if data_dir else {},
              sets if isinstance(sets, dict) else parse_overrides(sets), point or {}]
    out: dict = {}
    for layer in layers:
        out = deep_merge(out, layer)
    return out


def compose(preset: str | Path | None = None, **layers) -> Config:
    """The run's config: ``preset`` under :func:`compose_layers` (same keywords), validated."""
    return load_config(preset, compose_layers(**layers))


# Fields that cannot change the trained weights: a resumed run may differ from its saved config only in these
# (max_steps continues the same run further; evaluation runs in inference mode and draws no random numbers).
RESUME_SAFE = ("train.max_steps", "train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "eval.",
               "train.column_chunks")  # chunked forward calls give the same embeddings (tests/test_train.py)


def resume_conflicts(saved: dict[str, Any], new: "Config") -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for every field that differs and could change the trained weights."""
    a = flatten(saved)
    b = flatten(yaml.safe_load(yaml.safe_dump(new.model_dump(mode="json"))))  # the form config.yaml holds
    missing = object()
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if not k.startswith(RESUME_SAFE) and a.get(k, missing) != b.get(k, missing)]


def numeric_kind(dotted: str) -> str | None:
    """``"int"`` / ``"float"`` for a numeric config field (``train.max_steps`` -> int), ``"other"`` for any other
    field, None for an unknown key (validation reports those)."""
    import types
    import typing

    model: Any = Config
    *sections, last = dotted.split(".")
    for part in sections:
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return None
        model = info.annotation
    info = getattr(model, "model_fields", {}).get(last)
    if info is None:
        return None
    annotation = info.annotation
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    options = tuple(o for o in options if o is not type(None))
    if int in options and bool not in options:
        return "int"  # also int-or-expression fields such as pca_align.k
    if float in options:
        return "float"
    return "other"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"method.kl.weight": 0.3}`` (MLflow params and sweep spaces use dotted keys)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
