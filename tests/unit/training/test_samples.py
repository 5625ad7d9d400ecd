"""The one home of the shared helpers (training.networks.samples / export): latents of seeds,
uint8 conversion, grids, atomic writes with the user's umask, metric direction."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from training.networks import export, samples


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_uses_the_umask_and_keeps_a_replaced_files_mode(tmp_path, umask):
    from safetensors.torch import save_file

    path = export.atomic_write(tmp_path / "a.json", lambda t: Path(t).write_text("{}"))
    assert _mode(path) == 0o644
    # safetensors replaces the file with its own 0600 one: the result still follows the umask.
    weights = export.atomic_write(
        tmp_path / "w.safetensors", lambda t: save_file({"x": torch.zeros(1)}, t)
    )
    assert _mode(weights) == 0o644
    umask(0o077)
    assert (
        _mode(export.atomic_write(tmp_path / "b.json", lambda t: Path(t).write_text("1"))) == 0o600
    )
    os.chmod(path, 0o640)
    export.atomic_write(path, lambda t: Path(t).write_text("[]"))
    assert _mode(path) == 0o640 and path.read_text() == "[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "w.safetensors"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        export.atomic_write(tmp_path / "x.png", fail)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_folder_and_files_follow_the_umask(tmp_path, umask):
    from training.checkpoint import save_checkpoint

    net = torch.nn.Linear(2, 2)
    folder = save_checkpoint(
        tmp_path / "ckpt", images_seen=16, modules={"g": net}, optimizers={}, state={}
    )
    assert _mode(folder) == 0o755
    assert {p.name: _mode(p) for p in folder.iterdir()} == {p.name: 0o644 for p in folder.iterdir()}
    assert _mode(export.make_temp_dir(tmp_path, ".tmp-x-")) == 0o755


def test_lower_is_better_is_the_one_list_evaluation_uses():
    from training.metrics.evaluation import RESULTS, higher_is_better

    lower = {name for name in RESULTS if export.lower_is_better(name)}
    assert lower == {"fid", "kid", "classifier_fd", "classifier_kid"}
    assert all(higher_is_better(n) is (n not in lower) for n in RESULTS)
    assert export.lower_is_better("metrics/fid50k_full") and not export.lower_is_better("recall")


def test_latents_uint8_and_grids():
    z = samples.seeds_to_latents([3, 9], 8)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z[1], np.random.RandomState(9).randn(8).astype(np.float32))
    from training.images import grid_latents

    np.testing.assert_array_equal(grid_latents(4, 8).numpy(), samples.seeds_to_latents(range(4), 8))
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    assert samples.quantize(images).flatten().tolist() == [0, 128, 255, 255]
    assert samples.to_uint8(images.expand(1, 3, 2, 2)).shape == (1, 2, 2, 3)
    tiles = np.arange(1, 6, dtype=np.uint8).reshape(5, 1, 1, 1).repeat(2, 1).repeat(2, 2)
    grid = samples.make_grid(tiles, cols=3, pad=1)
    assert (
        grid.shape == (5, 8, 1)
        and grid[0, 0, 0] == 1
        and grid[3, 3, 0] == 5
        and grid[3, 6, 0] == 0
        and grid[2, 2, 0] == 0
    )
    assert samples.make_grid(tiles, upscale_to=8).shape == (16, 24, 1)  # 2x3 cells, x4
