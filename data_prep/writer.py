"""Writing one shard: a deterministic WebDataset tar, published atomically, with a done record.

A shard is an independent task: (split, index, a slice of the seeded global permutation). The
worker reads those records in permutation order, prepares each image and streams the samples
into a tar whose metadata is fixed (mtime 0, uid/gid 0, no user names, mode 0644, USTAR), so
the same input and options give byte-identical shards. Sample members are ``KEY.png`` (or
``.webp``/``.jpg``), ``KEY.cls`` (ascii class id, labelled datasets only) and ``KEY.json``
(source path, original width/height, class name); ``KEY`` is the record's 9-digit position in
the enumeration, unique across shards and partitions.

The tar is written under a temporary name and renamed (``fs.mv``) when complete, then a small
``_done/<shard>.json`` record (count, bytes, sha256, skipped inputs, plan fingerprint) is
written the same way. Resume keeps a shard only when its done record matches the plan and the
file's sha256 matches the record; anything else is redone from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from .config import PrepConfig
from .skips import UNLABELLED, UNREADABLE, Skip, SkipInput
from .sources import MISSING_LABEL, SourceReader, SourceSpec
from .transform import EXTENSIONS, prepare_image

DONE_DIR = "_done"
MTIME = 0  # fixed tar metadata: byte-identical shards


@dataclass
class ShardTask:
    name: str
    split: str
    start: int
    """Positions [start, stop) in the permutation file."""
    stop: int
    spec: SourceSpec
    perm_path: str
    cfg: PrepConfig
    out: str
    fingerprint: str


class HashingWriter:
    """A write-only file wrapper that counts bytes and computes sha256 on the way."""

    def __init__(self, f) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        self.f.write(data)
        return len(data)

    def tell(self) -> int:
        return self.bytes


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, _Bytes(data))


class _Bytes:
    """Minimal file object for ``tarfile.addfile`` (avoids a BytesIO copy)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = self.data[self.pos : end]
        self.pos += len(chunk)
        return bytes(chunk)


def done_path(root: str, name: str) -> str:
    return f"{root}/{DONE_DIR}/{name}.json"


def file_sha256(fs, path: str) -> str:
    sha = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def read_json(fs, path: str) -> Any | None:
    try:
        with fs.open(path, "rt") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a torn record (cannot happen with rename, but never trust it)


def write_json_atomic(fs, path: str, obj: Any) -> None:
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"  # partitions may race on _plan.json
    with fs.open(tmp, "wt") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True))
    fs.mv(tmp, path)


def finished_record(fs, root: str, task: ShardTask) -> dict | None:
    """The done record when the shard is complete and intact, else None (redo it)."""
    record = read_json(fs, done_path(root, task.name))
    if not record or record.get("fingerprint") != task.fingerprint:
        return None
    if record["num_samples"] == 0:
        return record  # nothing usable in this slice: no file
    path = f"{root}/{task.name}"
    try:
        if fs.size(path) != record["bytes"] or file_sha256(fs, path) != record["sha256"]:
            return None
    except FileNotFoundError:
        return None
    return record


_READERS: dict[str, SourceReader] = {}


def _reader(spec: SourceSpec) -> SourceReader:
    reader = _READERS.get(spec.index_dir)
    if reader is None:
        reader = _READERS[spec.index_dir] = SourceReader(spec)
    return reader


def slim_record(record: dict) -> dict:
    """A done record with the skip list replaced by counts per reason (what the manifest needs)."""
    slim = {k: v for k, v in record.items() if k != "skipped"}
    slim["skip_counts"] = dict(Counter(s["reason"] for s in record["skipped"]))
    return slim


def write_shard(task: ShardTask, on_image: Callable[[int], None] | None = None) -> dict:
    """Write (or keep, when already finished) one shard; returns its slim done record."""
    fs, root = fsspec.core.url_to_fs(task.out)
    root = root.rstrip("/")
    record = finished_record(fs, root, task)
    if record is not None:
        if on_image:
            on_image(task.stop - task.start)
        return slim_record(record)
    reader = _reader(task.spec)
    index = reader.index
    perm = np.memmap(task.perm_path, dtype=np.int64, mode="r")
    ext = EXTENSIONS[task.cfg.image_format]
    skipped: list[Skip] = []
    tmp, final = f"{root}/.{task.name}.tmp", f"{root}/{task.name}"
    count = 0
    with fs.open(tmp, "wb") as f:
        sink = HashingWriter(f)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for pos in range(task.start, task.stop):
                i = int(perm[pos])
                sample = _sample(reader, index, i, task.cfg, ext, skipped)
                if sample is not None:
                    for member, data in sample:
                        add_member(tar, member, data)
                    count += 1
                if on_image:
                    on_image(1)
    record = {
        "name": task.name,
        "split": task.split,
        "num_samples": count,
        "bytes": sink.bytes,
        "sha256": sink.sha.hexdigest(),
        "fingerprint": task.fingerprint,
        "skipped": [s.to_dict() for s in skipped],
    }
    if count:
        fs.mv(tmp, final)  # appears only complete
    else:
        fs.rm(tmp)
        record.update(bytes=0, sha256="")
    write_json_atomic(fs, done_path(root, task.name), record)
    return slim_record(record)


def _sample(
    reader: SourceReader, index, i: int, cfg: PrepConfig, ext: str, skipped: list[Skip]
) -> list[tuple[str, bytes]] | None:
    ref = index.ref(i)
    label = index.label(i)
    try:
        if label == MISSING_LABEL:
            raise SkipInput(UNLABELLED, "the dataset is labelled but this input has no label")
        try:
            raw = reader.read(i)
        except SkipInput:
            raise
        except Exception as exc:  # noqa: BLE001 - missing/unreadable input: report, continue
            raise SkipInput(UNREADABLE, f"{type(exc).__name__}: {exc}") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow chatter about odd files; we report skips
            image, (width, height) = prepare_image(
                raw, cfg, exempt_min_size=reader.spec.skip_min_size
            )
    except SkipInput as skip:
        skipped.append(Skip(ref, skip.reason, skip.detail))
        return None
    key = f"{i:09d}"
    meta: dict[str, Any] = {"source": ref, "width": width, "height": height}
    members = [(f"{key}.{ext}", image)]
    if label >= 0:
        members.append((f"{key}.cls", str(label).encode("ascii")))
        meta["class"] = index.class_name(label)
    members.append((f"{key}.json", json.dumps(meta, sort_keys=True).encode()))
    return members
