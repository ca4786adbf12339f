"""Trainers: the training loops and their recipes (generators, xdub-stage2, flashlips-refine,
syncnet), behind `factory train-dubber`. A loop reads top to bottom, nanoGPT-style, and its
checkpoints (`save_pretrained` folders: model, optimizer, step, config) resume exactly.

Rules:
- Input is what the factory wrote: manifests (through manifests' reader) and clip stores.
- Networks come from factory/models, numbers (LMD, CSIM, ...) from factory/metrics.
- Never import pipelines or executors: a loop runs in a plain process. Ray Train wraps it from
  the outside, and any cluster wiring attaches through factory/cluster.py, not from in here.
"""
