"""The pseudo-pair data factory: unlabeled talking-head video in, (synthetic, real) pairs out."""

__version__ = "0.1.0"
