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

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import losses
from ..family import Family, Network, Phase, StepContext
from ..networks import build_networks
from ..networks.classic import ARCH, recalibrate_batchnorm
from ..networks.export import save_export

# loss.kind -> (D loss(real_logits, fake_logits), G loss(fake_logits))
LOSS_KINDS = ("nonsaturating", "bce", "hinge", "lsgan", "wgan", "wgan-gp")
D_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nonsaturating": losses.d_bce_loss,
    "bce": losses.d_bce_loss,
    "hinge": losses.d_hinge_loss,
    "lsgan": losses.d_lsgan_loss,
    "wgan": losses.d_wgan_loss,
    "wgan-gp": losses.d_wgan_loss,
}
G_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "nonsaturating": losses.g_bce_loss,
    "bce": losses.g_bce_loss,
    "hinge": losses.g_hinge_loss,
    "lsgan": losses.g_lsgan_loss,
    "wgan": losses.g_wgan_loss,
    "wgan-gp": losses.g_wgan_loss,
}
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


class Classic(Family):
    """MLP GAN / DCGAN / WGAN / WGAN-GP: one G, one D (critic), G_ema."""

    name = "classic"  # registered as mlp, dcgan, wgan and wgan-gp (the subclasses below)
    ema_name = "g_ema"

    def __init__(self, cfg: Any, manifests: Mapping, device: torch.device) -> None:
        check_config(cfg)
        super().__init__(cfg, manifests, device)
        g, d, self.g_kwargs, self.d_kwargs = build_networks(
            cfg.model, self.manifest.resolution, self.manifest.channels, self.c_dim
        )
        self._generator, self._discriminator = g, d
        kind = cfg.loss.kind
        self.d_loss = D_LOSSES[kind]
        self.g_loss = G_LOSSES[kind]
        if kind in ("bce", "nonsaturating"):
            self.g_loss = partial(losses.g_bce_loss, saturating=cfg.loss.g_saturating)
        self._calibrated: tuple[int, int] | None = None  # (id of G_ema, images_seen)

    # -- declarations --------------------------------------------------------------------------
    def build_networks(self) -> dict[str, Network]:
        return {
            "generator": Network(
                module=self._generator, optimizer=self.optimizer("g"), ema=self.ema_name
            ),
            "discriminator": Network(module=self._discriminator, optimizer=self.optimizer("d")),
        }

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

    # -- phases --------------------------------------------------------------------------------
    def discriminate(
        self, ctx: StepContext, images: torch.Tensor, c: torch.Tensor | None, *, eager=False
    ) -> torch.Tensor:
        d = (ctx.eager_nets if eager else ctx.nets)["discriminator"]
        return d(ctx.augment(images), c).float()

    def g_main(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = ctx.real.labels
        z = ctx.randn(labels.shape[0], self.z_dim)
        c = ctx.one_hot(ctx.shuffled_labels(labels))
        fake_logits = self.discriminate(ctx, ctx.nets["generator"](z, c), c)
        loss = self.g_loss(fake_logits)
        return loss, {"loss/g": loss}

    def d_main(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lcfg = self.cfg.loss
        labels = ctx.real.labels
        c = ctx.one_hot(labels)
        z = ctx.randn(labels.shape[0], self.z_dim)
        gp_on = lcfg.kind == "wgan-gp"
        with torch.no_grad():
            fake_c = c if gp_on else ctx.one_hot(ctx.shuffled_labels(labels))
            fake = ctx.nets["generator"](z, fake_c).float()
        real = ctx.real.images
        # Separate real and fake batches through D (the DCGAN reference: each its own BatchNorm
        # statistics).
        real_logits = self.discriminate(ctx, real, c)
        fake_logits = self.discriminate(ctx, fake, fake_c)
        ctx.report_real_logits(real_logits)
        loss = self.d_loss(real_logits, fake_logits)
        metrics = {
            "loss/d": loss,
            "scores/real": real_logits.mean(),
            "scores/fake": fake_logits.mean(),
        }
        if gp_on:
            gp = losses.gradient_penalty(
                lambda x: self.discriminate(ctx, x, c, eager=True),
                real,
                fake,
                gp_lambda=lcfg.gp_lambda,
            )
            loss = loss + gp
            metrics["loss/gp"] = gp
            if lcfg.drift > 0:
                loss = loss + losses.epsilon_drift(real_logits, lcfg.drift)
        return loss, metrics

    # -- outputs -------------------------------------------------------------------------------
    @property
    def z_dim(self) -> int:
        return self._generator.z_dim

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
        generator = nets[self.ema_name]
        self.calibrate(generator)
        return save_export(
            out_dir,
            generator,
            family=self.name,
            kwargs=self.g_kwargs,
            class_names=self.manifest.class_names if self.c_dim else [],
            meta=meta,
        )


class MLPGAN(Classic):
    name = "mlp"


class DCGAN(Classic):
    name = "dcgan"


class WGAN(Classic):
    name = "wgan"


class WGANGP(Classic):
    name = "wgan-gp"
