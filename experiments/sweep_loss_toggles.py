#!/usr/bin/env python
"""Sweep the loss toggles: KL on/off and teacher detach, PCA/MSE alignment, full-dim sub-layer loss, score alignment.

    python experiments/sweep_loss_toggles.py --smoke

Search space: experiments/spaces/loss_toggles.yaml. See README.md, "Sweeps".
"""

from matryoshka2d.sweep import main

if __name__ == "__main__":  # = m2d sweep --space loss_toggles
    raise SystemExit(main(sweep="loss_toggles", description=__doc__))
