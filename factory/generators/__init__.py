"""Mask-based generators behind one interface, looked up by name (plugins via entry points)."""

from factory.generators.base import GenerationInput, Generator, generator_class, register

__all__ = ["GenerationInput", "Generator", "generator_class", "register"]
