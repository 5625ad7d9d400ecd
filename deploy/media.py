"""Write generated images: grids, one PNG per image, animated GIF/MP4 loops (all atomically).

Files are written through ``training.networks.export.atomic_write``: complete or absent, with
the mode any new file gets under the user's umask.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.networks.export import atomic_write
from training.networks.samples import make_grid


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
