"""Helpers for the data_prep tests: tiny synthetic images (8-32 px) and configs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep import PrepConfig


def image_bytes(size=(12, 10), mode="RGB", fmt="PNG", seed=0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cfg(source, **kw) -> PrepConfig:
    kw.setdefault("resolution", 8)
    kw.setdefault("workers", 1)
    return PrepConfig(source=str(source), **kw)
