"""deploy.export: ONNX / TorchScript files reproduce the PyTorch images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy import export


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(loaded_cond, tmp_path, fmt):
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    path = export.export_generator(
        loaded_cond, tmp_path / f"g.{'onnx' if fmt == 'onnx' else 'pt'}", fmt, batch=2
    )
    stats = export.verify_export(loaded_cond, path, seeds=[0, 1, 2], psi=0.6)
    assert stats["max_abs_diff"] <= 1
    # psi is a graph input: a different psi at run time changes the images like PyTorch does.
    got = export.run_export(path, export.export_inputs(loaded_cond, [4], 1.0, [2]))
    np.testing.assert_allclose(
        got.astype(int), loaded_cond.generate([4], psi=1.0, labels=[2]).astype(int), atol=1
    )


def test_export_rejects_unknown_format(loaded_uncond, tmp_path):
    with pytest.raises(export.ExportFormatError, match="format"):
        export.export_generator(loaded_uncond, tmp_path / "g.tflite", "tflite")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_of_a_latent_code_generator_matches_pytorch(export_latent_code, tmp_path, fmt):
    """The code is read from z inside the graph (argmax + one-hot): exported files reproduce
    the PyTorch images over seeds that carry every code value."""
    from deploy.generator import load_generator
    from deploy.sampling import seeds_to_latents
    from training.networks.stylegan2 import latent_code

    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    loaded = load_generator(export_latent_code)
    seeds = list(range(12))
    codes = latent_code(torch.from_numpy(seeds_to_latents(seeds, 16)), 4)
    assert set(codes.tolist()) == {0, 1, 2, 3}
    path = export.export_generator(loaded, tmp_path / f"g.{'onnx' if fmt == 'onnx' else 'pt'}", fmt)
    stats = export.verify_export(loaded, path, seeds=seeds, psi=1.0)
    assert stats["max_abs_diff"] <= 1


def test_verify_detects_a_wrong_file(loaded_uncond, tmp_path):
    from deploy.generator import load_generator
    from tests.unit.deploy.conftest import make_export

    path = export.export_generator(loaded_uncond, tmp_path / "g.pt", "torchscript")
    assert export.verify_export(loaded_uncond, path)["max_abs_diff"] == 0
    other = load_generator(make_export(tmp_path / "other", seed=5))
    with pytest.raises(export.ExportMismatchError, match="differs"):
        export.verify_export(other, path)
