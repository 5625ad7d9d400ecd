"""Synthetic datasets: a generator's samples as labelled WebDataset shards + a prep manifest.

The output follows data_prep's own contract (``data_prep.manifest``, the sample layout of
``data_prep.writer``: ``KEY.png``, ``KEY.cls``, ``KEY.json``; deterministic tar metadata), so
``ganforge prep verify``, ``ganforge train`` and any WebDataset reader take it as they take a
prepared real dataset. Everything is a function of (model, config):

- image ``i`` is the sample of seed ``seed + i`` (``deploy.sampling``'s latent of a seed) with
  truncation ``psi``;
- its class (conditional models): ``balanced`` cycles through the classes (counts differ by at
  most one), ``uniform`` draws each class independently and uniformly (one ``RandomState(seed)``
  stream for the whole dataset), a list ``"3,5"`` cycles through those classes only;
- shard ``s`` holds images ``[s * shard_size, (s + 1) * shard_size)``.

So shards are independent tasks: they run in parallel worker processes (one model copy each,
``devices`` spread round-robin, e.g. one per GPU), and a rerun keeps every shard whose done
record matches the plan fingerprint and whose file matches its sha256, as ``ganforge prep``
resumes (``data_prep.writer``'s records and atomic renames).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.manifest import Manifest, ShardInfo, save_manifest
from data_prep.writer import (
    HashingWriter,
    add_member,
    done_path,
    file_sha256,
    read_json,
    write_json_atomic,
)

from . import sampling


@dataclass(kw_only=True)
class SynthConfig:
    """What to sample and how to shard it."""

    count: int
    """Images to write."""
    psi: float = 1.0
    """Truncation psi (1: none; lower: more typical, less diverse)."""
    classes: str = "balanced"
    """Conditional models: balanced, uniform, or class ids/names to use ("3,5")."""
    seed: int = 0
    """Image i is the sample of seed (seed + i)."""
    shard_size: int = 1000
    """Images per shard."""
    noise_mode: str = "const"
    """Per-pixel noise: const (reproducible), random or none."""
    batch_size: int = 64
    """Images per forward pass."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"synth.count: must be >= 1, got {self.count}")
        if self.shard_size < 1 or self.batch_size < 1:
            raise ValueError("synth.shard_size and synth.batch_size must be >= 1")
        if self.seed < 0 or self.seed + self.count - 1 > sampling.MAX_SEED:
            raise ValueError(
                f"synth.seed: seeds {self.seed}..{self.seed + self.count - 1} leave [0, 2**32)"
            )
        sampling.check_psi(self.psi)
        sampling.check_noise_mode(self.noise_mode)


def class_ids(cfg: SynthConfig, c_dim: int, class_names: list[str]) -> np.ndarray | None:
    """Class id of every image [count] (None: unconditional model)."""
    if c_dim == 0:
        if cfg.classes not in ("balanced", "uniform"):
            raise ValueError(f"--classes {cfg.classes}: the model is unconditional (no classes)")
        return None
    index = np.arange(cfg.count)
    if cfg.classes == "balanced":
        return index % c_dim
    if cfg.classes == "uniform":
        return np.random.RandomState(cfg.seed % 2**32).randint(0, c_dim, size=cfg.count)
    chosen = []
    for part in filter(None, (p.strip() for p in cfg.classes.split(","))):
        if part.isdigit() and int(part) < c_dim:
            chosen.append(int(part))
        elif part in class_names:
            chosen.append(class_names.index(part))
        else:
            raise ValueError(
                f"--classes: {part!r} is not balanced, uniform, a class id in [0, {c_dim - 1}] "
                f"or a class name ({', '.join(class_names) or 'none'})"
            )
    if not chosen:
        raise ValueError("--classes: no classes given")
    return np.array(chosen)[index % len(chosen)]


def model_fingerprint(generator) -> str:
    """sha256 over the generator's config and weights: a changed model never resumes a plan."""
    sha = hashlib.sha256(json.dumps(generator.config, sort_keys=True).encode())
    for name, tensor in sorted(generator.generator.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def _plan(generator, cfg: SynthConfig) -> dict[str, Any]:
    names = generator.class_names or [str(i) for i in range(generator.c_dim)]
    labels = class_ids(cfg, generator.c_dim, names)
    fingerprint = hashlib.sha256(
        json.dumps(
            {"model": model_fingerprint(generator), "cfg": asdict(cfg)}, sort_keys=True
        ).encode()
    ).hexdigest()
    shards = [
        {"name": f"train-{s:06d}.tar", "start": lo, "stop": min(cfg.count, lo + cfg.shard_size)}
        for s, lo in enumerate(range(0, cfg.count, cfg.shard_size))
    ]
    return {"labels": labels, "names": names, "fingerprint": fingerprint, "shards": shards}


def write_shard(
    generator, cfg: SynthConfig, plan: dict, shard: dict, out: Path, on_images=None
) -> dict:
    """Write (or keep, when already finished and intact) one shard; -> its done record."""
    from PIL import Image

    from data_prep.transform import encode

    record = read_json(_Local, done_path(str(out), shard["name"]))
    path = out / shard["name"]
    if (
        record
        and record.get("fingerprint") == plan["fingerprint"]
        and path.is_file()
        and path.stat().st_size == record["bytes"]
        and file_sha256(_Local, str(path)) == record["sha256"]
    ):
        if on_images:
            on_images(shard["stop"] - shard["start"])
        return record
    labels = plan["labels"]
    tmp = out / f".{shard['name']}.tmp"
    counts: Counter = Counter()
    with open(tmp, "wb") as f:
        sink = HashingWriter(f)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for lo in range(shard["start"], shard["stop"], cfg.batch_size):
                idx = np.arange(lo, min(shard["stop"], lo + cfg.batch_size))
                seeds = [cfg.seed + int(i) for i in idx]
                batch_labels = None if labels is None else labels[idx].tolist()
                images = generator.generate(
                    seeds,
                    psi=cfg.psi,
                    labels=batch_labels,
                    noise_mode=cfg.noise_mode,
                    batch_size=cfg.batch_size,
                )
                for k, (i, image) in enumerate(zip(idx, images)):
                    key = f"{int(i):09d}"
                    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
                    add_member(tar, f"{key}.png", encode(pil, "png"))
                    meta: dict[str, Any] = {
                        "source": f"{generator.source}#seed={seeds[k]}",
                        "width": generator.resolution,
                        "height": generator.resolution,
                        "psi": cfg.psi,
                    }
                    if batch_labels is not None:
                        cls = int(batch_labels[k])
                        add_member(tar, f"{key}.cls", str(cls).encode("ascii"))
                        meta["class"] = plan["names"][cls]
                        counts[cls] += 1
                    add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                if on_images:
                    on_images(len(idx))
    tmp.replace(path)  # appears only complete
    record = {
        "name": shard["name"],
        "split": "train",
        "num_samples": shard["stop"] - shard["start"],
        "bytes": sink.bytes,
        "sha256": sink.sha.hexdigest(),
        "fingerprint": plan["fingerprint"],
        "class_counts": {str(k): v for k, v in sorted(counts.items())},
    }
    write_json_atomic(_Local, done_path(str(out), shard["name"]), record)
    return record


class _LocalFS:
    """The few fsspec calls data_prep.writer's helpers make, on the local file system."""

    def open(self, path, mode="rb"):
        return open(path, mode.replace("t", "") if "b" in mode else mode)

    def mv(self, src, dst):
        Path(src).replace(dst)


_Local = _LocalFS()

# -- parallel workers ---------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(model: str, devices: list[str], tracking_uri: str | None, counter) -> None:
    import torch

    from .generator import load_generator

    torch.set_num_threads(1)
    ident = mp.current_process()._identity
    device = devices[(ident[0] - 1) % len(devices)] if ident else devices[0]
    _WORKER["generator"] = load_generator(model, device=device, tracking_uri=tracking_uri)
    _WORKER["counter"] = counter


def _worker_shard(args: tuple) -> dict:
    cfg, plan, shard, out = args
    counter = _WORKER["counter"]

    def bump(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    return write_shard(_WORKER["generator"], cfg, plan, shard, Path(out), bump)


def synthesize_dataset(
    model: str,
    out: str | Path,
    cfg: SynthConfig,
    *,
    workers: int = 1,
    devices: list[str] | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> Manifest:
    """Sample ``cfg.count`` images of ``model`` into shards + manifest.json under ``out``."""
    from tqdm import tqdm

    from .generator import load_generator

    if workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {workers}")
    devices = devices or ["cpu"]
    out = Path(out)
    (out / "_done").mkdir(parents=True, exist_ok=True)
    generator = load_generator(model, device=devices[0], tracking_uri=tracking_uri)
    plan = _plan(generator, cfg)
    records: list[dict] = []
    with tqdm(total=cfg.count, unit="img", desc="synth", disable=not progress) as bar:
        if workers == 1 or len(plan["shards"]) == 1:
            for shard in plan["shards"]:
                records.append(write_shard(generator, cfg, plan, shard, out, bar.update))
        else:
            ctx = mp.get_context("spawn")
            counter = ctx.Value("l", 0)
            jobs = [(cfg, plan, shard, str(out)) for shard in plan["shards"]]
            with ctx.Pool(
                min(workers, len(jobs)),
                initializer=_init_worker,
                initargs=(str(model), devices, tracking_uri, counter),
            ) as pool:
                pending = pool.map_async(_worker_shard, jobs)
                while not pending.ready():
                    pending.wait(0.5)
                    bar.update(counter.value - bar.n)
                records = pending.get()
                bar.update(counter.value - bar.n)
    names = plan["names"] if generator.c_dim else []
    manifest = Manifest(
        name=f"synth-{out.name}",
        resolution=generator.resolution,
        channels=generator.channels,
        image_format="png",
        num_samples=sum(r["num_samples"] for r in records),
        classes={name: i for i, name in enumerate(names)},
        shards=[
            ShardInfo(
                name=r["name"],
                split="train",
                num_samples=r["num_samples"],
                bytes=r["bytes"],
                sha256=r["sha256"],
            )
            for r in records
        ],
        options={
            "synth": asdict(cfg),
            "model": str(model),
            "model_sha256": model_fingerprint(generator),
        },
        skipped={},
        source=f"synth:{model}",
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    save_manifest(manifest, str(out))
    return manifest


def class_counts(out: str | Path) -> dict[int, int]:
    """Images per class id in a synthetic dataset (from its done records)."""
    total: Counter = Counter()
    for path in sorted((Path(out) / "_done").glob("*.json")):
        for k, v in json.loads(path.read_text()).get("class_counts", {}).items():
            total[int(k)] += v
    return dict(total)
