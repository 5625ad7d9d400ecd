"""Load a generator from anywhere it can live, and sample images, grids and interpolations.

``load_generator`` accepts a local export folder (``generator.json`` + ``weights.safetensors``),
a downloaded MLflow model folder, ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``,
``runs:/RUN_ID/generator`` or a bare run id. Whatever the source, the generator is rebuilt from
the export's JSON config and safetensors weights (``training.networks.export.load_export``); no
pickle is ever read. Sampling goes through ``deploy.sampling`` so a seed means the same image on
every path.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.networks.export import CONFIG_NAME, ExportError, atomic_write, load_export
from training.networks.samples import make_grid

from . import sampling

MODEL_ARTIFACT_NAME = "generator"
"""Name the pyfunc is logged under inside a run (``runs:/RUN_ID/generator``)."""
EXPORT_ARTIFACT_KEY = "export"
"""Key of the export folder in the pyfunc's artifacts (``<model>/artifacts/export``)."""
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")  # models:/, runs:/, s3://, ... (not C:\\)


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


# -- resolving a model reference to an export folder ------------------------------------------
@contextlib.contextmanager
def mlflow_uri(tracking_uri: str | None) -> Iterator[None]:
    """Point MLflow (tracking + registry) at ``tracking_uri`` for the block, then restore.

    Restores what was *set* (module globals and env vars), not the resolved values, so a caller
    who never set a URI keeps MLflow's defaults (the registry follows the tracking URI).
    """
    import mlflow
    from mlflow.tracking import _tracking_service
    from mlflow.tracking._model_registry import utils as registry_utils

    if tracking_uri is None:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking = getattr(_tracking_service.utils, "_tracking_uri", None)
    saved_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        _tracking_service.utils._tracking_uri = saved_tracking
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def find_export_dir(folder: str | Path) -> Path | None:
    """The export folder inside an export / MLflow model folder, or None."""
    folder = Path(folder)
    for candidate in (folder, folder / "artifacts" / EXPORT_ARTIFACT_KEY):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def model_uri_of(reference: str) -> str:
    """A bare run id becomes ``runs:/RUN_ID/generator``; MLflow URIs pass through."""
    if _RUN_ID.fullmatch(reference):
        return f"runs:/{reference}/{MODEL_ARTIFACT_NAME}"
    return reference


def resolve_export(
    reference: str | Path, tracking_uri: str | None = None, dst_dir: str | Path | None = None
) -> Path:
    """A local export/model folder, ``models:/...``, ``runs:/...`` or a run id -> local export folder."""
    ref = str(reference)
    if not _URI.match(ref) or Path(ref).exists():
        path = Path(ref)
        if not path.exists():
            if _RUN_ID.fullmatch(ref):
                return _download(model_uri_of(ref), tracking_uri, dst_dir)
            raise FileNotFoundError(
                f"{ref}: no such folder; give an export folder (with {CONFIG_NAME}), "
                f"an MLflow model folder, models:/NAME@ALIAS, runs:/RUN_ID/generator or a run id"
            )
        found = find_export_dir(path)
        if found is None:
            raise ExportError(
                f"{ref}: neither a ganforge export folder ({CONFIG_NAME} + weights.safetensors) "
                f"nor an MLflow model folder logged by `ganforge register`"
            )
        return found
    return _download(ref, tracking_uri, dst_dir)


def _download(uri: str, tracking_uri: str | None, dst_dir: str | Path | None) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    dst = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="ganforge-model-"))
    try:
        with mlflow_uri(tracking_uri):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri,
                dst_path=str(dst),
                tracking_uri=mlflow.get_tracking_uri(),
                registry_uri=mlflow.get_registry_uri(),
            )
    except MlflowException as exc:
        where = tracking_uri or mlflow.get_tracking_uri()
        raise FileNotFoundError(
            f"{uri}: cannot be loaded from the MLflow store at {where} "
            f"({str(exc).splitlines()[0]}); check the name/alias/version with "
            f"`mlflow models` or the UI, and --tracking-uri"
        ) from None
    found = find_export_dir(local)
    if found is None:
        raise ExportError(
            f"{uri}: the MLflow model has no ganforge export under artifacts/{EXPORT_ARTIFACT_KEY}; "
            f"was it logged by `ganforge register`?"
        )
    return found


def load_generator(
    uri_or_path: str | Path, device: str | torch.device = "cpu", tracking_uri: str | None = None
) -> LoadedGenerator:
    """``models:/NAME@ALIAS``, ``runs:/...``, a run id, or a local folder -> LoadedGenerator."""
    export_dir = resolve_export(uri_or_path, tracking_uri)
    generator, config = load_export(export_dir, device=device)
    return LoadedGenerator(generator, config, source=str(uri_or_path))


# -- writing images ---------------------------------------------------------------------------
def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)


def _atomic_save(path: Path, save: Any) -> Path:
    return atomic_write(path, save, suffix=path.suffix)


def save_grid(images: np.ndarray, path: str | Path, cols: int | None = None) -> Path:
    """Write uint8 [N, H, W, C] as one grid image (PNG unless the suffix says otherwise), atomically."""
    grid = make_grid(images, cols)
    return _atomic_save(Path(path), lambda tmp: _pil(grid).save(tmp, format=_format(path)))


def save_images(images: np.ndarray, folder: str | Path, names: Sequence[str]) -> list[Path]:
    """One PNG per image: ``folder/<name>.png``."""
    folder = Path(folder)
    return [
        _atomic_save(folder / f"{name}.png", lambda tmp, im=img: _pil(im).save(tmp, format="PNG"))
        for img, name in zip(images, names)
    ]


def save_animation(frames: np.ndarray, path: str | Path, fps: int = 24) -> Path:
    """uint8 [F, H, W, C] -> an animated GIF, or an H.264 MP4 when an ffmpeg binary is available."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return _atomic_save(path, lambda tmp: _write_mp4(frames, tmp, fps))
    if path.suffix.lower() != ".gif":
        raise ValueError(
            f"{path}: an interpolation is written as .gif (or .mp4); change the suffix"
        )
    pil = [_pil(f) for f in frames]
    return _atomic_save(
        path,
        lambda tmp: pil[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=pil[1:],
            duration=max(1, round(1000 / fps)),
            loop=0,
        ),
    )


def ffmpeg_binary() -> str | None:
    """``ffmpeg`` on PATH, else the one bundled with the optional ``imageio-ffmpeg`` package."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _write_mp4(frames: np.ndarray, path: str, fps: int) -> None:
    exe = ffmpeg_binary()
    if exe is None:
        raise ValueError(
            f"{path}: writing MP4 needs ffmpeg (on PATH, or `pip install imageio-ffmpeg`); "
            f"or write a .gif"
        )
    frames = np.asarray(frames)
    if frames.shape[3] == 1:
        frames = np.repeat(frames, 3, axis=3)
    n, h, w, _ = frames.shape
    # H.264 with yuv420p (what every player accepts) needs even sides: pad by one pixel if odd.
    cmd = [
        exe,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        str(fps),
        "-i",
        "-",
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "mp4",
        path,
    ]
    result = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if result.returncode != 0:
        raise ValueError(
            f"{path}: ffmpeg failed: {result.stderr.decode(errors='replace').strip()[-500:]}"
        )


def _format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(suffix, "PNG")
