"""The classic GAN families on the family interface: MLP GAN, DCGAN, WGAN and WGAN-GP.

One class serves the four (``model.family``); the networks are ``training/networks/classic.py``
and the objective is ``loss.kind``:

- ``bce`` / ``nonsaturating`` (Goodfellow et al. 2014): D maximises log D(x) + log(1 - D(G(z)));
  G minimises -log D(G(z)), or with ``loss.g_saturating`` the original log(1 - D(G(z))).
- ``hinge`` (Miyato et al. 2018, eq. 16-17), ``lsgan`` (Mao et al. 2017, a=0, b=c=1).
- ``wgan`` (Arjovsky et al. 2017, Algorithm 1): critic loss E[D(G(z))] - E[D(x)], every critic
  weight clamped to +-``loss.clip`` after each critic update (a ``Phase.after_update`` hook).
- ``wgan-gp`` (Gulrajani et al. 2017, Algorithm 1): the same losses + lambda * gradient penalty
  on random interpolates (``loss.gp_lambda``; ``loss.drift`` adds ProGAN's epsilon drift, 0 in
  the paper); the critic must not use BatchNorm (``wgan-gp`` networks use layer norm).

Per step, as Algorithm 1 of both WGAN papers and the original GAN: the critic block (``d_main``,
``train.d_steps_per_g`` times, each round on its own real batch), then one G update (``g_main``).
Images seen grow by ``batch * d_steps_per_g`` per step: kimg counts real images shown to D.
The optimizers are the trainer's (``train.optimizer_g`` / ``optimizer_d``: Adam, or RMSprop for
WGAN). Class-conditional fakes follow the data's class mix (the batch's labels, shuffled); under
WGAN-GP the fakes take the reals' labels so that each interpolate has one label.

Sampling: G_ema (the presets that reproduce a paper set ``train.ema_kimg`` so small that G_ema
is G). A BatchNorm generator is sampled in eval mode after ``recalibrate_batchnorm`` recomputes
its statistics from fixed latents: the same on every rank, for every world size and resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import losses
from ..family import Phase
from ..networks.classic import ARCH, recalibrate_batchnorm
from .adversarial import LOSSES, AdversarialBase

LOSS_KINDS = tuple(LOSSES)
# The objective a WGAN family is defined by (the others take any kind but wgan-gp with BatchNorm).
REQUIRED_KIND = {"wgan": "wgan", "wgan-gp": "wgan-gp"}
RECALIBRATION_SEED = 0x5EED
RECALIBRATION_LATENTS = 512
RECALIBRATION_BATCH = 64


def check_config(cfg: Any) -> None:
    """One-line errors for combinations the classic families do not train."""
    family, kind = cfg.model.family, cfg.loss.kind
    if family not in ARCH:
        raise ValueError(f"model.family: {family!r} is not a classic family ({', '.join(ARCH)})")
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss.kind: must be one of {', '.join(LOSS_KINDS)}, got {kind!r}")
    required = REQUIRED_KIND.get(family)
    if required and kind != required:
        raise ValueError(
            f"loss.kind: model.family {family} trains with loss.kind={required}, got {kind!r}; "
            f"set loss.kind={required} (or use model.family=dcgan for other losses)"
        )
    if kind == "wgan-gp" and family == "dcgan" and cfg.model.d_norm in ("auto", "batch"):
        raise ValueError(
            "loss.kind: wgan-gp needs a critic without BatchNorm (the penalty is per sample); "
            "use model.family=wgan-gp or set model.d_norm=layer"
        )


@torch.no_grad()
def clip_weights(module: nn.Module, clip: float) -> None:
    """WGAN (Arjovsky et al. 2017, Algorithm 1 line 7): clamp every parameter to [-clip, clip]."""
    for parameter in module.parameters():
        parameter.clamp_(-clip, clip)


class Classic(AdversarialBase):
    """MLP GAN / DCGAN / WGAN / WGAN-GP: one G, one D (critic), G_ema."""

    name = "classic"  # registered as mlp, dcgan, wgan and wgan-gp (the subclasses below)
    # D scores the reals first, then the fakes (the DCGAN reference's order).
    reals_first = True

    def __init__(self, cfg: Any, manifests: Mapping, device: torch.device) -> None:
        check_config(cfg)
        super().__init__(cfg, manifests, device)
        if cfg.loss.kind in ("bce", "nonsaturating"):
            self.g_loss = partial(losses.g_bce_loss, saturating=cfg.loss.g_saturating)
        self._calibrated: tuple[int, int] | None = None  # (id of G_ema, images_seen)

    # -- declarations --------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        lcfg = self.cfg.loss
        clip = None
        if lcfg.kind == "wgan" and lcfg.clip > 0:
            clip = self.clip_critic
        return [
            Phase(
                name="d_main",
                trains="discriminator",
                loss=self.d_main,
                critic=True,
                after_update=clip,
            ),
            Phase(name="g_main", trains="generator", loss=self.g_main),
        ]

    def clip_critic(self, nets: Mapping[str, nn.Module]) -> None:
        clip_weights(nets["discriminator"], self.cfg.loss.clip)

    # -- outputs -------------------------------------------------------------------------------
    def calibrate(self, generator: nn.Module, images_seen: int | None = None) -> None:
        """Recompute G_ema's BatchNorm statistics from fixed latents (once per ``images_seen``;
        None: always)."""
        key = (id(generator), images_seen)
        if images_seen is not None and self._calibrated == key:
            return
        rng = torch.Generator().manual_seed(RECALIBRATION_SEED)
        z = torch.randn(RECALIBRATION_LATENTS, self.z_dim, generator=rng).to(self.device)
        c = None
        if self.c_dim:
            ids = torch.arange(RECALIBRATION_LATENTS, device=self.device) % self.c_dim
            c = nn.functional.one_hot(ids, self.c_dim).float()
        recalibrate_batchnorm(generator, z, c, batch=RECALIBRATION_BATCH)
        self._calibrated = key

    def sample(self, nets, z, c, images_seen):
        generator = nets[self.ema_name]
        self.calibrate(generator, images_seen)
        was_training = generator.training
        generator.eval()
        try:
            return generator(z, c)
        finally:
            generator.train(was_training)

    def export(self, nets: Mapping[str, nn.Module], out_dir: Path, meta: dict) -> Path:
        self.calibrate(nets[self.ema_name])
        return super().export(nets, out_dir, meta)


class MLPGAN(Classic):
    name = "mlp"


class DCGAN(Classic):
    name = "dcgan"


class WGAN(Classic):
    name = "wgan"


class WGANGP(Classic):
    name = "wgan-gp"
