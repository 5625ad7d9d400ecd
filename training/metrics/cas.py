"""Is a generator useful as a data source? Classification Accuracy Score and augmentation gain.

- ``cas``: Classification Accuracy Score (Ravuri & Vinyals 2019, "Classification Accuracy Score
  for Conditional Generative Models"): a classifier trained on generated images *only* (labels
  = the classes they were generated for), tested on held-out real images (the manifest's
  ``val`` split, never seen by the generator). ``cas_real_accuracy`` beside it: the same
  classifier recipe trained on the real training split. A generator that captured every class
  well gets a CAS near the real accuracy; chance is ``1 / num_classes``.
- ``augment_gain``: accuracy on the real held-out images of a classifier trained on a small
  real subset (``real_fraction`` of the training split, class-stratified) plus the generated
  images, minus that of one trained on the subset alone (``augment_real_only`` and
  ``augment_with_synth`` are reported too). Positive: the generated images help when real data
  is scarce.

The classifier is the coverage classifier (``training.metrics.coverage``: ``ClassifierNet``,
``train_classifier``), trained for the same number of optimiser steps on every training set,
so small sets are not also under-trained. Generated images are class-balanced, seed ``seed + i``
for image i (the convention of ``ganforge generate``), with truncation ``psi``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from data_prep.manifest import Manifest
from training.networks.samples import quantize, seeds_to_latents

from .coverage import ClassifierConfig, _read_all, check_labelled, to_unit, train_classifier

METRICS = ("cas", "augment")
"""Metric names ``ganforge eval --metrics`` hands to this module."""


@dataclass(kw_only=True)
class UsefulnessConfig:
    """How CAS and the augmentation gain are measured."""

    num_synthetic: int = 0
    """Generated images per classifier (0: as many as real training images)."""
    real_fraction: float = 0.1
    """Fraction of the real training split kept for the augmentation-gain setting."""
    seed: int = 0
    """Image i is the sample of seed (seed + i); also seeds the classifiers and the subset."""
    batch: int = 64
    """Images per generator call."""
    max_real: int = 50_000
    """Real training images read at most."""
    classifier: ClassifierConfig | None = None
    """The classifier recipe (None: the coverage classifier's defaults)."""

    def __post_init__(self) -> None:
        if self.num_synthetic < 0:
            raise ValueError(f"num_synthetic: must be >= 0, got {self.num_synthetic}")
        if not 0.0 < self.real_fraction <= 1.0:
            raise ValueError(f"real_fraction: must be in (0, 1], got {self.real_fraction}")


def split_metrics(metrics: str) -> tuple[str, list[str]]:
    """``"fid,cas,augment"`` -> (``"fid"``, ``["cas", "augment"]``): this module's names apart."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    return ",".join(m for m in names if m not in METRICS), [m for m in names if m in METRICS]


def generate_labelled(
    sample: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    count: int,
    *,
    z_dim: int,
    num_classes: int,
    resolution: int,
    seed: int,
    batch: int,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced generated images -> (uint8 [count, C, R, R] on CPU, labels [count])."""
    labels = torch.arange(count) % num_classes
    out = []
    for lo in range(0, count, batch):
        hi = min(count, lo + batch)
        z = torch.from_numpy(seeds_to_latents(range(seed + lo, seed + hi), z_dim)).to(device)
        c = F.one_hot(labels[lo:hi], num_classes).float().to(device)
        with torch.no_grad():
            images = sample(z, c).float()
        if images.shape[-1] != resolution:
            images = F.interpolate(
                images,
                size=(resolution, resolution),
                mode="area" if images.shape[-1] > resolution else "bilinear",
            )
        out.append(quantize(images).cpu())
    return torch.cat(out), labels


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of ``fraction`` of each class (at least one per class)."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for cls in labels.unique():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        keep.append(idx[: max(1, round(fraction * len(idx)))])
    return torch.cat(keep).sort().values


def accuracy(net, images: torch.Tensor, labels: torch.Tensor, device) -> float:
    with torch.no_grad():
        preds = torch.cat(
            [
                net(to_unit(images[i : i + 512]).to(device))[1].argmax(1).cpu()
                for i in range(0, len(images), 512)
            ]
        )
    return float((preds == labels).float().mean())


def usefulness(
    sample: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    manifest: Manifest,
    metrics: list[str],
    *,
    z_dim: int,
    c_dim: int,
    cfg: UsefulnessConfig | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """``metrics`` (cas and/or augment) of a conditional generator ``sample(z, c) -> [-1, 1]``."""
    cfg = cfg or UsefulnessConfig()
    check_labelled(manifest)
    if c_dim != manifest.num_classes:
        raise ValueError(
            f"cas/augment: need a generator conditional on the dataset's {manifest.num_classes} "
            f"classes (c_dim {c_dim}); train with model.conditional=true (preset digits-cond)"
        )
    if not manifest.split_shards("val"):
        raise ValueError(
            f"cas/augment: {manifest.location or manifest.name} has no 'val' split of held-out "
            f"real images; prep the data with a validation fraction (prep.val_fraction)"
        )
    base = replace(cfg.classifier or ClassifierConfig(), val_fraction=0.0, seed=cfg.seed)
    real_x, real_y = _read_all(manifest, cfg.max_real, "train")
    val_x, val_y = _read_all(manifest, 0, "val")
    n_syn = cfg.num_synthetic or len(real_x)
    log and log(f"cas/augment: generating {n_syn} class-balanced images")
    syn_x, syn_y = generate_labelled(
        sample,
        n_syn,
        z_dim=z_dim,
        num_classes=c_dim,
        resolution=manifest.resolution,
        seed=cfg.seed,
        batch=cfg.batch,
        device=device,
    )
    # Every classifier takes as many optimiser steps as the real-data one (base.epochs passes).
    steps_images = base.epochs * len(real_x)

    def fit_and_test(x: torch.Tensor, y: torch.Tensor) -> float:
        epochs = max(1, math.ceil(steps_images / len(x)))
        net, _ = train_classifier(
            x,
            y,
            num_classes=c_dim,
            resolution=manifest.resolution,
            cfg=replace(base, epochs=epochs),
            device=device,
        )
        return accuracy(net, val_x, val_y, device)

    results = {"cas_real_accuracy": fit_and_test(real_x, real_y)}
    if "cas" in metrics:
        results["cas"] = fit_and_test(syn_x, syn_y)
    if "augment" in metrics:
        keep = stratified_subset(real_y, cfg.real_fraction, cfg.seed)
        small_x, small_y = real_x[keep], real_y[keep]
        results["augment_real_only"] = fit_and_test(small_x, small_y)
        results["augment_with_synth"] = fit_and_test(
            torch.cat([small_x, syn_x]), torch.cat([small_y, syn_y])
        )
        results["augment_gain"] = results["augment_with_synth"] - results["augment_real_only"]
        results["augment_real_fraction"] = cfg.real_fraction
    results["cas_chance"] = 1.0 / c_dim
    return results


def only_if(metrics: str, evaluate: Callable[..., dict]) -> Callable[..., dict]:
    """``evaluate`` when standard metrics remain after ``split_metrics``, else a no-op -> {}."""
    return evaluate if metrics else (lambda *args, **kwargs: {})


def usefulness_hook(names, sample, manifest, loaded, args, device, log) -> dict[str, float]:
    """``ganforge eval``'s call: the requested cas/augment metrics of a loaded generator ({} if none)."""
    if not names:
        return {}
    cfg = UsefulnessConfig(seed=args.seed, batch=args.batch, max_real=args.max_real or 50_000)
    return usefulness(
        sample,
        manifest,
        names,
        z_dim=loaded.z_dim,
        c_dim=loaded.c_dim,
        cfg=cfg,
        device=device,
        log=log,
    )
