"""All-layer encoder: ONE forward pass returns the pooled embedding of every layer.

``Encoder.forward(features)`` -> ``[L+1, B, H]`` (row 0 = embedding output, row l = block l), with
gradients, for training. ``Encoder.encode_layers(texts, layers)`` -> ``[len(layers), N, H]`` under
``torch.inference_mode`` with length-sorted batches, for evaluation. Every (layer, dim) cell is then
a slice of these tensors (see :mod:`matryoshka2d.cells`); nothing is ever re-encoded per cell.

The package: ``model`` (the encoder, loading, the layer cut), ``folder`` (the one validating reader of a model folder),
``pooling`` (sentence-transformers' pooling modes, prompts), ``save`` (SentenceTransformer layout), ``split_models``
(models shipped as zip parts on PyPI).
"""

from .folder import MODEL_ALIASES, SIMILARITIES, WEIGHT_FILES, ModelFolder, default_pooling, read_model, resolve_model_path
from .model import Encoder, blocks, final_norm, load_encoder, truncate_layers
from .pooling import Prompts, pool
from .save import save_sentence_transformer, write_st_config

__all__ = ["MODEL_ALIASES", "SIMILARITIES", "WEIGHT_FILES", "Encoder", "ModelFolder", "Prompts", "blocks",
           "default_pooling", "final_norm", "load_encoder", "pool", "read_model", "resolve_model_path",
           "save_sentence_transformer", "truncate_layers", "write_st_config"]
