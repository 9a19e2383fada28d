"""matryoshka2d: one encoder, every (layer, dim) cell usable."""
__version__ = "0.1.0"
