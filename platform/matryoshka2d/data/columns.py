"""What an ``hf:`` table holds, recognised by its columns, and its conversion to the loaders' containers.

``KINDS`` is the one table of accepted column names (docs/data.md shows it; error lines quote it): per kind, each
role and the names it may have, the first being the canonical one. Two names of one role in one table are refused
(which one was meant?); columns not in the table are ignored, and :func:`used` says which ones a load read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from matryoshka2d.errors import M2DError

from .tables import Table
from .types import RetrievalSet, STSPairs, Triplets


@dataclass(frozen=True)
class Role:
    name: str
    aliases: tuple[str, ...]
    required: bool = True


KINDS: dict[str, tuple[Role, ...]] = {
    "sts": (Role("sentence1", ("sentence1",)), Role("sentence2", ("sentence2",)),
            Role("score", ("score", "label", "similarity_score"))),
    "triplets": (Role("anchor", ("anchor", "query", "question")),
                 Role("positive", ("positive", "answer", "document", "passage", "pos")),
                 Role("negative", ("negative", "neg"), required=False)),
    "qrels": (Role("query-id", ("query-id", "query_id", "qid")),
              Role("corpus-id", ("corpus-id", "corpus_id", "doc_id", "docid")),
              Role("score", ("score",), required=False)),
    "corpus": (Role("_id", ("_id", "id", "doc_id", "docid")), Role("text", ("text",)),
               Role("title", ("title",), required=False)),
    "queries": (Role("_id", ("_id", "id", "query_id", "qid")), Role("text", ("text", "query"))),
}
WHAT = {"sts": "STS pairs", "triplets": "training pairs/triplets", "qrels": "retrieval qrels",
        "corpus": "a retrieval corpus", "queries": "retrieval queries"}


def describe(kind: str) -> str:
    """``anchor (or query, question), positive (or ...), [negative (or neg)]``: the kind's columns for error lines."""
    parts = []
    for role in KINDS[kind]:
        text = role.name + (f" (or {', '.join(role.aliases[1:])})" if len(role.aliases) > 1 else "")
        parts.append(text if role.required else f"[{text}]")
    return ", ".join(parts)


def match(table: Table, kind: str) -> dict[str, str] | None:
    """role -> the table's column for it; None when a required role has no column; two columns for one role are
    an error (naming both)."""
    found: dict[str, str] = {}
    for role in KINDS[kind]:
        present = [a for a in role.aliases if a in table.names]
        if len(present) > 1:
            raise M2DError(f"{table.source}: columns {' and '.join(map(repr, present))} both mean {role.name} "
                           f"({WHAT[kind]}: {describe(kind)}); drop or rename one")
        if present:
            found[role.name] = present[0]
        elif role.required:
            return None
    return found


def require(table: Table, kind: str, hint: str = "") -> dict[str, str]:
    """:func:`match`, or one line naming the table, its columns and the expected ones."""
    cols = match(table, kind)
    if cols is None:
        raise M2DError(f"{table.source}: expected {WHAT[kind]} with columns {describe(kind)}; "
                       f"has {', '.join(table.names) or 'none'}{hint}")
    return cols


def kind_of(table: Table) -> str | None:
    """``qrels``, ``sts`` or ``triplets``: the first kind whose required columns the table has."""
    return next((k for k in ("qrels", "sts", "triplets") if match(table, k) is not None), None)


def used(cols: dict[str, str]) -> str:
    """``anchor=query, positive`` (a column read under another name shows both)."""
    return ", ".join(role if role == col else f"{role}={col}" for role, col in cols.items())


def _text(value: Any, table: Table, row: int, col: str, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        got = "empty" if value is None else f"not text ({type(value).__name__})"
        raise M2DError(f"{table.source} row {row}: column {col!r} is {got}")
    if not empty_ok and not value.strip():
        raise M2DError(f"{table.source} row {row}: column {col!r} is empty")
    return value.strip()


def _number(value: Any, table: Table, row: int, col: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise M2DError(f"{table.source} row {row}: column {col!r} value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise M2DError(f"{table.source} row {row}: column {col!r} value {value!r} is not finite")
    return number


def _id(value: Any, table: Table, row: int, col: str) -> str:
    """Ids may be numbers in some dumps; they compare as text."""
    if value is None or isinstance(value, (list, dict)) or str(value).strip() == "":
        raise M2DError(f"{table.source} row {row}: column {col!r} is not an id ({value!r})")
    return str(value).strip()


def to_sts(table: Table, name: str, split: str) -> tuple[STSPairs, str]:
    """Scored pairs; scores stay in the dataset's own range (Spearman does not care)."""
    cols = require(table, "sts")
    s1, s2, score = (table.column(cols[r]) for r in ("sentence1", "sentence2", "score"))
    out = STSPairs(name=name, split=split, sentences1=[], sentences2=[], scores=[])
    for i, (a, b, s) in enumerate(zip(s1, s2, score), start=1):
        out.sentences1.append(_text(a, table, i, cols["sentence1"]))
        out.sentences2.append(_text(b, table, i, cols["sentence2"]))
        out.scores.append(_number(s, table, i, cols["score"]))
    return out, used(cols)


def to_triplets(table: Table, name: str, split: str) -> tuple[Triplets, str]:
    """(anchor, positive[, negative]) rows. A list of positives gives one row per positive; a list of negatives
    gives its first (the pair-with-lists layout ``query, pos, neg``)."""
    hint = "; scored pairs (sentence1, sentence2, score) train with a score loss (cosent, angle)" \
        if match(table, "sts") is not None else ""
    cols = require(table, "triplets", hint)
    anchors, positives = table.column(cols["anchor"]), table.column(cols["positive"])
    negatives = table.column(cols["negative"]) if "negative" in cols else None
    out = Triplets(name=name, split=split, anchors=[], positives=[], negatives=[])
    for i, anchor in enumerate(anchors, start=1):
        anchor = _text(anchor, table, i, cols["anchor"])
        neg = None if negatives is None else _text(_first(negatives[i - 1], table, i, cols["negative"]), table, i,
                                                   cols["negative"])
        pos_list = positives[i - 1] if isinstance(positives[i - 1], list) else [positives[i - 1]]
        if not pos_list:
            raise M2DError(f"{table.source} row {i}: column {cols['positive']!r} is an empty list")
        for pos in pos_list:
            out.anchors.append(anchor)
            out.positives.append(_text(pos, table, i, cols["positive"]))
            if neg is not None:
                out.negatives.append(neg)
    return out, used(cols)


def _first(value: Any, table: Table, row: int, col: str) -> Any:
    if isinstance(value, list):
        if not value:
            raise M2DError(f"{table.source} row {row}: column {col!r} is an empty list")
        return value[0]
    return value


def to_retrieval(qrels: Table, corpus: Table, queries: Table, name: str, split: str
                 ) -> tuple[RetrievalSet, str]:
    """A BEIR-shaped set: qrels ids are checked against the queries and the corpus; only queries with qrels in
    ``split`` are kept; a qrels table without a score column grades every pair 1."""
    qcols, ccols, tcols = require(qrels, "qrels"), require(corpus, "corpus"), require(queries, "queries")
    docs: dict[str, dict[str, str]] = {}
    titles = corpus.column(ccols["title"]) if "title" in ccols else [None] * corpus.rows
    for i, (doc_id, text, title) in enumerate(zip(corpus.column(ccols["_id"]), corpus.column(ccols["text"]), titles),
                                              start=1):
        doc_id = _id(doc_id, corpus, i, ccols["_id"])
        if doc_id in docs:
            raise M2DError(f"{corpus.source} row {i}: duplicate {ccols['_id']} {doc_id!r}")
        docs[doc_id] = {"title": title.strip() if isinstance(title, str) else "",
                        "text": _text(text, corpus, i, ccols["text"], empty_ok=True)}
    texts: dict[str, str] = {}
    for i, (qid, text) in enumerate(zip(queries.column(tcols["_id"]), queries.column(tcols["text"])), start=1):
        qid = _id(qid, queries, i, tcols["_id"])
        if qid in texts:
            raise M2DError(f"{queries.source} row {i}: duplicate {tcols['_id']} {qid!r}")
        texts[qid] = _text(text, queries, i, tcols["text"])
    judged = _qrels(qrels, qcols, texts, docs, queries.source, corpus.source)
    kept = {qid: text for qid, text in texts.items() if qid in judged}
    said = f"qrels {used(qcols)}; corpus {used(ccols)}; queries {used(tcols)}"
    return RetrievalSet(name=name, split=split, corpus=docs, queries=kept, qrels=judged), said


def _qrels(table: Table, cols: dict[str, str], queries: dict, docs: dict, queries_source: str, corpus_source: str
           ) -> dict[str, dict[str, int]]:
    grades = table.column(cols["score"]) if "score" in cols else [1] * table.rows
    out: dict[str, dict[str, int]] = {}
    for i, (qid, doc_id, grade) in enumerate(zip(table.column(cols["query-id"]), table.column(cols["corpus-id"]),
                                                 grades), start=1):
        qid, doc_id = _id(qid, table, i, cols["query-id"]), _id(doc_id, table, i, cols["corpus-id"])
        if qid not in queries:
            raise M2DError(f"{table.source} row {i}: query id {qid!r} not in {queries_source}")
        if doc_id not in docs:
            raise M2DError(f"{table.source} row {i}: doc id {doc_id!r} not in {corpus_source}")
        value = _number(grade, table, i, cols.get("score", "score"))
        if value != int(value):
            raise M2DError(f"{table.source} row {i}: score {value:g} is not an integer grade")
        out.setdefault(qid, {})[doc_id] = int(value)
    if not out:
        raise M2DError(f"{table.source}: no qrels")
    return out
