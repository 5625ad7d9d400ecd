"""Files and arrays around a projection (``deploy.project``): target images in, results out.

- Targets: an image file -> uint8 [H, W, C] (centre-cropped and Lanczos-resized to the model, as
  NVlabs' projector), a batch check, uint8 -> the generator's [-1, 1] range.
- Results: the latent (ws or z, label, noise maps) as safetensors with the space in its metadata
  (``render_latent`` reproduces the projected image from it), target/projected PNGs, a progress
  GIF (target | projection along the optimisation) and a JSON-able summary.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.networks.export import atomic_write
from training.networks.samples import to_uint8

from .generator import LoadedGenerator
from .media import save_animation, save_images

if TYPE_CHECKING:
    from .project import Projection

LATENT_FORMAT = "ganforge-projection"


def as_batch(images: np.ndarray, name: str) -> np.ndarray:
    """uint8 [N, H, W, C] or [H, W, C] -> uint8 [N, H, W, C]; anything else: ValueError naming ``name``."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected uint8 [N, H, W, C] or [H, W, C], got {images.dtype} {list(images.shape)}"
        )
    return images


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
