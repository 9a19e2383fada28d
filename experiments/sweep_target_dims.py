#!/usr/bin/env python
"""Sweep the target-dim set of the 2D Matryoshka loss ("128", "32,128", "8,16,32,64,128,H", ...).

    python experiments/sweep_target_dims.py --smoke

Search space: experiments/spaces/target_dims.yaml. See README.md, "Sweeps".
"""

from matryoshka2d.sweep import main

if __name__ == "__main__":  # = m2d sweep --space target_dims
    raise SystemExit(main(sweep="target_dims", description=__doc__))
