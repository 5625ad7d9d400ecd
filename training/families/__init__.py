"""GAN families by name (``model.family``), imported lazily: see ``training/family.py``.

Add a family with one line here: ``"name": "training.families.<module>:<Class>"``.
"""

from __future__ import annotations

import importlib

from ..family import Family

FAMILIES: dict[str, str] = {
    "cyclegan": "training.families.cyclegan:CycleGAN",
    "progan": "training.families.progan:ProGAN",
    "stylegan2": "training.families.stylegan2:StyleGAN2",
    # the classic families (training/families/classic.py)
    "dcgan": "training.families.classic:DCGAN",
    "mlp": "training.families.classic:MLPGAN",
    "wgan": "training.families.classic:WGAN",
    "wgan-gp": "training.families.classic:WGANGP",
}


def get_family(name: str) -> type[Family]:
    """The family class registered as ``name`` (a one-line error lists the valid names)."""
    if name not in FAMILIES:
        raise ValueError(f"model.family: unknown family {name!r}; valid: {', '.join(FAMILIES)}")
    module_name, class_name = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["FAMILIES", "get_family"]
