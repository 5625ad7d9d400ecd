"""The standard Inception path (``InceptionFeatures`` -> torchmetrics' ``NoTrainInceptionV3`` ->
torch-fidelity's network) loads a weights file and gives features of the documented shapes.

No download: the test writes a weights file in exactly the format torch-fidelity reads (a
``torch.save``d state dict of its ``FeatureExtractorInceptionV3``, every tensor present, random
values), so a renamed key, a wrong feature layer or a broken path lookup fails here. Needs
torch-fidelity (`make setup` installs it without its torchvision dependency, which the
InceptionV3 module does not use); skipped without it, except in CI.
"""

from __future__ import annotations

import pytest
import torch

try:  # torch-fidelity's InceptionV3 module, loaded as ganforge loads it (no torchvision needed)
    from training.metrics.features import _import_inception_network

    _import_inception_network()
except ImportError as exc:
    pytest.skip(f"torch-fidelity is not installed: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A weights file in the released format (same keys, shapes, dtypes), seeded random values."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):  # builds the architecture, skips its weights
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    folder = tmp_path_factory.mktemp("inception")
    empty = folder / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    # random He-scaled weights (the signal neither vanishes nor explodes through 90+ layers),
    # unit batch norms: keys, shapes and dtypes as in the released file
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith(".weight") and value.ndim >= 2:
            value = torch.randn_like(value) * (2.0 / value[0].numel()) ** 0.5
        state[key] = value.clone()
    path = folder / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path, state


def test_features_and_logits_have_the_documented_shapes(weights_file):
    from training.metrics.features import InceptionFeatures

    path, state = weights_file
    extractor = InceptionFeatures(path)
    # the file's values are the network's: nothing was re-initialised or left out
    loaded = extractor.net.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k].to(state[k].dtype), state[k]) for k in state)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    features = extractor(images)
    assert features.shape == (3, InceptionFeatures.num_features) == (3, 2048)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    assert (features[0] - features[1]).norm() > 1e-3 * features[0].norm()  # images matter
    logits = extractor.logits(features)
    assert logits.shape == (3, InceptionFeatures.num_logits) == (3, 1008)
    gray = extractor(images[:, :1])  # one channel: repeated to three
    assert gray.shape == (3, 2048)
    assert extractor.name.endswith(path.name)


def test_weights_found_through_the_environment_variable(weights_file, monkeypatch):
    from training.metrics.features import WEIGHTS_ENV, inception_extractor

    path, _ = weights_file
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    extractor = inception_extractor()
    assert extractor(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)).shape == (1, 2048)


def test_a_file_of_another_network_is_refused(weights_file, tmp_path):
    from training.metrics.features import InceptionFeatures

    _, state = weights_file
    broken = dict(state)
    broken.pop(next(k for k in broken if k.startswith("Mixed_7c")))
    path = tmp_path / "other.pth"
    torch.save(broken, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        InceptionFeatures(path)
