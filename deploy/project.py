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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.networks.export import atomic_write
from training.networks.samples import to_uint8

from . import sampling
from .distance import build_distance
from .generator import LoadedGenerator
from .media import save_animation, save_images

LATENT_FORMAT = "ganforge-projection"


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


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [-1, 1] (inverse of to_uint8)."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).to(device)
    return (x.permute(0, 3, 1, 2) - 128.0) / 127.5


def load_image(path: str | Path, resolution: int | None, channels: int) -> np.ndarray:
    """An image file -> uint8 [H, W, C] with the model's channels; with ``resolution``, centre
    cropped to a square and resized (Lanczos) to it, as NVlabs' projector does."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    img = img.convert("L" if channels == 1 else "RGB")
    if resolution is not None:
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
        if s != resolution:
            img = img.resize((resolution, resolution), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


# -- latent spaces ------------------------------------------------------------------------------
class _Space:
    """A copy of the generator with an optimisable latent (and noise maps)."""

    name: str
    latent: torch.Tensor  # [N, L, D], requires grad
    std: float
    noise: dict[str, torch.Tensor]  # name -> [N, 1, r, r], requires grad (may be empty)

    def render(self, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _WSpace(_Space):
    def __init__(self, lg: LoadedGenerator, n: int, c: torch.Tensor | None, cfg: ProjectConfig):
        g = copy.deepcopy(lg.generator).eval().requires_grad_(False)
        self.g, self.name = g, cfg.space
        gen = torch.Generator().manual_seed(cfg.seed)
        z = torch.randn([cfg.w_avg_samples, lg.z_dim], generator=gen).to(lg.device)
        with torch.no_grad():
            if c is None:
                cs = None
                if lg.c_dim:  # no label given: the mean over uniformly drawn classes
                    ids = torch.randint(lg.c_dim, [cfg.w_avg_samples], generator=gen)
                    cs = F.one_hot(ids, lg.c_dim).float().to(lg.device)
                w = g.mapping(z, cs)[:, 0]
                w_avg = w.mean(dim=0, keepdim=True).expand(n, -1)
                w_std = float((w - w_avg[:1]).square().sum(dim=1).mean().sqrt())
            else:  # one mean per class actually requested
                w_avg = torch.empty([n, g.w_dim], device=lg.device)
                stds = []
                for row in torch.unique(c, dim=0):
                    w = g.mapping(z, row[None].expand(len(z), -1))[:, 0]
                    mean = w.mean(dim=0)
                    w_avg[(c == row).all(dim=1)] = mean
                    stds.append(float((w - mean).square().sum(dim=1).mean().sqrt()))
                w_std = float(np.mean(stds))
        layers = g.num_ws if cfg.space == "w+" else 1
        self.latent = w_avg[:, None].repeat(1, layers, 1).clone().requires_grad_(True)
        self.std = w_std
        self.noise = {}
        for name, module in g.synthesis.named_modules():
            if getattr(module, "use_noise", False):
                res = module.noise_const.shape[-1]
                if cfg.noise_init == "random":
                    buf = torch.randn([n, 1, res, res], generator=gen).to(lg.device)
                else:
                    buf = module.noise_const[None, None].repeat(n, 1, 1, 1).clone()
                # Broadcasts like the [r, r] buffer; one map per target keeps targets independent.
                module.noise_const = buf.requires_grad_(cfg.optimize_noise)
                self.noise[name] = module.noise_const

    def render(self, latent: torch.Tensor) -> torch.Tensor:
        ws = latent.expand(-1, self.g.num_ws, -1) if latent.shape[1] == 1 else latent
        return self.g.synthesis(ws, noise_mode="const")


class _ZSpace(_Space):
    def __init__(
        self,
        lg: LoadedGenerator,
        target: torch.Tensor,
        observe: Callable[[torch.Tensor], torch.Tensor],
        mask: torch.Tensor | None,
        c: torch.Tensor | None,
        distance,
        cfg: ProjectConfig,
    ):
        self.g, self.name, self.noise = lg.generator, "z", {}
        self.std = math.sqrt(lg.z_dim)  # E||z - 0||^2 = z_dim for z ~ N(0, I)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = target.shape[0]
        classes = [None] if lg.c_dim == 0 else ([c] if c is not None else list(range(lg.c_dim)))
        best = torch.full([n], float("inf"), device=lg.device)
        best_z = torch.zeros([n, lg.z_dim], device=lg.device)
        best_c = None if lg.c_dim == 0 else torch.zeros([n, lg.c_dim], device=lg.device)
        with torch.no_grad():
            for _ in range(cfg.init_candidates):
                z = torch.randn([n, lg.z_dim], generator=gen).to(lg.device)
                for cls in classes:
                    cc = cls
                    if isinstance(cls, int):
                        cc = F.one_hot(torch.full([n], cls), lg.c_dim).float().to(lg.device)
                    d = distance(observe(self.g(z, cc).clamp(-1, 1)), target, mask)
                    better = d < best
                    best = torch.where(better, d, best)
                    best_z[better] = z[better]
                    if cc is not None:
                        best_c[better] = cc[better]
        self.c = best_c
        self.latent = best_z[:, None].clone().requires_grad_(True)

    def render(self, latent: torch.Tensor) -> torch.Tensor:
        return self.g(latent[:, 0], self.c)


# -- the optimisation -----------------------------------------------------------------------
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
    targets = np.asarray(targets)
    if targets.ndim == 3:
        targets = targets[None]
    if targets.ndim != 4 or targets.dtype != np.uint8:
        raise ValueError(
            f"targets: expected uint8 [N, H, W, C], got {targets.dtype} {list(targets.shape)}"
        )
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
    if lg.config["family"] == "stylegan2":
        space: _Space = _WSpace(lg, n, c, cfg)
    else:
        space = _ZSpace(lg, target, observe, mask, c, distance, cfg)
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
    labels_out = getattr(space, "c", c)
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


# -- files --------------------------------------------------------------------------------------
def save_latent(projection: Projection, path: str | Path, family: str, index: int = 0) -> Path:
    """One target's latent (+ label, noise maps) as safetensors with the space in its metadata."""
    from safetensors.torch import save_file

    key = "z" if projection.space == "z" else "ws"
    tensors = {key: torch.from_numpy(projection.latents[index].copy())}
    if projection.labels is not None:
        tensors["c"] = torch.from_numpy(projection.labels[index].copy())
    for name, maps in projection.noise.items():
        tensors[f"noise.{name}"] = torch.from_numpy(maps[index, 0].copy())
    meta = {
        "format": LATENT_FORMAT,
        "family": family,
        "space": projection.space,
        "distance": projection.distance,
    }
    return atomic_write(
        path, lambda tmp: save_file(tensors, tmp, metadata=meta), suffix=".safetensors"
    )


def render_latent(lg: LoadedGenerator, path: str | Path) -> np.ndarray:
    """A saved projection latent -> its uint8 image [1, R, R, C] (noise maps included)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != LATENT_FORMAT:
        raise ValueError(f"{path}: not a ganforge projection latent (metadata format)")
    c = tensors.get("c")
    c = None if c is None else c[None].to(lg.device)
    with torch.no_grad():
        if "z" in tensors:
            return to_uint8(lg.generator(tensors["z"].to(lg.device), c))
        g = copy.deepcopy(lg.generator)
        for name, module in g.synthesis.named_modules():
            if f"noise.{name}" in tensors:
                module.noise_const = tensors[f"noise.{name}"].to(lg.device)
        return to_uint8(g.synthesis(tensors["ws"][None].to(lg.device), noise_mode="const"))


def save_projection(
    projection: Projection, target: np.ndarray, out_dir: str | Path, family: str, fps: int = 10
) -> dict[str, Path]:
    """Write target.png, projected.png, latent.safetensors and progress.gif (target | frame)."""
    out = Path(out_dir)
    written = dict(
        zip(
            ("target", "projected"),
            save_images(np.stack([target, projection.images[0]]), out, ["target", "projected"]),
        )
    )
    written["latent"] = save_latent(projection, out / "latent.safetensors", family)
    if len(projection.frames):
        frames = np.concatenate(
            [np.broadcast_to(target, projection.frames[:, 0].shape), projection.frames[:, 0]],
            axis=2,
        )
        written["progress"] = save_animation(frames, out / "progress.gif", fps=fps)
    return written


def describe(projection: Projection) -> dict[str, Any]:
    """A JSON-able summary (space, distance, final distance per target)."""
    return {
        "space": projection.space,
        "distance": projection.distance,
        "final_distance": [round(float(x), 6) for x in projection.losses],
    }
