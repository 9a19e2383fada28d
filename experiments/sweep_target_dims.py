#!/usr/bin/env python
"""Sweep the target-dim set of the 2D Matryoshka loss ("128", "32,128", "8,16,32,64,128,H", ...).

    python experiments/sweep_target_dims.py --smoke

Search space: experiments/spaces/target_dims.yaml. See README.md, "Sweeps".
"""

from pathlib import Path

from matryoshka2d.sweep import main

if __name__ == "__main__":
    raise SystemExit(main(sweep="target_dims", description=__doc__, preset="v2",
                          space=Path(__file__).resolve().parent / "spaces" / "target_dims.yaml"))
