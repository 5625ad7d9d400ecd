"""Checkpoints: atomic, complete-or-absent, round-trip exactly, refuse mismatched models."""

from __future__ import annotations

import pytest
import torch

from training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


def _net(width=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, width), torch.nn.ReLU(), torch.nn.Linear(width, 1)
    )


def test_round_trip_gives_identical_outputs_and_optimizer_state(tmp_path):
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.0, 0.99))
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path,
        images_seen=1234,
        modules={"g": net},
        optimizers={"g": opt},
        state={"augment_p": 0.25},
        extra_tensors={"pl_mean": torch.tensor([1.5])},
    )
    net2 = _net()
    torch.nn.init.zeros_(net2[0].weight)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    state, extra = load_checkpoint(path, modules={"g": net2}, optimizers={"g": opt2})
    x = torch.randn(7, 3)
    assert torch.equal(net(x), net2(x))
    assert state["images_seen"] == 1234 and state["augment_p"] == 0.25
    assert extra["pl_mean"].item() == 1.5
    assert opt2.param_groups[0]["lr"] == 0.01
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_latest_prune_and_incomplete_ignored(tmp_path):
    net = _net()
    for n in (100, 300, 200):
        save_checkpoint(tmp_path, images_seen=n, modules={"g": net}, optimizers={}, state={})
    (tmp_path / ".tmp-ckpt-000000000400-abc").mkdir()  # a save killed halfway
    (tmp_path / "ckpt-000000000500").mkdir()  # no state.json: incomplete
    assert latest_checkpoint(tmp_path).name == "ckpt-000000000300"
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt-000000000200",
        "ckpt-000000000300",
    ]


def test_mismatched_model_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, images_seen=1, modules={"g": _net(4)}, optimizers={}, state={})
    with pytest.raises(CheckpointError, match="g weights do not fit"):
        load_checkpoint(path, modules={"g": _net(8)})


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a complete ganforge checkpoint"):
        load_checkpoint(tmp_path, modules={})
