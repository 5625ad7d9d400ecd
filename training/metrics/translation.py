"""Metrics of an unpaired translator (A <-> B): distribution distances and the cycle error.

For ``a2b``, the translated images G_AB(A) are compared with the real B images (and G_BA(B)
with A), in one of two feature spaces (``eval.feature_extractor``):

- ``inception``: FID and KID with the standard Inception features (``fid_a2b``, ``kid_a2b``,
  ``fid_b2a``, ``kid_b2a``; the offline weights as for generators, see docs/evaluation.md).
- ``classifier`` (no Inception weights needed): ``style_fd_a2b`` is the Frechet distance between
  G_AB(A) and B in a space of style statistics (per-channel mean and standard deviation of the
  pixels and of 32 fixed random 3x3 filter responses, ``StyleFeatures``), ``style_fd_ab`` the
  same between the untranslated A and B (the distance a translator should close);
  ``domain_b_share_a2b`` is the share of translations that a small classifier trained to tell
  real A from real B (the coverage classifier's network) takes for B (``_b2a``: the other way).

``cycle_distance`` is the mean absolute error of G_BA(G_AB(a)) against a and of G_AB(G_BA(b))
against b, in [0, 1] pixel units (``cycle_distance_a``, ``_b``: each direction).

The first ``eval.num_images`` images of each domain (shard order) are used. Ranks translate
contiguous slices and gather them; every rank returns the same values. Lower is better for the
distances (names with ``fid``, ``kid``, ``_fd``, ``distance``), higher for the share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from data_prep.manifest import Manifest
from training.networks.samples import quantize

from .coverage import (
    ClassifierConfig,
    ClassifierNet,
    reset_parameters,
    to_unit,
    train_classifier,
)
from .features import check_inception, inception_extractor
from .fid import frechet_distance, kernel_distance
from .gather import Gather, broadcast_from_main, gather_padded, resolve_gather

Translate = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def _translate_slice(
    translate: Translate,
    back: Translate,
    images: torch.Tensor,
    *,
    device: torch.device,
    batch: int,
    rank: int,
    world_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of ``images`` -> (translated uint8 [n, C, H, W], per-image cycle L1 [n])."""
    start, stop = rank * len(images) // world_size, (rank + 1) * len(images) // world_size
    outs, errors = [], []
    for lo in range(start, stop, batch):
        x = to_unit(images[lo : min(lo + batch, stop)]).to(device)
        y = translate(x).float()
        outs.append(quantize(y))
        errors.append((back(y) - x).abs().mean(dim=(1, 2, 3)) / 2)
    if not outs:
        c, h, w = images.shape[1:]
        return torch.zeros(0, c, h, w, dtype=torch.uint8, device=device), torch.zeros(
            0, device=device
        )
    return torch.cat(outs), torch.cat(errors)


def _domain_classifier(
    real_a: torch.Tensor,
    real_b: torch.Tensor,
    *,
    device: torch.device,
    rank: int,
    world_size: int,
    gather: Gather,
) -> ClassifierNet:
    """Rank 0 trains A (0) vs B (1); the weights are broadcast so every rank agrees."""
    cfg = ClassifierConfig()
    resolution = real_a.shape[-1]
    if rank == 0:
        images = torch.cat([real_a, real_b])
        labels = torch.cat(
            [
                torch.zeros(len(real_a), dtype=torch.int64),
                torch.ones(len(real_b), dtype=torch.int64),
            ]
        )
        net, _accuracy = train_classifier(
            images, labels, num_classes=2, resolution=resolution, cfg=cfg, device=device
        )
    else:
        net = ClassifierNet(
            channels=real_a.shape[1],
            num_classes=2,
            resolution=resolution,
            width=cfg.width,
            feature_dim=cfg.feature_dim,
            max_size=cfg.max_size,
        )
        reset_parameters(net, torch.Generator().manual_seed(0))
        net = net.to(device).eval().requires_grad_(False)
    if world_size > 1:
        flat = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
        torch.nn.utils.vector_to_parameters(
            broadcast_from_main(flat, gather, rank, world_size), net.parameters()
        )
    return net


class StyleFeatures(torch.nn.Module):
    """uint8 [N, C, H, W] -> [N, 2C + 2K] style statistics: per-channel mean and standard
    deviation of the pixels and of K fixed random 3x3 filter responses (LeakyReLU), as style
    transfer describes style by feature statistics. Seeded: the same on every rank and run."""

    def __init__(self, channels: int, filters: int = 32, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(filters, channels, 3, 3, generator=generator) / (3 * channels**0.5)
        self.register_buffer("weight", weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_unit(images)
        r = torch.nn.functional.leaky_relu(torch.nn.functional.conv2d(x, self.weight), 0.2)
        return torch.cat([x.mean((2, 3)), x.std((2, 3)), r.mean((2, 3)), r.std((2, 3))], dim=1)


def _features(extract: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device, batch):
    return torch.cat(
        [extract(images[i : i + batch].to(device)).float() for i in range(0, len(images), batch)]
    )


def translation_metrics(
    a2b: Translate,
    b2a: Translate,
    manifest_a: Manifest,
    manifest_b: Manifest,
    cfg,
    *,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Metrics of the translator (``a2b``, ``b2a``: [N, C, H, W] in [-1, 1] -> the same) against
    the two domains' real images; ``cfg`` is an ``EvalConfig`` (num_images, feature_extractor,
    batch, split, inception_weights, seed). Call on every rank."""
    from training.domains import read_images

    device = torch.device(device)
    gather = resolve_gather(gather, world_size)
    inception = cfg.feature_extractor == "inception"
    if inception:
        check_inception(cfg.inception_weights)
    real_a = read_images(manifest_a, cfg.num_images, cfg.split)
    real_b = read_images(manifest_b, cfg.num_images, cfg.split)
    if log is not None:
        log(f"translating {len(real_a)} A and {len(real_b)} B images for the translator metrics")
    results: dict[str, float] = {}
    translated: dict[str, torch.Tensor] = {}
    for name, images, forward, back in (("a2b", real_a, a2b, b2a), ("b2a", real_b, b2a, a2b)):
        out, err = _translate_slice(
            forward,
            back,
            images,
            device=device,
            batch=cfg.batch,
            rank=rank,
            world_size=world_size,
        )
        translated[name] = gather_padded(out, gather, world_size).cpu()
        errors = gather_padded(err, gather, world_size)
        results[f"cycle_distance_{name[0]}"] = float(errors.mean())
    results["cycle_distance"] = (results["cycle_distance_a"] + results["cycle_distance_b"]) / 2

    if inception:
        extractor = inception_extractor(cfg.inception_weights).to(device)
        feats = {
            k: _features(extractor, v, device, cfg.batch)
            for k, v in (("a", real_a), ("b", real_b), *translated.items())
        }
        for name, target in (("a2b", "b"), ("b2a", "a")):
            results[f"fid_{name}"] = frechet_distance(feats[target], feats[name])
            results[f"kid_{name}"] = kernel_distance(feats[target], feats[name], seed=cfg.seed)
    else:
        # style statistics (colour + random-filter moments): noise or a wrong style is far from
        # the target domain (a classifier trained only to tell A from B maps anything not-A
        # next to B, so its features cannot rank translators)
        style = StyleFeatures(real_a.shape[1]).to(device)
        net = _domain_classifier(
            real_a, real_b, device=device, rank=rank, world_size=world_size, gather=gather
        )
        with torch.no_grad():
            feats = {
                k: _features(style, v, device, cfg.batch)
                for k, v in (("a", real_a), ("b", real_b), *translated.items())
            }
            results["style_fd_ab"] = frechet_distance(feats["a"], feats["b"])
            for name, target, label in (("a2b", "b", 1), ("b2a", "a", 0)):
                results[f"style_fd_{name}"] = frechet_distance(feats[target], feats[name])
                logits = _features(
                    lambda x: net(to_unit(x))[1], translated[name], device, cfg.batch
                )
                results[f"domain_{'b' if label else 'a'}_share_{name}"] = float(
                    (logits.argmax(dim=1) == label).float().mean()
                )
    return dict(sorted(results.items()))
