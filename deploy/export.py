"""Export a generator (mapping + synthesis + truncation + uint8 conversion) to ONNX or TorchScript.

The exported graph is ``SamplingModule``: ``(z [N, z_dim], c [N, c_dim] | absent, psi [])
-> uint8 images [N, H, W, C]``, the same recipe as ``deploy.sampling`` so an exported model fed
``seeds_to_latents(seeds)`` reproduces the pipeline's images (within float tolerance: ONNX Runtime
reorders some reductions). Noise is baked as ``const`` (the default everywhere).

For StyleGAN2 the truncation psi is a graph input (``w_avg + psi * (w - w_avg)``, applied to
every layer's w, exactly the mapping network's own formula); families without a mapping network
get ``psi`` baked at export time. ``verify_export`` runs the file on fixed seeds and compares
with PyTorch.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``), which needs no ``onnxscript``.
Its shape inference loses the transposed-conv kernel shape under a dynamic batch axis, so the ONNX
graph has a fixed batch (``batch``, default 1); ``run_export`` feeds larger requests in chunks.
Fused modulated convs (batch folded into groups) are turned off in the graph either way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.networks.export import atomic_write
from training.networks.samples import quantize

from . import sampling
from .generator import LoadedGenerator

FORMATS = ("onnx", "torchscript")
OPSET = 17


class ExportFormatError(ValueError):
    """Unsupported format or missing optional dependency."""


class ExportMismatchError(ValueError):
    """The exported file does not reproduce the PyTorch generator's images."""


class SamplingModule(nn.Module):
    """z, c, psi -> uint8 [N, H, W, C]; what an exported file computes."""

    def __init__(self, generator: nn.Module, psi: float = 1.0, noise_mode: str = "const") -> None:
        super().__init__()
        self.generator = generator
        self.noise_mode = sampling.check_noise_mode(noise_mode)
        self.baked_psi = sampling.check_psi(psi)
        mapping = getattr(generator, "mapping", None)
        self.psi_input = (
            mapping is not None and hasattr(generator, "synthesis") and hasattr(mapping, "w_avg")
        )

    def forward(self, z: torch.Tensor, c: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        return self.sample(z, c, psi)

    def sample(
        self, z: torch.Tensor, c: torch.Tensor | None, psi: torch.Tensor | None
    ) -> torch.Tensor:
        g = self.generator
        if self.psi_input:
            ws = g.mapping(z, c, truncation_psi=1.0)
            psi = torch.full((), self.baked_psi) if psi is None else psi.reshape(())
            ws = g.mapping.w_avg.lerp(ws, psi.to(ws.dtype))  # the mapping network's own truncation
            images = g.synthesis(ws, noise_mode=self.noise_mode, fused_modconv=False)
        else:
            images = g(z, c, truncation_psi=self.baked_psi, noise_mode=self.noise_mode)
        return quantize(images).permute(0, 2, 3, 1)


class UnconditionalSamplingModule(SamplingModule):
    """z, psi -> uint8 [N, H, W, C] (no label input)."""

    def forward(self, z: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.sample(z, None, psi)


def sampling_module(
    generator: nn.Module, psi: float = 1.0, noise_mode: str = "const"
) -> SamplingModule:
    cls = SamplingModule if int(generator.c_dim) > 0 else UnconditionalSamplingModule
    return cls(generator, psi=psi, noise_mode=noise_mode).eval()


def _example_inputs(
    loaded: LoadedGenerator, seeds: list[int], psi: float
) -> tuple[torch.Tensor, ...]:
    z = torch.from_numpy(sampling.seeds_to_latents(seeds, loaded.z_dim))
    inputs = [z]
    if loaded.c_dim:
        labels = [s % loaded.c_dim for s in seeds]
        inputs.append(torch.from_numpy(sampling.labels_to_onehot(labels, len(seeds), loaded.c_dim)))
    inputs.append(torch.tensor(psi, dtype=torch.float32))
    return tuple(inputs)


def input_names(loaded: LoadedGenerator) -> list[str]:
    return ["z"] + (["c"] if loaded.c_dim else []) + ["psi"]


def export_generator(
    loaded: LoadedGenerator,
    out_path: str | Path,
    fmt: str = "onnx",
    psi: float = 1.0,
    noise_mode: str = "const",
    batch: int = 1,
) -> Path:
    """Write ``out_path`` (atomically) as ONNX or TorchScript; returns the path.

    ``psi`` is the default truncation (the value baked for families without a psi input);
    ``batch`` the ONNX graph's fixed batch size (TorchScript takes any batch).
    """
    if batch < 1:
        raise ValueError(f"batch: must be >= 1, got {batch}")
    if fmt not in FORMATS:
        raise ExportFormatError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    module = sampling_module(loaded.generator.cpu().float(), psi=psi, noise_mode=noise_mode)
    example = _example_inputs(loaded, list(range(batch if fmt == "onnx" else 2)), psi)

    def write(tmp: str) -> None:
        # The tracer warns about every Python bool/int it bakes (shapes, noise_mode); expected here.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "torchscript":
                torch.jit.trace(module, example, check_trace=False).save(tmp)
            else:
                _export_onnx(module, example, input_names(loaded), tmp)

    try:
        return atomic_write(out_path, write)
    finally:
        loaded.generator.to(loaded.device)


def _export_onnx(
    module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: str
) -> None:
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError:
        raise ExportFormatError(
            "ONNX export needs `pip install ganforge[export]` (onnx, onnxruntime)"
        ) from None
    torch.onnx.export(
        module,
        example,
        path,
        input_names=names,
        output_names=["images"],
        opset_version=OPSET,
        dynamo=False,
    )


def run_export(path: str | Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Run an exported file (ONNX via onnxruntime, else TorchScript) -> uint8 [N, H, W, C]."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportFormatError("running ONNX needs `pip install onnxruntime`") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batch = session.get_inputs()[0].shape[0]
        batch = batch if isinstance(batch, int) else len(inputs["z"])
        n, outputs = len(inputs["z"]), []
        for start in range(0, n, batch):
            feed = {}
            for arg in session.get_inputs():
                value = np.asarray(inputs[arg.name])
                if arg.name != "psi":
                    value = value[start : start + batch]
                    if len(value) < batch:  # pad the last chunk; the padding rows are dropped
                        value = np.concatenate(
                            [value, np.repeat(value[-1:], batch - len(value), 0)]
                        )
                feed[arg.name] = value
            outputs.append(session.run(None, feed)[0])
        return np.concatenate(outputs)[:n]
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(*[torch.from_numpy(np.asarray(v)) for v in inputs.values()]).numpy()


def export_inputs(
    loaded: LoadedGenerator, seeds: list[int], psi: float, labels: Any = None
) -> dict[str, np.ndarray]:
    """The named inputs of an exported file for these seeds (same latents as every other path)."""
    inputs = {"z": sampling.seeds_to_latents(seeds, loaded.z_dim)}
    if loaded.c_dim:
        inputs["c"] = sampling.labels_to_onehot(
            labels, len(seeds), loaded.c_dim, loaded.class_names
        )
    inputs["psi"] = np.asarray(psi, dtype=np.float32)
    return inputs


def verify_export(
    loaded: LoadedGenerator,
    path: str | Path,
    seeds: list[int] | None = None,
    psi: float = 0.7,
    tolerance: int = 2,
) -> dict[str, float]:
    """Compare the exported file with ``loaded.generate`` on ``seeds``; raise if it drifts.

    Returns {"max_abs_diff", "mean_abs_diff"} in uint8 levels; fails when the max difference
    exceeds ``tolerance`` levels (float reordering moves a few pixels by one level).
    """
    seeds = seeds or list(range(4))
    labels = [s % loaded.c_dim for s in seeds] if loaded.c_dim else None
    expected = loaded.generate(seeds, psi=psi, labels=labels)
    got = run_export(path, export_inputs(loaded, seeds, psi, labels))
    return compare_uint8(path, got, expected, tolerance)


def compare_uint8(
    path: str | Path, got: np.ndarray, expected: np.ndarray, tolerance: int
) -> dict[str, float]:
    """The check of every exported file against PyTorch: same uint8 shape, and no pixel more
    than ``tolerance`` levels off; -> {"max_abs_diff", "mean_abs_diff"}, else ExportMismatchError."""
    if got.shape != expected.shape or got.dtype != np.uint8:
        raise ExportMismatchError(
            f"{path}: output {got.dtype}{list(got.shape)}, expected uint8{list(expected.shape)}"
        )
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    stats = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    if stats["max_abs_diff"] > tolerance:
        raise ExportMismatchError(
            f"{path}: differs from PyTorch by up to {stats['max_abs_diff']:.0f} levels "
            f"(mean {stats['mean_abs_diff']:.3f}); tolerance {tolerance}"
        )
    return stats
