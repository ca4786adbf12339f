"""Device choice. Ray sets CUDA_VISIBLE_DEVICES for a GPU actor, so 'cuda' is the GPU Ray assigned;
nothing here parses that variable by hand."""


def pick_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def free_accelerator_memory() -> None:
    """After a stage drops its models: hand cached GPU memory back (the next stage may need it)."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
