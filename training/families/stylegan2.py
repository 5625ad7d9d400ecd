"""StyleGAN2 (Karras et al. 2020) as a family: the phases of NVlabs' ``StyleGAN2Loss``.

Per step: ``g_main`` (non-saturating G loss with style mixing), ``g_pl`` (lazy path-length
regularisation every ``loss.pl_interval`` steps), ``d_main`` (logistic D loss; R1 folded in when
``loss.r1_interval`` is 1, NVlabs' "Dboth"), ``d_r1`` (lazy R1 every ``loss.r1_interval``
steps). ``loss.kind: wgan-gp`` swaps in the WGAN-GP losses (gradient penalty and epsilon drift
inside ``d_main``).

Labels: D scores every fake with the labels G generated it from (NVlabs ``loss.py``,
``Dgen``: ``D(gen_img, gen_c)``); with WGAN-GP the fakes are generated with the reals' labels, so
that each interpolate ``lerp(real_i, fake_i)`` has one label. Lazy regularisation: as NVlabs'
``training_loop.py``, the Adam correction uses ``G_reg_interval = loss.pl_interval`` and
``D_reg_interval = loss.r1_interval`` whatever the weights are (``pl_weight`` 0 still trains G
with the corrected lr/betas); the regularisation phases run only when their weight is > 0.

:class:`AdversarialFamily` holds what StyleGAN2 and ProGAN share (the loss kinds, R1 and its
phases) on top of ``adversarial.py``'s G/D phases, which the classic families share too; ProGAN
(``progan.py``) says how G and D are called and how reals are prepared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .. import losses
from ..family import Phase, ReduceContext, StepContext
from ..networks.stylegan2 import mix_styles
from .adversarial import AdversarialBase


class AdversarialFamily(AdversarialBase):
    """StyleGAN2 and ProGAN: logistic (+R1, lazy or in ``d_main``) or WGAN-GP losses."""

    loss_kinds = ("nonsaturating", "wgan-gp")
    joint_real_fake = True  # D's one cross-sample layer is the minibatch stddev

    def __init__(self, cfg: Any, manifests: Mapping, device: torch.device) -> None:
        if cfg.loss.kind not in self.loss_kinds:
            raise ValueError(
                f"loss.kind: the {cfg.model.family} family trains with "
                f"{' or '.join(self.loss_kinds)}, got {cfg.loss.kind!r} (bce, hinge, lsgan and "
                f"wgan are for the classic families: mlp, dcgan, wgan, wgan-gp)"
            )
        super().__init__(cfg, manifests, device)

    # -- declarations --------------------------------------------------------------------------
    @property
    def lazy_r1(self) -> bool:
        lcfg = self.cfg.loss
        return lcfg.kind == "nonsaturating" and lcfg.r1_gamma > 0 and lcfg.r1_interval > 1

    @property
    def r1_in_main(self) -> bool:
        lcfg = self.cfg.loss
        return lcfg.kind == "nonsaturating" and lcfg.r1_gamma > 0 and lcfg.r1_interval == 1

    def d_reg_interval(self) -> int | None:
        # NVlabs: D_reg_interval = 16 whatever gamma is (the correction of lr/betas stays)
        return self.cfg.loss.r1_interval if self.cfg.loss.kind == "nonsaturating" else None

    def phases(self) -> list[Phase]:
        lcfg = self.cfg.loss
        out = [Phase(name="g_main", trains="generator", loss=self.g_main)]
        out += self.g_reg_phases()
        out.append(
            Phase(
                name="d_main",
                trains="discriminator",
                loss=self.d_main,
                critic=True,
                compiled=not self.r1_in_main,  # R1 needs double backward through D
            )
        )
        if self.lazy_r1:
            out.append(
                Phase(
                    name="d_r1",
                    trains="discriminator",
                    loss=self.d_r1,
                    interval=lcfg.r1_interval,
                    critic=True,
                    compiled=False,
                )
            )
        return out

    def g_reg_phases(self) -> list[Phase]:
        return []

    # -- phases (g_main and d_main: AdversarialBase) -------------------------------------------
    def d_r1(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Lazy R1 (StyleGAN2 sec. 4.1): its own D step every r1_interval steps, gamma scaled by
        the interval so the regulariser keeps its strength."""
        lcfg = self.cfg.loss
        real = self.reals(ctx).detach().requires_grad_(True)
        real_out = self.discriminate(ctx, real, ctx.one_hot(ctx.real.labels))
        r1 = losses.r1_penalty(self.split_q(real_out)[0], real)
        # real_out * 0 keeps every D output (InfoGAN's Q head too) in the graph (as NVlabs)
        loss = r1 * (lcfg.r1_gamma / 2) * lcfg.r1_interval + real_out.mean() * 0
        return loss, {"loss/r1": r1}

    # -- outputs -------------------------------------------------------------------------------
    def sample(self, nets, z, c, images_seen):
        return nets[self.ema_name](z, c, noise_mode="const", **self.net_kwargs(images_seen))

    def eval_sample(self, nets, z, c, images_seen):
        # eval.noise_mode: random by default, as NVlabs' metrics during training
        noise_mode = getattr(self.cfg.eval, "noise_mode", "const")
        return nets[self.ema_name](z, c, noise_mode=noise_mode, **self.net_kwargs(images_seen))


class StyleGAN2(AdversarialFamily):
    """StyleGAN2 with style mixing, path-length regularisation and the W average."""

    name = "stylegan2"

    def __init__(self, cfg: Any, manifests: Mapping, device: torch.device) -> None:
        super().__init__(cfg, manifests, device)
        self.pl_mean = torch.zeros([], device=self.device)
        self._pl_sum = torch.zeros([], device=self.device)
        self._pl_micro = 0  # micro-batches of g_pl this step, all ranks (host counter)
        self._w_stats = torch.zeros(self._generator.w_dim + 1, device=self.device)

    def g_reg_interval(self) -> int | None:
        # NVlabs: G_reg_interval = 4 whatever pl_weight is
        return self.cfg.loss.pl_interval

    def generator_compile(self) -> tuple[str, ...]:
        return ("mapping", "synthesis")  # the phases call them separately (style mixing, ws)

    def g_reg_phases(self) -> list[Phase]:
        lcfg = self.cfg.loss
        if lcfg.pl_weight <= 0:
            return []
        return [
            Phase(
                name="g_pl",
                trains="generator",
                loss=self.g_pl,
                interval=lcfg.pl_interval,
                compiled=False,
            )
        ]

    def generate(self, ctx, z, c, *, track_w=False, generator=None):
        generator = generator or ctx.nets["generator"]
        ws = mix_styles(generator, z, c, self.cfg.loss.style_mixing, update_emas=False)
        if track_w:  # the W mean for truncation: once per step from the global batch (end_step)
            w0 = ws[:, 0].detach().float()
            self._w_stats += torch.cat([w0.sum(0), torch.full_like(w0[0, :1], w0.shape[0])])
        return generator.synthesis(ws, noise_mode="random")

    def g_pl(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Path-length regularisation (StyleGAN2 sec. 3.2) on batch // pl_batch_shrink."""
        lcfg = self.cfg.loss
        labels = ctx.real.labels
        n = max(labels.shape[0] // lcfg.pl_batch_shrink, 1)
        z = ctx.randn(n, self.z_dim)
        c = ctx.one_hot(labels[:n])
        generator = ctx.eager_nets["generator"]
        ws = mix_styles(generator, z, c, lcfg.style_mixing, update_emas=False)
        fake = generator.synthesis(ws, noise_mode="random")
        # every micro-batch starts from the step's running mean; end_step averages the updates
        # over all micro-batches of all ranks, so any world size gives the same pl_mean
        penalty, new_mean = losses.path_length_penalty(
            fake.float(), ws, self.pl_mean, lcfg.pl_decay
        )
        self._pl_sum += new_mean
        self._pl_micro = ctx.micro_batches
        loss = penalty * lcfg.pl_weight * lcfg.pl_interval + fake[:, 0, 0, 0].float().mean() * 0
        return loss, {"loss/pl": penalty}

    @torch.no_grad()
    def end_step(self, ctx: ReduceContext) -> None:
        if self._pl_micro:
            self.pl_mean = ctx.all_sum(self._pl_sum) / self._pl_micro
            self._pl_sum.zero_()
            self._pl_micro = 0
        mapping = ctx.nets["generator"].mapping
        if getattr(mapping, "w_avg_beta", None) is not None:
            stats = ctx.all_sum(self._w_stats)
            count = stats[-1]
            mean = stats[:-1] / count.clamp(min=1)
            updated = mean.lerp(mapping.w_avg.float(), mapping.w_avg_beta)
            mapping.w_avg.copy_(torch.where(count > 0, updated, mapping.w_avg))
        self._w_stats.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"pl_mean": self.pl_mean.detach().reshape(1)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if "pl_mean" in state:
            self.pl_mean = state["pl_mean"].reshape([]).to(self.device, torch.float32)
