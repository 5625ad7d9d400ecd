"""Training-time FID/KID sample with random noise inputs (NVlabs' metric setting), explicitly."""

from __future__ import annotations

import pytest
import torch

from training.metrics.evaluation import EvalConfig, generated_features, generator_sampler
from training.metrics.features import FeatureExtractor
from training.networks.stylegan2 import Generator

TINY = dict(z_dim=16, w_dim=16, map_depth=2, channel_base=128, channel_max=16)


class _Pixels(FeatureExtractor):
    """The uint8 pixels as features: any change of the images changes the features."""

    name = "pixels"
    num_features = 3 * 8 * 8

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).float()


def _generator():
    torch.manual_seed(0)
    generator = Generator(img_resolution=8, **TINY).eval()
    with torch.no_grad():  # noise strengths start at 0: make the noise visible
        for name, param in generator.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.5)
    return generator


def _features(noise_mode, seed=0):
    (features,) = generated_features(
        generator_sampler(_generator(), noise_mode),
        [_Pixels()],
        num_images=12,
        z_dim=16,
        c_dim=0,
        class_probs=None,
        batch=4,
        device=torch.device("cpu"),
        seed=seed,
    )
    return features


def test_eval_defaults_to_random_noise_and_validates():
    assert EvalConfig().noise_mode == "random"
    assert EvalConfig(noise_mode="const").noise_mode == "const"
    with pytest.raises(ValueError, match="noise_mode"):
        EvalConfig(noise_mode="none")
    with pytest.raises(ValueError, match="noise_mode"):
        generator_sampler(_generator(), "fixed")


def test_random_noise_sampling_is_fresh_per_call_but_reproducible_per_evaluation():
    generator = _generator()
    z = torch.randn(4, 16)
    with torch.no_grad():
        random = generator_sampler(generator, "random")
        const = generator_sampler(generator, "const")
        assert not torch.equal(random(z, None), random(z, None))  # new noise every image
        assert torch.equal(const(z, None), const(z, None))
    # Inside evaluate's seeded sampling the random noise repeats exactly run to run...
    first, again = _features("random"), _features("random")
    assert torch.equal(first, again)
    # ...and it is really the random-noise setting, not the stored constant noise.
    assert not torch.equal(first, _features("const"))
    assert not torch.equal(first, _features("random", seed=1))
