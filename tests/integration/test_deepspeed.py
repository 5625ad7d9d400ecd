"""DeepSpeed ZeRO-1/2 backend on CPU (DS_ACCELERATOR=cpu, gloo), launched like the README says.

- 2 processes == 1 process with gradient accumulation (same global batch and seed), bf16 autocast.
- A DeepSpeed checkpoint resumes (same world size: optimizer partitions restored exactly; other
  world size: weights exact, moments restarted) and exports the same safetensors format as DDP.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.test_distributed import DETERMINISTIC, _final, _train_args, run_launch
from training.networks.export import load_export

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_two_processes_match_one_process(tmp_path, digits_shards, stage):
    ds = {
        **DETERMINISTIC,
        "train.backend": "deepspeed",
        "train.zero_stage": stage,
        "train.mixed_precision": "bf16",
        # 4 steps of 8 images (1 process: 2 micro-batches of 4; 2 processes: 1 each), a
        # checkpoint after 2 of them
        "train.batch_per_device": 4,
        "train.total_kimg": 0.032,
        "train.tick_kimg": 0.016,
        "train.checkpoint_ticks": 1,
    }
    run_launch(1, _train_args(tmp_path / "one", digits_shards, **ds))
    run_launch(2, _train_args(tmp_path / "two", digits_shards, **ds))
    (w1, s1), (w2, s2) = _final(tmp_path / "one/runs/digits"), _final(tmp_path / "two/runs/digits")
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    # The tolerance is a small share of what training changes: the last 2 of the 4 steps
    # (checkpoints at 16 and 32 images) move every trained tensor by `moved`; 1 and 2 processes
    # may differ by at most 0.1 % of that (reduction order, bf16 autocast; measured on CPU: 0).
    earlier = load_file(
        str(tmp_path / "one/runs/digits/checkpoints/ckpt-000000000016/models.safetensors")
    )
    worst = 0.0
    for key in w1:
        moved = (w1[key].double() - earlier[key].double()).abs().max().item()
        gap = (w1[key].double() - w2[key].double()).abs().max().item()
        if moved > 0:
            worst = max(worst, gap / moved)
        else:
            assert gap == 0, key
        assert gap <= 1e-3 * moved, (
            f"{key}: 1 vs 2 processes differ by {gap:.3g}, 2 steps move it {moved:.3g}"
        )
    print(f"worst gap / 2-step change: {worst:.2e}")
    # a DeepSpeed checkpoint, not just a glob object: both ranks' optimizer partitions of both
    # networks, and the loadable module states
    ckpt = tmp_path / "two/runs/digits/checkpoints/ckpt-000000000032/deepspeed"
    for network in ("generator", "discriminator"):
        names = sorted(p.name for p in (ckpt / network).iterdir())
        assert "mp_rank_00_model_states.pt" in names, names
        assert [n for n in names if "optim_states" in n] == [
            "zero_pp_rank_0_mp_rank_00_optim_states.pt",
            "zero_pp_rank_1_mp_rank_00_optim_states.pt",
        ], names


def test_zero2_resume_and_export(tmp_path, digits_shards):
    ds = {"train.backend": "deepspeed", "train.zero_stage": 2}
    run_launch(2, _train_args(tmp_path, digits_shards, **ds, **{"train.total_kimg": 0.016}))
    same = run_launch(2, _train_args(tmp_path, digits_shards, **ds, **{"train.total_kimg": 0.032}))
    assert "resumed from" in same.stdout and "moments restarted" not in same.stdout
    other = run_launch(1, _train_args(tmp_path, digits_shards, **ds, **{"train.total_kimg": 0.048}))
    assert "moments restarted" in other.stdout
    _, state = _final(tmp_path / "runs/digits")
    assert state["images_seen"] == 48
    generator, config = load_export(tmp_path / "runs/digits/export")  # same format as DDP runs
    assert config["family"] == "stylegan2"
    assert torch.isfinite(
        generator(torch.randn(2, generator.z_dim), None, noise_mode="const")
    ).all()


def test_zero3_is_refused_with_a_clear_message(tmp_path, digits_shards):
    from pipeline.config import load_config
    from pipeline.configtools import ConfigError

    with pytest.raises(ConfigError, match="zero_stage"):
        load_config("digits", ["train.zero_stage=3"])
