"""``shard_dataset(cfg)``: an image collection -> globally shuffled WebDataset shards + manifest.

Stages (each shard is an independent task, so workers, nodes and resumed runs never coordinate):

1. Enumerate the source into an on-disk record index (``sources/``).
2. Plan: a seeded permutation of all records; the first ``val_fraction`` go to ``val``; each
   split is cut into contiguous slices of the permutation, one per shard, so every shard is a
   random sample of the whole set (resampled loading relies on that). The plan depends only on
   the input and the content options - never on workers or partitions - and its fingerprint is
   written to ``_plan.json``. A different plan in the same output folder is refused.
3. Write: this partition's shards (task ``j`` belongs to partition ``j % num_partitions``) on a
   spawn-safe process pool; finished shards (done record + matching sha256) are kept.
4. Merge: when every planned shard has a done record, write ``skipped.jsonl`` and the
   manifest. A single job merges itself; N partition jobs are merged by ``merge_partitions``
   (``ganforge prep merge``), which gives exactly the single-job result.

Memory stays constant in the dataset size apart from 8 bytes per record for the permutation:
images stream through workers one at a time and the index is memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import tarfile
import tempfile
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import fsspec
import numpy as np
from tqdm import tqdm

from .config import PrepConfig
from .manifest import Manifest, ShardInfo, load_manifest, save_manifest
from .skips import SkipInput
from .sources import Index, SourceReader, SourceSpec, build_index
from .transform import prepare_image
from .writer import ShardTask, done_path, read_json, slim_record, write_json_atomic, write_shard

PLAN_NAME = "_plan.json"
PARTITIONS_DIR = "_partitions"
SKIPPED_NAME = "skipped.jsonl"
PREP_FORMAT = 2
"""Bumped whenever the shard bytes for the same input and options change."""
# Options that do not change the shard content (they may differ between partition jobs).
NON_CONTENT_OPTIONS = ("source", "out", "workers", "num_partitions", "partition")


class PrepError(ValueError):
    """A prep job cannot go on; the message names the folder/option and what to do."""


def shard_dataset(cfg: PrepConfig, out: str | None = None, progress: bool = True) -> Manifest:
    """Shard ``cfg.source`` into ``out`` (default ``cfg.out``); returns the manifest.

    With ``num_partitions > 1`` only this partition's shards are written and the returned
    manifest lists just those (nothing is saved); run ``merge_partitions(out)`` once every
    partition has finished. Re-running the same call resumes after any interruption.
    Workers are spawned processes: scripts calling this need the ``if __name__ == "__main__":``
    guard, as with any ``multiprocessing`` code.
    """
    out = out or cfg.out
    if not out:
        raise PrepError("out: no output folder given; pass --out DIR (a folder or fsspec URL)")
    fs, root = fsspec.core.url_to_fs(out)
    root = root.rstrip("/")
    if (
        "file" in _protocols(fs)
        and cfg.source != "digits"
        and Path(cfg.source).is_dir()
        and Path(root).resolve().is_relative_to(Path(cfg.source).resolve())
    ):
        raise PrepError(
            f"out: {out} is inside the source folder {cfg.source}; the shards would be "
            f"read back as inputs - choose an output folder outside it"
        )
    with tempfile.TemporaryDirectory(prefix="ganforge-prep-") as tmp:  # TMPDIR chooses the disk
        start = time.perf_counter()
        spec, index, enum_skips = build_index(cfg, tmp)
        if len(index) == 0:
            raise PrepError(
                f"source: no inputs found in {cfg.source}"
                + (
                    f" ({len(enum_skips)} refused, e.g. {enum_skips[0].source}: "
                    f"{enum_skips[0].reason})"
                    if enum_skips
                    else ""
                )
            )
        plan = make_plan(cfg, spec, index, Path(tmp))
        plan["enum_skipped"] = [s.to_dict() for s in enum_skips]
        fs.makedirs(f"{root}/_done", exist_ok=True)
        _write_plan(fs, root, plan, out)
        tasks = [
            ShardTask(
                name=s["name"],
                split=s["split"],
                start=s["start"],
                stop=s["stop"],
                spec=spec,
                perm_path=str(Path(tmp) / "perm.i64"),
                cfg=cfg,
                out=out,
                fingerprint=plan["fingerprint"],
            )
            for j, s in enumerate(plan["shards"])
            if j % cfg.num_partitions == cfg.partition
        ]
        local = "memory" not in _protocols(fs)  # memory:// is per process: write in-process
        workers = (cfg.workers or _cpu_count()) if local else 1
        if progress:
            print(
                f"prep: {len(index)} inputs in {cfg.source} indexed in {time.perf_counter() - start:.1f}s; "
                f"{len(plan['shards'])} shards planned, {len(tasks)} in this job, {workers} worker(s)",
                file=sys.stderr,
            )
        records = run_tasks(tasks, workers, progress)
    if cfg.num_partitions == 1:
        return merge_partitions(out)
    marker = f"{root}/{PARTITIONS_DIR}/part-{cfg.partition:05d}-of-{cfg.num_partitions:05d}.json"
    fs.makedirs(f"{root}/{PARTITIONS_DIR}", exist_ok=True)
    write_json_atomic(
        fs, marker, {"fingerprint": plan["fingerprint"], "shards": [t.name for t in tasks]}
    )
    manifest = _manifest(plan, records, source=cfg.source)
    manifest.location = out.rstrip("/")
    return manifest


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def content_options(cfg: PrepConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in NON_CONTENT_OPTIONS}


# -- plan -----------------------------------------------------------------------------


def make_plan(cfg: PrepConfig, spec: SourceSpec, index: Index, tmp: Path) -> dict:
    n = len(index)
    perm = np.random.default_rng(cfg.seed).permutation(n).astype(np.int64)
    perm.tofile(tmp / "perm.i64")
    n_val = int(round(n * cfg.val_fraction))
    if cfg.val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    per_shard = samples_per_shard(cfg, spec, perm)
    shards = []
    for split, lo, hi in (("train", n_val, n), ("val", 0, n_val)):
        count = hi - lo
        if count == 0:
            continue
        k = max(math.ceil(count / per_shard), min(cfg.min_shards, count))
        bounds = [lo + (count * s) // k for s in range(k + 1)]
        shards += [
            {
                "name": f"{split}-{s:06d}.tar",
                "split": split,
                "start": bounds[s],
                "stop": bounds[s + 1],
            }
            for s in range(k)
        ]
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "format": PREP_FORMAT,
                "index": index.sha256,
                "options": content_options(cfg),
                "per_shard": per_shard,
                "numpy_perm": perm[:64].tolist(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return {
        "fingerprint": fingerprint,
        "name": spec.name,
        "source": cfg.source,
        "num_inputs": n,
        "classes": index.classes,
        "options": content_options(cfg),
        "samples_per_shard": per_shard,
        "shards": shards,
    }


def samples_per_shard(cfg: PrepConfig, spec: SourceSpec, perm: np.ndarray) -> int:
    """``shard_samples``, lowered when ``shard_bytes`` would be exceeded.

    Encoded sizes are unknown before encoding, so a byte limit is planned from a probe of the
    first 16 usable images of the permutation (deterministic), with 25% headroom; a shard can
    still overshoot when the rest compresses much worse than the probe.
    """
    tar_overhead = 3 * (512 + 256)  # three member headers + average padding per sample
    worst = cfg.resolution**2 * cfg.channels * 1.05 + 1024 + tar_overhead
    if not cfg.shard_bytes or worst * cfg.shard_samples <= cfg.shard_bytes:
        return cfg.shard_samples
    reader, sizes = SourceReader(spec), []
    for i in perm[:256]:
        try:
            sizes.append(
                len(prepare_image(reader.read(int(i)), cfg, exempt_min_size=spec.skip_min_size)[0])
            )
        except (SkipInput, OSError, KeyError):
            continue
        if len(sizes) == 16:
            break
    reader.close()
    per_sample = (float(np.mean(sizes)) * 1.25 + tar_overhead + 200) if sizes else worst
    budget = cfg.shard_bytes - 1024 - tarfile.RECORDSIZE  # end-of-archive blocks + record padding
    return max(1, min(cfg.shard_samples, int(budget // per_sample)))


def _write_plan(fs, root: str, plan: dict, out: str) -> None:
    path = f"{root}/{PLAN_NAME}"
    old = read_json(fs, path)
    if old is not None and old.get("fingerprint") != plan["fingerprint"]:
        raise PrepError(
            f"out: {out} already holds shards of a different input or different options "
            f"(source {old.get('source')!r}); use a new --out folder or delete {out} first"
        )
    if old is None or old.get("source") != plan["source"]:
        write_json_atomic(fs, path, plan)


# -- execution --------------------------------------------------------------------------

_COUNTER = None


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def _count_image(n: int) -> None:
    with _COUNTER.get_lock():
        _COUNTER.value += n


def _pool_write_shard(task: ShardTask) -> dict:
    return write_shard(task, on_image=_count_image)


def run_tasks(tasks: list[ShardTask], workers: int, progress: bool) -> list[dict]:
    """Run shard tasks (in-process for one worker), with an images/s + ETA progress bar."""
    total = sum(t.stop - t.start for t in tasks)
    with tqdm(
        total=total,
        unit="img",
        desc="prep",
        disable=not progress,
        smoothing=0.05,
        dynamic_ncols=True,
    ) as bar:
        if workers <= 1 or len(tasks) <= 1:
            return [write_shard(t, on_image=bar.update) for t in tasks]
        ctx = mp.get_context("spawn")  # safe with threads and on every OS
        counter = ctx.Value("q", 0)
        # ProcessPoolExecutor, not Pool: a worker killed by the OOM killer raises
        # BrokenProcessPool here instead of hanging the job forever.
        with ProcessPoolExecutor(
            min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker, initargs=(counter,)
        ) as pool:
            futures = [pool.submit(_pool_write_shard, t) for t in tasks]
            try:
                while True:
                    done, pending = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
                    bar.update(counter.value - bar.n)
                    for future in done:
                        future.result()  # fail fast: a worker error stops the job
                    if not pending:
                        break
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return [f.result() for f in futures]


# -- merge -----------------------------------------------------------------------------


def merge_partitions(out: str) -> Manifest:
    """Check that every planned shard is finished; write ``skipped.jsonl`` and the manifest."""
    fs, root = fsspec.core.url_to_fs(out)
    root = root.rstrip("/")
    plan = read_json(fs, f"{root}/{PLAN_NAME}")
    if plan is None:
        raise FileNotFoundError(
            f"{out}/{PLAN_NAME} not found: no `ganforge prep` job has started "
            f"in {out}; run prep (every --partition) with --out {out} first"
        )
    missing = [
        j for j, shard in enumerate(plan["shards"]) if not fs.exists(done_path(root, shard["name"]))
    ]
    if missing:  # cheap check first: which partitions have not finished
        raise PrepError(_missing_message(fs, root, out, plan, missing))
    # Stream the skip lists into skipped.jsonl: memory stays flat however many inputs failed.
    records = []
    tmp = f"{root}/.{SKIPPED_NAME}.tmp"
    with fs.open(tmp, "wt") as f:
        for skip in plan.get("enum_skipped", []):
            f.write(json.dumps(skip, sort_keys=True) + "\n")
        for j, shard in enumerate(plan["shards"]):
            record = read_json(fs, done_path(root, shard["name"]))
            if record is None or record.get("fingerprint") != plan["fingerprint"]:
                missing.append(j)
                continue
            for skip in record["skipped"]:
                f.write(json.dumps(skip, sort_keys=True) + "\n")
            records.append(slim_record(record))
    if missing:
        fs.rm(tmp)
        raise PrepError(_missing_message(fs, root, out, plan, missing))
    fs.mv(tmp, f"{root}/{SKIPPED_NAME}")
    manifest = _manifest(plan, records, source=plan["source"])
    if manifest.num_samples == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(manifest.skipped.items()))
        raise PrepError(
            f"source: no usable images in {plan['source']} ({plan['num_inputs']} inputs, "
            f"all skipped - {reasons}); see {out}/{SKIPPED_NAME}"
        )
    save_manifest(manifest, out)
    return load_manifest(out)  # exactly what readers see, with its location set


def _missing_message(fs, root: str, out: str, plan: dict, missing: list[int]) -> str:
    names = [plan["shards"][j]["name"] for j in missing]
    head = f"{len(missing)} of {len(plan['shards'])} shards in {out} are not finished ({', '.join(names[:5])}"
    head += ", ...)" if len(names) > 5 else ")"
    try:
        markers = fs.ls(f"{root}/{PARTITIONS_DIR}", detail=False)
    except FileNotFoundError:
        markers = []
    counts = {int(Path(m).stem.split("-of-")[1]) for m in markers if "-of-" in m}
    if len(counts) == 1:
        n = counts.pop()
        parts = sorted({j % n for j in missing})
        return (
            f"{head}: partition(s) {', '.join(map(str, parts))} of {n} have not finished; re-run "
            f"`ganforge prep ... --num-partitions {n} --partition K` for each, then merge again"
        )
    return f"{head}; re-run the same `ganforge prep` command (it resumes), then merge again"


def _manifest(plan: dict, records: list[dict], source: str) -> Manifest:
    opts = plan["options"]
    shards = [
        ShardInfo(
            name=r["name"],
            split=r["split"],
            num_samples=r["num_samples"],
            bytes=r["bytes"],
            sha256=r["sha256"],
        )
        for r in records
        if r["num_samples"] > 0
    ]
    skipped = Counter(s["reason"] for s in plan.get("enum_skipped", []))
    for r in records:
        skipped.update(r["skip_counts"])
    return Manifest(
        name=plan["name"],
        resolution=opts["resolution"],
        channels=opts["channels"],
        image_format=opts["image_format"],
        num_samples=sum(s.num_samples for s in shards),
        classes=dict(plan["classes"]),
        shards=shards,
        options=dict(opts),
        skipped=dict(sorted(skipped.items())),
        source=source,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
