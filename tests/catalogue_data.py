"""Bad-input rows: ``hf:`` sources (local files and folders, one hub id) through m2d eval and m2d train.

Every fixture is written here; each row names what the one error line must say (the file, the columns, the split).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from catalogue import E, T

CASES = [
    E("hf-missing-file", "--data", "hf:{hf}/nope.parquet", needle="nope.parquet (also looked under the data dir)"),
    E("hf-unsupported-type", "--data", "hf:{hf}/sheet.xlsx", needle="sheet.xlsx: unsupported file type; allowed"),
    E("hf-no-data-files", "--data", "hf:{hf}/empty", needle="empty holds no data files"),
    E("hf-bad-parquet", "--data", "hf:{hf}/broken.parquet", needle="broken.parquet: not a readable parquet file"),
    E("hf-eval-triplets", "--data", "hf:{hf}/triplets.parquet", needle="triplets.parquet: holds training pairs"),
    E("hf-eval-columns", "--data", "hf:{hf}/unknown.jsonl", needle="unknown.jsonl: is not an evaluation set (columns "
                                                                   "text_a, text_b)"),
    E("hf-score-text", "--data", "hf:{hf}/score-text.csv", needle="score-text.csv row 2: column 'score' value 'high'"),
    E("hf-two-score-columns", "--data", "hf:{hf}/two-scores.parquet",
      needle="columns 'score' and 'label' both mean score"),
    E("hf-empty-sentence", "--data", "hf:{hf}/empty-sentence.jsonl",
      needle="empty-sentence.jsonl row 2: column 'sentence2' is empty"),
    E("hf-saved-split-missing", "--data", "hf:{hf}/saved", "--split", "dev",
      needle="split 'dev' not available; splits: train, test"),
    E("hf-folder-split-missing", "--data", "hf:{hf}/splits", "--split", "dev",
      needle="no file for split 'dev'"),
    E("hf-local-config-missing", "--data", "hf:{hf}/splits:nope", needle="no config 'nope'"),
    E("hf-qrels-unknown-doc", "--data", "hf:{hf}/retrieval-bad-doc", needle="test.jsonl row 1: doc id 'd9' not in"),
    E("hf-qrels-grade", "--data", "hf:{hf}/retrieval-grade", needle="score 0.5 is not an integer grade"),
    E("hf-qrels-only", "--data", "hf:{hf}/qrels.parquet", needle="holds qrels but no corpus and queries"),
    E("hf-no-qrels-folder", "--data", "hf:{hf}/retrieval-noqrels", needle="has corpus and queries but no qrels/"),
    E("hf-hub-uncached", "--data", "hf:m2d-nonexistent/offline-probe",
      needle="hf:m2d-nonexistent/offline-probe: cannot load from the Hugging Face hub"),
    T("hf-train-columns", "--set", "data.train=hf:{hf}/unknown.jsonl",
      needle="expected training pairs/triplets with columns anchor (or query, question)"),
    T("hf-train-score-loss", "--set", "data.train=hf:{hf}/triplets.parquet", "--set", "method.task_loss=cosent",
      needle="expected STS pairs with columns sentence1, sentence2, score"),
    T("hf-train-split", "--set", "data.train=hf:{hf}/saved", "--set", "data.train_split=dev",
      needle="saved: split 'dev' not available; splits: train, test"),
    T("hf-train-missing", "--set", "data.train=hf:{hf}/nope.jsonl", needle="nope.jsonl: no such file or folder"),
    T("hf-train-hard-negatives", "--set", "data.train=hf:{hf}/retrieval-ok", "--set", "method.task_loss=mnrl",
      "--set", "data.hard_negatives=1", needle="data.hard_negatives: mined from a BEIR folder or a named set"),
]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _retrieval(folder: Path, qrels: list[dict] | None) -> None:
    _jsonl(folder / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": f"doc {i}"} for i in range(3)])
    _jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": f"query {i}"} for i in range(2)])
    if qrels is not None:
        _jsonl(folder / "qrels" / "test.jsonl", qrels)
        _jsonl(folder / "qrels" / "train.jsonl", qrels)


def fixtures(root: Path, ctx: dict) -> dict:
    """Write this area's bad files under ``root``; ``{hf}`` is that folder."""
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    root.mkdir(parents=True)
    sts = [{"sentence1": f"A man plays {i}.", "sentence2": f"Music {i}.", "score": float(i)} for i in range(4)]
    (root / "sheet.xlsx").write_text("not a spreadsheet")
    (root / "empty").mkdir()
    (root / "broken.parquet").write_bytes(b"PAR1 cut short")
    pd.DataFrame([{"anchor": f"a{i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(4)]).to_parquet(
        root / "triplets.parquet")
    _jsonl(root / "unknown.jsonl", [{"text_a": "x", "text_b": "y"}, {"text_a": "z", "text_b": "w"}])
    (root / "score-text.csv").write_text("sentence1,sentence2,score\nA dog.,A cat.,1.5\nA man.,A woman.,high\n")
    pd.DataFrame([dict(r, label=r["score"]) for r in sts]).to_parquet(root / "two-scores.parquet")
    _jsonl(root / "empty-sentence.jsonl", [sts[0], dict(sts[1], sentence2=" ")])
    DatasetDict(train=Dataset.from_list(sts), test=Dataset.from_list(sts)).save_to_disk(str(root / "saved"))
    _jsonl(root / "splits" / "train.jsonl", sts)
    _jsonl(root / "splits" / "test.jsonl", sts)
    _retrieval(root / "retrieval-bad-doc", [{"query-id": "q0", "corpus-id": "d9", "score": 1}])
    _retrieval(root / "retrieval-grade", [{"query-id": "q0", "corpus-id": "d0", "score": 0.5}])
    _retrieval(root / "retrieval-noqrels", None)
    _retrieval(root / "retrieval-ok", [{"query-id": "q0", "corpus-id": "d0", "score": 1},
                                       {"query-id": "q1", "corpus-id": "d1", "score": 1}])
    pd.DataFrame([{"query-id": "q0", "corpus-id": "d0", "score": 1}]).to_parquet(root / "qrels.parquet")
    return {"hf": str(root), "protected": [root]}
