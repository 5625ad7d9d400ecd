"""Checkpoint validation: a truncated or altered file is found before loading, `resume=auto`
falls back to the newest valid checkpoint naming the bad one, stale temp folders are removed."""

from __future__ import annotations

import json

import pytest
import torch

from training.checkpoint import (
    CHECKSUMS,
    CheckpointError,
    latest_valid_checkpoint,
    load_checkpoint,
    remove_stale_temp,
    save_checkpoint,
    verify_checkpoint,
)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _save(root, images_seen, with_optim=True):
    net = _net()
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return save_checkpoint(
        root,
        images_seen=images_seen,
        modules={"g": net},
        optimizers={"g": opt} if with_optim else {},
        state={"augment_p": 0.1},
    )


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_checksums_recorded_for_every_file(tmp_path):
    path = _save(tmp_path, 100)
    files = json.loads((path / CHECKSUMS).read_text())["files"]
    assert set(files) == {"models.safetensors", "optim.pt", "state.json"}
    assert files["optim.pt"]["size"] == (path / "optim.pt").stat().st_size
    assert verify_checkpoint(path) == path


@pytest.mark.parametrize("name", ["models.safetensors", "optim.pt", "state.json"])
def test_truncated_file_is_named(tmp_path, name):
    path = _save(tmp_path, 100)
    _truncate(path / name)
    with pytest.raises(CheckpointError, match=f"{name}: .* bytes.*truncated"):
        verify_checkpoint(path)
    # loading goes through the same check: one clear error, not a library traceback
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(path, modules={"g": _net()}, with_optimizers=True)


def test_same_size_corruption_caught_by_sha256(tmp_path):
    path = _save(tmp_path, 100)
    f = path / "models.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in a weight: same size, different content
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 differs"):
        verify_checkpoint(path)
    verify_checkpoint(path, hashes=False)  # sizes alone cannot see it


def test_auto_resume_falls_back_and_names_the_bad_one(tmp_path):
    for n in (100, 200, 300):
        _save(tmp_path, n)
    _truncate(tmp_path / "ckpt-000000000300/models.safetensors")
    (tmp_path / "ckpt-000000000200/optim.pt").unlink()
    messages: list[str] = []
    assert latest_valid_checkpoint(tmp_path, warn=messages.append).name == "ckpt-000000000100"
    assert "ckpt-000000000300" in messages[0] and "models.safetensors" in messages[0]
    assert "ckpt-000000000200" in messages[1] and "optim.pt: missing" in messages[1]
    assert "resuming from ckpt-000000000100" in messages[-1]
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint ckpt-000000000300"):
        latest_valid_checkpoint(tmp_path)


def test_all_corrupt_is_an_error_and_empty_is_none(tmp_path):
    assert latest_valid_checkpoint(tmp_path / "nothing") is None
    _truncate(_save(tmp_path, 100) / "state.json")
    with pytest.raises(CheckpointError, match="all 1 checkpoints are corrupt"):
        latest_valid_checkpoint(tmp_path, warn=lambda m: None)


def test_checkpoint_without_checksums_gets_a_structural_check(tmp_path):
    # written by an older ganforge: no checksums.json
    path = _save(tmp_path, 100)
    (path / CHECKSUMS).unlink()
    verify_checkpoint(path)
    _truncate(path / "models.safetensors", keep=0.3)
    with pytest.raises(CheckpointError, match="models.safetensors: unreadable"):
        verify_checkpoint(path)
    path2 = _save(tmp_path, 200)
    (path2 / CHECKSUMS).unlink()
    _truncate(path2 / "optim.pt")
    with pytest.raises(CheckpointError, match="optim.pt: unreadable"):
        load_checkpoint(path2, modules={"g": _net()}, with_optimizers=True)


def test_stale_temp_folders_removed_and_checkpoints_kept(tmp_path):
    kept = _save(tmp_path, 100)
    for name in (".tmp-ckpt-000000000200-x1y2", ".staging-ckpt-000000000300"):
        (tmp_path / name / "deepspeed").mkdir(parents=True)
        (tmp_path / name / "models.safetensors").write_bytes(b"partial")
    removed = remove_stale_temp(tmp_path)
    assert sorted(p.name for p in removed) == [
        ".staging-ckpt-000000000300",
        ".tmp-ckpt-000000000200-x1y2",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
