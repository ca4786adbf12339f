"""Qwen2.5-VL for the factory: a local-folder loader with batched chat, the six-aspect quality
prompt and parser, and occluder grounding (boxes in the original frame's pixels)."""
