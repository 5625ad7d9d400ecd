"""The GAN family interface: what a family declares, and what the trainer does with it.

A *family* (StyleGAN2, ProGAN, the classic MLP/DCGAN/WGAN GANs, CycleGAN, ...) is a subclass of
:class:`Family` registered by name in ``training/families/__init__.py``. It declares

- its **networks** (:meth:`Family.build_networks` -> ``{name: Network}``): any number; the
  trained ones carry an :class:`OptimizerSpec` (kind, lr, betas/alpha and the lazy-regularisation
  interval for StyleGAN2's Adam correction), any of them may ask for an EMA copy;
- its **data streams** (:meth:`Family.streams`): one stream ``"train"`` from ``data.manifest``
  by default; CycleGAN declares two (``"a"``, ``"b"``), each read independently;
- its **step phases** (:meth:`Family.phases` -> ``[Phase]``): each a function
  ``loss(ctx: StepContext) -> (loss, metrics)`` over one micro-batch, naming the network whose
  optimizer it steps, how often it runs (lazy regularisation), whether it is a critic phase
  (repeated ``train.d_steps_per_g`` times per step), whether it may run compiled, and an optional
  hook after each of its optimizer updates (WGAN weight clipping);
- its **schedule** (:meth:`Family.schedule`): global batch and learning rates as pure functions
  of ``images_seen`` (ProGAN's per-resolution batch/lr, CycleGAN's linear lr decay), and when the
  optimizer state is reset;
- its **own state** (:meth:`Family.state_dict` / :meth:`Family.load_state_dict`: tensors only,
  saved in the checkpoint), updated in :meth:`Family.end_step` (path-length mean, W average,
  image pool);
- what to **sample** for grids and evaluation (:meth:`Family.sample`, :meth:`Family.grid`,
  :meth:`Family.evaluate`) and what to **export** (:meth:`Family.export`).

The trainer (``training/trainer.py``) does everything else without knowing the family: data
loading per stream, micro-batches and gradient accumulation, reseeding every micro-batch from
``(seed, step, phase, global micro-batch index)`` (so 1 process == N processes and resumes are
exact), requires_grad switching, gradient averaging and optimizer updates (DDP-equivalent or
DeepSpeed), non-finite handling (non-finite gradients zeroed; a non-finite loss skips that
update; ``train.max_bad_steps`` consecutive bad steps stop the run), reduced precision
(``training.networks.set_precision``) and fp16 loss scaling, EMA copies, augmentation and the ADA
controller, ``torch.compile``, ticks, grids, checkpoints, evaluation and MLflow tracking.

Rules for phase functions (the trainer's speed and exactness depend on them):

- Draw randomness only from torch's global RNG (``ctx.randn``/``ctx.rand``/``torch.rand*`` with
  ``device=ctx.device``): the trainer reseeds it before every micro-batch.
- No host synchronisation: no ``.item()``, ``float(tensor)``, ``if tensor:``, ``.cpu()``,
  ``torch.tensor(..., device=...)``. Build constants with ``torch.full``/``torch.zeros`` on
  ``ctx.device`` or keep them in family state. (A test counts these calls inside a tick.)
- Return the *mean* loss of the micro-batch and scalar metric tensors (e.g. ``{"loss/d": ...}``);
  the trainer averages metrics over micro-batches, steps of a tick and ranks, and logs them.
- Compute losses and regularisation gradients in float32 (``logits.float()``); the networks
  choose their own precision per block.
- Augment every image D sees with ``ctx.augment`` (reals and fakes alike) and report D's logits
  on reals with ``ctx.report_real_logits`` (the ADA controller's statistic).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from data_prep.manifest import Manifest

    from .train_config import OptimizerKind

DEFAULT_STREAM = "train"
"""Name of the single data stream every family reads unless it declares others."""


# ----------------------------------------------------------------------------------------------
# What a family declares


@dataclass(kw_only=True)
class OptimizerSpec:
    """How the trainer builds the optimizer of one trained network."""

    kind: OptimizerKind = "adam"
    """adam (fused on CUDA) or rmsprop."""
    lr: float
    """Base learning rate (before the lazy-regularisation correction)."""
    betas: tuple[float, float] = (0.0, 0.99)
    """Adam betas (before the correction). Ignored by rmsprop."""
    alpha: float = 0.99
    """RMSprop smoothing constant. Ignored by adam."""
    eps: float = 1e-8
    """Denominator epsilon."""
    reg_interval: int | None = None
    """Lazy regularisation (StyleGAN2 appendix B): this network takes one extra optimizer step
    every ``reg_interval`` steps, so the trainer uses ``lr * c`` and ``betas ** c`` (rmsprop:
    ``alpha ** c``) with ``c = reg_interval / (reg_interval + 1)``. None or 1: no correction."""


@dataclass(kw_only=True)
class Network:
    """One network of a family."""

    module: nn.Module
    """The plain module (the trainer moves it to the device and sets its precision)."""
    optimizer: OptimizerSpec | None = None
    """Trained with this optimizer; None: not trained (still checkpointed)."""
    ema: str | None = None
    """Name of an EMA copy the trainer keeps of this network (e.g. ``"g_ema"``; half-life
    ``train.ema_kimg``); it appears in ``ctx.nets``, checkpoints and :meth:`Family.sample`."""
    compile: tuple[str, ...] = ("",)
    """With ``train.compile``: the submodules whose forward compiled phases call compiled
    (``""`` = the module itself; ``("mapping", "synthesis")`` for a StyleGAN2 generator whose
    phases call ``generator.mapping(...)`` and ``generator.synthesis(...)``); () = never."""
    reduced_precision: bool = True
    """Let ``train.mixed_precision`` cast this network's high-resolution blocks
    (``training.networks.set_precision``); False keeps it float32."""


@dataclass(frozen=True, kw_only=True)
class Phase:
    """One optimizer update of one network per step (or per critic round), over micro-batches.

    The trainer runs the phases in the order :meth:`Family.phases` lists them. A run of
    consecutive ``critic=True`` phases forms the critic block: it is repeated
    ``train.d_steps_per_g`` times per step, round r reading the r-th real batch of the step
    (non-critic phases read round 0's batch). For each due phase, the trainer: zeroes the
    gradients, enables grad on ``trains`` only, calls ``loss`` on every micro-batch of this rank
    (reseeding the RNG first), backpropagates ``loss / accumulation``, averages gradients across
    ranks (non-finite values zeroed), steps the optimizer unless a loss was non-finite on any
    rank, then calls ``after_update``.
    """

    name: str
    """Stable name (part of the RNG seed of each micro-batch, and of profiling ranges)."""
    trains: str
    """Name of the network (in :meth:`Family.build_networks`) whose optimizer this phase steps."""
    loss: Callable[[StepContext], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    """``ctx -> (scalar mean loss of the micro-batch, {metric name: scalar tensor})``."""
    interval: int = 1
    """Run on steps where ``step % interval == 0`` (lazy regularisation: R1 every 16)."""
    critic: bool = False
    """Part of the critic block (repeated ``train.d_steps_per_g`` times per step)."""
    compiled: bool = True
    """May use the compiled modules under ``train.compile``; False for phases that take a double
    backward (R1, path length, GP), which AOTAutograd does not support."""
    after_update: Callable[[Mapping[str, nn.Module]], None] | None = None
    """Called under ``torch.no_grad()`` with the plain networks after each optimizer update of
    this phase (e.g. WGAN: clamp the critic's weights to +-0.01)."""


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Training position -> batch and learning rates (a pure function of ``images_seen``)."""

    batch: int
    """Global batch of every phase at this position."""
    lr: Mapping[str, float] | None = None
    """Base learning rate per trained network name (None or missing: the OptimizerSpec's)."""
    era: int = 0
    """Optimizer era: when it changes between steps and ``reset_optimizers`` is set, the trainer
    clears every optimizer's state (ProGAN: a new fade-in or stable phase)."""
    reset_optimizers: bool = False
    """Clear optimizer state whenever ``era`` changes."""


# ----------------------------------------------------------------------------------------------
# What the trainer hands to a phase


@dataclass(frozen=True)
class Batch:
    """One micro-batch of one data stream, on the training device."""

    images: torch.Tensor
    """[N, C, H, W] float32 in [-1, 1] at the stream's manifest resolution."""
    labels: torch.Tensor
    """[N] int64 class ids (-1 where the dataset has no labels)."""


class StepContext:
    """What a phase function sees for one micro-batch. Built by the trainer; families only read.

    Attributes:
        nets: ``{name: module}`` of every network and EMA copy; in a compiled phase under
            ``train.compile`` the trained networks are views whose listed submodules
            (``Network.compile``) run compiled (call them exactly as the plain modules).
        eager_nets: the same networks, never compiled: use them for anything that takes a
            double backward inside a compiled phase (e.g. the WGAN-GP penalty in ``d_main``).
        batch: ``{stream name: Batch}`` for this micro-batch; ``ctx.real`` is the default stream.
        cfg: the whole run config (``cfg.model``, ``cfg.loss``, ``cfg.train``, ...).
        step: training steps (G steps) completed before this one.
        images_seen: real images shown to D before this step (drives growth schedules).
        critic_round: 0 .. d_steps_per_g - 1 inside the critic block, else 0.
        micro_batches: number of micro-batches of this phase over all ranks (for averaging
            per-micro-batch state such as a running mean).
        micro_index: this rank's micro-batch of the phase, 0 .. (micro_batches / world_size) - 1
            (the same micro-batch in every phase of a step: the same reals).
        device: the training device.
        c_dim: number of classes the networks are conditioned on (0: unconditional).
        rank, world_size: this process and the number of processes (for per-rank state such
            as an image pool; phase results must not otherwise depend on them).
    """

    def __init__(
        self,
        *,
        nets: Mapping[str, Any],
        eager_nets: Mapping[str, nn.Module],
        batch: Mapping[str, Batch],
        cfg: Any,
        step: int,
        images_seen: int,
        critic_round: int,
        micro_batches: int,
        device: torch.device,
        c_dim: int,
        augment: Callable[[torch.Tensor], torch.Tensor],
        report_real_logits: Callable[[torch.Tensor], None],
        class_ids: torch.Tensor | None,
        rank: int = 0,
        world_size: int = 1,
        micro_index: int = 0,
    ) -> None:
        self.rank, self.world_size, self.micro_index = rank, world_size, micro_index
        self.nets, self.eager_nets, self.batch, self.cfg = nets, eager_nets, batch, cfg
        self.step, self.images_seen, self.critic_round = step, images_seen, critic_round
        self.micro_batches, self.device, self.c_dim = micro_batches, device, c_dim
        self._augment, self._report = augment, report_real_logits
        self._class_ids = class_ids

    @property
    def real(self) -> Batch:
        """The default stream's micro-batch (``batch["train"]``)."""
        return self.batch[DEFAULT_STREAM]

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """The configured augmentation (none / DiffAugment / ADA at the controller's p), applied
        identically to reals and fakes before D; differentiable (also twice, for R1)."""
        return self._augment(images)

    def report_real_logits(self, logits: torch.Tensor) -> None:
        """Feed D's logits on (augmented) reals to the ADA controller (no-op without ADA)."""
        self._report(logits)

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal float32 tensor on the device from the reseeded RNG (latents)."""
        return torch.randn(shape, device=self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) float32 tensor on the device from the reseeded RNG."""
        return torch.rand(shape, device=self.device)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor | None:
        """[N] class ids -> [N, c_dim] float one-hot on the device (None when unconditional).
        Built by comparison with a device-resident ``arange``: no host sync."""
        if self._class_ids is None:
            return None
        return (labels[:, None] == self._class_ids[None, :]).float()

    def shuffled_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """A random permutation of ``labels`` (conditional fakes follow the data's class mix)."""
        return labels[torch.randperm(labels.shape[0], device=labels.device)]


class ReduceContext:
    """What :meth:`Family.end_step` sees once per step, after all phases (before EMA).

    Attributes: ``nets`` (plain modules), ``step`` (steps completed before this one),
    ``images_seen`` (before this step), ``device``, ``rank``, ``world_size``.
    """

    def __init__(
        self,
        *,
        nets: Mapping[str, nn.Module],
        step: int,
        images_seen: int,
        device: torch.device,
        all_sum: Callable[[torch.Tensor], torch.Tensor],
        world_size: int,
        rank: int = 0,
    ) -> None:
        self.nets, self.step, self.images_seen, self.device = nets, step, images_seen, device
        self._all_sum, self.world_size, self.rank = all_sum, world_size, rank

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over ranks (a device collective, no host sync); same on all ranks."""
        return self._all_sum(tensor)

    def all_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean of ``tensor`` over ranks."""
        return self._all_sum(tensor) / self.world_size


@dataclass(frozen=True)
class EvalContext:
    """What :meth:`Family.evaluate` needs to take part in a (multi-rank) evaluation."""

    device: torch.device
    rank: int
    world_size: int
    gather: Callable[[torch.Tensor], torch.Tensor]
    log: Callable[[str], None] | None = None

    def metric_kwargs(self) -> dict[str, Any]:
        """The keyword arguments every ``training.metrics`` entry point takes to run on all
        ranks: ``device``, ``rank``, ``world_size``, ``gather``, ``log``."""
        return {
            "device": self.device,
            "rank": self.rank,
            "world_size": self.world_size,
            "gather": self.gather,
            "log": self.log,
        }


# ----------------------------------------------------------------------------------------------
# The family base class


class Family:
    """Base class of every GAN family. Subclass, set ``name``, implement the abstract methods
    (:meth:`build_networks`, :meth:`phases`, :meth:`export`, and :meth:`sample` or
    :meth:`grid` + :meth:`evaluate`), and register the class in ``training/families/__init__.py``.

    One instance per process, built by the trainer as ``FamilyClass(cfg, manifests, device)``
    after seeding torch with ``train.seed`` (so every rank builds identical initial weights).
    """

    name: ClassVar[str] = ""
    """Registry name (``model.family`` in a preset)."""

    def __init__(self, cfg: Any, manifests: Mapping[str, Manifest], device: torch.device) -> None:
        self.cfg, self.manifests, self.device = cfg, dict(manifests), torch.device(device)
        self.manifest = self.manifests[next(iter(self.manifests))]
        """The first stream's manifest (resolution, channels, classes of the run)."""
        self.c_dim = self.conditioning_classes()

    # -- declarations --------------------------------------------------------------------------
    @classmethod
    def streams(cls, cfg: Any) -> dict[str, str]:
        """``{stream name: manifest location}`` read by the trainer (one loader each, in order).
        Default: ``{"train": cfg.manifest}``."""
        return {DEFAULT_STREAM: cfg.manifest}

    def conditioning_classes(self) -> int:
        """Number of classes the networks are conditioned on: the manifest's classes with
        ``model.conditional``, else 0. Raises a one-line error when labels are missing."""
        model = getattr(self.cfg, "model", None)
        if not getattr(model, "conditional", False):
            return 0
        if self.manifest.num_classes == 0:
            raise ValueError(
                f"model.conditional: true needs a labelled dataset, but "
                f"{self.manifest.location}/manifest.json has no classes; prep with labels or set "
                f"model.conditional=false"
            )
        return self.manifest.num_classes

    def build_networks(self) -> dict[str, Network]:
        """-> ``{name: Network}``. Names are checkpoint keys: keep them stable."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        """-> the step's phases in execution order (see :class:`Phase`)."""
        raise NotImplementedError

    def optimizer(self, group: str, reg_interval: int | None = None) -> OptimizerSpec:
        """The OptimizerSpec of network group ``"g"`` or ``"d"`` from the ``train`` config
        (``train.optimizer_g`` / ``optimizer_d`` with the shared lr/betas/eps as defaults)."""
        t = self.cfg.train
        if group not in ("g", "d"):
            raise ValueError(f"group: must be 'g' or 'd', got {group!r}")
        oc = t.optimizer_g if group == "g" else t.optimizer_d
        return OptimizerSpec(
            kind=oc.kind,
            lr=oc.lr if oc.lr is not None else (t.lr_g if group == "g" else t.lr_d),
            betas=tuple(oc.betas if oc.betas is not None else t.betas),
            alpha=oc.alpha,
            eps=oc.eps if oc.eps is not None else t.eps,
            reg_interval=reg_interval,
        )

    def schedule(self, images_seen: int) -> Schedule:
        """Batch and learning rates at ``images_seen`` (default: constant ``train.batch``)."""
        return Schedule(batch=self.cfg.train.batch)

    def progress(self, images_seen: int) -> dict[str, float]:
        """Family-specific position logged each tick as ``progress/<key>`` and saved in the
        checkpoint's state (ProGAN: resolution, alpha). Default: nothing."""
        return {}

    # -- state ---------------------------------------------------------------------------------
    def end_step(self, ctx: ReduceContext) -> None:
        """Once per step after all phases, on every rank: fold per-step statistics into family
        state (all-reduce them with ``ctx.all_sum`` so every rank agrees). Default: nothing."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Family-owned training state as tensors (saved in the checkpoint from rank 0, so keep
        it identical on every rank, or document what a resume loses). Default: none."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (tensors arrive on the CPU). Default: nothing."""

    # -- outputs -------------------------------------------------------------------------------
    @property
    def z_dim(self) -> int:
        """Latent size of :meth:`sample` (0 for families that do not sample from latents)."""
        return 0

    def sample(
        self,
        nets: Mapping[str, nn.Module],
        z: torch.Tensor,
        c: torch.Tensor | None,
        images_seen: int,
    ) -> torch.Tensor:
        """Images of the network to evaluate (usually the EMA generator) for latents ``z``
        [N, z_dim] and one-hot ``c`` [N, c_dim] or None -> [N, C, H, W] in about [-1, 1]
        (deterministic noise). Called under ``torch.no_grad()``."""
        raise NotImplementedError

    def eval_sample(
        self,
        nets: Mapping[str, nn.Module],
        z: torch.Tensor,
        c: torch.Tensor | None,
        images_seen: int,
    ) -> torch.Tensor:
        """What the default :meth:`evaluate` measures; default :meth:`sample`. Override to use
        ``cfg.eval.noise_mode`` (NVlabs measures FID with random noise inputs)."""
        return self.sample(nets, z, c, images_seen)

    def grid(self, nets: Mapping[str, nn.Module], images_seen: int, count: int) -> torch.Tensor:
        """Images for the sample grid (fixed seeds 0..count-1, classes cycling) -> [count, C, H, W]."""
        from .images import grid_latents

        z = grid_latents(count, self.z_dim).to(self.device)
        c = None
        if self.c_dim:
            ids = torch.arange(count, device=self.device) % self.c_dim
            c = torch.nn.functional.one_hot(ids, self.c_dim).float()
        return torch.cat(
            [
                self.sample(nets, z[i : i + 32], None if c is None else c[i : i + 32], images_seen)
                for i in range(0, count, 32)
            ]
        )

    def evaluate(
        self, nets: Mapping[str, nn.Module], images_seen: int, ev: EvalContext
    ) -> dict[str, float]:
        """Metrics (``cfg.eval``) -> ``{name: value}``, the same on every rank (all ranks call
        it). Default: FID/KID/PR/coverage of :meth:`eval_sample` against the first stream."""
        from .metrics import evaluate

        def sample(z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
            return self.eval_sample(nets, z, c, images_seen).float()

        return evaluate(
            sample,
            self.manifest,
            self.cfg.eval,
            z_dim=self.z_dim,
            c_dim=self.c_dim,
            **ev.metric_kwargs(),
        )

    def export(self, nets: Mapping[str, nn.Module], out_dir: Path, meta: dict[str, Any]) -> Path:
        """Write the deployable artifact (``training/networks/export.py`` contract: JSON config +
        safetensors, from the plain uncompiled module) to ``out_dir`` -> the folder. Rank 0 only."""
        raise NotImplementedError


__all__ = [
    "DEFAULT_STREAM",
    "Batch",
    "EvalContext",
    "Family",
    "Network",
    "OptimizerSpec",
    "Phase",
    "ReduceContext",
    "Schedule",
    "StepContext",
]
