#!/usr/bin/env python
"""Paired bootstrap of finished trials against a baseline trial, over a set of cells (test items resampled).

    python experiments/compare_trials.py --metric scifact/ndcg@10 --cells sublayer \\
        --baseline RUN_DIR/trials/<id> RUN_DIR/trials/*      # e.g. every weighting trial against log

= ``m2d compare-trials ...``: prints each trial's sampled labels (params.json), its mean over the cells, margin over
the baseline and the 95% interval. Cells: all, sublayer, dims<N, dims>=N, joined with _.
"""

import sys

from matryoshka2d.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["compare-trials", *sys.argv[1:]]))
