"""deploy.generator: loading an export and sampling stills, grids and interpolations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploy import generator as gen
from deploy.sampling import SamplingError
from training.networks.export import ExportError


def test_generate_shape_dtype_and_determinism(loaded_uncond):
    a = loaded_uncond.generate("0-3", psi=0.7)
    assert a.shape == (4, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, loaded_uncond.generate([0, 1, 2, 3], psi=0.7))
    # Each image depends only on its own seed: batch composition changes nothing.
    np.testing.assert_array_equal(a[2:3], loaded_uncond.generate([2], psi=0.7))
    assert not np.array_equal(a, loaded_uncond.generate("0-3", psi=1.0))


def test_generate_latents_equals_seeds(loaded_uncond):
    z = np.stack([np.random.RandomState(s).randn(16) for s in (4, 5)])
    np.testing.assert_array_equal(loaded_uncond.generate_latents(z), loaded_uncond.generate([4, 5]))
    with pytest.raises(SamplingError, match=r"\[N, 16\]"):
        loaded_uncond.generate_latents(np.zeros((2, 8)))


def test_conditional_labels_by_id_and_name(loaded_cond):
    assert loaded_cond.c_dim == 3 and loaded_cond.class_names == ["class0", "class1", "class2"]
    by_id = loaded_cond.generate([0, 1], labels=[2, 2])
    np.testing.assert_array_equal(by_id, loaded_cond.generate([0, 1], labels="class2"))
    assert not np.array_equal(by_id, loaded_cond.generate([0, 1], labels=0))
    with pytest.raises(SamplingError, match="conditional"):
        loaded_cond.generate([0])


def test_noise_modes_const_reproducible_random_not(loaded_uncond):
    np.testing.assert_array_equal(
        loaded_uncond.generate([0], noise_mode="const"),
        loaded_uncond.generate([0], noise_mode="const"),
    )
    a, b = (loaded_uncond.generate([0], noise_mode="random") for _ in range(2))
    assert not np.array_equal(a, b)


def test_resolve_local_export_and_model_folders(export_uncond, tmp_path):
    assert gen.resolve_export(export_uncond) == export_uncond
    model = tmp_path / "model" / "artifacts" / "export"
    model.mkdir(parents=True)
    for f in export_uncond.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    assert gen.resolve_export(tmp_path / "model") == model
    with pytest.raises(ExportError, match="neither a ganforge export"):
        gen.resolve_export(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        gen.resolve_export(tmp_path / "missing")


def test_model_uri_of_run_id():
    assert gen.model_uri_of("a" * 32) == f"runs:/{'a' * 32}/generator"
    assert gen.model_uri_of("models:/x@champion") == "models:/x@champion"


def test_save_grid_atomic_png(loaded_uncond, tmp_path):
    images = loaded_uncond.generate("0-4")
    path = gen.save_grid(images, tmp_path / "out" / "grid.png", cols=3)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (32, 48, 3)
    np.testing.assert_array_equal(grid[16:32, 0:16], images[3])
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp files left


def test_save_images_one_per_seed(loaded_uncond, tmp_path):
    images = loaded_uncond.generate([7, 8])
    paths = gen.save_images(images, tmp_path, ["seed0007", "seed0008"])
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1])), images[1])


def test_interpolation_gif_loops_through_seeds(loaded_cond, tmp_path):
    frames = loaded_cond.interpolate("0-2", frames_per_seed=3, label="class1")
    assert frames.shape == (9, 16, 16, 3)
    # Frame 0 and frame 3 are exactly seeds 0 and 1.
    np.testing.assert_array_equal(frames[[0, 3]], loaded_cond.generate([0, 1], labels=1))
    path = gen.save_animation(frames, tmp_path / "walk.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 9
    with pytest.raises(ValueError, match=".gif"):
        gen.save_animation(frames, tmp_path / "walk.avi")
    with pytest.raises(SamplingError, match="two seeds"):
        loaded_cond.interpolate([0], label=0)


def test_mp4_without_ffmpeg_is_a_clear_error(loaded_uncond, tmp_path, monkeypatch):
    from deploy import media

    monkeypatch.setattr(media, "ffmpeg_binary", lambda: None)
    with pytest.raises(ValueError, match="needs ffmpeg"):
        gen.save_animation(loaded_uncond.generate([0, 1]), tmp_path / "walk.mp4")
    assert list(tmp_path.iterdir()) == []  # the temp file is cleaned up


def test_mp4_with_ffmpeg(loaded_uncond, tmp_path):
    # the dev extra installs imageio-ffmpeg, which bundles an ffmpeg binary
    assert gen.ffmpeg_binary() is not None
    path = gen.save_animation(
        loaded_uncond.interpolate([0, 1], frames_per_seed=2), tmp_path / "walk.mp4"
    )
    assert path.read_bytes()[4:8] == b"ftyp"  # an MP4 container


def test_deploy_imports_only_training_networks():
    import subprocess
    import sys

    code = (
        "import sys, deploy.generator, deploy.serve, deploy.export, deploy.registry, deploy.sampling\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pipeline', 'accelerate', 'deepspeed')"
        " or (m.startswith('training.') and not m.startswith('training.networks'))]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
