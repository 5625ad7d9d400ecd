"""The GAN trainer: one readable ``fit()`` on Accelerate for the StyleGAN2 and ProGAN families.

Per step (one global batch, as StyleGAN2-ADA's phases): G main -> G regularisation (path length,
lazy) -> D main -> D regularisation (R1, lazy) -> EMA -> augment-p update; a tick line every
``tick_kimg``; sample grids and checkpoints every few ticks. ProGAN runs through the same loop:
the growth schedule turns ``images_seen`` into ``(resolution, alpha)``, passed to the networks and
to the real-image downsampler.

Reproducibility across world sizes and resumes: every random draw of a micro-batch (latents,
noise, augmentation, style mixing) comes from a torch RNG reseeded from ``(seed, step, phase,
global micro-batch index)``. A global batch is the same set of micro-batches whether it runs on
one process with gradient accumulation or on many, and a resumed run continues the same streams
from its counters.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from data_prep.manifest import Manifest, load_manifest

from . import augment as augment_lib
from . import losses
from .checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .data import build_loader, shard_warning, stable_seed
from .distributed import DeepSpeedUpdater, Distributed, Updater
from .ema import ema_beta, update_ema
from .growth import Phase, batch_for, downsample_reals, growth_phase, lr_for
from .images import grid_array, grid_latents, save_curves, save_png, to_uint8
from .metrics import evaluate, is_better
from .networks import build_networks
from .networks.export import atomic_write, save_export
from .networks.stylegan2 import mix_styles
from .tracking import Tracker


@dataclass(kw_only=True)
class TrainConfig:
    total_kimg: float = 25000.0
    """Training length in thousands of real images shown to D."""
    batch: int = 32
    """Global batch size (all processes and accumulation steps together)."""
    batch_per_device: int | None = None
    """Images per device per forward pass (None: batch / world size); smaller values use
    gradient accumulation to reach ``batch``."""
    lr_g: float = 0.002
    """Generator Adam learning rate."""
    lr_d: float = 0.002
    """Discriminator Adam learning rate."""
    betas: tuple[float, float] = (0.0, 0.99)
    """Adam betas (before the lazy-regularisation correction)."""
    eps: float = 1e-8
    """Adam epsilon."""
    ema_kimg: float = 10.0
    """Half-life of the G_ema weights in kimg."""
    ema_rampup: float | None = None
    """EMA ramp-up: the half-life is at most images_seen * this (None: no ramp-up)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision (Accelerate); losses and regularisers stay in float32."""
    seed: int = 0
    """Global seed; every rank derives its own streams from it."""
    tick_kimg: float = 4.0
    """Progress line and metrics every this many kimg."""
    snapshot_ticks: int = 50
    """Sample grid every this many ticks (0: only at the end)."""
    checkpoint_ticks: int = 50
    """Full checkpoint every this many ticks (0: only at the end)."""
    keep_checkpoints: int = 3
    """Checkpoints kept on disk (older ones are deleted; 0: keep all)."""
    resume: str | None = "auto"
    """auto: continue from the latest checkpoint of this run dir if any; a checkpoint path; None: start fresh."""
    grid_size: int = 64
    """Images in the sample grid (fixed seeds 0..grid_size-1)."""
    backend: Literal["ddp", "deepspeed"] = "ddp"
    """Distributed backend: DDP (default) or DeepSpeed ZeRO (see docs/distributed.md)."""
    zero_stage: Literal[1, 2] = 2
    """DeepSpeed ZeRO stage (backend: deepspeed). ZeRO-3 is not supported (R1 needs the full D)."""
    compile: bool = False
    """torch.compile G and D."""
    cpu: bool = False
    """Force CPU even when a GPU is present."""

    def __post_init__(self) -> None:
        if self.total_kimg <= 0:
            raise ValueError(f"total_kimg: must be positive, got {self.total_kimg}")
        if self.batch <= 0:
            raise ValueError(f"batch: must be a positive integer, got {self.batch}")
        if self.batch_per_device is not None and self.batch_per_device <= 0:
            raise ValueError(
                f"batch_per_device: must be positive or null, got {self.batch_per_device}"
            )
        for name in ("lr_g", "lr_d", "tick_kimg", "ema_kimg"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)}")
        for name in ("snapshot_ticks", "checkpoint_ticks", "keep_checkpoints", "grid_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise ValueError(f"ema_rampup: must be positive or null, got {self.ema_rampup}")


# ----------------------------------------------------------------------------------------------
# Small helpers


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def _default_yaml(cfg: Any) -> str:
    import yaml

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return yaml.safe_dump(plain(asdict(cfg)), sort_keys=False)


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class TrainingError(RuntimeError):
    """Training stopped abnormally (non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    export_dir: Path | None
    images_seen: int
    status: Literal["finished", "interrupted", "diverged"]
    mlflow_run_id: str | None = None
    last_checkpoint: Path | None = None
    grid_path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Builds everything from the run config, then ``fit()`` runs the algorithm."""

    def __init__(self, cfg: Any, config_yaml: str | None = None) -> None:
        self.cfg = cfg
        self.tcfg: TrainConfig = cfg.train
        self.config_yaml = config_yaml or _default_yaml(cfg)
        self.dist = Distributed(cpu=self.tcfg.cpu, mixed_precision=self.tcfg.mixed_precision)
        self.device = self.dist.device
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.manifest: Manifest = load_manifest(cfg.manifest)
        self.family = cfg.model.family
        self.progressive = self.family == "progan"
        self._build_networks()
        self._build_optimizers()
        self.aug_cfg = cfg.augment
        self.ada = (
            augment_lib.AdaController.from_config(cfg.augment)
            if cfg.augment.mode == "ada"
            else None
        )
        self.augment_p = cfg.augment.p
        self.pl_mean = torch.zeros([], device=self.device)
        w_dim = getattr(self.generator, "w_dim", 0)
        self._w_stats = torch.zeros(w_dim + 1, device=self.device)
        self.images_seen = 0
        self.step = 0
        self.tick = 0
        self.mlflow_run_id: str | None = None
        self.history: list[dict] = []
        self._stop_signal: str | None = None
        self._loader_key: tuple | None = None
        self._loader_iter = None
        self._opt_phase: int | None = None
        self.tracker: Tracker | None = None
        self.last_metrics: dict[str, float] = {}
        self.best_metric: float | None = None

    # -- construction -----------------------------------------------------------------------------
    def _build_networks(self) -> None:
        cfg, m = self.cfg, self.manifest
        if cfg.model.conditional and m.num_classes == 0:
            raise ValueError(
                f"model.conditional: true needs a labelled dataset, but {m.location}/manifest.json "
                f"has no classes; prep with labels or set model.conditional=false"
            )
        self.c_dim = m.num_classes if cfg.model.conditional else 0
        torch.manual_seed(self.tcfg.seed)  # identical initial weights on every rank
        g, d, self.g_kwargs, self.d_kwargs = build_networks(
            cfg.model, m.resolution, m.channels, self.c_dim
        )
        self.generator = g.to(self.device).train()
        self.discriminator = d.to(self.device).train()
        self.g_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        if self.tcfg.compile:
            self.g_forward = torch.compile(self.generator)
            self.d_forward = torch.compile(self.discriminator)
        else:
            self.g_forward, self.d_forward = self.generator, self.discriminator

    def _build_optimizers(self) -> None:
        """Adam per network, with StyleGAN2's lazy-regularisation correction of lr and betas,
        wrapped in the backend's updater (default: averaged all-reduce; or DeepSpeed ZeRO)."""
        lcfg, t = self.cfg.loss, self.tcfg
        g_interval = (
            lcfg.pl_interval if (self.family == "stylegan2" and lcfg.pl_weight > 0) else None
        )
        d_interval = (
            lcfg.r1_interval if (lcfg.kind == "nonsaturating" and lcfg.r1_gamma > 0) else None
        )
        g_lr, g_betas = losses.lazy_regularization_adam(t.lr_g, t.betas, g_interval)
        d_lr, d_betas = losses.lazy_regularization_adam(t.lr_d, t.betas, d_interval)
        self.lr_ratio = {"generator": g_lr / t.lr_g, "discriminator": d_lr / t.lr_d}
        g_opt = torch.optim.Adam(self.generator.parameters(), lr=g_lr, betas=g_betas, eps=t.eps)
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=d_lr, betas=d_betas, eps=t.eps)
        if t.backend == "deepspeed":
            _, micro, accum = self.batch_geometry(self.phase())
            self.g_updater = DeepSpeedUpdater(
                self.dist,
                self.generator,
                g_opt,
                zero_stage=t.zero_stage,
                micro_batch=micro,
                accum=accum,
            )
            self.d_updater = DeepSpeedUpdater(
                self.dist,
                self.discriminator,
                d_opt,
                zero_stage=t.zero_stage,
                micro_batch=micro,
                accum=accum,
            )
        else:
            self.g_updater = Updater(self.dist, self.generator, g_opt)
            self.d_updater = Updater(self.dist, self.discriminator, d_opt)

    # -- batch geometry ---------------------------------------------------------------------------
    def phase(self) -> Phase | None:
        if not self.progressive:
            return None
        return growth_phase(self.images_seen, self.cfg.growth, self.manifest.resolution)

    def batch_geometry(self, phase: Phase | None) -> tuple[int, int, int]:
        """-> (global batch, per-device micro-batch, accumulation steps)."""
        batch = (
            batch_for(phase.resolution, self.cfg.growth, self.tcfg.batch)
            if phase
            else self.tcfg.batch
        )
        world = self.dist.world_size
        micro = self.tcfg.batch_per_device or max(batch // world, 1)
        micro = min(micro, max(batch // world, 1))
        if batch % (micro * world):
            raise ValueError(
                f"train.batch={batch} must be a multiple of train.batch_per_device ({micro}) x "
                f"world size ({world}); change train.batch or train.batch_per_device"
            )
        return batch, micro, batch // (micro * world)

    def _next_real(self, micro: int, accum: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (micro, accum)
        if self._loader_key != key:  # (re)built at start, resume and ProGAN batch changes
            loader = build_loader(
                self.manifest,
                self.cfg.data,
                batch=micro,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                seed=self.tcfg.seed,
                micro_per_rank=accum,
                start_index=self.images_seen,
            )
            self._loader_iter, self._loader_key = iter(loader), key
        images, labels = next(self._loader_iter)
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    # -- randomness -------------------------------------------------------------------------------
    def reseed(self, phase_name: str, micro_global: int) -> None:
        torch.manual_seed(stable_seed(self.tcfg.seed, self.step, phase_name, micro_global) % 2**63)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor | None:
        if self.c_dim == 0:
            return None
        return F.one_hot(labels.clamp(min=0), self.c_dim).float()

    # -- network calls ----------------------------------------------------------------------------
    def net_kwargs(self, phase: Phase | None) -> dict:
        return {"resolution": phase.resolution, "alpha": phase.alpha} if phase else {}

    def run_generator(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        phase: Phase | None,
        with_ws: bool = False,
        track_w: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.dist.autocast():
            if phase is not None:
                return self.g_forward(z, c, **self.net_kwargs(phase)), None
            ws = mix_styles(self.generator, z, c, self.cfg.loss.style_mixing, update_emas=False)
            if track_w:  # the W mean for truncation, updated once per step from the global batch
                self._w_stats += torch.cat(
                    [ws[:, 0].detach().float().sum(0), ws.new_tensor([ws.shape[0]])]
                )
            images = self.generator.synthesis(ws, noise_mode="random")
        return images, (ws if with_ws else None)

    @torch.no_grad()
    def update_w_avg(self) -> None:
        """w_avg <- lerp(mean of w over the *global* batch, w_avg, beta): once per step, the
        same on every rank and for any world size (NVlabs updates it per forward on each GPU)."""
        mapping = self.generator.mapping
        stats = self.dist.sum(self._w_stats)
        if stats[-1] > 0 and getattr(mapping, "w_avg_beta", None) is not None:
            mapping.w_avg.copy_((stats[:-1] / stats[-1]).lerp(mapping.w_avg, mapping.w_avg_beta))
        self._w_stats.zero_()

    def run_discriminator(
        self, images: torch.Tensor, c: torch.Tensor | None, phase: Phase | None
    ) -> torch.Tensor:
        images = augment_lib.augment(images, self.aug_cfg, self.augment_p)
        with self.dist.autocast():
            logits = self.d_forward(images, c, **self.net_kwargs(phase))
        return logits.float()

    def real_images(self, uint8: torch.Tensor, phase: Phase | None) -> torch.Tensor:
        images = uint8.float() / 127.5 - 1.0
        if phase is not None:
            images = downsample_reals(images, phase.resolution, phase.alpha)
        return images

    # -- the phases of one step -------------------------------------------------------------------
    def _phase(
        self, name: str, module: torch.nn.Module, updater: Updater, reals, accum: int, loss_fn
    ) -> dict[str, torch.Tensor]:
        """Run ``loss_fn`` on every micro-batch of this rank, then one (averaged) optimizer step."""
        other = self.discriminator if module is self.generator else self.generator
        module.requires_grad_(True)
        other.requires_grad_(False)  # the other network is only a function here
        updater.begin()
        totals: dict[str, torch.Tensor] = {}
        for m, (images, labels) in enumerate(reals):
            self.reseed(name, self.dist.rank * accum + m)
            loss, metrics = loss_fn(images, labels)
            updater.backward(loss, accum)
            self._nonfinite |= ~torch.isfinite(loss.detach())
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0) + v.detach().float() / accum
        updater.finish()
        module.requires_grad_(False)
        return totals

    def g_main(self, images, labels, phase):
        z = torch.randn([images.shape[0], self.generator.z_dim], device=self.device)
        c = self.one_hot(labels[torch.randperm(labels.shape[0], device=labels.device)])
        fake, _ = self.run_generator(z, c, phase)
        fake_logits = self.run_discriminator(fake, c, phase)
        if self.cfg.loss.kind == "wgan-gp":
            loss = losses.g_wgan_loss(fake_logits)
        else:
            loss = losses.g_nonsaturating_loss(fake_logits)
        return loss, {"loss/g": loss}

    def g_pl(self, images, labels, _phase):
        lcfg = self.cfg.loss
        n = max(images.shape[0] // lcfg.pl_batch_shrink, 1)
        z = torch.randn([n, self.generator.z_dim], device=self.device)
        c = self.one_hot(labels[:n])
        fake, ws = self.run_generator(z, c, None, with_ws=True)
        penalty, self.pl_mean = losses.path_length_penalty(
            fake.float(), ws, self.pl_mean, lcfg.pl_decay
        )
        # interval gain: lazy regularisation applies the penalty once every pl_interval steps
        loss = (
            penalty.mean() * lcfg.pl_weight * lcfg.pl_interval + fake[:, 0, 0, 0].float().mean() * 0
        )
        return loss, {"loss/pl": penalty.mean()}

    def d_main(self, images, labels, phase, with_r1: bool):
        lcfg = self.cfg.loss
        c = self.one_hot(labels)
        z = torch.randn([images.shape[0], self.generator.z_dim], device=self.device)
        with torch.no_grad():
            fake_c = self.one_hot(labels[torch.randperm(labels.shape[0], device=labels.device)])
            fake, _ = self.run_generator(z, fake_c, phase, track_w=True)
        real = self.real_images(images, phase).detach().requires_grad_(with_r1)
        fake_logits = self.run_discriminator(fake.float(), c, phase)
        real_logits = self.run_discriminator(real, c, phase)
        if self.ada is not None:
            self.ada.accumulate(real_logits.detach())
        metrics = {
            "scores/real": real_logits.detach().mean(),
            "scores/fake": fake_logits.detach().mean(),
        }
        if lcfg.kind == "wgan-gp":
            gp = losses.gradient_penalty(
                lambda x: self.run_discriminator(x, c, phase),
                real,
                fake.float(),
                gp_lambda=lcfg.gp_lambda,
            )
            drift = losses.epsilon_drift(real_logits, lcfg.drift)
            loss = losses.d_wgan_loss(real_logits, fake_logits) + gp + drift
            metrics.update({"loss/d": loss, "loss/gp": gp})
            return loss, metrics
        loss = losses.d_logistic_loss(real_logits, fake_logits)
        metrics["loss/d"] = loss
        if with_r1:  # r1_interval == 1: R1 in the main step, as NVlabs' "Dboth" phase
            r1 = losses.r1_penalty(real_logits, real)
            loss = loss + r1 * (lcfg.r1_gamma / 2)
            metrics["loss/r1"] = r1
        return loss, metrics

    def d_r1(self, images, labels, phase):
        """Lazy R1 (StyleGAN2 sec. 4.1): its own D step every r1_interval steps, the weight
        scaled by the interval so the regulariser keeps its strength."""
        lcfg = self.cfg.loss
        real = self.real_images(images, phase).detach().requires_grad_(True)
        real_logits = self.run_discriminator(real, self.one_hot(labels), phase)
        r1 = losses.r1_penalty(real_logits, real)
        # real_logits * 0 keeps every D output in the graph (as NVlabs)
        loss = r1 * (lcfg.r1_gamma / 2) * lcfg.r1_interval + real_logits.mean() * 0
        return loss, {"loss/r1": r1}

    def train_step(self, phase: Phase | None) -> dict[str, torch.Tensor]:
        batch, micro, accum = self.batch_geometry(phase)
        reals = [self._next_real(micro, accum) for _ in range(accum)]
        lcfg = self.cfg.loss
        metrics: dict[str, torch.Tensor] = {}
        g, d = self.generator, self.discriminator
        if isinstance(self.g_updater, DeepSpeedUpdater):
            self.g_updater.set_accumulation(micro, accum)
            self.d_updater.set_accumulation(micro, accum)
        metrics.update(
            self._phase(
                "g_main", g, self.g_updater, reals, accum, lambda im, lb: self.g_main(im, lb, phase)
            )
        )
        if phase is None and lcfg.pl_weight > 0 and self.step % lcfg.pl_interval == 0:
            metrics.update(
                self._phase(
                    "g_pl", g, self.g_updater, reals, accum, lambda im, lb: self.g_pl(im, lb, phase)
                )
            )
            self.pl_mean = self.dist.mean(self.pl_mean.detach())
        r1_due = (
            lcfg.kind == "nonsaturating" and lcfg.r1_gamma > 0 and self.step % lcfg.r1_interval == 0
        )
        metrics.update(
            self._phase(
                "d_main",
                d,
                self.d_updater,
                reals,
                accum,
                lambda im, lb: self.d_main(im, lb, phase, r1_due and lcfg.r1_interval == 1),
            )
        )
        if r1_due and lcfg.r1_interval > 1:
            metrics.update(
                self._phase(
                    "d_r1", d, self.d_updater, reals, accum, lambda im, lb: self.d_r1(im, lb, phase)
                )
            )
        if phase is None:
            self.update_w_avg()
        # EMA of G (half-life in kimg, ramped up early in training as StyleGAN2-ADA)
        beta = ema_beta(batch, self.tcfg.ema_kimg, self.images_seen, self.tcfg.ema_rampup)
        update_ema(self.g_ema, self.generator, beta)
        self.images_seen += batch
        self.step += 1
        if self.ada is not None and self.step % self.aug_cfg.interval == 0:
            self.augment_p = self.ada.update(self.dist.sum(self.ada.pending().to(self.device)))
        return metrics

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "step": self.step,
            "tick": self.tick,
            "augment_p": self.augment_p,
            "ada": self.ada.state_dict() if self.ada else None,
            "mlflow_run_id": self.mlflow_run_id,
            "world_size": self.dist.world_size,
            "family": self.family,
            "best_metric": self.best_metric,
            "phase": asdict(self.phase()) if self.progressive else None,
        }

    def save(self, root: Path | None = None, keep: int | None = None) -> Path | None:
        """Full state, written atomically by the main process. Under DeepSpeed every rank first
        writes its optimizer partition into the staging folder (a collective)."""
        root = Path(root or self.ckpt_dir)
        staging = root / f".staging-{checkpoint_name(self.images_seen)}"
        if self.g_updater.sharded:
            if self.dist.is_main:
                shutil.rmtree(staging, ignore_errors=True)
            self.dist.barrier()
            self.g_updater.save_sharded(str(staging / "deepspeed"), "generator")
            self.d_updater.save_sharded(str(staging / "deepspeed"), "discriminator")
            self.dist.barrier()
        path = None
        if self.dist.is_main:
            path = save_checkpoint(
                root,
                images_seen=self.images_seen,
                modules={
                    "generator": self.generator,
                    "discriminator": self.discriminator,
                    "g_ema": self.g_ema,
                },
                optimizers={
                    "generator": self.g_updater.state_dict(),
                    "discriminator": self.d_updater.state_dict(),
                },
                state=self.state(),
                extra_tensors={"pl_mean": self.pl_mean.reshape(1)},
                config_yaml=self.config_yaml,
                staging=staging if self.g_updater.sharded else None,
            )
            prune_checkpoints(root, self.tcfg.keep_checkpoints if keep is None else keep)
        self.dist.barrier()
        return path

    def resume(self) -> Path | None:
        spec = self.tcfg.resume
        if spec is None:
            return None
        path = latest_checkpoint(self.ckpt_dir) if spec == "auto" else Path(spec)
        if path is None:
            return None
        state, extra, optim = load_checkpoint(
            path,
            modules={
                "generator": self.generator,
                "discriminator": self.discriminator,
                "g_ema": self.g_ema,
            },
            with_optimizers=True,
        )
        self.images_seen, self.step, self.tick = state["images_seen"], state["step"], state["tick"]
        self.augment_p = state["augment_p"]
        if self.ada is not None and state.get("ada"):
            self.ada.load_state_dict(state["ada"])
        self.mlflow_run_id = state.get("mlflow_run_id")
        self.best_metric = state.get("best_metric")
        self.pl_mean = extra["pl_mean"].reshape([]).to(self.device)
        self._sync_phase_optimizers(resuming=True)
        note = ""
        sharded = (path / "deepspeed").is_dir()
        if self.g_updater.sharded and sharded and state.get("world_size") == self.dist.world_size:
            self.g_updater.load_sharded(str(path / "deepspeed"), "generator")
            self.d_updater.load_sharded(str(path / "deepspeed"), "discriminator")
        elif self.g_updater.sharded or sharded:
            # ZeRO partitions the Adam moments by rank: they cannot be re-split for another world
            # size or moved to the other backend; the weights (all that matters for the
            # generator) come back exactly, the moments restart.
            note = " (optimizer moments restarted: DeepSpeed partitions need the same world size and backend)"
        else:
            self.g_updater.load_state_dict(optim["generator"])
            self.d_updater.load_state_dict(optim["discriminator"])
        self._say(
            f"resumed from {path} at {self.images_seen / 1000:.1f} kimg (saved with world size "
            f"{state.get('world_size')}, now {self.dist.world_size}), augment p {self.augment_p:.3f}{note}"
        )
        return path

    def _sync_phase_optimizers(self, resuming: bool = False) -> None:
        """ProGAN: per-resolution learning rates; with ``growth.reset_optimizer`` Adam's state is
        reset at every phase boundary (each fade-in and each stable phase), as the reference's
        ``reset_opt_for_new_lod``."""
        phase = self.phase()
        if phase is None or (phase.phase_index == self._opt_phase and not resuming):
            return
        new_phase = self._opt_phase is not None and not resuming
        self._opt_phase = phase.phase_index
        for name, updater, base in (
            ("generator", self.g_updater, self.tcfg.lr_g),
            ("discriminator", self.d_updater, self.tcfg.lr_d),
        ):
            lr = lr_for(phase.resolution, self.cfg.growth, base) * self.lr_ratio[name]
            for group in updater.param_groups:
                group["lr"] = lr
            if new_phase and self.cfg.growth.reset_optimizer:
                updater.reset_state()

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Metrics of G_ema (all ranks take part); logged as ``metrics/<name>``. With
        ``eval.keep_best``, a new best is saved as ``checkpoints-best/`` + ``export-best/``."""
        ecfg = self.cfg.eval
        phase = self.phase()

        def sample(z, c):
            with self.dist.autocast():
                images = self.g_ema(z, c, noise_mode="const", **self.net_kwargs(phase))
            return images.float()

        results = evaluate(
            sample,
            self.manifest,
            ecfg,
            z_dim=self.g_ema.z_dim,
            c_dim=self.c_dim,
            device=self.device,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            gather=self.dist.gather,
            log=self._say if self.dist.is_main else None,
        )
        metrics = {f"metrics/{k}": float(v) for k, v in results.items()}
        self.last_metrics.update(metrics)
        self._say("eval  " + "  ".join(f"{k} {v:.4f}" for k, v in results.items()))
        if self.dist.is_main:
            if self.tracker:
                self.tracker.log_metrics(metrics, step=self.images_seen)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"kimg": self.images_seen / 1000, **metrics}) + "\n")
        key = ecfg.keep_best
        if key and key in results and is_better(key, results[key], self.best_metric):
            self.best_metric = float(results[key])
            self._say(
                f"new best {key} {self.best_metric:.4f}: saved to checkpoints-best/ and export-best/"
            )
            self.save(root=self.run_dir / "checkpoints-best", keep=1)
            self.export(self.run_dir / "export-best")
        return results

    # -- outputs ----------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.dist.is_main:
            print(text, flush=True)

    @torch.no_grad()
    def sample_grid(self) -> Path | None:
        if not self.dist.is_main or self.tcfg.grid_size == 0:
            return None
        n = self.tcfg.grid_size
        z = grid_latents(n, self.g_ema.z_dim).to(self.device)
        c = (
            self.one_hot(torch.arange(n, device=self.device) % max(self.c_dim, 1))
            if self.c_dim
            else None
        )
        phase = self.phase()
        images = torch.cat(
            [
                self.g_ema(
                    z[i : i + 32],
                    None if c is None else c[i : i + 32],
                    noise_mode="const",
                    **self.net_kwargs(phase),
                )
                for i in range(0, n, 32)
            ]
        )
        grid = grid_array(to_uint8(images), upscale_to=self.manifest.resolution)
        path = save_png(
            grid, self.run_dir / "samples" / f"grid-{self.images_seen / 1000:09.3f}kimg.png"
        )
        save_png(grid, self.run_dir / "samples" / "latest.png")
        if self.tracker:
            self.tracker.log_artifact(path, "samples")
        return path

    def export(self, out_dir: Path | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        meta = {
            "kimg": round(self.images_seen / 1000, 3),
            "dataset_sha256": self.manifest.sha256,
            "dataset": self.manifest.name,
            "mlflow_run_id": self.mlflow_run_id,
            "metrics": {
                k.split("/", 1)[1]: v
                for k, v in self.last_metrics.items()
                if k.startswith("metrics/")
            },
        }
        out = save_export(
            out_dir or self.run_dir / "export",
            self.g_ema,
            family=self.family,
            kwargs=self.g_kwargs,
            class_names=self.manifest.class_names if self.c_dim else [],
            meta=meta,
        )
        return out

    def _log_tick(
        self,
        metrics: dict[str, torch.Tensor],
        tick_start: float,
        tick_images: int,
        total_images: int,
        phase: Phase | None,
    ) -> None:
        now = time.time()
        values = {
            k: float(self.dist.mean(v.detach().reshape(1).to(self.device)).item())
            for k, v in sorted(metrics.items())
        }
        seconds = max(now - tick_start, 1e-9)
        sec_per_kimg = seconds / max(tick_images / 1000, 1e-9)
        values.update(
            {
                "timing/sec_per_kimg": sec_per_kimg,
                "timing/images_per_sec": tick_images / seconds,
                "resources/peak_memory_gb": _peak_memory_gb(self.device),
                "augment/p": float(self.augment_p),
                "progress/kimg": self.images_seen / 1000,
            }
        )
        if phase is not None:
            values.update({"progress/resolution": phase.resolution, "progress/alpha": phase.alpha})
        self.last_metrics = values
        eta = (total_images - self.images_seen) / 1000 * sec_per_kimg
        if self.dist.is_main:
            parts = [
                f"tick {self.tick:<4d}",
                f"kimg {self.images_seen / 1000:8.1f}/{total_images / 1000:g}",
                f"s/kimg {sec_per_kimg:6.2f}",
                f"img/s {values['timing/images_per_sec']:7.1f}",
                f"eta {_fmt_eta(eta)}",
                f"mem {values['resources/peak_memory_gb']:.2f}GB",
                f"p {self.augment_p:.3f}",
            ]
            if phase is not None:
                parts.append(f"res {phase.resolution} alpha {phase.alpha:.2f}")
            parts += [
                f"{k.split('/')[-1]} {v:.3f}" for k, v in values.items() if k.startswith("loss/")
            ]
            print("  ".join(parts), flush=True)
            row = {"kimg": self.images_seen / 1000, "tick": self.tick, **values}
            self.history.append(row)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if self.tracker:
                self.tracker.log_metrics(values, step=self.images_seen)

    # -- signals ----------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self._stop_signal = signal.Signals(signum).name

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. embedded use)
                pass

    # -- the algorithm ----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        tcfg = self.tcfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        self._sync_phase_optimizers()
        if self.dist.is_main:
            atomic_write(
                self.run_dir / "config.yaml", lambda t: Path(t).write_text(self.config_yaml)
            )
            warning = shard_warning(self.manifest, self.dist.world_size, self.cfg.data.num_workers)
            if warning:
                print(f"ganforge: warning: {warning}", file=sys.stderr)
            self._start_tracking(resumed)
        self._install_signal_handlers()
        total_images = int(tcfg.total_kimg * 1000)
        tick_images = int(tcfg.tick_kimg * 1000)
        tick_start, tick_start_images = time.time(), self.images_seen
        self._say(
            f"training {self.family} at {self.manifest.resolution}px on {self.manifest.num_samples} images, "
            f"{self.dist.world_size} process(es) on {self.device.type}, batch {tcfg.batch}, "
            f"{total_images / 1000:g} kimg; run dir {self.run_dir}"
        )
        status: Literal["finished", "interrupted", "diverged"] = "finished"
        metrics: dict[str, torch.Tensor] = {}
        last_ckpt: Path | None = None
        grid: Path | None = None
        while self.images_seen < total_images:
            self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
            phase = self.phase()
            self._sync_phase_optimizers()
            metrics = self.train_step(phase)
            # one agreement per step: a signal or NaN on any rank stops every rank together
            stop_flags = torch.stack(
                [
                    self._nonfinite.float(),
                    torch.tensor(float(self._stop_signal is not None), device=self.device),
                ]
            )
            if self.dist.any(stop_flags[0] > 0):
                status = "diverged"
                break
            if self.dist.any(stop_flags[1] > 0):
                status = "interrupted"
                break
            done = self.images_seen >= total_images
            if done or self.images_seen - tick_start_images >= tick_images:
                tick_images_now = self.images_seen - tick_start_images
                self._log_tick(
                    metrics, tick_start, self.images_seen - tick_start_images, total_images, phase
                )
                every = int(self.cfg.eval.every_kimg * 1000)
                if (
                    every
                    and not done
                    and self.images_seen // every > (self.images_seen - tick_images_now) // every
                ):
                    self.evaluate()
                if tcfg.snapshot_ticks and self.tick % tcfg.snapshot_ticks == 0 and not done:
                    grid = self.sample_grid() or grid
                if tcfg.checkpoint_ticks and self.tick % tcfg.checkpoint_ticks == 0 and not done:
                    last_ckpt = self.save() or last_ckpt
                self.tick += 1
                tick_start, tick_start_images = time.time(), self.images_seen
        return self._finish(status, metrics, last_ckpt, grid)

    def _finish(self, status, metrics, last_ckpt, grid) -> TrainResult:
        export_dir = None
        if status == "diverged":
            kept = latest_checkpoint(self.ckpt_dir)
            self._say(
                f"ganforge: error: non-finite loss at {self.images_seen / 1000:.1f} kimg "
                f"({', '.join(k for k, v in metrics.items() if not torch.isfinite(v).all()) or 'a loss'}); "
                f"stopped. Last good checkpoint: {kept or 'none'}. Lower the learning rate or raise "
                f"loss.r1_gamma, then resume."
            )
            last_ckpt = kept
        else:
            if status == "interrupted":
                self._say(
                    f"ganforge: {self._stop_signal} received: saving a checkpoint and exiting"
                )
            if not self.last_metrics and metrics:
                self._log_tick(metrics, time.time(), 0, self.images_seen, self.phase())
            if status == "finished" and (self.cfg.eval.at_end or self.cfg.eval.every_kimg > 0):
                self.evaluate()
            last_ckpt = self.save() or last_ckpt
            grid = self.sample_grid() or grid
            export_dir = self.export()
        if self.dist.is_main and self.tracker:
            curves = save_curves(
                self.history, ["loss/g", "loss/d", "augment/p"], self.run_dir / "curves.png"
            )
            if curves:
                self.tracker.log_artifact(curves)
            if export_dir:
                self.tracker.log_artifacts(export_dir, "export")
            self.tracker.close(
                "FINISHED"
                if status == "finished"
                else "KILLED"
                if status == "interrupted"
                else "FAILED"
            )
        result = TrainResult(
            run_dir=self.run_dir,
            export_dir=export_dir,
            images_seen=self.images_seen,
            status=status,
            mlflow_run_id=self.mlflow_run_id,
            last_checkpoint=last_ckpt,
            grid_path=grid,
            metrics=dict(self.last_metrics),
        )
        self.dist.shutdown()
        return result

    def _start_tracking(self, resumed: Path | None) -> None:
        tr = self.cfg.tracking
        if not tr.enabled:
            return
        self.tracker = Tracker(
            tr,
            work_dir=self.cfg.work_dir,
            run_dir=self.run_dir,
            run_name=tr.run_name or self.cfg.name,
            resume_run_id=self.mlflow_run_id if resumed else None,
        )
        if not self.tracker.active:
            self.tracker = None
            return
        self.mlflow_run_id = self.tracker.run_id
        if not resumed:
            self.tracker.log_params(_flatten(__import__("yaml").safe_load(self.config_yaml)))
            self.tracker.log_artifact(self.run_dir / "config.yaml")
        self.tracker.set_tags(
            {
                "ganforge.git_commit": _git_commit(),
                "ganforge.dataset_sha256": self.manifest.sha256,
                "ganforge.dataset": self.manifest.name,
                "ganforge.world_size": self.dist.world_size,
                "ganforge.family": self.family,
                "ganforge.resolution": self.manifest.resolution,
                "ganforge.run_dir": str(self.run_dir.resolve()),
            }
        )


def train(cfg: Any, config_yaml: str | None = None) -> TrainResult:
    """Train from a run config (``pipeline.config.RunConfig`` or anything with the same sections)."""
    return Trainer(cfg, config_yaml).fit()
