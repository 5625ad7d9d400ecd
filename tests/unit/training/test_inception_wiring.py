"""The standard Inception path (``InceptionFeatures`` -> ``inception.FIDInceptionV3``) loads a weights
file in the released format and gives features of the documented shapes; wrong files are refused.

No download: the test writes a weights file in exactly the format of torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth`` (a ``torch.save``d dict of float32 tensors, random
values). The format is pinned by a fingerprint taken from torch-fidelity 0.4.0's
``FeatureExtractorInceptionV3`` (its state dict without ``num_batches_tracked``, which is what its
``utils/util_convert_inception_weights.py`` writes), not derived from ganforge's own module, so a
renamed layer or a wrong shape in our network fails here. The numerical equivalence with
torch-fidelity's network was checked once outside the suite (docs/evaluation.md).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from training.metrics.features import (
    WEIGHTS_ENV,
    InceptionFeatures,
    check_inception,
    inception_extractor,
)
from training.metrics.inception import (
    FIDInceptionV3,
    InceptionWeightsFormatError,
    resize_bilinear_tf1,
    weights_format,
)

# -- the released file's format, read off torch-fidelity 0.4.0 (not off ganforge's code) ----------
RELEASED_TENSORS = 472  # 94 conv + batch-norm units x 5 tensors, fc.weight, fc.bias
RELEASED_ELEMENTS = 23_885_392
# sha256 of the sorted lines "key:[d0, d1, ...]" joined by "\n"
RELEASED_FORMAT_SHA256 = "d559ff75f058d0c5b1bc793a70c599a35fc475667dd25e6bb99f1666f642cffc"
RELEASED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": [32, 3, 3, 3],
    "Conv2d_4a_3x3.conv.weight": [192, 80, 3, 3],
    "Mixed_5b.branch_pool.conv.weight": [32, 192, 1, 1],
    "Mixed_6b.branch7x7_2.conv.weight": [128, 128, 1, 7],
    "Mixed_6e.branch7x7dbl_5.conv.weight": [192, 192, 1, 7],
    "Mixed_7a.branch7x7x3_4.conv.weight": [192, 192, 3, 3],
    "Mixed_7c.branch3x3dbl_3b.conv.weight": [384, 384, 3, 1],
    "Mixed_7c.branch_pool.bn.running_var": [192],
    "fc.weight": [1008, 2048],
    "fc.bias": [1008],
}
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"

# torch-fidelity 0.4.0's FeatureExtractorInceptionV3 on the `weights_file` fixture's weights and
# `GOLDEN_IMAGES` (torch 2.13 CPU, float32): per image, features.sum(), (features * ramp).sum()
# with ramp = linspace(-1, 1, 2048) (sensitive to the channel order), logits_unbiased.sum().
# ganforge's network gave the same numbers bit for bit there; the tolerances allow for other
# thread counts. A TF detail gone wrong moves them by far more (torch's average pool in
# Mixed_7c: features.sum() by 3%, the ramp sum by 400%).
GOLDEN_FEATURE_SUMS = [3946.390869140625, 4155.81640625]
GOLDEN_FEATURE_RAMP_SUMS = [23.75678062438965, 22.984403610229492]
GOLDEN_LOGIT_SUMS = [151.8662109375, 170.12037658691406]


def golden_images() -> torch.Tensor:
    return torch.randint(
        0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )


def fingerprint(shapes: dict[str, list[int]]) -> str:
    lines = sorted(f"{key}:{list(shape)}" for key, shape in shapes.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_our_network_has_exactly_the_released_format():
    for shapes in (
        {k: list(v.shape) for k, v in FIDInceptionV3().state_dict().items()},
        {k: list(v) for k, v in weights_format().items()},
    ):
        assert len(shapes) == RELEASED_TENSORS
        assert sum(torch.Size(s).numel() for s in shapes.values()) == RELEASED_ELEMENTS
        assert {k: shapes.get(k) for k in RELEASED_SHAPES} == RELEASED_SHAPES
        assert not any(k.endswith("num_batches_tracked") for k in shapes)
        assert fingerprint(shapes) == RELEASED_FORMAT_SHA256


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A file in the released format: every key, float32, seeded random values (He-scaled convs and
    non-trivial batch-norm statistics, so the signal survives 94 layers and every tensor matters)."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in weights_format().items():
        if key.endswith("conv.weight") or key == "fc.weight":
            value = torch.randn(shape, generator=generator) * (2.0 / shape[1:].numel()) ** 0.5
        elif key.endswith(("bn.weight", "running_var")):
            value = 0.5 + torch.rand(shape, generator=generator)
        else:  # bn.bias, running_mean, fc.bias
            value = 0.1 * torch.randn(shape, generator=generator)
        state[key] = value
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def extractor(weights_file):
    return InceptionFeatures(weights_file[0])


def test_features_and_logits_have_the_documented_shapes(weights_file, extractor):
    path, state = weights_file
    # the file's values are the network's: nothing re-initialised or left out
    loaded = extractor.net.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert extractor.name == f"inception-v3-2048-{WEIGHTS_FILE}"

    images = golden_images()
    features = extractor(images)
    assert features.shape == (2, InceptionFeatures.num_features) == (2, 2048)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    assert (features[0] - features[1]).norm() > 1e-3 * features[0].norm()  # images matter

    logits = extractor.logits(features)
    assert logits.shape == (2, InceptionFeatures.num_logits) == (2, 1008)
    # torch-fidelity's logits_unbiased: the softmax layer without its bias
    torch.testing.assert_close(logits, features @ state["fc.weight"].T)
    assert not torch.allclose(logits, extractor.net.fc(features))

    # the numbers torch-fidelity's network gives on the same weights and images
    torch.testing.assert_close(features.sum(1).tolist(), GOLDEN_FEATURE_SUMS, rtol=1e-4, atol=0)
    ramp = features @ torch.linspace(-1, 1, 2048)
    tolerance = 1e-4 * features.abs().sum(1).max().item()  # the ramp sum cancels: absolute
    torch.testing.assert_close(ramp.tolist(), GOLDEN_FEATURE_RAMP_SUMS, rtol=0, atol=tolerance)
    torch.testing.assert_close(logits.sum(1).tolist(), GOLDEN_LOGIT_SUMS, rtol=1e-4, atol=0)

    gray = extractor(images[:, :1])  # one channel: repeated to three
    torch.testing.assert_close(gray, extractor(images[:, :1].repeat(1, 3, 1, 1)), rtol=0, atol=0)


def test_features_are_deterministic_and_batch_invariant(extractor):
    """Image i's features do not depend on the rest of the batch (frozen batch norm), in any mode,
    at the native 299 px and at a size that is resized."""
    generator = torch.Generator().manual_seed(1)
    for size in (32, 299):
        images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)
        batch = extractor(images)
        if size == 32:
            assert torch.equal(batch, extractor(images))  # deterministic
        extractor.train()  # there is no train mode: still the fixed statistics
        alone = extractor(images[1:2])
        extractor.eval()
        torch.testing.assert_close(alone[0], batch[1], rtol=1e-5, atol=1e-5 * batch.abs().max())


def test_weights_found_through_the_environment_variable(weights_file, monkeypatch):
    path, _ = weights_file
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    assert check_inception() == path
    extractor = inception_extractor()
    assert extractor(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)).shape == (1, 2048)


def _broken_files(state, folder):
    renamed = dict(state)
    renamed["Mixed_7c.branch_pool.conv.weights"] = renamed.pop("Mixed_7c.branch_pool.conv.weight")
    reshaped = dict(state, **{"fc.weight": torch.zeros(1000, 2048)})
    extra = dict(state, **{"Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0)})
    cases = {
        "renamed.pth": (renamed, "'Mixed_7c.branch_pool.conv.weight' is missing"),
        "reshaped.pth": (reshaped, "'fc.weight' has shape [1000, 2048], expected [1008, 2048]"),
        "extra.pth": (extra, "unexpected key 'Conv2d_1a_3x3.bn.num_batches_tracked'"),
        "tensor.pth": (torch.zeros(3), "holds a Tensor, not a state dict"),
        "garbage.pth": (b"not a torch file", "not a readable torch state dict"),
    }
    for name, (content, message) in cases.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        yield path, message


def test_a_file_of_another_format_is_refused_in_one_line(weights_file, tmp_path):
    _, state = weights_file
    for path, message in _broken_files(state, tmp_path):
        for load in (InceptionFeatures, check_inception):
            with pytest.raises(InceptionWeightsFormatError) as err:
                load(path)
            text = str(err.value)
            assert "\n" not in text and str(path) in text and message in text, text
            assert WEIGHTS_FILE in text  # says what was expected


def test_cli_eval_checks_the_weights_given_by_flag_before_any_work(
    weights_file, digits_shards, tmp_path, monkeypatch, capsys
):
    from pipeline.cli import main

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.delenv("GANFORGE_DEBUG", raising=False)
    _, state = weights_file
    broken = dict(state)
    del broken["fc.bias"]
    torch.save(broken, tmp_path / "broken.pth")

    def run(weights):
        args = ["eval", "--model", str(tmp_path / "no-model"), "--data", str(digits_shards)]
        args += ["--metrics", "fid", "--inception-weights", str(weights), "--device", "cpu"]
        return main(args), capsys.readouterr().err

    code, err = run(tmp_path / "broken.pth")
    assert code == 2 and "broken.pth: key 'fc.bias' is missing" in err
    # the good file passes the weights check: eval goes on and stops at the missing model
    code, err = run(weights_file[0])
    assert code != 0 and "no-model" in err and "Inception" not in err and WEIGHTS_FILE not in err


# -- the TF1 resize -------------------------------------------------------------------------------
def test_tf1_resize_against_hand_computed_values():
    # upsampling 2x2 -> 4x4: output i reads input i * 2/4 = 0, 0.5, 1, 1.5 (no half-pixel offset),
    # and coordinates past the last pixel repeat it: [0, 10] -> [0, 5, 10, 10]
    image = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]
    expected = torch.tensor(
        [
            [0.0, 5.0, 10.0, 10.0],
            [10.0, 15.0, 20.0, 20.0],
            [20.0, 25.0, 30.0, 30.0],
            [20.0, 25.0, 30.0, 30.0],
        ]
    )
    torch.testing.assert_close(resize_bilinear_tf1(image, (4, 4))[0, 0], expected)
    # torch's centred bilinear gives [0, 2.5, 7.5, 10] here: not what the FID graph saw
    centred = torch.nn.functional.interpolate(image, size=(4, 4), mode="bilinear")
    assert not torch.allclose(centred[0, 0], expected)

    # downsampling 1x4 -> 1x3: coordinates 0, 4/3, 8/3 -> [0, 10 + 10/3, 20 + 20/3]
    row = torch.tensor([0.0, 10.0, 20.0, 30.0])[None, None, None]
    torch.testing.assert_close(
        resize_bilinear_tf1(row, (1, 3))[0, 0, 0], torch.tensor([0.0, 40 / 3, 80 / 3])
    )
    # the native size is the identity, batch and channels untouched
    images = torch.rand(2, 3, 5, 7)
    assert torch.equal(resize_bilinear_tf1(images, (5, 7)), images)
