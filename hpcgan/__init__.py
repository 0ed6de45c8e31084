"""hpcgan: distributed training of conditional GANs for science."""

__version__ = "0.1.0"
