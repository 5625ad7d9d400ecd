"""Two image domains for unpaired translation (CycleGAN): two manifests, two independent streams.

Each domain is prepared by ``ganforge prep`` into its own shards and manifest (the unchanged data
contract). A run names both (``cyclegan.domains: [A, B]``); this module checks that they fit
together and reads them with ``training.data.build_loader``, once per domain, each with its own
seed: the streams are **unpaired** (which B image arrives with an A image is pure chance, and
changing one domain's data does not change the other's order) and each has its own shuffle.
``read_images`` reads a domain's first images in shard order (grids, translator metrics).
Resuming passes ``start_index`` (images seen) to both, so ``data.loader=deterministic`` replays
both streams exactly to where a run stopped, as for one domain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from data_prep.manifest import Manifest, ManifestError, load_manifest

from .data import DataConfig, build_loader, stable_seed

DOMAIN_NAMES = ("A", "B")


@dataclass
class Domains:
    """The two manifests of a translation run (A: the source of ``a2b``, B: its target)."""

    a: Manifest
    b: Manifest

    @property
    def resolution(self) -> int:
        return self.a.resolution

    @property
    def channels(self) -> int:
        return self.a.channels

    def __iter__(self) -> Iterator[Manifest]:
        return iter((self.a, self.b))


def load_domains(paths: list[str] | tuple[str, ...], field: str = "cyclegan.domains") -> Domains:
    """Two manifest paths/URLs -> ``Domains``; one-line errors name ``field`` and the domain."""
    if len(paths) != 2 or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(
            f"{field}: needs two prepared datasets [A, B] (folders or manifest.json paths from "
            f"`ganforge prep`), got {list(paths)!r}"
        )
    manifests = []
    for name, path in zip(DOMAIN_NAMES, paths, strict=True):
        try:
            manifests.append(load_manifest(path))
        except (ManifestError, OSError, ValueError) as exc:
            raise ValueError(f"{field}: domain {name} ({path}): {exc}") from None
    a, b = manifests
    check_domains(a, b, field)
    return Domains(a=a, b=b)


def check_domains(a: Manifest, b: Manifest, field: str = "cyclegan.domains") -> None:
    """Both domains at one resolution and channel count, each with train shards."""
    if a.resolution != b.resolution:
        raise ValueError(
            f"{field}: domain A is {a.resolution} px and domain B {b.resolution} px; prepare both "
            f"at the same resolution (`ganforge prep --resolution`)"
        )
    if a.channels != b.channels:
        raise ValueError(
            f"{field}: domain A has {a.channels} channels and domain B {b.channels}; prepare both "
            f"with the same `--channels`"
        )
    for name, m in zip(DOMAIN_NAMES, (a, b), strict=True):
        if not m.split_shards("train"):
            raise ValueError(f"{field}: domain {name} ({m.location}) has no train shards")


def domain_seed(seed: int, domain: int) -> int:
    """The stream seed of domain 0 (A) or 1 (B): independent streams from one run seed."""
    return stable_seed(seed, "domain", DOMAIN_NAMES[domain]) % 2**63


class DomainBatches:
    """Micro-batches ``(uint8 A [B, C, H, W], uint8 B [B, C, H, W])`` from two independent
    loaders; ``next()`` draws one micro-batch from each."""

    def __init__(
        self, domains: Domains, cfg: DataConfig, *, seed: int = 0, **loader_kwargs: Any
    ) -> None:
        """``loader_kwargs``: the rest of ``build_loader``'s arguments (``batch``, ``rank``,
        ``world_size``, ``micro_per_rank``, ``start_index``, ``mode``), the same for both."""
        self.loaders = [
            build_loader(manifest, cfg, seed=domain_seed(seed, i), **loader_kwargs)
            for i, manifest in enumerate(domains)
        ]
        self._iters = [iter(loader) for loader in self.loaders]

    def __iter__(self) -> DomainBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        (images_a, _), (images_b, _) = (next(it) for it in self._iters)
        return images_a, images_b


def read_images(manifest: Manifest, count: int, split: str = "train") -> torch.Tensor:
    """The first ``count`` images of a manifest's split in shard order (fixed: grids, metrics):
    uint8 [N, C, H, W] on the CPU; fewer when the split has fewer."""
    loader = build_loader(
        manifest,
        DataConfig(num_workers=0, shuffle_buffer=0),
        batch=min(count, 256),
        mode="epoch",
        split=split,
    )
    images, seen = [], 0
    for x, _ in loader:
        images.append(x)
        seen += len(x)
        if seen >= count:
            break
    if not images:
        raise ValueError(f"{manifest.location}: the {split} split has no images")
    return torch.cat(images)[:count]
