"""Bad-input rows: m2d eval, m2d train, m2d export and m2d pick on broken model folders.

Every folder is a copy of the catalogue's tiny 6-layer x 32 BERT, with the SentenceTransformer files of a trained
model, broken in one way; every refusal comes from the one reader of a model (``matryoshka2d.encoder.read_model``),
before any weight is used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from catalogue import E, R, T
from matryoshka2d.encoder import write_st_config


# -- ways to break a folder (each returns a function of the folder) -----------------------------------------
def remove(*names):
    return lambda path: [(path / name).unlink() for name in names]


def cut(name):
    """The file's first half: a copy or download stopped midway."""
    def apply(path):
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[:len(data) // 2])
    return apply


def write(name, data: bytes | str):
    return lambda path: (path / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def edit(name, **changes):
    def apply(path):
        data = json.loads((path / name).read_text())
        (path / name).write_text(json.dumps({**data, **changes}))
    return apply


def both(*steps):
    return lambda path: [step(path) for step in steps]


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def drop_block(path):
    from safetensors.torch import save_file

    state = {k: v for k, v in weights(path).items() if not k.startswith("encoder.layer.3.")}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def to_bin(path):
    """The weights as pytorch_model.bin only (transformers prefers model.safetensors where both exist)."""
    state = weights(path)
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")


def to_missing_shards(path):
    index = {"metadata": {}, "weight_map": {k: "model-00001-of-00002.safetensors" for k in weights(path)}}
    (path / "model.safetensors").unlink()
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def config_as_list(path):
    (path / "config.json").write_text(json.dumps([json.loads((path / "config.json").read_text())]))


def add_dense(path):
    modules = json.loads((path / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (path / "modules.json").write_text(json.dumps(modules))


POOLING = "1_Pooling/config.json"
ST_CONFIG = "sentence_bert_config.json"
ST_MODEL = "config_sentence_transformers.json"
EXPECTED_FILES = "has no tokenizer files; expected tokenizer.json, or a vocabulary"
BROKEN = {  # folder -> (how it is broken, what the one line must name)
    "no_tokenizer": (remove("tokenizer.json", "tokenizer_config.json"), EXPECTED_FILES),
    "tokenizer_config_only": (remove("tokenizer.json"), EXPECTED_FILES),
    "tiny_vocab": (both(remove("tokenizer.json"), write("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")),
                   "its tokenizer has a vocabulary of 5 tokens (every word would be [UNK])"),
    "tokenizer_truncated": (cut("tokenizer.json"), "tokenizer.json is not valid JSON"),
    "tokenizer_config_truncated": (cut("tokenizer_config.json"), "tokenizer_config.json is not valid JSON"),
    "tokenizer_not_a_tokenizer": (write("tokenizer.json", json.dumps({"model": {"type": "NoSuchModel"}})),
                                  "cannot read the tokenizer of"),
    "special_tokens_truncated": (cut("special_tokens_map.json"), "special_tokens_map.json is not valid JSON"),
    "more_layers": (edit("config.json", num_hidden_layers=8),
                    "lacks 32 weight(s) that config.json (8 layers, hidden_size 32) needs, first encoder.layer.6."),
    "hidden_size": (edit("config.json", hidden_size=64),
                    "weight embeddings.word_embeddings.weight has shape [30522, 32] but config.json (hidden_size 64"),
    "intermediate_size": (edit("config.json", intermediate_size=128),
                          "weight encoder.layer.0.intermediate.dense.weight has shape [64, 32]"),
    "vocab_size": (edit("config.json", vocab_size=1000), "embeddings.word_embeddings.weight has shape [30522, 32]"),
    "missing_block": (drop_block, "model.safetensors lacks 16 weight(s) that config.json (6 layers, hidden_size 32) "
                                  "needs, first encoder.layer.3."),
    "no_weights": (remove("model.safetensors"), "has no weights; expected model.safetensors or pytorch_model.bin"),
    "safetensors_truncated": (cut("model.safetensors"), "model.safetensors is truncated or corrupt"),
    "safetensors_empty": (write("model.safetensors", b""), "model.safetensors is truncated or corrupt"),
    "safetensors_garbage": (write("model.safetensors", b"\x00\x01 not safetensors " * 64),
                            "model.safetensors is truncated or corrupt"),
    "bin_truncated": (both(to_bin, cut("pytorch_model.bin")), "pytorch_model.bin is truncated or corrupt"),
    "bin_more_layers": (both(to_bin, edit("config.json", num_hidden_layers=8)), "pytorch_model.bin lacks 32 weight(s)"),
    "index_missing_shard": (to_missing_shards, "names shard model-00001-of-00002.safetensors, which is missing"),
    "index_truncated": (both(to_missing_shards, cut("model.safetensors.index.json")),
                        "model.safetensors.index.json is not valid JSON"),
    "config_truncated": (cut("config.json"), "config.json is not valid JSON"),
    "config_empty": (write("config.json", ""), "config.json is not valid JSON"),
    "config_list": (config_as_list, "config.json holds a JSON list; expected an object"),
    "config_layers_text": (edit("config.json", num_hidden_layers="six"), "config.json (Validation error for field "
                                                                         "'num_hidden_layers'"),
    "config_layers_zero": (edit("config.json", num_hidden_layers=0),
                           "config.json: num_hidden_layers is 0; expected a positive integer"),
    "config_heads": (edit("config.json", num_attention_heads=5),
                     "config.json does not describe a model transformers can build"),
    "config_model_type": (edit("config.json", model_type="no-such-architecture"), "no-such-architecture"),
    "modules_truncated": (cut("modules.json"), "modules.json is not valid JSON"),
    "modules_object": (write("modules.json", json.dumps({"0": "sentence_transformers.models.Transformer"})),
                       "modules.json holds a JSON dict; expected a list"),
    "modules_dense": (add_dense, "modules.json names module(s) Dense after the transformer; a cell is a layer's"),
    "pooling_truncated": (cut(POOLING), "1_Pooling/config.json is not valid JSON"),
    "pooling_concatenated": (edit(POOLING, pooling_mode=["cls", "max"]),
                             "1_Pooling/config.json pools by cls + max concatenated; a cell needs one pooling"),
    "pooling_unknown": (edit(POOLING, pooling_mode="median"), "pooling_mode 'median' is unknown; allowed mean, cls"),
    "similarity_euclidean": (edit(ST_MODEL, similarity_fn_name="euclidean"),
                             "similarity_fn_name 'euclidean'; the grid scores cells by cosine or dot"),
    "prompt_default_missing": (edit(ST_MODEL, prompts={"query": "q: "}, default_prompt_name="passage"),
                               "default_prompt_name 'passage' is not one of its prompts (query)"),
    "pooling_dim": (edit(POOLING, word_embedding_dimension=64),
                    "1_Pooling/config.json: word_embedding_dimension 64 is not the model's hidden size 32"),
    "st_config_truncated": (cut(ST_CONFIG), "sentence_bert_config.json is not valid JSON"),
    "max_seq_above_positions": (edit(ST_CONFIG, max_seq_length=1024), "sentence_bert_config.json: max_seq_length "
                                                                      "1024 exceeds the model's position limit of 512"),
    "max_seq_text": (edit(ST_CONFIG, max_seq_length="long"), "max_seq_length 'long' is not a positive integer"),
}


def needle(key: str) -> str:
    return BROKEN[key][1]


CASES: list = [E(f"model-eval-{key}", "--model", f"{{mf_{key}}}", needle=needle(key)) for key in BROKEN]
CASES += [T(f"model-train-{key}", "--set", f"model.name={{mf_{key}}}", needle=needle(key))
          for key in ("no_tokenizer", "tiny_vocab", "more_layers", "hidden_size", "missing_block", "safetensors_truncated",
                      "config_list", "modules_dense", "pooling_truncated", "max_seq_above_positions")]
CASES += [R(f"model-export-{key}", "export", f"{{mf_{key}}}", "--layer", "2", "--dim", "16", needle=needle(key))
          for key in ("no_tokenizer", "tiny_vocab", "more_layers", "hidden_size", "missing_block",
                      "safetensors_truncated", "bin_truncated", "config_truncated", "modules_truncated",
                      "pooling_truncated", "max_seq_above_positions")]
CASES += [R(f"model-pick-latency-{key}", "pick", "{evaluated}", "--latency", f"{{mf_{key}}}", needle=needle(key))
          for key in ("no_tokenizer", "more_layers", "safetensors_truncated")]


def fixtures(root: Path, ctx: dict) -> dict:
    """Write this area's broken files under ``root``; returns placeholders for the rows and ``protected``: the files
    no refusal may change."""
    root.mkdir(parents=True)
    made = {}
    for key, (breaks, _) in BROKEN.items():
        path = root / key
        shutil.copytree(ctx["model"], path)
        write_st_files(path)
        breaks(path)
        made[f"mf_{key}"] = str(path)
    return {**made, "protected": [root]}


def write_st_files(path: Path) -> None:
    """What a trained model has beside the copy's own files (modules.json, sentence_bert_config.json,
    special_tokens_map.json): every file a load reads is there to be broken."""
    write_st_config(path, 32, "mean", max_length=128)
    (path / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]", "pad_token": "[PAD]"}))
