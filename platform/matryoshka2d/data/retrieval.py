"""Retrieval loaders: BEIR folders, TREC topics/qrels, the MS MARCO passage collection.

Qrels are cross-checked against the queries and the corpus while reading, so an id typo is reported
with its file and line instead of silently scoring as a miss.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from matryoshka2d.errors import M2DError

from ._io import first_existing, iter_jsonl, iter_lines, parse_int, read_lines, require_file, where
from .types import RetrievalSet, Triplets

QrelRow = tuple[int, str, str, int]  # (line number, query id, doc id, grade)


def load_beir_corpus(path: str | Path) -> dict[str, dict[str, str]]:
    """BEIR ``corpus.jsonl[.gz]``: ``{_id: {"title", "text"}}``; a duplicate id is an error, not an overwrite."""
    path = Path(path)
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in iter_jsonl(path):
        doc_id = _field(obj, "_id", path, lineno)
        if doc_id in corpus:
            raise M2DError(f"{where(path, lineno)}: duplicate _id {doc_id!r}")
        corpus[doc_id] = {"title": str(obj.get("title") or ""), "text": _field(obj, "text", path, lineno)}
    return corpus


def load_beir_queries(path: str | Path) -> dict[str, str]:
    """BEIR ``queries.jsonl[.gz]``: ``{_id: text}``."""
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _field(obj, "_id", path, lineno)
        if qid in queries:
            raise M2DError(f"{where(path, lineno)}: duplicate _id {qid!r}")
        queries[qid] = _field(obj, "text", path, lineno)
    return queries


def _field(obj: dict, key: str, path: Path, lineno: int) -> str:
    """A required string-like JSON field (ids may be numbers in some dumps)."""
    value = obj.get(key)
    if value is None or isinstance(value, (dict, list)):
        raise M2DError(f"{where(path, lineno)}: missing or non-string field {key!r}")
    return str(value)


def iter_beir_qrels(path: str | Path) -> Iterator[QrelRow]:
    """BEIR ``qrels/<split>.tsv`` rows (``query-id corpus-id score``); the header line is skipped."""
    path = Path(path)
    lines = read_lines(path)
    for lineno, line in enumerate(lines, start=1):
        cols = line.split("\t")
        if lineno == 1 and len(cols) == 3 and not cols[2].strip().lstrip("-").isdigit():
            continue  # header
        if not line.strip():
            continue
        if len(cols) != 3:
            raise M2DError(f"{where(path, lineno)}: expected 3 tab-separated columns query-id, corpus-id, score; got {len(cols)}")
        yield lineno, cols[0].strip(), cols[1].strip(), parse_int(cols[2], path, lineno, "score")


def iter_trec_qrels(path: str | Path) -> Iterator[QrelRow]:
    """TREC qrels rows ``qid 0 docid grade`` (whitespace-separated; the 2nd field may be ``Q0``)."""
    path = Path(path)
    for lineno, line in enumerate(read_lines(path), start=1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 4:
            raise M2DError(f"{where(path, lineno)}: expected 4 fields 'qid 0 docid grade', got {len(cols)}")
        yield lineno, cols[0], cols[2], parse_int(cols[3], path, lineno, "grade")


def build_qrels(rows: Iterator[QrelRow], path: Path | str, queries: dict[str, str] | None = None,
                corpus: dict | None = None, queries_file: str = "queries", corpus_file: str = "corpus"
                ) -> dict[str, dict[str, int]]:
    """``{qid: {doc_id: grade}}``, checking each id against ``queries`` / ``corpus`` when given."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, qid, doc_id, grade in rows:
        if queries is not None and qid not in queries:
            raise M2DError(f"{where(path, lineno)}: query id {qid!r} not in {queries_file}")
        if corpus is not None and doc_id not in corpus:
            raise M2DError(f"{where(path, lineno)}: doc id {doc_id!r} not in {corpus_file}")
        qrels.setdefault(qid, {})[doc_id] = grade
    if not qrels:
        raise M2DError(f"{path}: no qrels")
    return qrels


def load_trec_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels file -> ``{qid: {docid: grade}}`` (grade 0 judgements are kept, for nDCG)."""
    return build_qrels(iter_trec_qrels(path), path)


def load_trec_topics(path: str | Path) -> dict[str, str]:
    """Anserini topics ``qid<TAB>text`` (``.gz`` ok); text is stripped (dev has a leading space, dl20 CRLF)."""
    path = Path(path)
    topics: dict[str, str] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise M2DError(f"{where(path, lineno)}: expected 2 tab-separated columns qid, text; got {len(cols)}")
        qid, text = cols[0].strip(), cols[1].strip()
        if not text:
            raise M2DError(f"{where(path, lineno)}: empty query text for qid {qid!r}")
        if qid in topics:
            raise M2DError(f"{where(path, lineno)}: duplicate qid {qid!r}")
        topics[qid] = text
    return topics


def load_msmarco_collection(path: str | Path) -> dict[str, dict[str, str]]:
    """MS MARCO ``collection.tsv[.gz]`` (``pid<TAB>passage``), streamed, as a BEIR-shaped corpus (empty titles)."""
    path = Path(path)
    corpus: dict[str, dict[str, str]] = {}
    for lineno, line in iter_lines(path):
        if not line:
            continue
        pid, sep, passage = line.partition("\t")
        if not sep or "\t" in passage:
            raise M2DError(f"{where(path, lineno)}: expected 2 tab-separated columns pid, passage")
        corpus[pid.strip()] = {"title": "", "text": passage.strip()}
    if not corpus:
        raise M2DError(f"{path}: file is empty")
    return corpus


def beir_files(folder: str | Path, split: str) -> tuple[Path, Path, Path]:
    """(corpus, queries, qrels) paths of a BEIR folder; ``.jsonl`` or ``.jsonl.gz`` both accepted."""
    folder = Path(folder)
    corpus = first_existing(folder / "corpus.jsonl", folder / "corpus.jsonl.gz")
    queries = first_existing(folder / "queries.jsonl", folder / "queries.jsonl.gz")
    if corpus is None:
        raise M2DError(f"{folder}: no corpus.jsonl or corpus.jsonl.gz (not a BEIR folder)")
    if queries is None:
        raise M2DError(f"{folder}: no queries.jsonl or queries.jsonl.gz")
    qrels = folder / "qrels" / f"{split}.tsv"
    if not qrels.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise M2DError(f"{qrels}: not found; split {split!r} not available (have: {', '.join(have) or 'none'})")
    return corpus, queries, qrels


def load_beir(folder: str | Path, split: str = "test", name: str | None = None) -> RetrievalSet:
    """A BEIR folder; only queries with qrels in ``split`` are kept (in queries-file order)."""
    corpus_path, queries_path, qrels_path = beir_files(folder, split)
    corpus = load_beir_corpus(corpus_path)
    queries = load_beir_queries(queries_path)
    qrels = build_qrels(iter_beir_qrels(qrels_path), qrels_path, queries, corpus, queries_path.name, corpus_path.name)
    kept = {qid: text for qid, text in queries.items() if qid in qrels}
    return RetrievalSet(name=name or Path(folder).name, split=split, corpus=corpus, queries=kept, qrels=qrels)


def load_msmarco(collection: Path, topics: Path, qrels: Path, name: str, split: str) -> RetrievalSet:
    """MS MARCO passage eval (dev small, TREC DL): topics restricted to queries with qrels."""
    corpus = load_msmarco_collection(collection)
    queries = load_trec_topics(topics)
    judged = build_qrels(iter_trec_qrels(qrels), qrels, queries, corpus, topics.name, collection.name)
    kept = {qid: text for qid, text in queries.items() if qid in judged}
    return RetrievalSet(name=name, split=split, corpus=corpus, queries=kept, qrels=judged)


def beir_training_pairs(folder: str | Path, split: str = "train", name: str | None = None) -> Triplets:
    """(query, positive doc) pairs from a BEIR split's qrels with grade > 0; doc text is ``title text``."""
    return qrels_pairs(load_beir(folder, split, name))


def qrels_pairs(data: RetrievalSet) -> Triplets:
    """(query, positive doc) pairs of a retrieval set's qrels with grade > 0, doc text ``title text``; negatives empty
    (in-batch negatives)."""
    ids, texts = data.doc_texts()
    doc_text = dict(zip(ids, texts))
    anchors, positives = [], []
    for qid, docs in data.qrels.items():
        for doc_id, grade in docs.items():
            if grade > 0:
                anchors.append(data.queries[qid])
                positives.append(doc_text[doc_id])
    return Triplets(name=data.name, split=data.split, anchors=anchors, positives=positives, negatives=[])


def load_msmarco_triples(path: str | Path) -> Triplets:
    """MS MARCO training triples ``query<TAB>positive<TAB>negative`` (``.gz`` ok), streamed."""
    path = Path(require_file(Path(path), "msmarco triples"))
    out = Triplets(name="msmarco", split="train", anchors=[], positives=[], negatives=[])
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise M2DError(f"{where(path, lineno)}: expected 3 tab-separated columns query, positive, negative; got {len(cols)}")
        out.anchors.append(cols[0].strip())
        out.positives.append(cols[1].strip())
        out.negatives.append(cols[2].strip())
    if not out.anchors:
        raise M2DError(f"{path}: file is empty")
    return out
