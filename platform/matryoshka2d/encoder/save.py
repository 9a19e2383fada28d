"""Saving an encoder in SentenceTransformer layout, with its pooling, max length, prompts and similarity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .folder import SIMILARITIES
from .pooling import Prompts

if TYPE_CHECKING:
    from .model import Encoder


def write_st_config(path: str | Path, hidden_size: int, pooling: str, max_length: int | None = None,
                    include_prompt: bool = True, prompts: Prompts | None = None, similarity: str | None = None) -> None:
    """The SentenceTransformer files beside a saved HF model: ``1_Pooling/config.json`` (what :func:`load_encoder`
    reads the pooling from) and, with ``max_length``, ``sentence_bert_config.json``, ``modules.json`` and
    ``config_sentence_transformers.json`` (prompts, ``similarity_fn_name``: ``similarity`` or cosine), so that
    ``SentenceTransformer(path)`` builds Transformer + this Pooling (without them it loads a plain HF folder)."""
    path = Path(path)
    (path / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "embedding_dimension": hidden_size, "pooling_mode": pooling, "include_prompt": include_prompt}, indent=2))
    if max_length is None:
        return
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length,
                                                                "do_lower_case": False}, indent=2))
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], indent=2))
    prompts = prompts or Prompts()
    (path / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "SentenceTransformer", "prompts": prompts.named, "default_prompt_name": prompts.default,
        "similarity_fn_name": next(k for k, v in SIMILARITIES.items() if v == (similarity or "cos"))}, indent=2))


def save_sentence_transformer(encoder: Encoder, path: str | Path, similarity: str | None = None) -> Path:
    """Save in SentenceTransformer layout (Transformer + Pooling, the encoder's max length and prompts), loadable with
    ``SentenceTransformer(path)``; its similarity is ``similarity`` (the run's scoring), else the encoder's own."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    encoder.module.save_pretrained(path)
    encoder.tokenizer.save_pretrained(path)
    write_st_config(path, encoder.hidden_size, encoder.pooling, encoder.max_length, encoder.include_prompt,
                    encoder.prompts, similarity or encoder.similarity)
    return path
