"""GAN inversion: find the latent whose image matches a target (projection).

The algorithm is NVlabs' projector (StyleGAN2 paper sec. 5 / appendix, ``projector.py`` in
NVlabs/stylegan2-ada-pytorch; read, not copied): Adam on the latent, starting from the mean
latent ``w_avg`` (estimated from ``w_avg_samples`` mapped samples, not the training EMA); the
per-layer noise inputs optimised too, with their autocorrelation regulariser (every pyramid level
of each noise map should have zero correlation with its 1-pixel shifts) and re-normalised to
zero mean / unit variance after each step; a learning rate that ramps up over the first 5 % of
steps and down (cosine) over the last 25 %; Gaussian noise added to the latent, with a scale
``w_std * initial_noise_factor`` decaying quadratically to zero at 75 % of the steps, so the
optimiser explores early and settles late.

Latent spaces by family:
- ``stylegan2``: W (one w broadcast to every layer, NVlabs' default) or W+ (``space="w+"``: one
  w per layer; fits more, but leaves the generator's learned distribution sooner). The
  images are synthesised with the optimised noise maps (NVlabs' ``noise_mode="const"`` with the
  constant buffers as variables). A conditional model needs no label in W (the label only
  shapes w); given one, ``w_avg`` is that class's mean.
- every other family (ProGAN, the classic families): z, started from the best of
  ``init_candidates`` random latents (and every class of a conditional model when no label is
  given; z has no meaningful mean under pixel norm), with the same lr and noise schedules.

Images are compared after ``observe`` (identity, or e.g. an area-downsample for PULSE-style
super-resolution) on the known pixels of ``masks``, with ``deploy.distance`` (multi-scale
pixel distance by default; LPIPS/VGG16 when given a local weights file). Many targets are
projected at once as a batch: Adam is element-wise, so the per-image problems stay independent.

The latent spaces live in ``deploy.latent_spaces``; reading targets and writing results (latent
file, images, progress animation) in ``deploy.projection_io``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from training.networks.samples import to_uint8

from . import sampling
from .distance import build_distance
from .generator import LoadedGenerator
from .latent_spaces import LatentSpace, WSpace, ZSpace
from .projection_io import as_batch, to_tensor


@dataclass(kw_only=True)
class ProjectConfig:
    """Projection hyper-parameters (defaults: NVlabs' projector)."""

    steps: int = 1000
    """Optimisation steps."""
    space: str = "w"
    """Latent space: w (one w for all layers) or w+ (one per layer); stylegan2 only (z otherwise)."""
    initial_lr: float = 0.1
    """Peak Adam learning rate."""
    lr_rampup: float = 0.05
    """Fraction of the steps over which the lr ramps up linearly from 0."""
    lr_rampdown: float = 0.25
    """Fraction of the steps at the end over which the lr ramps down (cosine) to 0."""
    initial_noise_factor: float = 0.05
    """Latent noise at step 0, as a fraction of the latents' spread (w_std)."""
    noise_ramp: float = 0.75
    """Fraction of the steps after which the latent noise is 0 (quadratic decay)."""
    noise_reg_weight: float = 1e5
    """Weight of the noise-map autocorrelation regulariser (0: off)."""
    optimize_noise: bool = True
    """Optimise the per-layer noise maps (stylegan2); False: keep them at their start."""
    noise_lr_mult: float = 1.0
    """Learning rate of the noise maps relative to the latent's (NVlabs: 1)."""
    noise_init: str = "const"
    """Start of the noise maps: const (the model's constant maps, those of its reproducible
    samples) or random (fresh Gaussian maps, as NVlabs)."""
    w_avg_samples: int = 10000
    """Mapped samples used to estimate w_avg and w_std."""
    init_candidates: int = 16
    """z-space families: random latents tried per target (per class when unlabelled), best kept."""
    distance: str = "auto"
    """auto (lpips when lpips_weights is given, else pixel), pixel or lpips."""
    lpips_weights: str | None = None
    """Local VGG16/LPIPS weights (.safetensors); never downloaded. None: pixel distance."""
    frames: int = 50
    """Frames of the progress animation (0: none)."""
    seed: int = 0
    """Seed of the random initialisation and latent noise."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"project.steps: must be >= 1, got {self.steps}")
        if self.space not in ("w", "w+"):
            raise ValueError(f"project.space: must be w or w+, got {self.space!r}")
        for name in ("initial_lr", "lr_rampup", "lr_rampdown", "noise_ramp"):
            if not getattr(self, name) > 0:
                raise ValueError(f"project.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("initial_noise_factor", "noise_reg_weight", "frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"project.{name}: must be >= 0, got {getattr(self, name)}")
        if self.w_avg_samples < 2 or self.init_candidates < 1:
            raise ValueError("project.w_avg_samples must be >= 2 and init_candidates >= 1")
        if self.noise_init not in ("const", "random"):
            raise ValueError(
                f"project.noise_init: must be const or random, got {self.noise_init!r}"
            )
        if self.distance not in ("auto", "pixel", "lpips"):
            raise ValueError(
                f"project.distance: must be auto, pixel or lpips, got {self.distance!r}"
            )


@dataclass
class Projection:
    """What a projection found, for N targets."""

    images: np.ndarray
    """uint8 [N, R, R, C]: the generator's image of each latent."""
    latents: np.ndarray
    """float32 [N, L, D]: ws (stylegan2, L = num_ws) or z ([N, 1, z_dim])."""
    labels: np.ndarray | None
    """float32 [N, c_dim] one-hot (conditional models) or None."""
    noise: dict[str, np.ndarray]
    """Optimised noise map per synthesis layer, float32 [N, 1, r, r] (stylegan2)."""
    space: str
    """w, w+ or z."""
    distance: str
    """Name of the distance used (pixel-multiscale or lpips-vgg16(...))."""
    losses: np.ndarray
    """float32 [N]: final distance per target."""
    frames: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.uint8))
    """uint8 [F, N, R, R, C]: images along the optimisation (for the progress animation)."""


def lr_at(cfg: ProjectConfig, t: float) -> float:
    """NVlabs' schedule: linear ramp-up, flat, cosine ramp-down; t in [0, 1)."""
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return cfg.initial_lr * ramp * min(1.0, t / cfg.lr_rampup)


def latent_noise_at(cfg: ProjectConfig, t: float, std: float) -> float:
    """Std of the Gaussian noise added to the latent at progress t (0 after noise_ramp)."""
    return std * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp) ** 2


def noise_regularizer(noise_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map with its 1-pixel shifts, at every level of a
    2x pyramid down to 8x8, summed: [N, 1, r, r] maps -> [N]."""
    total = noise_maps[0].new_zeros(noise_maps[0].shape[0])
    for noise in noise_maps:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean(dim=(1, 2, 3)).square()
            total = total + (noise * noise.roll(1, dims=2)).mean(dim=(1, 2, 3)).square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return total


def project(
    lg: LoadedGenerator,
    targets: np.ndarray,
    cfg: ProjectConfig | None = None,
    *,
    labels: Sequence[int | str] | int | str | None = None,
    masks: np.ndarray | None = None,
    observe: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> Projection:
    """Project targets (uint8 [N, H, W, C] or [H, W, C]) into the generator's latent space.

    ``observe`` maps generated images [N, C, R, R] in [-1, 1] to the targets' space (default:
    identity, so targets must be R x R); ``masks`` float [N, H, W] (or [H, W]) in [0, 1] marks
    the known target pixels (1) that the distance looks at. ``labels``: class ids/names for a
    conditional model (optional). ``progress(step, mean_distance)`` is called after each step.
    """
    cfg = cfg or ProjectConfig()
    targets = as_batch(targets, "targets")
    if targets.shape[-1] != lg.channels:
        raise ValueError(
            f"targets: have {targets.shape[-1]} channels, the generator makes {lg.channels}"
        )
    observe = observe or (lambda x: x)
    device = lg.device
    n = len(targets)
    target = to_tensor(targets, device)
    mask = None
    if masks is not None:
        masks = np.asarray(masks, dtype=np.float32)
        masks = masks[None] if masks.ndim == 2 else masks
        if masks.shape != targets.shape[:3]:
            raise ValueError(
                f"masks: shape {list(masks.shape)} != targets' {list(targets.shape[:3])}"
            )
        mask = torch.from_numpy(masks[:, None]).to(device)
    c = None
    if labels is not None or lg.c_dim == 0:
        onehot = sampling.labels_to_onehot(labels, n, lg.c_dim, lg.class_names)
        c = None if onehot is None else torch.from_numpy(onehot).to(device)
    distance, distance_name = build_distance(cfg.distance, cfg.lpips_weights, device)
    with torch.no_grad():
        probe = observe(lg.generator(torch.zeros([1, lg.z_dim], device=device) + 1, _probe_c(lg)))
    if probe.shape[1:] != target.shape[1:]:
        raise ValueError(
            f"targets: size {list(targets.shape[1:3])} does not match the generator's observed "
            f"output {list(probe.shape[2:])}; resize the image (or pick the matching model)"
        )

    torch.manual_seed(cfg.seed)
    space: LatentSpace
    if lg.config["family"] == "stylegan2":
        space = WSpace(lg, n, c, cfg)
    else:
        space = ZSpace(lg, target, observe, mask, c, distance, cfg)
    groups = [{"params": [space.latent], "lr_mult": 1.0}]
    noise_params = [v for v in space.noise.values() if v.requires_grad]
    if noise_params:
        groups.append({"params": noise_params, "lr_mult": cfg.noise_lr_mult})
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999), lr=cfg.initial_lr)
    # Each noise map is re-normalised after every step to the mean/std it started with: 0/1 for
    # fresh Gaussian maps (NVlabs), the model's own statistics for its constant maps.
    noise_stats = {
        name: (
            buf.detach().mean(dim=(1, 2, 3), keepdim=True),
            buf.detach().std(dim=(1, 2, 3), keepdim=True, correction=0),
        )
        for name, buf in space.noise.items()
    }
    frame_every = max(1, cfg.steps // cfg.frames) if cfg.frames else 0
    frames = []
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    dist = torch.zeros([n])
    for step in range(cfg.steps):
        t = step / cfg.steps
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, t) * group["lr_mult"]
        scale = latent_noise_at(cfg, t, space.std)
        jitter = torch.randn(space.latent.shape, generator=gen).to(device) * scale
        # Clamped as when written out: a target pixel at 255 says "at least 1", not "exactly 1".
        synth = space.render(space.latent + jitter).clamp(-1, 1)
        dist = distance(observe(synth), target, mask)
        loss = dist.sum()
        if space.noise and cfg.optimize_noise and cfg.noise_reg_weight > 0:
            loss = loss + cfg.noise_reg_weight * noise_regularizer(list(space.noise.values())).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cfg.optimize_noise:
            with torch.no_grad():
                for name, buf in space.noise.items():
                    mean, std = noise_stats[name]
                    buf -= buf.mean(dim=(1, 2, 3), keepdim=True)
                    buf *= std * buf.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
                    buf += mean
        if frame_every and (step % frame_every == 0 or step == cfg.steps - 1):
            with torch.no_grad():
                frames.append(to_uint8(space.render(space.latent)))
        if progress is not None:
            progress(step, float(dist.detach().mean()))

    with torch.no_grad():
        final = space.render(space.latent).clamp(-1, 1)
        losses = distance(observe(final), target, mask)
    latent = space.latent.detach()
    if space.name == "w":
        latent = latent.expand(-1, space.g.num_ws, -1)
    labels_out = space.c
    return Projection(
        images=to_uint8(final),
        latents=latent.cpu().numpy().astype(np.float32),
        labels=None if labels_out is None else labels_out.cpu().numpy().astype(np.float32),
        noise={k: v.detach().cpu().numpy() for k, v in space.noise.items()},
        space=space.name,
        distance=distance_name,
        losses=losses.cpu().numpy().astype(np.float32),
        frames=np.stack(frames) if frames else np.zeros((0, n) + targets.shape[1:], np.uint8),
    )


def _probe_c(lg: LoadedGenerator) -> torch.Tensor | None:
    if lg.c_dim == 0:
        return None
    return F.one_hot(torch.zeros(1, dtype=torch.long), lg.c_dim).float().to(lg.device)
