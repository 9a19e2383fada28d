"""The all-layer encoder: ONE forward pass returns the pooled embedding of every layer; loading it from a checked
folder; cutting it to its first blocks."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import POOLINGS
from ..errors import M2DError
from .folder import _check_load_report, _read_tokenizer, _reason, default_pooling, read_model
from .pooling import Prompts, pool

# where a model keeps its blocks (BERT, RoBERTa, XLM-R, MPNet | DistilBERT | ModernBERT, Llama, Qwen2/3, Mistral ...)
BLOCK_LISTS = ("encoder.layer", "transformer.layer", "layers", "encoder.layers", "h")
# a norm transformers applies to the LAST block's output only (decoders, ModernBERT): layer l is final_norm(block l),
# which is exactly what the model cut to l blocks returns (its last block is then block l)
FINAL_NORMS = ("norm", "final_norm", "final_layernorm", "ln_f")


class Encoder(nn.Module):
    """A Hugging Face encoder or decoder plus pooling, returning every layer's pooled embedding from one pass.

    ``prompts`` are put before each text by role (``None``: the default prompt); with ``include_prompt`` False the
    prompt's tokens are not pooled. ``similarity`` is the folder's ``similarity_fn_name`` (``cos``/``dot``, None when
    it names none); ``normalize``: a Normalize module follows the pooling in the folder.
    """

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", max_length: int = 128,
                 prompts: Prompts | None = None, include_prompt: bool = True, similarity: str | None = None,
                 normalize: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise M2DError(f"pooling: unknown mode {pooling!r}; allowed {', '.join(POOLINGS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.prompts = prompts or Prompts()
        self.include_prompt = include_prompt
        self.similarity = similarity
        self.normalize = normalize
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:  # decoders: padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        self._prompt_lengths: dict[str, int] = {}

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

    def prompt_length(self, prompt: str) -> int:
        """Tokens of ``prompt`` that are not pooled (``include_prompt`` False), counted as sentence-transformers
        counts them: the prompt tokenised alone, less a trailing special token."""
        if self.include_prompt or not prompt:
            return 0
        if prompt not in self._prompt_lengths:
            ids = self.tokenizer([prompt], truncation=True, max_length=self.max_length)["input_ids"][0]
            self._prompt_lengths[prompt] = len(ids) - (ids[-1] in self.tokenizer.all_special_ids)
        return self._prompt_lengths[prompt]

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                              max_length=max_length or self.max_length)

    def token_ids(self, texts: Sequence[str], role: str | None = None) -> list[list[int]]:
        """Unpadded token ids of the prompted texts, truncated to ``max_length``: callers sort by length and pad each
        batch on its own."""
        prompt = self.prompts.text(role)
        texts = [prompt + t for t in texts] if prompt else list(texts)
        return self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)["input_ids"]

    def _pad(self, ids: list[list[int]], idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """The texts ``idx`` of ``ids`` as one batch, padded to its longest text, always on the right, whatever side
        the tokenizer pads: real tokens then sit at positions 0.. in every architecture (causal ones never attend to
        the pads), so a text's embedding does not depend on its batch. Left padding shifts absolute positions (BERT)
        by the batch's padding; only generation needs it."""
        return dict(self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt", padding_side="right"))

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int = 0) -> torch.Tensor:
        """``hidden`` [B, T, H] -> [B, H] with the configured pooling."""
        return pool(hidden, attention_mask, self.pooling, prompt_length)

    def forward(self, features: dict[str, torch.Tensor], layers: Sequence[int] | None = None,
                prompt_length: int = 0) -> torch.Tensor:
        """Pooled embeddings ``[len(layers) or L+1, B, H]`` from one forward pass (layer 0 = embeddings)."""
        features = {k: v.to(self.device) for k, v in features.items()}
        out = self.model(**features, output_hidden_states=True, return_dict=True)
        layers = range(len(out.hidden_states)) if layers is None else layers
        norm, last = final_norm(self.module), len(out.hidden_states) - 1
        states = [norm(out.hidden_states[i]) if norm is not None and i < last else out.hidden_states[i]
                  for i in layers]
        return torch.stack([self.pool(h, features["attention_mask"], prompt_length) for h in states])

    def forward_texts(self, texts: Sequence[str], layers: Sequence[int] | None = None, chunks: int = 1,
                      role: str | None = None) -> tuple[torch.Tensor, int, int]:
        """Pooled ``[len(layers), B, H]`` for ``texts`` (with gradients), plus (real, padded) token counts.

        The batch is sorted by length and cut into ``chunks`` forward calls, each padded only to its own
        longest text: the same embeddings as one padded call, with far fewer padding tokens on CPU.
        """
        ids = self.token_ids(texts, role)
        skip = self.prompt_length(self.prompts.text(role))
        order = torch.tensor(sorted(range(len(ids)), key=lambda i: len(ids[i])))
        parts, real, padded = [], 0, 0
        for idx in order.chunk(max(1, chunks)):
            batch = self._pad(ids, idx.tolist())
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
            parts.append(self.forward(batch, layers, skip))
        out = torch.cat(parts, dim=1)
        return out[:, torch.argsort(order).to(out.device)], real, padded  # back to input order

    @torch.inference_mode()
    def encode_layers(self, texts: Sequence[str], layers: Sequence[int] | None = None, batch_size: int = 64,
                      show_progress: bool | None = None, desc: str = "encode", role: str | None = None) -> torch.Tensor:
        """Embeddings ``[len(layers), N, H]`` (float32, CPU) of ``texts`` (prompted for ``role``); layers default to
        0..L.

        Texts are sorted by token length so each batch pads to its own longest text, then restored to
        input order. Progress is shown for long inputs (> 10 batches) unless ``show_progress`` says otherwise.
        """
        texts = list(texts)
        layers = list(range(self.num_layers + 1)) if layers is None else list(layers)
        if not texts:
            return torch.empty(len(layers), 0, self.hidden_size)
        was_training = self.training
        self.eval()
        ids = self.token_ids(texts, role)
        skip = self.prompt_length(self.prompts.text(role))
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out = torch.empty(len(layers), len(texts), self.hidden_size)
        batches = range(0, len(texts), batch_size)
        show = len(batches) > 10 if show_progress is None else show_progress
        for start in tqdm(batches, desc=desc, disable=not show, unit="batch"):
            idx = order[start:start + batch_size]
            out[:, idx] = self.forward(self._pad(ids, idx), layers, skip).float().cpu()
        self.train(was_training)
        return out


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm a model applies after its last block only (decoders, ModernBERT), else None (BERT's blocks end in
    their own LayerNorm)."""
    return next((m for name in FINAL_NORMS if isinstance(m := getattr(model, name, None), nn.Module)), None)


def blocks(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(owner, attribute, the block list) of a model: the ``nn.ModuleList`` of ``num_hidden_layers`` blocks."""
    n = int(model.config.num_hidden_layers)
    for path in BLOCK_LISTS:
        *parents, attr = path.split(".")
        owner = model
        for part in parents:
            owner = getattr(owner, part, None)
        found = getattr(owner, attr, None) if owner is not None else None
        if isinstance(found, nn.ModuleList) and len(found) == n:
            return owner, attr, found
    raise M2DError(f"model: cannot find the {n} blocks of {type(model).__name__} (looked for "
                   f"{', '.join(BLOCK_LISTS)}), so it cannot be cut to fewer layers; the grid itself works")


def load_encoder(name: str, pooling: str | None = None, max_length: int | None = None,
                 device: str | torch.device | None = None, prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None) -> Encoder:
    """Load a local model dir, the alias ``minilm-l6`` or a hub name, as an :class:`Encoder`, checked by
    :func:`read_model` before its weights load and by transformers' load report after, before any use.

    Pooling, max length and prompts default to the SentenceTransformer folder's settings, else mean (the last token
    for a causal LM, as sentence-transformers) / 128 / none; ``prompts`` (name -> text) replace the folder's.
    """
    from transformers import AutoModel

    folder = read_model(name)
    pooling = pooling or folder.settings.get("pooling") or default_pooling(folder.config)
    try:
        model, report = AutoModel.from_pretrained(folder.path, output_loading_info=True, ignore_mismatched_sizes=True)
        tokenizer = folder.tokenizer or _read_tokenizer(folder.path)
    except OSError as err:
        raise M2DError(f"model: cannot load {name!r} ({_reason(err)})") from None
    _check_load_report(folder, model, report)
    limit = getattr(folder.config, "max_position_embeddings", None) or 128
    s = folder.settings
    named = s.get("prompts", Prompts())
    if prompts is not None or default_prompt_name is not None:
        named = Prompts(dict(named.named if prompts is None else prompts), default_prompt_name)
        if named.default is not None and named.default not in named.named:
            raise M2DError(f"model.default_prompt_name: {named.default!r} is not one of the prompts "
                           f"({', '.join(named.named) or 'none'})")
    encoder = Encoder(model, tokenizer, pooling=pooling, max_length=max_length or s.get("max_length") or min(128, limit),
                      prompts=named, include_prompt=s.get("include_prompt", True),
                      similarity=s.get("similarity"), normalize=s.get("normalize", False))
    return encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def truncate_layers(encoder: Encoder, num_layers: int) -> Encoder:
    """Keep the first ``num_layers`` blocks (a separately trained sub-model, an exported cell, a latency
    measurement); the dropped blocks are neither run nor saved. The final norm of a decoder stays: the cut model's
    output is then exactly the grid's layer ``num_layers``."""
    model = encoder.module
    owner, attr, found = blocks(model)
    if not 1 <= num_layers <= len(found):
        raise M2DError(f"truncate: layer {num_layers} is out of range; allowed 1..{len(found)}")
    setattr(owner, attr, found[:num_layers])
    model.config.num_hidden_layers = num_layers
    if isinstance(getattr(model.config, "layer_types", None), list):  # per-block attention kinds (Qwen3, ModernBERT)
        model.config.layer_types = model.config.layer_types[:num_layers]
    return encoder
