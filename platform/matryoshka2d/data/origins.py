"""Where each named dataset comes from, its license, and where its files go in a data dir (``m2d data``, docs/data.md).

Licenses are as the files or their publishers state them; where a release mixes terms the entry points at the
readme or license file that travels with the data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    source: str  # the release and its publication
    url: str  # where to download it
    license: str
    folder: str  # its folder under the data dir
    get: str  # what to put where, once downloaded


_STS_ZIP = "http://ixa2.si.ehu.es/stswiki/images/{}-en-test.zip"
_STS_YEARS = {  # name -> (year, zip path, folder inside the zip, license note)
    "sts12": ("2012", "4/40/STS2012", "test-gold", "per subset: MSRpar/MSRvid under Microsoft Research terms; see "
                                                    "STS12/00-readme.txt"),
    "sts13": ("2013", "2/2f/STS2013", "test-gs", "per subset, see STS13/00-readme.txt (the SMT subset is withheld for "
                                                 "licensing)"),
    "sts14": ("2014", "8/8c/STS2014", "sts-en-test-gs-2014", "per subset, see STS14/00-readme.txt"),
    "sts15": ("2015", "d/da/STS2015", "test_evaluation_task2a", "answers-forums CC BY-SA 3.0 (StackExchange, "
                                                                "STS.input.answers-forums.LICENSE.txt); others see "
                                                                "STS15/00-readme.txt"),
    "sts16": ("2016", "9/98/STS2016", "sts2016-english-with-gs-v1.0", "question-question and answer-answer CC BY-SA "
                                                                      "3.0 (StackExchange); see STS16/LICENSE.txt"),
}
_MSMARCO_LICENSE = "Microsoft terms: non-commercial research use only"
_ANSERINI = "https://github.com/castorini/anserini-tools"
_COLLECTION = ("collection.tsv from collectionandqueries.tar.gz (https://microsoft.github.io/msmarco/) into msmarco/; "
               f"topics and qrels from {_ANSERINI} (topics/, qrels/) into msmarco/")

ORIGINS: dict[str, Origin] = {
    "stsb": Origin("STS Benchmark (Cer et al. 2017, SemEval-2017 Task 1), original release",
                   "http://ixa2.si.ehu.es/stswiki/images/4/48/Stsbenchmark.tar.gz",
                   "scores CC BY-SA 4.0; each source corpus's text under its own terms (stsb/LICENSE.txt)", "stsb",
                   "unpack it; put sts-train.csv, sts-dev.csv, sts-test.csv in stsb/"),
    **{name: Origin(f"SemEval-{year} STS English test set with gold scores (Agirre et al. {year})",
                    _STS_ZIP.format(path), license, "sts12-16",
                    f"unzip it; put the files of {inner}/ in sts12-16/{name.upper()}/")
       for name, (year, path, inner, license) in _STS_YEARS.items()},
    "sickr": Origin("SICK relatedness (Marelli et al. 2014, SemEval-2014 Task 1)",
                    "http://alt.qcri.org/semeval2014/task1/data/uploads/",
                    "CC BY-NC-SA 3.0, as stated by the SICK authors (no license file travels with it: see source)",
                    "sick", "sick_train.zip, sick_trial.zip, sick_test_annotated.zip; put SICK_train.txt, "
                            "SICK_trial.txt, SICK_test_annotated.txt in sick/"),
    "scifact": Origin("SciFact (Wadden et al. 2020) in BEIR format (Thakur et al. 2021)",
                      "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip",
                      "CC BY-NC 2.0 (SciFact corpus, AllenAI)", "scifact",
                      "unzip it; put corpus.jsonl, queries.jsonl and qrels/{train,test}.tsv in scifact/"),
    "msmarco-dev": Origin("MS MARCO passage ranking, dev small (Bajaj et al. 2016)",
                          "https://microsoft.github.io/msmarco/", _MSMARCO_LICENSE, "msmarco", _COLLECTION),
    "dl19": Origin("TREC Deep Learning 2019 passage task over MS MARCO (track overview: Craswell et al.)",
                   "https://microsoft.github.io/msmarco/TREC-Deep-Learning-2019", _MSMARCO_LICENSE, "msmarco",
                   _COLLECTION),
    "dl20": Origin("TREC Deep Learning 2020 passage task over MS MARCO (track overview: Craswell et al.)",
                   "https://microsoft.github.io/msmarco/TREC-Deep-Learning-2020", _MSMARCO_LICENSE, "msmarco",
                   _COLLECTION),
    "snli": Origin("SNLI 1.0 (Bowman et al. 2015), SentEval's s1/s2/labels copy",
                   "https://nlp.stanford.edu/projects/snli/", "CC BY-SA 4.0", "snli-senteval",
                   "SentEval's data/get_transfer_data.bash writes SNLI/{s1,s2,labels}.{train,dev,test}: copy them to "
                   "snli-senteval/ (train reads them; dev, test and all read snli_devtest_triplets.tsv.gz, derived "
                   "from them: docs/data.md)"),
}
