"""``verify_dataset``: check a prep output against its manifest (``ganforge prep verify``).

Every shard listed in the manifest must exist, have the recorded size and sha256, be a
readable tar whose samples each hold one image (decodable, ``resolution x resolution``, the
manifest's channels), a JSON record, and a valid class id when the dataset is labelled, and
hold exactly the recorded number of samples with no key repeated. Returns the list of
problems (empty: the dataset is intact).
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import tarfile

import fsspec
from PIL import Image
from tqdm import tqdm

from .manifest import Manifest, ShardInfo, load_manifest

IMAGE_EXTENSIONS = ("png", "webp", "jpg", "jpeg")


class _HashingReader:
    def __init__(self, f) -> None:
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.bytes += len(data)
        return data


def verify_shard(
    url: str,
    info: ShardInfo,
    resolution: int,
    channels: int,
    class_ids: set[int],
    decode: bool = True,
) -> list[str]:
    """Problems of one shard, each prefixed with its name."""
    problems: list[str] = []
    name = info.name
    try:
        f = fsspec.open(url, "rb").open()
    except FileNotFoundError:
        return [f"{name}: missing ({url})"]
    samples: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    with f:
        reader = _HashingReader(f)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    if not member.isreg():
                        problems.append(f"{name}: unexpected non-file member {member.name}")
                        continue
                    key, _, ext = member.name.partition(".")
                    if key not in samples:
                        order.append(key)
                    samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"{name}: not a readable tar ({exc})")
        while reader.read(1 << 20):  # hash the end-of-archive padding too
            pass
    if reader.bytes != info.bytes:
        problems.append(f"{name}: {reader.bytes} bytes, manifest says {info.bytes}")
    if reader.sha.hexdigest() != info.sha256:
        problems.append(f"{name}: sha256 mismatch (modified or corrupted since prep)")
    if len(samples) != info.num_samples:
        problems.append(f"{name}: {len(samples)} samples, manifest says {info.num_samples}")
    for key in order:
        problems += _check_sample(name, key, samples[key], resolution, channels, class_ids, decode)
    return problems


def _check_sample(
    shard: str,
    key: str,
    sample: dict[str, bytes],
    resolution: int,
    channels: int,
    class_ids: set[int],
    decode: bool,
) -> list[str]:
    where = f"{shard}: sample {key}"
    images = [ext for ext in IMAGE_EXTENSIONS if ext in sample]
    if len(images) != 1:
        return [
            f"{where}: expected one image ({'/'.join(IMAGE_EXTENSIONS)}), found {sorted(sample)}"
        ]
    problems = []
    if decode:
        try:
            with Image.open(io.BytesIO(sample[images[0]])) as img:
                img.load()
                if img.size != (resolution, resolution):
                    problems.append(
                        f"{where}: image is {img.size[0]}x{img.size[1]}, manifest says {resolution}"
                    )
                if len(img.getbands()) != channels:
                    problems.append(
                        f"{where}: image has {len(img.getbands())} channels, manifest says {channels}"
                    )
        except Exception as exc:  # noqa: BLE001 - any decode failure is a problem to report
            problems.append(f"{where}: image does not decode ({exc})")
    try:
        json.loads(sample.get("json", b""))
    except (json.JSONDecodeError, UnicodeDecodeError):
        problems.append(f"{where}: missing or invalid json record")
    if class_ids:
        try:
            if int(sample["cls"]) not in class_ids:
                problems.append(
                    f"{where}: class id {int(sample['cls'])} is not in the manifest's classes"
                )
        except (KeyError, ValueError):
            problems.append(f"{where}: labelled dataset but no valid cls")
    return problems


def _verify_args(args: tuple) -> list[str]:
    return verify_shard(*args)


def verify_dataset(
    path_or_url: str, *, workers: int = 1, progress: bool = True, decode: bool = True
) -> list[str]:
    """Problems found in the dataset at ``path_or_url`` (folder/URL or manifest file)."""
    manifest: Manifest = load_manifest(path_or_url)
    problems = []
    if manifest.num_samples != sum(s.num_samples for s in manifest.shards):
        problems.append(
            f"manifest: num_samples {manifest.num_samples} != the shards' total "
            f"{sum(s.num_samples for s in manifest.shards)}"
        )
    class_ids = set(manifest.classes.values())
    jobs = []
    for split in sorted({s.split for s in manifest.shards}):
        for url, info in zip(manifest.shard_urls(split), manifest.split_shards(split)):
            jobs.append((url, info, manifest.resolution, manifest.channels, class_ids, decode))
    local = "://" not in manifest.location or manifest.location.startswith("file://")
    with tqdm(total=len(jobs), unit="shard", desc="verify", disable=not progress) as bar:
        if workers > 1 and local and len(jobs) > 1:
            with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for found in pool.imap(_verify_args, jobs):
                    problems += found
                    bar.update(1)
        else:
            for job in jobs:
                problems += verify_shard(*job)
                bar.update(1)
    return problems
