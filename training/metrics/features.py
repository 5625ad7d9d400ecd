"""Feature extractors for the distribution metrics, and where the Inception weights come from.

Every metric in this package works on features, never on pixels: an extractor maps
``uint8 images [N, C, H, W] -> features float32 [N, D]`` and ``features -> logits [N, K]``
(used by the Inception Score and the class histogram). Two kinds exist:

- ``InceptionFeatures``: the standard FID network (Szegedy et al. 2016, the TensorFlow
  2015-12-05 graph with torch-fidelity's converted weights), ganforge's own pure-torch code in
  ``inception.py`` (equal to torch-fidelity's network bit for bit). Its 2048-d pool features are
  the ones FID/KID numbers in the literature use; its logits are torch-fidelity's
  ``logits_unbiased`` (what IS uses).
- ``training.metrics.coverage.ClassifierFeatures``: a small CNN trained on the labelled real
  data (no download; the default for the built-in digits).

The Inception weights are never downloaded at run time (clusters are often offline): they are
taken from an explicit path, ``$GANFORGE_INCEPTION_WEIGHTS`` or torch's hub cache, and a missing
file fails before any work with a message saying where to put it. See docs/evaluation.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .inception import NUM_CLASSES, NUM_FEATURES, FIDInceptionV3, read_weights
from .inception import InceptionWeightsFormatError as InceptionWeightsFormatError  # re-export

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
WEIGHTS_ENV = "GANFORGE_INCEPTION_WEIGHTS"


class InceptionWeightsError(FileNotFoundError):
    """The Inception weights file is not where ganforge looked; the message says where to put it."""


def hub_weights_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/<file>`` (default ``~/.cache/torch/hub/checkpoints/<file>``),
    where torch-fidelity itself would have cached a download."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _missing_weights_message(looked: list[str]) -> str:
    hub = hub_weights_path()
    return (
        "the Inception-v3 weights for FID/KID/IS/PR are not available and are never downloaded at run "
        f"time. Looked in: {'; '.join(looked)}. Fix: download {INCEPTION_WEIGHTS_URL} on a machine with "
        f"internet, copy it to the cluster (e.g. `scp {INCEPTION_WEIGHTS_FILE} "
        f"cluster:{hub.parent}/`), then either put it at {hub} (torch's hub cache, $TORCH_HOME/hub/checkpoints) "
        f"or pass --inception-weights PATH / set {WEIGHTS_ENV}=PATH (eval.inception_weights in a preset). "
        "Without the weights, use --feature-extractor classifier (labelled data) or --metrics coverage. "
        "See docs/evaluation.md"
    )


def resolve_inception_weights(explicit: str | os.PathLike | None = None) -> Path:
    """The Inception weights file: ``explicit``, else ``$GANFORGE_INCEPTION_WEIGHTS``, else torch's
    hub cache. An explicit path or variable that names a missing file is an error (no fallback),
    so a typo is not silently replaced by another file."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        raise InceptionWeightsError(
            _missing_weights_message([f"{path} (given explicitly): no such file"])
        )
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return path
        raise InceptionWeightsError(
            _missing_weights_message([f"{path} (from ${WEIGHTS_ENV}): no such file"])
        )
    hub = hub_weights_path()
    if hub.is_file():
        return hub
    raise InceptionWeightsError(
        _missing_weights_message(
            [f"--inception-weights / ${WEIGHTS_ENV}: not set", f"{hub}: no such file"]
        )
    )


def check_inception(explicit: str | os.PathLike | None = None) -> Path:
    """Everything the Inception extractor needs, checked before any work -> the weights path.

    Finds the file and reads it once: a file of another network (wrong keys or shapes) fails
    here with a one-line ``InceptionWeightsFormatError``, not after minutes of generation."""
    weights = resolve_inception_weights(explicit)
    read_weights(weights)
    return weights


class FeatureExtractor(nn.Module):
    """Base: ``forward(uint8 [N, C, H, W]) -> float32 [N, num_features]``; ``logits(features)``.

    ``name`` identifies the feature space (it keys the reference-statistics cache), so two
    extractors with equal names must give equal features.
    """

    name: str = "features"
    num_features: int = 0
    num_logits: int = 0

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class InceptionFeatures(FeatureExtractor):
    """The FID Inception-v3 (``inception.FIDInceptionV3``), 2048-d pool features, 1008 logits.

    Images are resized to 299 px inside the network with TensorFlow-1-compatible bilinear
    interpolation, as torch-fidelity and NVlabs do, so the numbers can be compared with
    published ones. Grayscale images are repeated to three channels.
    """

    num_features = NUM_FEATURES
    num_logits = NUM_CLASSES

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        self.net = FIDInceptionV3.from_file(weights_path)
        # unchanged from the torchmetrics-based extractor (same features): cached statistics stay valid
        self.name = f"inception-v3-2048-{Path(weights_path).name}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.net(images)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        # torch-fidelity's "logits_unbiased" (fc without bias), the IS input in torch-fidelity/torchmetrics
        return self.net.logits_unbiased(features)


def inception_extractor(explicit_weights: str | os.PathLike | None = None) -> InceptionFeatures:
    return InceptionFeatures(check_inception(explicit_weights))


class Passthrough(nn.Module):
    """Hands precomputed features to a torchmetrics metric as its ``feature`` network.

    torchmetrics' FID/KID/IS accept any module as the feature network; passing features
    through unchanged lets the library do the statistics while ganforge extracts the features
    once (shared by all metrics, gathered across ranks, cached for the real data).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features
