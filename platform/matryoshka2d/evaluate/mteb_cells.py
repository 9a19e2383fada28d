"""MTEB over every (layer, dim) cell: MTEB's own evaluators score each cell, and each text is encoded once.

A :class:`LayerCache` holds every text's pooled embedding at every requested layer (one forward pass gives all
layers): a local task's texts encoded up front in the grid's order, an MTEB task's the first time MTEB asks for them. A :class:`CellEncoder` is MTEB's encoder for one cell: the cached
vectors of its layer cut to their first ``d`` dims, scored as the grid scores it (pairs by cosine, a query
against documents by cosine or dot). So the
transformer runs once per text, not once per cell, while MTEB writes its own result files for each cell, under
``<out>/results/<model>__L<l>-d<d>/<revision>/<Task>.json`` (MTEB's ``ResultCache`` layout).

The sets of the data dir become MTEB tasks (:func:`local_task`: an ``AbsTaskSTS`` or ``AbsTaskRetrieval`` holding
exactly the texts the grid scores); any MTEB task runs by name where its data is in the Hugging Face cache.
Needs the ``mteb`` extra (``pip install 'matryoshka2d[mteb]'``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import mteb
import numpy as np
from mteb.abstasks.abstask import AbsTask
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.similarity_functions import pairwise_cos_sim

from .. import storage
from ..data.types import RetrievalSet, STSPairs
from ..errors import M2DError
from . import retrieval, sts
from .grid import SIMILARITIES, GridResult, Row

MTEB_SIMILARITY = {"cos": "cosine", "dot": "dot"}  # the grid's retrieval scoring -> MTEB's similarity_fn_name
NO_REVISION = "no_revision_available"  # MTEB's own placeholder
RESULTS = "results"  # the folder mteb.ResultCache writes under its root
# what the local tasks declare: they are the data dir's files, whatever their origin
_LOCAL = dict(category="t2t", modalities=["text"], eval_langs=["eng-Latn"], date=None, domains=[], task_subtypes=[],
              license="not specified", annotations_creators="human-annotated", dialect=[], sample_creation="found",
              bibtex_citation="", reference=None)


# -- the encoder: one cache of every layer, one cheap object per cell ------------------------------------------
class LayerCache:
    """Every text's pooled embedding at each of ``layers``, encoded the first time it is asked for.

    Keyed by (prompt, text): with an encoder that puts a prompt before queries or documents, the same text read in
    another role is another input. ``encoded`` counts the texts that went through the forward pass.
    """

    def __init__(self, encoder, layers: Sequence[int], batch_size: int = 64, show_progress: bool | None = None):
        self.encoder, self.layers, self.batch_size = encoder, list(layers), batch_size
        self.show_progress = show_progress
        self.rows: dict[tuple[str, str], np.ndarray] = {}  # -> [len(layers), H]
        self.encoded = 0
        self.encode_s = 0.0

    def fill(self, texts: Sequence[str], role: str | None = None) -> list[tuple[str, str]]:
        """Encode those of ``texts`` not cached yet, in one call; their keys. A task's texts given here in the grid's
        order go through the grid's length-sorted batches, so float32 rounding cannot reorder near-tied pairs."""
        prompt = _prompt(self.encoder, role)
        keys = [(prompt, text) for text in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.rows))
        if missing:
            start = time.perf_counter()
            kwargs = {"role": role} if prompt else {}  # an encoder without prompts reads every role alike
            emb = self.encoder.encode_layers([t for _, t in missing], self.layers, batch_size=self.batch_size,
                                             show_progress=self.show_progress, desc="mteb texts", **kwargs).numpy()
            self.rows.update(zip(missing, emb.transpose(1, 0, 2)))
            self.encoded += len(missing)
            self.encode_s += time.perf_counter() - start
        return keys

    def cell(self, texts: Sequence[str], role: str | None, pos: int, dim: int) -> np.ndarray:
        """``[len(texts), dim]`` float32: layer ``layers[pos]`` cut to its first ``dim`` features (not renormalised:
        MTEB's cosine does that, as the grid's does)."""
        keys = self.fill(texts, role)
        if not keys:
            return np.empty((0, dim), dtype=np.float32)
        return np.stack([self.rows[k][pos, :dim] for k in keys])


def _prompt(encoder, role: str | None) -> str:
    prompts = getattr(encoder, "prompts", None)
    return prompts.text(role) if prompts is not None else ""


class CellEncoder(AbsEncoder):
    """MTEB's encoder for the cell (``cache.layers[pos]``, ``dim``), scored as the grid scores it: pairs (STS) by
    cosine always, a query against documents by its meta's similarity (cosine, or dot)."""

    def __init__(self, cache: LayerCache, pos: int, dim: int, meta: ModelMeta):
        self.cache, self.pos, self.dim = cache, pos, dim
        self.mteb_model_meta = meta

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
               **kwargs: Any) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        role = getattr(prompt_type, "value", prompt_type)  # PromptType.query -> "query" (the encoder's roles)
        return self.cache.cell(texts, role, self.pos, self.dim)

    def similarity_pairwise(self, embeddings1, embeddings2):
        """Cosine, whatever the meta says, as the grid's STS: MTEB's float32 torch cosine, computed as the grid's
        (scikit-learn's, MTEB's ``cosine_spearman``, rounds differently and can reorder near-tied pairs)."""
        return pairwise_cos_sim(embeddings1, embeddings2)


def cell_meta(model: str, revision: str, layer: int, dim: int, similarity: str = "cos",
              max_tokens: int | None = None) -> ModelMeta:
    """The cell as an MTEB model named ``<model>/L<layer>-d<dim>`` (its results folder: ``<model>__L<l>-d<d>``)."""
    if similarity not in SIMILARITIES:
        raise M2DError(f"similarity: unknown {similarity!r}; allowed {', '.join(SIMILARITIES)}")
    return ModelMeta(loader=None, name=f"{model}/L{layer}-d{dim}", revision=revision, release_date=None,
                     languages=None, n_parameters=None, memory_usage_mb=None, max_tokens=max_tokens, embed_dim=dim,
                     license=None, open_weights=None, public_training_code=None, public_training_data=None,
                     framework=["PyTorch"], similarity_fn_name=MTEB_SIMILARITY[similarity], use_instructions=False,
                     training_datasets=None)


def model_label(name: str) -> str:
    """A model's name in MTEB's results: an alias as is, a folder by its name (a run's ``model/`` by the run's)."""
    path = Path(name).expanduser()
    if path.exists():
        path = path.resolve()
        name = path.parent.name if path.name == storage.MODEL and path.parent.name else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def model_revision(path: str) -> str:
    """The first 12 hex digits of the sha256 of a local model's weights file (MTEB's placeholder for a hub id)."""
    from ..data._io import sha256_prefix
    from ..encoder import WEIGHT_FILES

    found = next((Path(path) / n for n in WEIGHT_FILES if (Path(path) / n).is_file()), None)
    return sha256_prefix(found, 12) if found else NO_REVISION


# -- tasks -----------------------------------------------------------------------------------------------------
def _local_metadata(name: str, split: str, kind: str, main_score: str, revision: str) -> TaskMetadata:
    """MTEB's description of a data-dir set: its name, one split, ``local/<name>`` at ``revision``."""
    return TaskMetadata(name=name, type=kind, main_score=main_score, description=f"{name} ({split}) from the data dir",
                        dataset={"path": f"local/{name}", "revision": revision}, eval_splits=[split], **_LOCAL)


class LocalSTS(AbsTaskSTS):
    """An STS set of the data dir as an MTEB STS task. Main score: ``spearman``, the Spearman of the cell's own
    pairwise similarity (cosine, :meth:`CellEncoder.similarity_pairwise`), the grid's cell. MTEB's STS tasks name
    ``cosine_spearman`` (scikit-learn's cosine, also written): float32 rounding can reorder near-tied pairs there, a
    few 1e-6 of Spearman on a real model."""

    def __init__(self, pairs: STSPairs, revision: str = NO_REVISION):
        self.metadata = _local_metadata(pairs.name, pairs.split, "STS", "spearman", revision)
        super().__init__()
        self.pairs = pairs

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset

        p = self.pairs
        self.dataset = {p.split: Dataset.from_dict({"sentence1": p.sentences1, "sentence2": p.sentences2,
                                                    "score": [float(s) for s in p.scores]})}
        self.data_loaded = True

    def texts(self) -> list[tuple[str | None, list[str]]]:
        """(role, texts) as the grid encodes them: the unique sentences, first seen first."""
        return [(None, sts.unique_sentences(self.pairs)[0])]


class LocalRetrieval(AbsTaskRetrieval):
    """A retrieval set of the data dir as an MTEB retrieval task (main score nDCG@10): the queries, documents and
    qrels the grid scores (:func:`.retrieval.prepare`), a retrieved doc whose id is the query's dropped as there."""

    ignore_identical_ids = True

    def __init__(self, rset: RetrievalSet, revision: str = NO_REVISION):
        self.metadata = _local_metadata(rset.name, rset.split, "Retrieval", "ndcg_at_10", revision)
        super().__init__()
        self.rset = rset

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset

        qids, qtexts, doc_ids, doc_texts, qrels = retrieval.prepare(self.rset)
        queries = Dataset.from_dict({"id": qids, "text": qtexts})
        corpus = Dataset.from_dict({"id": doc_ids, "title": [""] * len(doc_ids), "text": doc_texts})
        split = {"queries": queries, "corpus": corpus, "relevant_docs": qrels, "top_ranked": None}
        self.dataset = {"default": {self.rset.split: split}}
        self.data_loaded = True

    def texts(self) -> list[tuple[str | None, list[str]]]:
        """(role, texts) as the grid encodes them: the queries, then the documents."""
        _, qtexts, _, doc_texts, _ = retrieval.prepare(self.rset)
        return [("query", qtexts), ("document", doc_texts)]


def local_task(ds: STSPairs | RetrievalSet, revision: str = NO_REVISION) -> AbsTask:
    if isinstance(ds, STSPairs):
        return LocalSTS(ds, revision)
    if isinstance(ds, RetrievalSet):
        return LocalRetrieval(ds, revision)
    raise M2DError(f"task: cannot run {type(ds).__name__} in MTEB; expected STS pairs or a retrieval set")


def data_revision(checksums: dict[str, str], capped: int | None = None) -> str:
    """The revision of a local task: a digest of its files' checksums (``-first<n>`` when capped to n items)."""
    if not checksums:
        return NO_REVISION
    digest = hashlib.sha256(json.dumps(sorted(checksums.items())).encode()).hexdigest()[:12]
    return digest + (f"-first{capped}" if capped else "")


def mteb_task(name: str, local_names: Sequence[str] = ()) -> AbsTask:
    """An installed MTEB task by name; an unknown name is one line naming what is allowed."""
    try:
        return mteb.get_task(name)
    except KeyError as err:
        said = re.search(r"did you mean:? (.+?)\??$", str(err.args[0] if err.args else ""), re.I)  # mteb's guess
        hint = f"; did you mean {said.group(1)}?" if said else ""
        local = f"a set of the data dir ({', '.join(local_names)}) or " if local_names else ""
        raise M2DError(f"task: unknown {name!r}; allowed: {local}an MTEB task name (mteb {mteb.__version__}: "
                       f"mteb.get_tasks() lists them, e.g. STSBenchmark, SciFact){hint}") from None


def task_for(name: str, split: str = "test", data_dir: str | Path | None = None,
             cap: Callable[[Any], Any] | None = None) -> AbsTask:
    """``name`` loaded as a task: a set of the data dir (a registry name, a path or ``hf:``, as ``m2d eval`` reads
    them; ``cap`` may cut it, e.g. to a quick subset) as a local task, else an installed MTEB task by name."""
    from .. import data
    from ..data.registry import EVAL_NAMES
    from .grid import check_evaluable

    if not (name in EVAL_NAMES or name.startswith("hf:") or Path(name).expanduser().exists()):
        return load_task(mteb_task(name, EVAL_NAMES))
    full = data.load(name, split=split, data_dir=data_dir)
    ds = cap(full) if cap else full
    check_evaluable(ds)
    capped = None if ds is full else len(ds.queries) if isinstance(ds, RetrievalSet) else len(ds)
    return load_task(local_task(ds, data_revision(data.file_checksums(name, split, data_dir), capped)))


def load_task(task: AbsTask) -> AbsTask:
    """The task's data loaded once, before any encoding (MTEB keeps preloaded data between cells)."""
    try:
        task.load_data()
    except M2DError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets/hub raise anything (ConnectionError, DatasetNotFoundError, ...)
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise M2DError(f"task {task.metadata.name}: cannot load its data ({reason}); without the hub "
                       f"(HF_HUB_OFFLINE=1) an MTEB task runs only when its dataset is in the Hugging Face "
                       f"cache") from None
    return task


# -- the run ---------------------------------------------------------------------------------------------------
@dataclass
class MtebCells:
    """Main scores as a grid (metric: the task's MTEB main score), MTEB's results folder and the encode count."""

    grid: GridResult
    results: Path
    encoded: int


def evaluate_cells(encoder, tasks: Sequence[AbsTask], layers: Sequence[int], dims: Sequence[int], out: str | Path,
                   model: str, revision: str = NO_REVISION, similarity: str = "cos", batch_size: int = 64,
                   show_progress: bool | None = None) -> MtebCells:
    """Every (layer, dim) cell through ``mteb.evaluate`` on ``tasks`` (loaded first), each text encoded once.

    ``similarity``: the cells' MTEB similarity, a query against documents (pairs are cosine, as the grid's STS).
    MTEB's result files go to ``<out>/results``; a cell evaluated again is overwritten. ``show_progress``: the
    encoding's progress bar, as :meth:`Encoder.encode_layers` shows it.
    """
    names = [t.metadata.name for t in tasks]
    if len(set(names)) != len(names):
        raise M2DError(f"task: {', '.join(names)}: a task name is given twice (MTEB keeps one result file per name)")
    if similarity == "dot" and getattr(encoder, "normalize", False):  # as evaluate_grid refuses it
        raise M2DError("similarity: dot, but the model's modules.json normalises the full embedding before a cell cuts "
                       "it (its cells' dot products would depend on the dims cut away); score by cos")
    cell_meta(model, revision, layers[0], dims[0], similarity)  # a bad similarity fails before any encode
    for task in tasks:
        if not task.data_loaded:
            load_task(task)
    start = time.perf_counter()
    cache = LayerCache(encoder, layers, batch_size, show_progress)
    for task in tasks:  # a local task's texts up front, as the grid encodes them; an MTEB task's as MTEB asks
        for role, texts in getattr(task, "texts", list)():
            cache.fill(texts, role)
    store = mteb.ResultCache(cache_path=Path(out))
    main = {t.metadata.name: t.metadata.main_score for t in tasks}
    max_tokens = getattr(encoder, "max_length", None)
    rows: list[Row] = []
    with _quiet_datasets():
        for pos, layer in enumerate(layers):
            for dim in dims:
                cell = CellEncoder(cache, pos, dim, cell_meta(model, revision, layer, dim, similarity, max_tokens))
                result = mteb.evaluate(cell, list(tasks), cache=store, overwrite_strategy="always", co2_tracker=False,
                                       show_progress_bar=False,
                                       encode_kwargs={"batch_size": batch_size, "show_progress_bar": False})
                for res in result.task_results:
                    rows += [Row(res.task_name, split, main[res.task_name], layer, dim,
                                 float(res.get_score(splits=[split]))) for split in res.scores]
    total = time.perf_counter() - start
    timings = {"encode_s": cache.encode_s, "score_s": total - cache.encode_s, "total_s": total,
               "texts_encoded": cache.encoded, "cells": len(layers) * len(dims)}
    return MtebCells(GridResult(rows, list(layers), list(dims), timings), Path(out) / RESULTS, cache.encoded)


@contextmanager
def _quiet_datasets():
    """No ``datasets`` progress bar per cell (MTEB maps the corpus for every search)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
