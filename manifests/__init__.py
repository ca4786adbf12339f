"""Shard writing, the manifest format, readers for training jobs, and resume bookkeeping.

Knows records and files, never filters or generators.
"""
