"""Load a generator from anywhere it can live, and sample images and interpolations.

``load_generator`` accepts a local export folder (``generator.json`` + ``weights.safetensors``),
a downloaded MLflow model folder, ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``,
``runs:/RUN_ID/generator`` or a bare run id (resolved by ``deploy.resolve``). Whatever the
source, the generator is rebuilt by ganforge's own code from the export's JSON config and
safetensors weights (``training.networks.export.load_export``): no pickle is read and no code
stored with the model runs, so this is the path for stores you do not trust. Sampling goes
through ``deploy.sampling`` so a seed means the same image on every path. Writing files:
``deploy.media`` (its functions are importable from here too).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.networks.export import load_export
from training.networks.samples import make_grid

from . import sampling
from .media import ffmpeg_binary, save_animation, save_grid, save_images
from .resolve import (
    EXPORT_ARTIFACT_KEY,
    MODEL_ARTIFACT_NAME,
    find_export_dir,
    mlflow_uri,
    model_uri_of,
    resolve_export,
)

__all__ = [
    "EXPORT_ARTIFACT_KEY",
    "MODEL_ARTIFACT_NAME",
    "LoadedGenerator",
    "ffmpeg_binary",
    "find_export_dir",
    "load_generator",
    "make_grid",
    "mlflow_uri",
    "model_uri_of",
    "resolve_export",
    "save_animation",
    "save_grid",
    "save_images",
    "slerp",
]


class LoadedGenerator:
    """A generator in eval mode plus what is needed to sample it (z_dim, classes, device)."""

    def __init__(self, generator: torch.nn.Module, config: dict[str, Any], source: str) -> None:
        self.generator = generator
        self.config = config
        self.source = source
        self.z_dim: int = int(config["z_dim"])
        self.c_dim: int = int(config["c_dim"])
        self.resolution: int = int(config["resolution"])
        self.channels: int = int(config["channels"])
        self.class_names: list[str] = list(config.get("class_names") or [])
        self.device = next(generator.parameters()).device
        # The module is stateless at inference but not thread-safe on every backend; the HTTP
        # server batches requests itself and calls from one worker, others serialise here.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"LoadedGenerator({self.config['family']}, {self.resolution}px, z_dim={self.z_dim}, "
            f"c_dim={self.c_dim}, from {self.source!r})"
        )

    def generate(
        self,
        seeds: str | int | Sequence[int],
        psi: float = 1.0,
        labels: Sequence[int | str] | int | str | None = None,
        noise_mode: str = "const",
        batch_size: int = sampling.BATCH,
    ) -> np.ndarray:
        """seeds (``"0-7"``, an int or a list) -> uint8 images [N, H, W, C]."""
        z = sampling.seeds_to_latents(sampling.parse_seeds(seeds), self.z_dim)
        return self.generate_latents(
            z, psi=psi, labels=labels, noise_mode=noise_mode, batch_size=batch_size
        )

    def generate_latents(
        self,
        z: np.ndarray,
        psi: float = 1.0,
        labels: Sequence[int | str] | int | str | None = None,
        noise_mode: str = "const",
        batch_size: int = sampling.BATCH,
    ) -> np.ndarray:
        """z: [N, z_dim] -> uint8 images [N, H, W, C]."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise sampling.SamplingError(
                f"latents: expected shape [N, {self.z_dim}], got {list(z.shape)}"
            )
        if not np.isfinite(z).all():
            raise sampling.SamplingError("latents: contain NaN or infinity")
        c = sampling.labels_to_onehot(labels, len(z), self.c_dim, self.class_names)
        with self._lock:
            return sampling.synthesize(
                self.generator, z, c, psi=psi, noise_mode=noise_mode, batch_size=batch_size
            )

    def interpolate(
        self,
        seeds: str | Sequence[int],
        frames_per_seed: int = 24,
        psi: float = 1.0,
        label: int | str | None = None,
        noise_mode: str = "const",
    ) -> np.ndarray:
        """A closed loop through the seeds' latents (spherical interpolation) -> uint8 [F, H, W, C]."""
        seeds = sampling.parse_seeds(seeds)
        if len(seeds) < 2:
            raise sampling.SamplingError("seeds: interpolation needs at least two seeds, e.g. 0-3")
        if frames_per_seed < 1:
            raise sampling.SamplingError(f"frames: must be >= 1, got {frames_per_seed}")
        z = sampling.seeds_to_latents(seeds, self.z_dim)
        path = []
        for i in range(len(z)):
            a, b = z[i], z[(i + 1) % len(z)]
            for t in np.arange(frames_per_seed) / frames_per_seed:
                path.append(slerp(a, b, float(t)))
        labels = None if self.c_dim == 0 else [label] * len(path)
        return self.generate_latents(np.stack(path), psi=psi, labels=labels, noise_mode=noise_mode)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation: keeps Gaussian latents at a typical norm (Shoemake 1985)."""
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    omega = math.acos(max(-1.0, min(1.0, cos)))
    if omega < 1e-6:
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)).astype(
        np.float32
    )


def load_generator(
    uri_or_path: str | Path, device: str | torch.device = "cpu", tracking_uri: str | None = None
) -> LoadedGenerator:
    """``models:/NAME@ALIAS``, ``runs:/...``, a run id, or a local folder -> LoadedGenerator."""
    export_dir = resolve_export(uri_or_path, tracking_uri)
    generator, config = load_export(export_dir, device=device)
    return LoadedGenerator(generator, config, source=str(uri_or_path))
