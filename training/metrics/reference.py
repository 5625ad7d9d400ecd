"""Features of the real data, computed once per (manifest, feature space) and cached.

The cache key is the manifest's sha256 (its content hash: a re-prepped dataset gets new
statistics), the extractor's name (Inception + weights file, or the coverage classifier's key),
the split and the image cap. An entry is ``reference-<key>.safetensors`` (``features`` float32
[N, D], ``labels`` int64 [N]) plus ``reference-<key>.json`` (what it was computed from). No
pickles. Full features rather than mean/covariance are kept because KID and precision/recall
need the samples (70k x 2048 float32 is 570 MB).

Where: ``cache_dir`` when given; else ``<dataset folder>/eval-cache/`` when the manifest is a
local, writable folder (``ganforge prep`` can precompute there, and the cache travels with the
data), else ``$GANFORGE_CACHE/eval`` (default ``~/.cache/ganforge/eval``). Both default places
are searched when reading.

Distributed: rank 0 decides which entries are missing; then every rank reads its own shards
(``mode="epoch"``: each shard read by exactly one rank/worker), extracts features and the result
is gathered; rank 0 writes the cache. Results are complete on rank 0 only.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from data_prep.manifest import Manifest

from ..networks.export import atomic_write
from .features import FeatureExtractor
from .gather import Gather, broadcast_from_main, gather_padded, resolve_gather

CACHE_ENV = "GANFORGE_CACHE"
CACHE_SUBDIR = "eval-cache"
FORMAT = "ganforge-reference-features"
FORMAT_VERSION = 1


@dataclass
class RealFeatures:
    features: torch.Tensor
    """float32 [N, D] on the evaluation device."""
    labels: torch.Tensor
    """int64 [N] class ids (-1: unlabelled)."""


def user_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ganforge") / "eval"


def _local_dataset_dir(manifest: Manifest) -> Path | None:
    location = manifest.location or ""
    if location.startswith("file://"):
        location = location[len("file://") :]
    if not location or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
        return None  # a remote dataset (s3://, gs://, https://): cache locally instead
    return Path(location)


def cache_dirs(
    manifest: Manifest, cache_dir: str | os.PathLike | None = None
) -> tuple[list[Path], Path]:
    """-> (folders to read from, folder to write to); see the module docstring."""
    if cache_dir is not None:
        return [Path(cache_dir)], Path(cache_dir)
    user = user_cache_dir()
    data = _local_dataset_dir(manifest)
    if data is None:
        return [user], user
    local = data / CACHE_SUBDIR
    writable = os.access(local if local.exists() else data, os.W_OK)
    return [local, user], (local if writable else user)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def cache_key(manifest: Manifest, extractor_name: str, split: str, max_images: int) -> str:
    return _safe(f"{manifest.sha256[:16]}-{extractor_name}-{split}-{max_images or 'all'}")


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    """``path`` (.safetensors) and its ``.json`` sidecar, each written to a temp name then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in (
        (
            path,
            lambda tmp: save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                tmp,
                metadata={"format": meta.get("format", "")},
            ),
        ),
        (
            path.with_suffix(".json"),
            lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)),
        ),
    ):
        atomic_write(target, write)


def load_cached(
    manifest: Manifest,
    extractor_name: str,
    *,
    split: str,
    max_images: int,
    read_dirs: list[Path],
    device: torch.device | str,
) -> RealFeatures | None:
    key = cache_key(manifest, extractor_name, split, max_images)
    for folder in read_dirs:
        path = folder / f"reference-{key}.safetensors"
        meta_path = path.with_suffix(".json")
        if not (path.is_file() and meta_path.is_file()):
            continue
        try:
            meta = json.loads(meta_path.read_text())
            if (
                meta.get("format") != FORMAT
                or meta.get("manifest_sha256") != manifest.sha256
                or meta.get("extractor") != extractor_name
            ):
                continue
            tensors = load_file(str(path), device="cpu")
        except (OSError, ValueError, json.JSONDecodeError):
            continue  # a torn or foreign file is recomputed, not fatal
        return RealFeatures(tensors["features"].to(device), tensors["labels"].to(device))
    return None


def extract_real(
    manifest: Manifest,
    extractors: list[FeatureExtractor],
    *,
    split: str,
    max_images: int,
    batch: int,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
    num_workers: int = 0,
) -> list[RealFeatures]:
    """One pass over this rank's shards through every extractor, gathered from all ranks."""
    from training.data import DataConfig, build_loader

    gather = resolve_gather(gather, world_size)
    loader = build_loader(
        manifest,
        DataConfig(num_workers=num_workers, shuffle_buffer=0),
        batch=batch,
        rank=rank,
        world_size=world_size,
        mode="epoch",
        split=split,
    )
    # Shards are globally shuffled by prep, so the first images of each rank are a random sample.
    per_rank = math.ceil(max_images / world_size) if max_images else None
    features: list[list[torch.Tensor]] = [[] for _ in extractors]
    labels: list[torch.Tensor] = []
    seen = 0
    with torch.no_grad():
        for images, batch_labels in loader:
            if per_rank is not None:
                images, batch_labels = images[: per_rank - seen], batch_labels[: per_rank - seen]
            images = images.to(device)
            for out, extractor in zip(features, extractors):
                out.append(extractor(images).float())
            labels.append(batch_labels.to(device))
            seen += len(images)
            if per_rank is not None and seen >= per_rank:
                break
    results = []
    all_labels = gather_padded(
        torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64, device=device),
        gather,
        world_size,
    )
    for out, extractor in zip(features, extractors):
        local = torch.cat(out) if out else torch.zeros(0, extractor.num_features, device=device)
        results.append(
            RealFeatures(
                gather_padded(local, gather, world_size)[: max_images or None],
                all_labels[: max_images or None],
            )
        )
    if results and len(results[0].features) == 0:
        raise ValueError(
            f"the {split} split of {manifest.location or manifest.name} yielded no images; "
            f"check the manifest's shards"
        )
    return results


def reference_features(
    manifest: Manifest,
    extractors: list[FeatureExtractor],
    *,
    cache_dir: str | os.PathLike | None = None,
    split: str = "train",
    max_images: int = 0,
    batch: int = 64,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
    num_workers: int = 0,
    log=None,
) -> list[RealFeatures | None]:
    """Real features per extractor, from the cache or computed (and cached). Complete on rank 0;
    other ranks get None for entries that came from the cache."""
    gather = resolve_gather(gather, world_size)
    read_dirs, write_dir = cache_dirs(manifest, cache_dir)
    cached: list[RealFeatures | None] = [None] * len(extractors)
    if rank == 0:
        cached = [
            load_cached(
                manifest,
                e.name,
                split=split,
                max_images=max_images,
                read_dirs=read_dirs,
                device=device,
            )
            for e in extractors
        ]
    hit = torch.tensor([float(c is not None) for c in cached], device=device)
    hit = broadcast_from_main(hit, gather, rank, world_size).tolist()
    missing = [i for i, h in enumerate(hit) if not h]
    if not missing:
        return cached
    if log is not None and rank == 0:
        log(
            f"computing reference features of {manifest.name or 'the dataset'} ({split}) for "
            f"{', '.join(extractors[i].name for i in missing)}; cached in {write_dir}"
        )
    start = time.time()
    computed = extract_real(
        manifest,
        [extractors[i] for i in missing],
        split=split,
        max_images=max_images,
        batch=batch,
        device=device,
        rank=rank,
        world_size=world_size,
        gather=gather,
        num_workers=num_workers,
    )
    for i, real in zip(missing, computed):
        cached[i] = real
        if rank == 0:
            key = cache_key(manifest, extractors[i].name, split, max_images)
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "manifest_sha256": manifest.sha256,
                "dataset": manifest.name,
                "extractor": extractors[i].name,
                "split": split,
                "max_images": max_images,
                "num_samples": len(real.features),
                "seconds": round(time.time() - start, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            try:
                atomic_save_safetensors(
                    {"features": real.features, "labels": real.labels},
                    write_dir / f"reference-{key}.safetensors",
                    meta,
                )
            except OSError as exc:  # a read-only cache costs time, not correctness
                if log is not None:
                    log(
                        f"could not cache reference features in {write_dir} ({exc}); they will be recomputed"
                    )
    return cached
