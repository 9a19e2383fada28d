#!/usr/bin/env python
"""Reproduce the seed study (arXiv 2411.17299): every method of a study, one Ray Tune grid, tables and claims.

    python experiments/reproduce.py --study sts --scale cpu          # ~40 min on 2 CPU cores
    python experiments/reproduce.py --study all --scale smoke        # minutes: the CI check
    python experiments/reproduce.py --study retrieval --scale gpu --dry-run
    python experiments/reproduce.py --check RUN_DIR                  # against experiments/expected/<study>.yaml
    ray job submit --working-dir . -- python experiments/reproduce.py --study sts --scale cpu

Studies: experiments/studies/*.yaml. See README.md, "Reproduction".
"""

from matryoshka2d.sweep.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main(description=__doc__))
