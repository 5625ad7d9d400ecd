"""ProGAN (Karras et al. 2018) as a family: progressive growing on the shared adversarial phases.

Everything position-dependent is a pure function of ``images_seen`` (``training/growth.py``):
the ``(resolution, alpha)`` passed to both networks, the real images downsampled and faded like
G's output, the per-resolution batch and learning rate, and the optimizer era (Adam state is
reset at every phase boundary with ``growth.reset_optimizer``, as the reference's
``reset_opt_for_new_lod``). The losses are the preset's (WGAN-GP with epsilon drift in the
paper's configuration; logistic + R1 works too).
"""

from __future__ import annotations

from typing import Any

import torch

from ..family import Schedule, StepContext
from ..growth import Phase as GrowthPhase
from ..growth import batch_for, downsample_reals, growth_phase, lr_for
from .stylegan2 import AdversarialFamily


class ProGAN(AdversarialFamily):
    name = "progan"

    def growth(self, images_seen: int) -> GrowthPhase:
        return growth_phase(images_seen, self.cfg.growth, self.manifest.resolution)

    def net_kwargs(self, images_seen: int) -> dict[str, Any]:
        phase = self.growth(images_seen)
        alpha: float | torch.Tensor = phase.alpha
        if self.cfg.train.compile:  # a 0-dim tensor: no recompile for every alpha of a fade
            alpha = torch.full([], phase.alpha, device=self.device)
        return {"resolution": phase.resolution, "alpha": alpha}

    def schedule(self, images_seen: int) -> Schedule:
        phase, growth = self.growth(images_seen), self.cfg.growth
        return Schedule(
            batch=batch_for(phase.resolution, growth, self.cfg.train.batch),
            lr={
                "generator": lr_for(phase.resolution, growth, self.optimizer("g").lr),
                "discriminator": lr_for(phase.resolution, growth, self.optimizer("d").lr),
            },
            era=phase.phase_index,
            reset_optimizers=growth.reset_optimizer,
        )

    def progress(self, images_seen: int) -> dict[str, float]:
        phase = self.growth(images_seen)
        return {"resolution": phase.resolution, "alpha": phase.alpha}

    def reals(self, ctx: StepContext) -> torch.Tensor:
        phase = self.growth(ctx.images_seen)
        return downsample_reals(ctx.real.images, phase.resolution, phase.alpha)
