"""One generator, one discriminator: what the classic families, StyleGAN2 and ProGAN share.

:class:`AdversarialBase` declares G (with its EMA copy ``g_ema``) and D, and runs the two main
phases over one micro-batch:

- ``g_main``: fakes from fresh latents with the labels of the batch shuffled (conditional fakes
  follow the data's class mix), scored by D; the G loss of ``loss.kind``.
- ``d_main``: D on the reals (with their labels) and on fakes made without gradient (or, with
  ``loss.reuse_fakes``, g_main's fakes of the same micro-batch), in one forward where D allows it
  (``joint_real_fake``); the D loss of ``loss.kind`` (``LOSSES``); under WGAN-GP (Gulrajani et al. 2017) the fakes take the reals'
  labels, so each interpolate ``lerp(real_i, fake_i)`` has one label, and the gradient penalty
  (``loss.gp_lambda``) and ProGAN's epsilon drift (``loss.drift``) are added; with
  ``r1_in_main`` (StyleGAN2's "Dboth") the R1 penalty too. The metric ``loss/d`` is the
  adversarial term; the regularisers are logged as their own metrics.
- InfoGAN (``model.latent_classes``, Chen et al. 2016): D's output carries Q's code logits after
  the score (:meth:`split_q`); both phases add ``loss.info_weight x`` the cross-entropy of Q on
  the fakes against the codes their latents carry (``loss/info_g``, ``loss/info_d``).

Subclasses say how G is called (``generate``, ``net_kwargs``), which reals D sees (``reals``), in
which order D scores the two batches (``reals_first``), their phases and their sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .. import losses
from ..family import Family, Network, StepContext
from ..networks import build_networks
from ..networks.export import save_export
from ..networks.layers import join_batches, split_batches
from ..networks.stylegan2 import latent_code

LOSSES: dict[
    str,
    tuple[
        Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        Callable[[torch.Tensor], torch.Tensor],
    ],
] = {
    "nonsaturating": (losses.d_bce_loss, losses.g_bce_loss),
    "bce": (losses.d_bce_loss, losses.g_bce_loss),
    "hinge": (losses.d_hinge_loss, losses.g_hinge_loss),
    "lsgan": (losses.d_lsgan_loss, losses.g_lsgan_loss),
    "wgan": (losses.d_wgan_loss, losses.g_wgan_loss),
    "wgan-gp": (losses.d_wgan_loss, losses.g_wgan_loss),
}
"""loss.kind -> (D loss(real_logits, fake_logits), G loss(fake_logits))."""


class AdversarialBase(Family):
    """One G, one D, G_ema; the ``g_main`` and ``d_main`` phases (see the module doc)."""

    ema_name = "g_ema"
    reals_first: ClassVar[bool] = False
    """D scores the reals before the fakes (the order of its BatchNorm statistics updates and of
    the augmentation's random draws); False: fakes first."""
    joint_real_fake: ClassVar[bool] = False
    """D scores reals and fakes in one forward (:func:`join_batches`): only for a D whose one
    cross-sample layer is the minibatch stddev (``model.mbstd_group``), whose groups the joined
    batch keeps pure, so the logits are those of two forwards, at the cost of one. False: two
    forwards (BatchNorm statistics per batch, as the classic families need)."""

    def __init__(self, cfg: Any, manifests: Mapping, device: torch.device) -> None:
        super().__init__(cfg, manifests, device)
        g, d, self.g_kwargs, self.d_kwargs = build_networks(
            cfg.model, self.manifest.resolution, self.manifest.channels, self.c_dim
        )
        self._generator, self._discriminator = g, d
        self.d_loss, self.g_loss = LOSSES[cfg.loss.kind]
        # loss.reuse_fakes: g_main's fakes (+ labels, latents) per micro-batch, for d_main's
        # first critic round
        self._g_fakes: dict[int, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = {}
        # InfoGAN (model.latent_classes): D's outputs carry Q's code logits after the score
        self.q_dim = int(getattr(d, "q_dim", 0))

    # -- declarations --------------------------------------------------------------------------
    @property
    def r1_in_main(self) -> bool:
        """R1 on the reals inside ``d_main`` (needs a double backward through D)."""
        return False

    def g_reg_interval(self) -> int | None:
        """Lazy-regularisation interval of G's optimizer correction (None: no correction)."""
        return None

    def d_reg_interval(self) -> int | None:
        """Lazy-regularisation interval of D's optimizer correction (None: no correction)."""
        return None

    def generator_compile(self) -> tuple[str, ...]:
        """The generator's submodules that compiled phases call (``Network.compile``)."""
        return ("",)

    def build_networks(self) -> dict[str, Network]:
        return {
            "generator": Network(
                module=self._generator,
                optimizer=self.optimizer("g", self.g_reg_interval()),
                ema=self.ema_name,
                compile=self.generator_compile(),
            ),
            "discriminator": Network(
                module=self._discriminator,
                optimizer=self.optimizer("d", self.d_reg_interval()),
            ),
        }

    # -- how G and D are called ----------------------------------------------------------------
    def net_kwargs(self, images_seen: int) -> dict[str, Any]:
        """Extra keyword arguments of both networks (ProGAN: resolution and fade alpha)."""
        return {}

    def generate(
        self, ctx: StepContext, z: torch.Tensor, c: torch.Tensor | None, *, track_w: bool = False
    ) -> torch.Tensor:
        """Fakes for the main phases: [N, C, H, W]."""
        return ctx.nets["generator"](z, c, **self.net_kwargs(ctx.images_seen))

    def split_q(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's output -> (logits [N, 1], InfoGAN code logits [N, k] or None)."""
        if self.q_dim:
            return out[:, :1], out[:, 1:]
        return out, None

    def info_term(
        self, q: torch.Tensor, z: torch.Tensor, images_seen: int, logs: dict, name: str
    ) -> torch.Tensor:
        """lambda x InfoGAN's code cross-entropy of Q's logits ``q`` on fakes made from ``z``."""
        lcfg = self.cfg.loss
        info = losses.info_loss(q, latent_code(z, self.q_dim))
        logs[name] = info
        return losses.decaying_weight(lcfg.info_weight, lcfg.info_decay_kimg, images_seen) * info

    def reals(self, ctx: StepContext) -> torch.Tensor:
        """The real images D sees at this position."""
        return ctx.real.images

    def discriminate(
        self, ctx: StepContext, images: torch.Tensor, c: torch.Tensor | None, *, eager=False
    ) -> torch.Tensor:
        """D's float32 output on augmented ``images`` (``eager``: the never-compiled D, for a
        double backward): the logits, then any InfoGAN code logits (:meth:`split_q`)."""
        d = (ctx.eager_nets if eager else ctx.nets)["discriminator"]
        return d(ctx.augment(images), c, **self.net_kwargs(ctx.images_seen)).float()

    def discriminate_pair(
        self,
        ctx: StepContext,
        real: torch.Tensor,
        c: torch.Tensor | None,
        fake: torch.Tensor,
        fake_c: torch.Tensor | None,
        *,
        eager: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's float32 outputs on the augmented reals and fakes -> (real, fake): one forward on
        the joined batch where ``joint_real_fake`` allows it, else two (``reals_first`` order;
        ``eager`` then applies to the reals only)."""
        group = self.cfg.model.mbstd_group
        if self.joint_real_fake:
            if self.reals_first:
                real_aug = ctx.augment(real)
                fake_aug = ctx.augment(fake)
            else:
                fake_aug = ctx.augment(fake)
                real_aug = ctx.augment(real)
            images = join_batches(real_aug, fake_aug, group)
            labels = None if c is None else join_batches(c, fake_c, group)
            if images is not None and (c is None or labels is not None):
                d = (ctx.eager_nets if eager else ctx.nets)["discriminator"]
                logits = d(images, labels, **self.net_kwargs(ctx.images_seen)).float()
                return split_batches(logits, group)
            # a batch below the mbstd group: two forwards, each on the augmented batch above
            d = (ctx.eager_nets if eager else ctx.nets)["discriminator"]
            kw = self.net_kwargs(ctx.images_seen)
            return d(real_aug, c, **kw).float(), d(fake_aug, fake_c, **kw).float()
        if self.reals_first:
            real_logits = self.discriminate(ctx, real, c, eager=eager)
            fake_logits = self.discriminate(ctx, fake, fake_c)
        else:
            fake_logits = self.discriminate(ctx, fake, fake_c)
            real_logits = self.discriminate(ctx, real, c, eager=eager)
        return real_logits, fake_logits

    # -- phases --------------------------------------------------------------------------------
    def g_main(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = ctx.real.labels
        z = ctx.randn(labels.shape[0], self.z_dim)
        c = ctx.one_hot(ctx.shuffled_labels(labels))
        reuse = self.cfg.loss.reuse_fakes
        fake = self.generate(ctx, z, c, track_w=reuse)
        if reuse:
            if ctx.micro_index == 0:
                self._g_fakes.clear()
            self._g_fakes[ctx.micro_index] = (fake.detach(), c, z)
        fake_logits, fake_q = self.split_q(self.discriminate(ctx, fake, c))
        loss = self.g_loss(fake_logits)
        logs = {"loss/g": loss}
        if fake_q is not None:
            loss = loss + self.info_term(fake_q, z, ctx.images_seen, logs, "loss/info_g")
        lcfg = self.cfg.loss
        ms = losses.decaying_weight(lcfg.ms_weight, lcfg.ms_decay_kimg, ctx.images_seen)
        if ms > 0 and fake.shape[0] >= 2:
            ms_loss = losses.mode_seeking_loss(fake, z)
            logs["loss/mode_seeking"] = ms_loss
            loss = loss + ms * ms_loss
        return loss, logs

    def d_main(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lcfg = self.cfg.loss
        labels = ctx.real.labels
        c = ctx.one_hot(labels)
        gp_on = lcfg.kind == "wgan-gp"
        reused = self._g_fakes.pop(ctx.micro_index, None) if ctx.critic_round == 0 else None
        if reused is not None:  # loss.reuse_fakes: the fakes g_main trained G on
            fake, fake_c, z = reused[0].float(), reused[1], reused[2]
        else:
            z = ctx.randn(labels.shape[0], self.z_dim)
            with torch.no_grad():
                # WGAN-GP: the reals' labels, so each interpolate has one label; else a shuffle
                fake_c = c if gp_on else ctx.one_hot(ctx.shuffled_labels(labels))
                fake = self.generate(ctx, z, fake_c, track_w=True).float()
        real = self.reals(ctx).detach().requires_grad_(self.r1_in_main)
        real_out, fake_out = self.discriminate_pair(
            ctx, real, c, fake, fake_c, eager=self.r1_in_main
        )
        real_logits, _ = self.split_q(real_out)
        fake_logits, fake_q = self.split_q(fake_out)
        ctx.report_real_logits(real_logits)
        loss = self.d_loss(real_logits, fake_logits)
        metrics = {
            "loss/d": loss,
            "scores/real": real_logits.mean(),
            "scores/fake": fake_logits.mean(),
        }
        if fake_q is not None:
            loss = loss + self.info_term(fake_q, z, ctx.images_seen, metrics, "loss/info_d")
        if gp_on:
            gp = losses.gradient_penalty(
                lambda x: self.split_q(self.discriminate(ctx, x, c, eager=True))[0],
                real,
                fake,
                gp_lambda=lcfg.gp_lambda,
            )
            loss = loss + gp
            metrics["loss/gp"] = gp
            if lcfg.drift > 0:
                loss = loss + losses.epsilon_drift(real_logits, lcfg.drift)
        if self.r1_in_main:
            r1 = losses.r1_penalty(real_logits, real)
            loss = loss + r1 * (lcfg.r1_gamma / 2)
            metrics["loss/r1"] = r1
        return loss, metrics

    # -- outputs -------------------------------------------------------------------------------
    @property
    def z_dim(self) -> int:
        return self._generator.z_dim

    def export(self, nets: Mapping[str, nn.Module], out_dir: Path, meta: dict) -> Path:
        return save_export(
            out_dir,
            nets[self.ema_name],
            family=self.name,
            kwargs=self.g_kwargs,
            class_names=self.manifest.class_names if self.c_dim else [],
            meta=meta,
        )


__all__ = ["LOSSES", "AdversarialBase"]
