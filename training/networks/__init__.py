"""Generator/discriminator families, picked from an explicit dict (never by class-name string).

Every family module provides:

- ``Generator(**kwargs)``: ``forward(z [N, z_dim], c [N, c_dim] one-hot or None, truncation_psi=1.0,
  noise_mode="random"|"const"|"none", **family_kwargs) -> images [N, C, H, W] in about [-1, 1]``;
  attributes ``z_dim``, ``c_dim``, ``img_resolution``, ``img_channels``.
- ``Discriminator(**kwargs)``: ``forward(images, c=None, **family_kwargs) -> logits [N, 1]``.
- ``generator_kwargs(model_cfg, resolution, channels, c_dim) -> dict`` and
  ``discriminator_kwargs(...) -> dict``: plain JSON-able constructor arguments. The export stores
  them so that a generator is rebuilt from JSON + safetensors alone.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .config import ModelConfig
from .layers import set_precision

# family name -> module path (imported lazily so deploy pulls in only what it needs)
FAMILIES: dict[str, str] = {
    "stylegan2": "training.networks.stylegan2",
    "progan": "training.networks.progan",
    # the classic families share one module (``arch`` in the kwargs picks MLP or DCGAN)
    "mlp": "training.networks.classic",
    "dcgan": "training.networks.classic",
    "wgan": "training.networks.classic",
    "wgan-gp": "training.networks.classic",
}


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[family])


def build_generator(family: str, kwargs: dict):
    return family_module(family).Generator(**kwargs)


def build_discriminator(family: str, kwargs: dict):
    return family_module(family).Discriminator(**kwargs)


def build_networks(cfg: ModelConfig, resolution: int, channels: int, c_dim: int):
    """-> (generator, discriminator, generator_kwargs, discriminator_kwargs)."""
    mod = family_module(cfg.family)
    g_kwargs = mod.generator_kwargs(cfg, resolution, channels, c_dim)
    d_kwargs = mod.discriminator_kwargs(cfg, resolution, channels, c_dim)
    return mod.Generator(**g_kwargs), mod.Discriminator(**d_kwargs), g_kwargs, d_kwargs


__all__ = [
    "FAMILIES",
    "ModelConfig",
    "build_discriminator",
    "build_generator",
    "build_networks",
    "family_module",
    "set_precision",
]
