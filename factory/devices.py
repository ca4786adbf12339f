"""Device choice. Ray sets CUDA_VISIBLE_DEVICES for a GPU actor, so 'cuda' is the GPU Ray assigned;
nothing here parses that variable by hand."""


def pick_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
