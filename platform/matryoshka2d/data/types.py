"""Plain containers the loaders return; evaluation and training consume only these."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class STSPairs:
    """Scored sentence pairs (gold scores in the dataset's own range, e.g. 0..5)."""

    name: str
    split: str
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    subsets: list[str] | None = None  # per pair, for multi-file sets such as STS12 (SemEval subset name)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class RetrievalSet:
    """A BEIR-style retrieval set: corpus {doc_id: {"title", "text"}}, queries {qid: text}, qrels {qid: {doc_id: grade}}."""

    name: str
    split: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def doc_texts(self) -> tuple[list[str], list[str]]:
        """(ids, texts) with BEIR's ``title + " " + text`` convention."""
        ids = list(self.corpus)
        return ids, [(self.corpus[i].get("title", "") + " " + self.corpus[i].get("text", "")).strip() for i in ids]


@dataclass
class Triplets:
    """(anchor, positive, negative) training triplets; ``negatives`` may be empty for pair data."""

    name: str
    split: str
    anchors: list[str]
    positives: list[str]
    negatives: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.anchors)
