"""Mask-based generators behind one interface, looked up by name (plugins via entry points)."""

from factory.generators.base import GenerationInput, Generator, generator_class, generator_names, register
from factory.generators import transplant  # noqa: F401,E402  (the built-in generator registers itself)
from factory.generators import latent_editor  # noqa: F401,E402  (FlashLips Stage 1; torch loads lazily)
from factory.generators import dit_inpainter  # noqa: F401,E402  (torch is imported inside its methods)

__all__ = ["GenerationInput", "Generator", "generator_class", "generator_names", "register"]
