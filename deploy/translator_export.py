"""Export one direction of a translator (CycleGAN) to ONNX or TorchScript.

The exported graph is ``TranslateModule``: ``uint8 images [N, H, W, C] -> uint8 [N, H, W, C]``
(x / 127.5 - 1, the generator, ``quantize``), the same arithmetic as ``ganforge translate`` at
the image's own size. TorchScript (traced) takes any N and any H, W that are multiples of 4.
ONNX uses the TorchScript-based exporter (``dynamo=False``, as the generator export) with a fixed
input shape: ``batch`` x the model's native resolution (its shape inference loses the transposed
convs' kernel shape under dynamic axes); resize/crop inputs to it first (``--size native``).
``verify_translator_export`` runs the file on fixed random images and compares with PyTorch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.networks.export import atomic_write
from training.networks.samples import quantize
from training.networks.translation import translate_batch

from .export import FORMATS, ExportFormatError, _export_onnx, compare_uint8
from .translate import LoadedTranslator


class TranslateModule(nn.Module):
    """uint8 [N, H, W, C] -> uint8 [N, H, W, C] through one direction's generator."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return quantize(self.generator(x)).permute(0, 2, 3, 1)


def example_images(translator: LoadedTranslator, count: int, seed: int = 0) -> np.ndarray:
    """Fixed random uint8 images at the native resolution (the export's example and check)."""
    rng = np.random.default_rng(seed)
    shape = (count, translator.resolution, translator.resolution, translator.channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def export_translator(
    translator: LoadedTranslator,
    out_path: str | Path,
    fmt: str = "onnx",
    direction: str = "a2b",
    batch: int = 1,
) -> Path:
    """Write ``out_path`` (atomically) as ONNX or TorchScript for ``direction``; -> the path."""
    if batch < 1:
        raise ValueError(f"batch: must be >= 1, got {batch}")
    if fmt not in FORMATS:
        raise ExportFormatError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    generator = translator.generators[translator.check_direction(direction)]
    device = next(generator.parameters()).device
    module = TranslateModule(generator.cpu().float()).eval()
    example = (torch.from_numpy(example_images(translator, batch if fmt == "onnx" else 2)),)

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on baked shape checks
            if fmt == "torchscript":
                torch.jit.trace(module, example, check_trace=False).save(tmp)
            else:
                _export_onnx(module, example, ["pixels"], tmp)  # output: "images"

    try:
        return atomic_write(out_path, write)
    finally:
        generator.to(device)


def run_translator_export(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Run an exported translator (ONNX via onnxruntime in chunks of its fixed batch, else
    TorchScript) on uint8 [N, H, W, C] -> uint8 [N, H, W, C]."""
    if Path(path).suffix != ".onnx":
        module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(images))).numpy()
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportFormatError("running ONNX needs `pip install onnxruntime`") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch, name = session.get_inputs()[0].shape[0], session.get_inputs()[0].name
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        outputs.append(session.run(None, {name: padded})[0][: len(chunk)])
    return np.concatenate(outputs)


def verify_translator_export(
    translator: LoadedTranslator,
    path: str | Path,
    direction: str = "a2b",
    count: int = 2,
    tolerance: int = 2,
) -> dict[str, float]:
    """Compare the file with PyTorch on fixed images; raise ExportMismatchError if it drifts."""
    images = example_images(translator, count, seed=1)
    expected = translate_batch(translator.generators[direction], images)
    got = run_translator_export(path, images)
    return compare_uint8(path, got, expected, tolerance)
