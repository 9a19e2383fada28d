"""``hf:<dataset>[:<config>]``: STS-style datasets from the Hugging Face hub (or its local cache).

Scores are kept in the dataset's own range (e.g. sentence-transformers/stsb is 0..1): Spearman
does not care, and rescaling would hide which variant was evaluated.
"""

from __future__ import annotations

import os

from matryoshka2d.errors import M2DError

from .types import STSPairs

SCORE_COLUMNS = ("score", "label", "similarity_score")


def parse_hf_name(spec: str) -> tuple[str, str | None]:
    """``hf:org/name:config`` -> (``org/name``, ``config``)."""
    body = spec.removeprefix("hf:")
    dataset, _, config = body.partition(":")
    if not dataset:
        raise M2DError(f"{spec!r}: expected hf:<dataset>[:<config>], e.g. hf:sentence-transformers/stsb")
    return dataset, config or None


def load_hf_sts(spec: str, split: str = "test") -> STSPairs:
    """Load via ``datasets``; any hub/cache failure is one line (offline mode fails at once, no retries)."""
    dataset, config = parse_hf_name(spec)
    try:
        import datasets
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        ds = datasets.load_dataset(dataset, config, split=split)
    except M2DError:
        raise
    except Exception as err:  # ConnectionError, FileNotFoundError, ValueError (bad split), ...
        offline = " (HF_HUB_OFFLINE=1: only cached datasets load)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise M2DError(f"{spec}: cannot load split {split!r} from the Hugging Face hub{offline}: {first}") from None
    return _to_pairs(spec, split, ds)


def _to_pairs(spec: str, split: str, ds) -> STSPairs:
    """Map sentence1/sentence2/<score> columns onto ``STSPairs``."""
    columns = list(ds.column_names)
    score_col = next((c for c in SCORE_COLUMNS if c in columns), None)
    if "sentence1" not in columns or "sentence2" not in columns or score_col is None:
        raise M2DError(f"{spec}: expected columns sentence1, sentence2 and one of {', '.join(SCORE_COLUMNS)}; "
                       f"has {', '.join(columns)}")
    scores = [float(s) for s in ds[score_col]]
    return STSPairs(name=spec, split=split, sentences1=list(ds["sentence1"]), sentences2=list(ds["sentence2"]),
                    scores=scores)
