"""Augmentations applied identically to both sides of a pair."""
