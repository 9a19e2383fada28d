"""Reproduction studies: :mod:`.spec` reads a study YAML into rows (presets + overrides at a scale), :mod:`.report`
turns a finished run into tables, claims (paired bootstrap, :mod:`.bootstrap`), figures and expected results.
:mod:`matryoshka2d.sweep.reproduce` runs the rows as one Ray Tune grid; nothing here knows Ray.
"""
