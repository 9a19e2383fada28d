#!/usr/bin/env python
"""Sweep the prior-layer weighting of the 2D Matryoshka loss: linear, log, uniform, exponential, custom lists.

    python experiments/sweep_weighting.py --smoke            # minutes on a laptop (local Ray)
    ray job submit --working-dir . -- python experiments/sweep_weighting.py --num-samples 16

Search space: experiments/spaces/weighting.yaml. See README.md, "Sweeps".
"""

from matryoshka2d.sweep import main

if __name__ == "__main__":  # = m2d sweep --space weighting
    raise SystemExit(main(sweep="weighting", description=__doc__))
