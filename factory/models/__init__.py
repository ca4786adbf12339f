"""Models: the network code that generators (which make pairs) and trainers (which learn from
them) share, so a generator loads exactly the weights a trainer saved. DiT inpainter, latent
editor, lip-pose encoder, SyncNet, audio features and VAE wrappers belong here.

Rules:
- One file per network, named after it; numbered section comments inside, diffusers-style.
- The configuration is captured from the constructor's arguments (nothing read from globals or
  from a run's YAML), so a model is rebuilt from its saved config alone.
- Checkpoints are folders: `save_pretrained(path)` writes the config and the weights,
  `from_pretrained(path)` reads them back from a local path; nothing downloads at run time.
- Every model runs on CPU and on CUDA; tests build a tiny, randomly initialised config.
- A model imports torch and its own building blocks only: never pipelines, stages, filters,
  executors, trainers or the CLI.
"""
