"""Stages that are not filters or augmentations: ingest and generation."""
