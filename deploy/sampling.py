"""Seeds -> latents -> uint8 images: the one sampling recipe shared by every deploy path.

The Python API (``deploy.generator``), the CLI, the HTTP server, the ONNX/TorchScript checks and
the MLflow pyfunc all go through these functions, so the same seed gives the same image
everywhere. The pyfunc ships a copy of this file with ``training/networks`` (see
``deploy.registry``), which is why it imports only numpy, torch and ``training.networks``.

- Latent of seed ``s``: ``np.random.RandomState(s).randn(z_dim)`` as float32, exactly as NVlabs'
  ``gen_images.py`` does (``training.networks.samples``).
- Labels: class ids (ints) or class names -> one-hot ``c [N, c_dim]``.
- Output: ``(img * 127.5 + 128).clamp(0, 255)`` as uint8, NHWC.
- Batches: the generator always runs on exactly ``batch_size`` rows (``BATCH`` by default), the
  last chunk padded, because float kernels (BLAS, oneDNN, cuDNN) pick their blocking and
  reduction order from the batch size: at 32 px, 16 of 128 images moved by one level between
  batch 1 and batch 128 (benchmarks/bench_batching.py). With a fixed shape an image depends only on its own latent, not on
  which other images share its batch or where it sits (checked by tests/unit/deploy).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from training.networks.samples import seeds_to_latents as _latents
from training.networks.samples import to_uint8

NOISE_MODES = ("const", "random", "none")
MAX_SEED = 2**32 - 1  # RandomState accepts seeds in [0, 2**32)
BATCH = 8
"""Rows of every generator call (the last chunk padded): the same everywhere, so pixels agree."""
MAX_SEEDS = 10_000
"""Default cap on the seeds of one CLI call (`--max-seeds`): 0-100000000 would run for days."""

__all__ = [
    "BATCH",
    "MAX_SEED",
    "MAX_SEEDS",
    "NOISE_MODES",
    "SamplingError",
    "check_noise_mode",
    "check_psi",
    "count_seeds",
    "labels_to_onehot",
    "parse_seeds",
    "seeds_to_latents",
    "synthesize",
    "to_uint8",
]


class SamplingError(ValueError):
    """A bad seed/label/psi/noise-mode value; the message names it and the valid range."""


def count_seeds(text: str | int | Sequence[int]) -> int:
    """How many seeds ``parse_seeds`` would return, without expanding ranges (0 if unparsable)."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        return 1
    if not isinstance(text, str):
        return len(text)
    total = 0
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d{1,20})\s*-\s*(\d{1,20})", part)
        total += max(0, int(m.group(2)) - int(m.group(1)) + 1) if m else 1
    return total


def parse_seeds(text: str | int | Sequence[int], limit: int | None = None) -> list[int]:
    """``"0-3,10"`` -> ``[0, 1, 2, 3, 10]``; ints and lists of ints pass through (validated).

    ``limit``: at most this many seeds (checked before a range is expanded; None: no cap)."""
    if limit is not None and count_seeds(text) > limit:
        raise SamplingError(
            f"seeds: {count_seeds(text)} seeds requested; at most {limit} per call "
            f"(split the range, or raise the limit: ganforge generate --max-seeds)"
        )
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        seeds = [int(text)]
    elif isinstance(text, str):
        seeds = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            m = re.fullmatch(r"(\d{1,20})\s*-\s*(\d{1,20})", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise SamplingError(f"seeds: range {part!r} is empty (end < start)")
                if hi > MAX_SEED:
                    raise SamplingError(f"seeds: {hi} is not an integer in [0, {MAX_SEED}]")
                seeds.extend(range(lo, hi + 1))
            elif part.isdigit() and len(part) <= 20:
                seeds.append(int(part))
            else:
                raise SamplingError(
                    f"seeds: cannot parse {part[:40]!r}; use e.g. '0-63' or '1,5,9'"
                )
    else:
        seeds = list(text)
    for s in seeds:
        if (
            isinstance(s, bool)
            or not isinstance(s, (int, np.integer))
            or not 0 <= int(s) <= MAX_SEED
        ):
            raise SamplingError(f"seeds: {str(s)[:40]} is not an integer in [0, {MAX_SEED}]")
    if not seeds:
        raise SamplingError("seeds: no seeds given")
    return [int(s) for s in seeds]


def seeds_to_latents(seeds: Sequence[int], z_dim: int, limit: int | None = None) -> np.ndarray:
    """-> z: float32 [N, z_dim]; row i is ``RandomState(seeds[i]).randn(z_dim)``."""
    return _latents(parse_seeds(seeds, limit=limit), z_dim)


def labels_to_onehot(
    labels: Sequence[int | str] | int | str | None,
    n: int,
    c_dim: int,
    class_names: Sequence[str] = (),
) -> np.ndarray | None:
    """-> c: float32 [n, c_dim] one-hot, or None for an unconditional model.

    ``labels`` holds class ids or class names, one per image or a single one for all.
    A conditional model needs labels; an unconditional one rejects them.
    """
    if c_dim == 0:
        if labels is not None and not (isinstance(labels, (list, tuple)) and len(labels) == 0):
            raise SamplingError("labels: this generator is unconditional (c_dim=0); omit labels")
        return None
    if labels is None:
        raise SamplingError(
            f"labels: this generator is conditional on {c_dim} classes; give a class "
            f"id in [0, {c_dim - 1}]"
            + (f" or a name ({', '.join(class_names)})" if class_names else "")
            + " per image"
        )
    if isinstance(labels, (str, int, np.integer)):
        labels = [labels] * n
    labels = list(labels)
    if len(labels) == 1 and n > 1:
        labels = labels * n
    if len(labels) != n:
        raise SamplingError(
            f"labels: got {len(labels)} labels for {n} images; give one per image or one for all"
        )
    ids = []
    for label in labels:
        if isinstance(label, str) and not label.strip().lstrip("-").isdigit():
            if label not in class_names:
                raise SamplingError(
                    f"labels: unknown class name {label!r}; valid: {', '.join(class_names) or '(none: use ids)'}"
                )
            ids.append(list(class_names).index(label))
            continue
        if (
            isinstance(label, bool)
            or not isinstance(label, (int, np.integer, str))
            and not (isinstance(label, float) and label.is_integer())
        ):
            raise SamplingError(f"labels: {label!r} is not a class id or name")
        idx = int(label)
        if not 0 <= idx < c_dim:
            raise SamplingError(f"labels: class id {idx} is out of range [0, {c_dim - 1}]")
        ids.append(idx)
    onehot = np.zeros([n, c_dim], dtype=np.float32)
    onehot[np.arange(n), ids] = 1.0
    return onehot


def check_psi(psi: float) -> float:
    if (
        isinstance(psi, bool)
        or not isinstance(psi, (int, float, np.floating, np.integer))
        or not -2.0 <= float(psi) <= 2.0
    ):
        raise SamplingError(
            f"psi: {psi!r} is not a number in [-2, 2] (1: no truncation, 0.5-0.8 typical)"
        )
    return float(psi)


def check_noise_mode(noise_mode: str) -> str:
    if noise_mode not in NOISE_MODES:
        raise SamplingError(f"noise_mode: {noise_mode!r} is not one of {', '.join(NOISE_MODES)}")
    return noise_mode


@torch.no_grad()
def synthesize(
    generator: torch.nn.Module,
    z: np.ndarray,
    c: np.ndarray | None,
    psi: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = BATCH,
) -> np.ndarray:
    """Run the generator on latents in chunks of exactly ``batch_size`` rows -> uint8 [N, H, W, C].

    The last chunk is padded by repeating its last row (the padding's images are dropped), so
    every call has the same shape and an image never depends on its neighbours (module doc).
    """
    psi, noise_mode = check_psi(psi), check_noise_mode(noise_mode)
    if batch_size < 1:
        raise SamplingError(f"batch_size: must be >= 1, got {batch_size}")
    device = next(generator.parameters()).device
    out = []
    for i in range(0, len(z), batch_size):
        zb, cb = _padded(z[i : i + batch_size], batch_size), None
        if c is not None:
            cb = _padded(c[i : i + batch_size], batch_size).to(device)
        images = generator(zb.to(device), cb, truncation_psi=psi, noise_mode=noise_mode)
        out.append(to_uint8(images)[: min(batch_size, len(z) - i)])
    if not out:
        raise SamplingError("latents: no latents given")
    return np.concatenate(out, axis=0)


def _padded(rows: np.ndarray, size: int) -> torch.Tensor:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if len(rows) < size:
        rows = np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])
    return torch.from_numpy(rows)
