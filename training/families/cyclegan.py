"""The CycleGAN family (Zhu et al. 2017): unpaired translation between two image domains.

Networks (``training/networks/cyclegan.py``): ``generators`` holds G_AB (``a2b``) and G_BA
(``b2a``), ``discriminators`` holds D_A (judges domain A) and D_B; one Adam each (lr 2e-4,
betas (0.5, 0.999) in the presets), as the official code's two optimizers over chained
parameters. Optional EMA copy of the generators (``cyclegan.ema``).

One step, as the paper (sec. 3-4) and the official ``cycle_gan_model.py``:

- ``g`` phase: fake_B = G_AB(A), fake_A = G_BA(B); LSGAN generator losses ||D_B(fake_B) - 1||^2
  and ||D_A(fake_A) - 1||^2; cycle consistency lambda * (|G_BA(fake_B) - A|_1 + |G_AB(fake_A) -
  B|_1) with lambda = 10; identity lambda_idt * lambda * (|G_AB(B) - B|_1 + |G_BA(A) - A|_1),
  lambda_idt = 0.5 (each generator should leave images of its target domain alone).
- ``d`` phase: LSGAN ``0.5 * (||D(real) - 1||^2 + ||D(fake)||^2)`` for D_A and D_B, where the
  fakes are the ones this step's ``g`` phase made (before its update, as the official code),
  passed through the history pools of 50 images.
- Learning rate constant, then linear decay to zero (``cyclegan.decay_start_kimg``; the paper's
  100 + 100 epochs is half and half, the default).

The D inputs go through ``ctx.augment`` (set ``augment.mode: diffaugment`` for the
data-efficient setting; ADA's sign statistic assumes logistic logits and is rejected here).

Pools across processes: every rank keeps the same two pools; the choices for each fake come
from the reseeded RNG of its micro-batch, D reads the pool as it was at the start of the step,
and ``end_step`` gathers the step's global batch of fakes (an all-reduce of this rank's slice in
a zero buffer) and pushes it in global order, so 1 process == N processes.

Outputs: the grid shows rows of (A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B))); the export
is a translator (``kind: translator``, both directions); evaluation: ``training/metrics``' FID/KID
of G_AB(A) against B and G_BA(B) against A with Inception, or distances in the features of a
small A-vs-B domain classifier without it, plus the cycle error (``translation_metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import losses
from ..domains import DOMAIN_NAMES, check_domains, read_images
from ..family import (
    EvalContext,
    Family,
    Network,
    Phase,
    ReduceContext,
    Schedule,
    StepContext,
)
from ..networks.cyclegan import (
    CycleGANNetConfig,
    ImagePool,
    PatchDiscriminator,
    ResnetGenerator,
    discriminator_kwargs,
    generator_kwargs,
)
from ..networks.export import save_translator_export
from ..optim import lr_factor

STREAMS = ("a", "b")


@dataclass(kw_only=True)
class CycleGANConfig:
    """The ``cyclegan:`` section of a run config (used with ``model.family: cyclegan``)."""

    domains: list[str] = field(default_factory=list)
    """The two prepared datasets [A, B] (folders or manifest.json paths from ``ganforge prep``);
    ``a2b`` translates A into B. Empty: ``<work_dir>/data/<name>-A`` and ``-B`` (``ganforge run``)."""
    sources: list[str] = field(default_factory=list)
    """What ``ganforge run`` preps into the two domains: two ``prep.source`` values, or
    ``[demo]`` for the built-in photos vs colour-graded photos (no download)."""
    networks: CycleGANNetConfig = field(default_factory=CycleGANNetConfig)
    """Generator/discriminator sizes (ngf, ndf, n_blocks, d_layers)."""
    lambda_cycle: float = 10.0
    """Weight of the cycle-consistency L1 losses (the paper's lambda)."""
    lambda_identity: float = 0.5
    """Identity loss weight as a fraction of lambda_cycle (0: off; the paper uses 0.5)."""
    pool_size: int = 50
    """Generated images in each discriminator's history pool (0: no pool)."""
    decay_start_kimg: float | None = None
    """Learning rates decay linearly to zero from here to train.total_kimg (None: half way)."""
    ema: bool = False
    """Keep an EMA copy of the generators (half-life train.ema_kimg) and export it."""

    def __post_init__(self) -> None:
        if self.domains and len(self.domains) != 2:
            raise ValueError(f"domains: needs two datasets [A, B], got {self.domains!r}")
        if self.sources and len(self.sources) not in (1, 2):
            raise ValueError(f"sources: two prep sources [A, B] or [demo], got {self.sources!r}")
        if len(self.sources) == 1 and self.sources[0] != "demo":
            raise ValueError(f"sources: a single entry must be 'demo', got {self.sources!r}")
        for name in ("lambda_cycle", "lambda_identity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.pool_size < 0:
            raise ValueError(f"pool_size: must be >= 0 (0: off), got {self.pool_size}")
        if self.decay_start_kimg is not None and self.decay_start_kimg < 0:
            raise ValueError(f"decay_start_kimg: must be >= 0 or null, got {self.decay_start_kimg}")


def domain_paths(cfg: Any) -> list[str]:
    """The two domain datasets of a run config (``cyclegan.domains`` or the run's defaults)."""
    cc: CycleGANConfig = cfg.cyclegan
    if cc.domains:
        return list(cc.domains)
    return [str(Path(cfg.work_dir) / "data" / f"{cfg.name}-{d}") for d in DOMAIN_NAMES]


# -- losses (pure functions) ---------------------------------------------------------------------


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Cycle consistency ``E|F(G(x)) - x|_1`` (CycleGAN eq. 2), a mean over pixels -> scalar."""
    return (reconstructed.float() - real.float()).abs().mean()


def identity_loss(same: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Identity mapping ``E|G(y) - y|_1`` (CycleGAN sec. 5.2, from Taigman et al. 2017)."""
    return (same.float() - real.float()).abs().mean()


# -- the networks as pairs -----------------------------------------------------------------------


class Generators(nn.Module):
    """G_AB and G_BA as one module (one optimizer, one EMA copy, one checkpoint entry)."""

    def __init__(self, a2b: nn.Module, b2a: nn.Module) -> None:
        super().__init__()
        self.a2b, self.b2a = a2b, b2a


class Discriminators(nn.Module):
    """D_A (real A vs G_BA(B)) and D_B (real B vs G_AB(A)) as one module."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b


def _rank() -> int:
    # the global micro-batch order (rank-major, as the trainer seeds micro-batches) is needed to
    # push the pools' global batch in the same order on any world size
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class CycleGAN(Family):
    name = "cyclegan"

    @classmethod
    def streams(cls, cfg: Any) -> dict[str, str]:
        a, b = domain_paths(cfg)
        return {"a": a, "b": b}

    def __init__(self, cfg: Any, manifests: Mapping[str, Any], device: torch.device) -> None:
        super().__init__(cfg, manifests, device)
        self.cc: CycleGANConfig = cfg.cyclegan
        check_domains(self.manifests["a"], self.manifests["b"])
        if getattr(cfg.model, "conditional", False):
            raise ValueError("model.conditional: cyclegan translates images; set it to false")
        if cfg.augment.mode in ("ada", "fixed"):
            raise ValueError(
                f"augment.mode: {cfg.augment.mode!r} is not supported by cyclegan (ADA's statistic "
                f"assumes logistic logits, CycleGAN uses LSGAN); use diffaugment or none"
            )
        self.resolution = self.manifests["a"].resolution
        self.channels = self.manifests["a"].channels
        self.g_kwargs = generator_kwargs(self.cc.networks, self.resolution, self.channels)
        self.d_kwargs = discriminator_kwargs(self.cc.networks, self.resolution, self.channels)
        if cfg.train.d_steps_per_g != 1:
            raise ValueError(
                f"train.d_steps_per_g: cyclegan updates G and D once per step, got "
                f"{cfg.train.d_steps_per_g}; set it to 1"
            )
        # built here, right after the trainer seeded torch: identical weights on every rank
        self._generators = Generators(
            ResnetGenerator(**self.g_kwargs), ResnetGenerator(**self.g_kwargs)
        )
        self._discriminators = Discriminators(
            PatchDiscriminator(**self.d_kwargs), PatchDiscriminator(**self.d_kwargs)
        )
        self.pools = {"a": ImagePool(self.cc.pool_size), "b": ImagePool(self.cc.pool_size)}
        self._fakes: list[dict[str, torch.Tensor]] = []  # this rank's micro-batches, this step
        self._d_calls = 0
        self._micro_batches = 1
        self._grid_reals: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- declarations --------------------------------------------------------------------------
    def build_networks(self) -> dict[str, Network]:
        return {
            "generators": Network(
                module=self._generators,
                optimizer=self.optimizer("g"),
                ema="generators_ema" if self.cc.ema else None,
                compile=("a2b", "b2a"),
            ),
            "discriminators": Network(
                module=self._discriminators, optimizer=self.optimizer("d"), compile=("a", "b")
            ),
        }

    def phases(self) -> list[Phase]:
        return [
            Phase(name="g", trains="generators", loss=self.g_loss),
            Phase(name="d", trains="discriminators", loss=self.d_loss, critic=True),
        ]

    def schedule(self, images_seen: int) -> Schedule:
        t = self.cfg.train
        total = int(t.total_kimg * 1000)
        start = self.cc.decay_start_kimg
        decay_start = total // 2 if start is None else int(start * 1000)
        factor = lr_factor(images_seen, total, decay_start)
        return Schedule(
            batch=t.batch,
            lr={
                "generators": self.optimizer("g").lr * factor,
                "discriminators": self.optimizer("d").lr * factor,
            },
        )

    # -- the phases ----------------------------------------------------------------------------
    def g_loss(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        generators, discriminators = ctx.nets["generators"], ctx.nets["discriminators"]
        real_a, real_b = ctx.batch["a"].images, ctx.batch["b"].images
        fake_b = generators.a2b(real_a)
        fake_a = generators.b2a(real_b)
        adv_a2b = losses.g_lsgan_loss(discriminators.b(ctx.augment(fake_b)))
        adv_b2a = losses.g_lsgan_loss(discriminators.a(ctx.augment(fake_a)))
        cycle = cycle_loss(generators.b2a(fake_b), real_a) + cycle_loss(
            generators.a2b(fake_a), real_b
        )
        loss = adv_a2b + adv_b2a + self.cc.lambda_cycle * cycle
        metrics = {"loss/g": adv_a2b + adv_b2a, "loss/cycle": cycle}
        weight = self.cc.lambda_identity * self.cc.lambda_cycle
        if weight > 0:
            identity = identity_loss(generators.a2b(real_b), real_b) + identity_loss(
                generators.b2a(real_a), real_a
            )
            loss = loss + weight * identity
            metrics["loss/identity"] = identity
        # D's fakes of this step (before G's update, as the official code); kept per micro-batch
        self._fakes.append({"a": fake_a.detach(), "b": fake_b.detach()})
        self._micro_batches = ctx.micro_batches
        return loss, metrics

    def d_loss(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        discriminators = ctx.nets["discriminators"]
        real = {"a": ctx.batch["a"].images, "b": ctx.batch["b"].images}
        m = self._d_calls
        self._d_calls += 1
        if m < len(self._fakes):
            fakes = self._fakes[m]
        else:  # a D step without this step's G phase: make the fakes now
            generators = ctx.nets["generators"]
            with torch.no_grad():
                fakes = {"a": generators.b2a(real["b"]), "b": generators.a2b(real["a"])}
            self._fakes.append({k: v.detach() for k, v in fakes.items()})
        n = real["a"].shape[0]
        start = (_rank() * max(len(self._fakes), 1) + m) * n  # global position of this micro-batch
        loss = torch.zeros((), device=ctx.device)
        metrics: dict[str, torch.Tensor] = {}
        for domain in STREAMS:
            pool = self.pools[domain]
            swap, index = pool.plan(n, ctx.device)
            fakes[f"plan_{domain}"] = torch.stack([swap.long(), index])
            seen = pool.select(fakes[domain], swap, index, start=start)
            net = getattr(discriminators, domain)
            real_logits = net(ctx.augment(real[domain]))
            fake_logits = net(ctx.augment(seen))
            d = losses.d_lsgan_loss(real_logits, fake_logits)
            loss = loss + d
            metrics[f"loss/d_{domain}"] = d
            metrics[f"scores/real_{domain}"] = real_logits.detach().float().mean()
            metrics[f"scores/fake_{domain}"] = fake_logits.detach().float().mean()
        metrics["loss/d"] = loss
        self._fakes[m] = fakes
        return loss, metrics

    def end_step(self, ctx: ReduceContext) -> None:
        """Push this step's global batch of fakes into the pools, identically on every rank."""
        local = [f for f in self._fakes if "plan_a" in f]
        self._fakes, self._d_calls = [], 0
        if not local or self.cc.pool_size == 0:
            return
        per_rank, n = len(local), local[0]["a"].shape[0]
        total = per_rank * ctx.world_size
        offset = _rank() * per_rank * n
        for domain in STREAMS:
            images = torch.cat([f[domain] for f in local]).float()
            plans = torch.cat([f[f"plan_{domain}"] for f in local], dim=1).float()
            if ctx.world_size > 1:  # all-gather as a sum of zero buffers holding one slice each
                buffer = images.new_zeros((total * n, *images.shape[1:]))
                buffer[offset : offset + per_rank * n] = images
                plan_buffer = plans.new_zeros((2, total * n))
                plan_buffer[:, offset : offset + per_rank * n] = plans
                images, plans = ctx.all_sum(buffer), ctx.all_sum(plan_buffer)
            self.pools[domain].push(images, plans[0] > 0.5, plans[1].round().long())

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for domain, pool in self.pools.items():
            s = pool.state_dict()
            state[f"pool_{domain}.count"] = torch.tensor(s["count"], dtype=torch.int64)
            if s["images"] is not None:
                state[f"pool_{domain}.images"] = s["images"]
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for domain, pool in self.pools.items():
            key = f"pool_{domain}.count"
            if key not in state:
                continue
            images = state.get(f"pool_{domain}.images")
            if images is not None:  # checkpoints store family tensors flattened
                images = images.reshape(pool.size, self.channels, self.resolution, self.resolution)
            pool.load_state_dict(
                {"size": pool.size, "count": int(state[key].reshape(-1)[0]), "images": images},
                device=self.device,
            )

    # -- outputs -------------------------------------------------------------------------------
    def _translators(self, nets: Mapping[str, nn.Module]) -> nn.Module:
        return nets["generators_ema"] if self.cc.ema else nets["generators"]

    def _reals(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` images of each domain (fixed, for grids): [-1, 1] on the device."""
        if self._grid_reals is None or self._grid_reals[0].shape[0] < count:
            self._grid_reals = tuple(  # type: ignore[assignment]
                read_images(self.manifests[s], count).to(self.device).float() / 127.5 - 1.0
                for s in STREAMS
            )
        a, b = self._grid_reals
        return a[:count], b[:count]

    @torch.no_grad()
    def grid(self, nets: Mapping[str, nn.Module], images_seen: int, count: int) -> torch.Tensor:
        """Rows of (A, A->B, A->B->A, B, B->A, B->A->B): 6 rows of 6 (a 6-column grid)."""
        g = self._translators(nets)
        real_a, real_b = self._reals(6)
        rows = min(real_a.shape[0], real_b.shape[0])
        fake_b, fake_a = g.a2b(real_a), g.b2a(real_b)
        columns = [real_a, fake_b, g.b2a(fake_b), real_b, fake_a, g.a2b(fake_a)]
        return torch.stack([c[:rows] for c in columns], dim=1).flatten(0, 1)

    def evaluate(
        self, nets: Mapping[str, nn.Module], images_seen: int, ev: EvalContext
    ) -> dict[str, float]:
        from ..metrics.translation import translation_metrics

        g = self._translators(nets)
        return translation_metrics(
            g.a2b,
            g.b2a,
            self.manifests["a"],
            self.manifests["b"],
            self.cfg.eval,
            **ev.metric_kwargs(),
        )

    def export(self, nets: Mapping[str, nn.Module], out_dir: Path, meta: dict[str, Any]) -> Path:
        g = self._translators(nets)
        domains = {
            name: {"dataset": m.name, "dataset_sha256": m.sha256}
            for name, m in zip(
                DOMAIN_NAMES, (self.manifests["a"], self.manifests["b"]), strict=True
            )
        }
        return save_translator_export(
            out_dir,
            {"a2b": g.a2b, "b2a": g.b2a},
            family=self.name,
            kwargs={"a2b": self.g_kwargs, "b2a": self.g_kwargs},
            resolution=self.resolution,
            channels=self.channels,
            domains=domains,
            meta=meta,
        )


__all__ = [
    "CycleGAN",
    "CycleGANConfig",
    "cycle_loss",
    "identity_loss",
    "read_images",  # from training.domains, for callers that know cyclegan
]
