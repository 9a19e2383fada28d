#!/usr/bin/env python
"""Paired bootstrap of finished trials against a baseline trial, over a set of cells (test items resampled).

    python experiments/compare_trials.py --metric scifact/ndcg@10 --cells sublayer \
        --baseline RUN_DIR/trials/<id> RUN_DIR/trials/*      # e.g. every weighting trial against log

Prints each trial's sampled labels (params.json), its mean over the cells, margin over the baseline and the 95%
interval. Cells: all, sublayer, dims<N, dims>=N, joined with _.
"""

import argparse
import json
import sys
from pathlib import Path

from matryoshka2d.errors import M2DError, OneLineParser
from matryoshka2d.report import paired_difference


def main() -> int:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="trial dir to compare against")
    p.add_argument("--metric", required=True, help="dataset/metric, e.g. scifact/ndcg@10 or sts-avg/spearman")
    p.add_argument("--cells", default="sublayer")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("trials", nargs="+", help="trial dirs (grid.csv + items.npz)")
    args = p.parse_args()
    try:
        print(f"{'trial':<14} {'mean':>8} {'margin':>8}  95% CI              params")
        for trial in args.trials:
            r = paired_difference(Path(trial), Path(args.baseline), args.metric, args.cells, args.bootstrap)
            params = Path(trial) / "params.json"
            labels = json.loads(params.read_text()) if params.is_file() else {}
            print(f"{Path(trial).name:<14} {r['a_mean']:8.4f} {r['margin']:+8.4f}  [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]"
                  f"  {labels}")
        return 0
    except M2DError as err:
        print(f"compare_trials: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
