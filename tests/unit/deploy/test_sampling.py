"""deploy.sampling: the seed -> latent -> uint8 recipe every path shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy import sampling


def test_parse_seeds_ranges_lists_and_ints():
    assert sampling.parse_seeds("0-3,10, 12") == [0, 1, 2, 3, 10, 12]
    assert sampling.parse_seeds(7) == [7]
    assert sampling.parse_seeds([5, np.int64(6)]) == [5, 6]


@pytest.mark.parametrize("bad", ["", "3-1", "a", "1,-2", [-1], [1.5], [True], [2**32]])
def test_parse_seeds_rejects(bad):
    with pytest.raises(sampling.SamplingError, match="seeds"):
        sampling.parse_seeds(bad)


def test_latents_are_nvlabs_randomstate_float32():
    z = sampling.seeds_to_latents([3, 9], 16)
    assert z.dtype == np.float32 and z.shape == (2, 16)
    np.testing.assert_array_equal(z[1], np.random.RandomState(9).randn(16).astype(np.float32))


def test_labels_one_hot_from_ids_names_and_broadcast():
    c = sampling.labels_to_onehot([0, "b", "2"], 3, 3, ["a", "b", "c"])
    np.testing.assert_array_equal(c, np.eye(3, dtype=np.float32))
    assert sampling.labels_to_onehot(1, 4, 3).sum(0).tolist() == [0, 4, 0]
    assert sampling.labels_to_onehot(None, 2, 0) is None


@pytest.mark.parametrize(
    ("labels", "c_dim", "match"),
    [
        ([1], 0, "unconditional"),
        (None, 3, "conditional"),
        ([3], 3, "out of range"),
        (["zebra"], 3, "unknown class name"),
        ([0, 1], 3, "2 labels for 3"),
        ([True], 3, "not a class"),
    ],
)
def test_labels_rejects(labels, c_dim, match):
    with pytest.raises(sampling.SamplingError, match=match):
        sampling.labels_to_onehot(labels, 3 if match.startswith("2") else 1, c_dim, ["a", "b", "c"])


def test_to_uint8_maps_range_and_layout():
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = sampling.to_uint8(images)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 3)
    assert out[0, :, :, 0].ravel().tolist() == [0, 128, 255, 255]


@pytest.mark.parametrize("psi", [3.0, "0.5", None, True])
def test_check_psi_rejects(psi):
    with pytest.raises(sampling.SamplingError, match="psi"):
        sampling.check_psi(psi)


def test_check_noise_mode():
    assert sampling.check_noise_mode("none") == "none"
    with pytest.raises(sampling.SamplingError, match="noise_mode"):
        sampling.check_noise_mode("fixed")


def test_synthesize_pixels_do_not_depend_on_batch_company():
    """An image is the same alone, among others, at any position (the server batches requests).

    Float kernels pick their blocking from the batch size: unpadded, this 32 px generator moved
    pixels by one level between batch 1 and batch 8 (benchmarks/bench_batching.py)."""
    from training.networks import build_networks
    from training.networks.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(z_dim=64, w_dim=64, map_depth=2, channel_base=1024, channel_max=64)
    generator = build_networks(cfg, 32, 3, 0)[0].eval()
    with torch.no_grad():
        generator.mapping.w_avg.normal_()
    z = sampling.seeds_to_latents(range(48), 64)
    together = sampling.synthesize(generator, z, None, psi=0.7)
    alone = np.concatenate(
        [sampling.synthesize(generator, z[i : i + 1], None, psi=0.7) for i in range(48)]
    )
    np.testing.assert_array_equal(alone, together)
    order = np.random.default_rng(0).permutation(48)
    np.testing.assert_array_equal(
        sampling.synthesize(generator, z[order], None, psi=0.7), together[order]
    )
    odd = sampling.synthesize(generator, z[5:18], None, psi=0.7)  # 13 rows: a padded last chunk
    np.testing.assert_array_equal(odd, together[5:18])


def test_parse_seeds_cap_is_checked_before_expanding():
    assert sampling.count_seeds("0-100000000,5") == 100000002
    with pytest.raises(sampling.SamplingError, match="100000001 seeds requested; at most 10000"):
        sampling.parse_seeds("0-100000000", limit=10_000)
    assert len(sampling.parse_seeds("0-99", limit=100)) == 100
