"""Mode-collapse monitoring without Inception: a small classifier trained on the labelled real data.

A GAN that collapses onto a few modes of a labelled dataset produces few classes. A small CNN,
trained for a few epochs on the manifest's real images (seconds on CPU for the built-in digits),
labels the generated images; from its predictions and features:

- ``coverage``: fraction of classes that the generator produces, where a class counts as produced
  when its share of the generated samples is at least ``1 / (4 * num_classes)`` - a quarter of
  its fair share. 1.0: every class appears; ``1 / num_classes``: a single class (collapse).
- ``class_entropy``: entropy of the predicted-class histogram divided by ``log(num_classes)``;
  1.0: uniform over the classes, 0.0: one class. (On an imbalanced dataset the real data itself
  scores below 1.)
- ``classifier_fd``: the Frechet distance (as FID) between real and generated samples in the
  classifier's 64-d feature space; lower is better, ~0 for samples from the data distribution.
- ``confident``: share of the generated samples that the classifier assigns a probability of at
  least 0.9 (softmax maximum), reported beside ``confident_real``, the same share on the real
  images: coverage can be 1.0 while many samples are ambiguous strokes between classes; the
  real figure is what a generator that matches the data would reach.
- ``confident_balanced``: the same share with each class's part capped at its fair share
  ``1 / num_classes``: 1.0 only when every class is produced in its share and read with
  confidence; a missing class costs its whole share, so one number ranks snapshots on both
  (``eval.keep_best``).

The classifier is deterministic given its seed (on CPU) and cached per manifest sha256 next to the
reference statistics as ``classifier-<key>.safetensors`` + ``.json`` (never a pickle). Its
held-out accuracy is recorded; coverage from a classifier that cannot tell the classes apart is
meaningless, so low accuracy is warned about.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from data_prep.manifest import Manifest

from .features import FeatureExtractor
from .reference import atomic_save_safetensors, cache_dirs

FORMAT = "ganforge-coverage-classifier"
FORMAT_VERSION = 1
MIN_ACCURACY = 0.8  # below this the classifier's coverage numbers are not trustworthy


@dataclass(kw_only=True)
class ClassifierConfig:
    """Training recipe of the coverage classifier (all of it is part of the cache key)."""

    width: int = 16
    """Channels of the first conv layer (doubled per downsampling, up to 4x)."""
    feature_dim: int = 64
    """Size of the feature layer (the space of ``classifier_fd``)."""
    max_size: int = 32
    """Images larger than this many pixels are area-downsampled to it first."""
    epochs: int = 5
    """Passes over the training images."""
    batch: int = 32
    """Images per optimiser step."""
    lr: float = 2e-3
    """Adam learning rate."""
    max_images: int = 50_000
    """Real images read for training (0: all)."""
    val_fraction: float = 0.1
    """Held out to measure accuracy (recorded in the JSON, warned about when low)."""
    seed: int = 0
    """Seed of initialisation, split, shuffling and augmentation."""

    def __post_init__(self) -> None:
        for name in ("width", "feature_dim", "max_size", "epochs", "batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if self.max_images < 0:
            raise ValueError(f"max_images: must be >= 0 (0: all), got {self.max_images}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")


class ClassifierNet(nn.Module):
    """images [N, C, H, W] in [-1, 1] -> (features [N, feature_dim], logits [N, num_classes]).

    A conv stack that halves the resolution down to 4x4, then two linear layers. No batch norm,
    so the network behaves the same in train and eval mode and on any batch size.
    """

    def __init__(
        self,
        *,
        channels: int,
        num_classes: int,
        resolution: int,
        width: int = 16,
        feature_dim: int = 64,
        max_size: int = 32,
    ) -> None:
        super().__init__()
        self.size = max(4, min(resolution, max_size))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        ch, size = width, self.size
        while size > 4:
            out = min(2 * ch, 4 * width)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch, size = out, (size + 1) // 2
        self.body = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(ch * size * size, feature_dim), nn.LeakyReLU(0.2)
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = F.interpolate(
                images,
                size=(self.size, self.size),
                mode="area" if images.shape[-1] > self.size else "bilinear",
            )
        return self.body(images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return features, self.head(features)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


class ClassifierFeatures(FeatureExtractor):
    """The trained classifier as a feature extractor: uint8 images -> 64-d features; logits."""

    def __init__(self, net: ClassifierNet, key: str, info: dict | None = None) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.name = f"classifier-{key}"
        self.key = key
        self.info = dict(info or {})
        self.num_features = net.head.in_features
        self.num_logits = net.head.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(to_unit(images))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.head(features)


def classifier_kwargs(manifest: Manifest, cfg: ClassifierConfig) -> dict:
    return {
        "channels": manifest.channels,
        "num_classes": manifest.num_classes,
        "resolution": manifest.resolution,
        "width": cfg.width,
        "feature_dim": cfg.feature_dim,
        "max_size": cfg.max_size,
    }


def classifier_key(manifest: Manifest, cfg: ClassifierConfig) -> str:
    blob = json.dumps(
        {"manifest": manifest.sha256, "config": asdict(cfg), "version": FORMAT_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_labelled(manifest: Manifest) -> None:
    if manifest.num_classes < 2:
        raise ValueError(
            f"coverage: the dataset {manifest.name!r} has {manifest.num_classes} classes; the "
            f"coverage metric needs labelled data with at least 2 classes (prep with labels, or "
            f"evaluate with fid/kid/pr instead)"
        )


def _read_all(manifest: Manifest, max_images: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from training.data import DataConfig, build_loader

    loader = build_loader(
        manifest, DataConfig(num_workers=0, shuffle_buffer=0), batch=256, mode="epoch", split=split
    )
    images, labels, seen = [], [], 0
    for x, y in loader:
        images.append(x)
        labels.append(y)
        seen += len(x)
        if max_images and seen >= max_images:
            break
    if not images:
        raise ValueError(f"coverage: the {split} split of {manifest.name!r} yielded no images")
    images_t, labels_t = (
        torch.cat(images)[: max_images or None],
        torch.cat(labels)[: max_images or None],
    )
    if (labels_t < 0).any():
        raise ValueError(
            f"coverage: {int((labels_t < 0).sum())} images of {manifest.name!r} have no label"
        )
    return images_t, labels_t


def _shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random translations by up to ``pad`` pixels (reflect padding): a classifier that is
    robust to small shifts generalises from real to generated digits."""
    if pad == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def reset_parameters(net: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Conv/Linear initialisation, drawn from ``generator``: deterministic for a
    seed without touching (or racing on) the global RNG."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    resolution: int,
    cfg: ClassifierConfig | None = None,
    device: torch.device | str = "cpu",
) -> tuple[ClassifierNet, float]:
    """uint8 images [N, C, H, W] + labels [N] -> (trained net in eval mode, held-out accuracy)."""
    cfg = cfg or ClassifierConfig()
    generator = torch.Generator().manual_seed(cfg.seed)
    net = ClassifierNet(
        channels=images.shape[1],
        num_classes=num_classes,
        resolution=resolution,
        width=cfg.width,
        feature_dim=cfg.feature_dim,
        max_size=cfg.max_size,
    )
    reset_parameters(net, generator)
    net = net.to(device).train()
    order = torch.randperm(len(images), generator=generator)
    n_val = int(len(images) * cfg.val_fraction) if len(images) >= 20 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    pad = max(1, net.size // 16)
    for _epoch in range(cfg.epochs):
        perm = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for i in range(0, len(perm), cfg.batch):
            idx = perm[i : i + cfg.batch]
            x = _shift(to_unit(images[idx]), pad, generator).to(device)
            _, logits = net(x)
            loss = F.cross_entropy(logits, labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval().requires_grad_(False)
    accuracy = float("nan")
    if n_val:
        with torch.no_grad():
            preds = torch.cat(
                [
                    net(to_unit(images[val_idx[i : i + 512]]).to(device))[1].argmax(1).cpu()
                    for i in range(0, n_val, 512)
                ]
            )
        accuracy = float((preds == labels[val_idx]).float().mean())
    return net, accuracy


def load_or_train_classifier(
    manifest: Manifest,
    *,
    cfg: ClassifierConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    split: str = "train",
    log=None,
) -> ClassifierFeatures:
    """The coverage classifier of this manifest: from the cache, or trained now and cached."""
    cfg = cfg or ClassifierConfig()
    check_labelled(manifest)
    key = classifier_key(manifest, cfg)
    kwargs = classifier_kwargs(manifest, cfg)
    read_dirs, write_dir = cache_dirs(manifest, cache_dir)
    for folder in read_dirs:
        path = folder / f"classifier-{key}.safetensors"
        meta_path = path.with_suffix(".json")
        if path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("format") == FORMAT and meta.get("kwargs") == kwargs:
                    net = ClassifierNet(**kwargs)
                    net.load_state_dict(load_file(str(path), device="cpu"), strict=True)
                    return ClassifierFeatures(net.to(device), key, meta)
            except (OSError, ValueError, RuntimeError, json.JSONDecodeError):
                pass  # torn or stale: retrain
    if log is not None:
        log(
            f"training the coverage classifier on {manifest.name!r} ({manifest.num_classes} classes); "
            f"cached in {write_dir}"
        )
    images, labels = _read_all(manifest, cfg.max_images, split)
    net, accuracy = train_classifier(
        images,
        labels,
        num_classes=manifest.num_classes,
        resolution=manifest.resolution,
        cfg=cfg,
        device=device,
    )
    if not math.isnan(accuracy) and accuracy < MIN_ACCURACY:
        warnings.warn(
            f"the coverage classifier reaches only {accuracy:.0%} held-out accuracy on {manifest.name!r}; "
            f"coverage/class_entropy are unreliable for this dataset",
            stacklevel=2,
        )
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kwargs": kwargs,
        "config": asdict(cfg),
        "manifest_sha256": manifest.sha256,
        "dataset": manifest.name,
        "class_names": manifest.class_names,
        "num_train_images": len(images),
        "val_accuracy": accuracy,
    }
    try:
        atomic_save_safetensors(
            dict(net.state_dict()), Path(write_dir) / f"classifier-{key}.safetensors", meta
        )
    except OSError as exc:
        if log is not None:
            log(
                f"could not cache the coverage classifier in {write_dir} ({exc}); it will be retrained"
            )
    return ClassifierFeatures(net, key, meta)


def coverage_stats(predictions: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Predicted class ids of generated samples [M] -> coverage and normalised class entropy."""
    counts = torch.bincount(predictions.long().flatten().cpu(), minlength=num_classes)[
        :num_classes
    ].double()
    share = counts / counts.sum().clamp(min=1)
    coverage = float((share >= 1.0 / (4 * num_classes)).double().mean())
    nonzero = share[share > 0]
    entropy = (
        float(-(nonzero * nonzero.log()).sum() / math.log(num_classes)) + 0.0
    )  # + 0.0: no "-0.0"
    return {"coverage": coverage, "class_entropy": entropy}


CONFIDENT_PROB = 0.9  # a sample is read "with confidence" at this softmax maximum or above


def _confident_classes(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Classifier logits [M, K] -> the classes of the samples read with probability >=
    ``threshold`` (the one rule behind ``confident`` and ``confident_balanced``)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: must be in (0, 1], got {threshold}")
    top, cls = torch.softmax(logits.double(), dim=1).max(dim=1)
    return cls[top >= threshold]


def confident_share(logits: torch.Tensor, threshold: float = CONFIDENT_PROB) -> float:
    """Classifier logits [M, num_classes] -> share of the samples whose most likely class has
    probability >= ``threshold`` (0.0 for no samples)."""
    confident = _confident_classes(logits, threshold)
    return confident.numel() / logits.shape[0] if logits.shape[0] else 0.0


def confident_balanced(logits: torch.Tensor, threshold: float = CONFIDENT_PROB) -> float:
    """Classifier logits [M, K] -> sum over the K classes of min(share of the samples read as
    that class with probability >= ``threshold``, 1 / K): ``confident`` with each class's part
    capped at its fair share (0.0 for no samples)."""
    confident = _confident_classes(logits, threshold)
    m, k = logits.shape
    if m == 0:
        return 0.0
    counts = torch.bincount(confident.cpu(), minlength=k)[:k].double()
    return float((counts / m).clamp(max=1.0 / k).sum())
