"""Data loaders: evaluation sets (STS, retrieval) and training data (NLI triplets, scored pairs, qrels pairs).

``sources`` says what one run reads (files, checksums); ``registry`` names the datasets and their files; ``hf``
reads ``hf:`` sources (hub ids, local files and folders) by their columns (``columns``); ``inventory`` lists what a
data dir holds (``m2d data``) with each dataset's origin (``origins``).

Everything returns the plain containers in ``types``; every bad input raises a one-line ``M2DError``
naming the file, the line and the problem. See ``load`` for dataset names and path formats.
"""

from .nli import load_triplet_tsv, triplets_from_senteval
from .registry import (
    REGISTRY,
    STS_AVG_SETS,
    available_sts_sets,
    check_files,
    data_dir,
    dataset_files,
    expand_eval_names,
    file_checksums,
    load,
    load_retrieval_train,
    load_scored_pairs,
    load_train_source,
    load_triplets,
    train_source,
)
from .retrieval import (
    load_beir,
    load_msmarco_collection,
    load_msmarco_triples,
    load_trec_qrels,
    load_trec_topics,
)
from .sources import TrainData, check_present, checksums, load_training, training_source
from .sts import SEMEVAL_SUBSETS, load_semeval_sts, load_sick, load_stsb
from .types import RetrievalSet, STSPairs, Triplets

__all__ = [
    "REGISTRY", "SEMEVAL_SUBSETS", "STS_AVG_SETS", "RetrievalSet", "STSPairs", "TrainData", "Triplets",
    "available_sts_sets", "check_files", "data_dir", "dataset_files", "expand_eval_names", "file_checksums", "load", "load_beir",
    "load_msmarco_collection", "load_msmarco_triples", "load_retrieval_train", "load_scored_pairs",
    "load_semeval_sts", "load_sick", "load_stsb", "load_trec_qrels", "load_trec_topics", "load_triplet_tsv",
    "load_train_source", "load_training", "load_triplets", "train_source", "training_source", "triplets_from_senteval",
    "check_present", "checksums",
]
