"""Hard negatives for retrieval training, mined from the corpus by the start model, cached on disk.

For each training (query, positive) pair of a BEIR set's qrels, the start model retrieves the top ``k`` documents
of the corpus (cosine, last layer); the positives of that query are removed and ``n`` negatives are drawn from the
rest with a seeded RNG. The result is a tsv.gz (``query, positive, negative_1..n``) under ``$M2D_HOME/mined/``,
named by a hash of everything that decides it (model, data files, k, n, seed, max length) and described by a
``.json`` beside it (the miner is recorded), so every trial of a study trains on the same file, mined once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from ..config import Config
from ..errors import M2DError


def mined_path(cfg: Config) -> tuple[Path, dict]:
    """Where the negatives of ``cfg`` are cached, and the description that names them."""
    from ..config import m2d_home
    from ..data import file_checksums, training_source
    from ..encoder import resolve_model_path

    _, name, split = training_source(cfg)  # refuses hard negatives of a set that is not retrieval
    model_path = resolve_model_path(cfg.model.name)
    model_files = {p.name: _sha(p) for p in sorted(Path(model_path).glob("*.json"))} if Path(model_path).is_dir() \
        else {}
    meta = {"dataset": name, "split": split, "data_files": file_checksums(name, split, cfg.data.data_dir),
            "miner": cfg.model.name, "miner_path": str(model_path), "miner_files": model_files,
            "miner_pooling": cfg.model.pooling, "max_length": cfg.model.max_length, "similarity": "cos",
            **({"prompts": cfg.model.prompts} if cfg.model.prompts is not None else {}),  # unset: old keys hold
            "layer": "last", "top_k": cfg.data.mine_top_k, "negatives": cfg.data.hard_negatives,
            "seed": cfg.train.seed}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
    return m2d_home() / "mined" / f"{name}-{split}-n{cfg.data.hard_negatives}-{key}.tsv.gz", meta


def ensure_mined(cfg: Config, batch_size: int = 64, show_progress: bool | None = None) -> Path:
    """The cached negatives of ``cfg``, mined now if absent (written atomically: concurrent miners agree)."""
    path, meta = mined_path(cfg)
    if path.is_file():
        return path
    import gzip

    import torch

    from ..data import load_beir
    from ..data.registry import data_dir
    from ..encoder import load_encoder
    from ..evaluate.topk import search

    data = load_beir(data_dir(cfg.data.data_dir) / meta["dataset"], meta["split"], name=meta["dataset"])
    ids, texts = data.doc_texts()
    encoder = load_encoder(cfg.model.name, pooling=cfg.model.pooling, max_length=cfg.model.max_length,
                           prompts=cfg.model.prompts, default_prompt_name=cfg.model.default_prompt_name)
    last = [encoder.num_layers]
    qids = [q for q in data.qrels if q in data.queries]
    print(f"mining: {len(qids)} queries x {len(ids)} documents with {cfg.model.name} (top {meta['top_k']}, "
          f"{meta['negatives']} negative(s) each) -> {path}", flush=True)
    docs = torch.nn.functional.normalize(encoder.encode_layers(texts, last, batch_size, show_progress, "mine corpus",
                                                               role="document")[0], dim=-1)
    queries = torch.nn.functional.normalize(encoder.encode_layers([data.queries[q] for q in qids], last, batch_size,
                                                                  show_progress, "mine queries", role="query")[0], dim=-1)
    _, top = search(queries, docs, meta["top_k"])
    rng = random.Random(meta["seed"])
    doc_text = dict(zip(ids, texts))
    rows = []
    for qid, hits in zip(qids, top.tolist()):
        positives = {d for d, grade in data.qrels[qid].items() if grade > 0}
        pool = [ids[j] for j in hits if ids[j] not in positives]
        if len(pool) < meta["negatives"]:
            raise M2DError(f"data.mine_top_k: {meta['top_k']} leaves {len(pool)} non-positive documents for query "
                           f"{qid}; raise it above {meta['negatives']} + the positives")
        for pos in sorted(positives):
            negatives = rng.sample(pool, meta["negatives"])
            rows.append([data.queries[qid], doc_text[pos], *(doc_text[n] for n in negatives)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    header = ["query", "positive", *(f"negative_{i + 1}" for i in range(meta["negatives"]))]
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for row in [header, *rows]:
            fh.write("\t".join(_clean(x) for x in row) + "\n")
    path.with_suffix("").with_suffix(".json").write_text(json.dumps({**meta, "rows": len(rows)}, indent=2))
    os.replace(tmp, path)
    return path


def premine(configs, label: str) -> None:
    """Before any trial starts (sweep or study): mine each distinct set of negatives once, so concurrent trials
    find the cache instead of mining it side by side."""
    done = set()
    for cfg in configs:
        if cfg.data.hard_negatives:
            path = ensure_mined(cfg)
            if path not in done:
                print(f"{label}: hard negatives {path}", flush=True)
                done.add(path)


def load_mined(path: Path) -> list[list[str]]:
    """The text columns (query, positive, negative_1..n) of a mined file."""
    from ..data._io import iter_lines, where

    columns: list[list[str]] = []
    for lineno, line in iter_lines(path):
        cells = line.split("\t")
        if lineno == 1:
            if cells[:2] != ["query", "positive"]:
                raise M2DError(f"{where(path, 1)}: not a mined negatives file (header query, positive, negative_i)")
            columns = [[] for _ in cells]
            continue
        if len(cells) != len(columns):
            raise M2DError(f"{where(path, lineno)}: expected {len(columns)} columns, got {len(cells)}")
        for column, cell in zip(columns, cells):
            column.append(cell)
    return columns


def _clean(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines inside a cell


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
