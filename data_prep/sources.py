"""Input sources: any image collection enumerated as a compact, on-disk record index.

Sources: a folder (recursive; labels from first-level subfolders), a .zip/.tar/.tar.gz archive
(read in place, never extracted), the CIFAR-10 python tarball, MNIST IDX files, a CSV/JSONL
list file (path, optional label) and the built-in ``digits`` (scikit-learn's 1,797 8x8 digits).

Enumeration writes one record per input - a reference string (relative path, member name or
``name[row]``), a class id and a location (archive offset/size or array row) - into flat binary
files in a temporary folder. Worker processes memory-map that index and open the source
themselves (``SourceReader``), so nothing image-sized and no Python list of millions of paths is
ever held or pickled: a list of 10M paths costs ~1 GB of disk, not of RAM.

Order is deterministic: folders are walked in sorted order, zip members sorted by name, tar
members and list-file rows kept in file order. References are relative to the source, so the
same data mounted at different paths on different nodes gives the same index (and fingerprint).

Array datasets (digits, CIFAR-10, MNIST) are decoded once into a memory-mapped uint8 array.
CIFAR-10's pickles are read with a restricted unpickler that only rebuilds numpy arrays.
A .tar.gz is decompressed once into a single temporary spool file for random access; no member is
ever written out as a file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import stat
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import PrepConfig
from .skips import (
    MAX_FILE_BYTES,
    NOT_A_FILE,
    TOO_LARGE,
    TRUNCATED_ARCHIVE,
    UNREADABLE,
    UNSAFE_PATH,
    Skip,
    SkipInput,
)

LIST_SUFFIXES = (".csv", ".jsonl")
NO_LABEL = -1  # unlabelled dataset
MISSING_LABEL = -2  # labelled dataset, this record has none (skipped as unlabelled)


class SourceError(ValueError):
    """The source as a whole is unusable; the message names it and what to do."""


# ---------------------------------------------------------------------------------------
# The on-disk index
# ---------------------------------------------------------------------------------------


class IndexWriter:
    """Append records to flat files in ``folder``; ``finish()`` fixes the class ids."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._refs = open(self.folder / "refs.bin", "wb")
        self._offsets = open(self.folder / "offsets.bin", "wb")
        self._labels = open(self.folder / "labels.bin", "wb")
        self._locs = open(self.folder / "locs.bin", "wb")
        self._offsets.write(struct.pack("<q", 0))
        self._end = 0
        self._label_ids: dict[str, int] = {}  # label name -> order of first appearance
        self._hash = hashlib.sha256()
        self.count = 0
        self.skipped: list[Skip] = []
        self.has_root_files = False  # folder-like sources: some input is not in a subfolder

    def add(self, ref: str, label: str | None = None, loc: tuple[int, int] = (0, 0)) -> None:
        data = ref.encode("utf-8", "surrogateescape")
        self._refs.write(data)
        self._end += len(data)
        self._offsets.write(struct.pack("<q", self._end))
        raw = NO_LABEL if not label else self._label_ids.setdefault(label, len(self._label_ids))
        self._labels.write(struct.pack("<i", raw))
        self._locs.write(struct.pack("<qq", *loc))
        self._hash.update(
            b"%s\0%s\0%d:%d\n" % (data, (label or "").encode("utf-8", "surrogateescape"), *loc)
        )
        self.count += 1

    def skip(self, source: str, reason: str, detail: str = "") -> None:
        self.skipped.append(Skip(source, reason, detail))

    @property
    def label_names(self) -> list[str]:
        return list(self._label_ids)

    def finish(self, *, labelled: bool, classes: dict[str, int] | None = None) -> dict:
        """Map label names to class ids (sorted names unless ``classes`` is given)."""
        for f in (self._refs, self._offsets, self._labels, self._locs):
            f.close()
        names = self.label_names
        if not labelled:
            classes = {}
        elif classes is None:
            classes = {name: i for i, name in enumerate(sort_class_names(names))}
        missing = MISSING_LABEL if labelled else NO_LABEL
        # lut[raw] for raw >= 0; the extra last slot serves raw == -1 (no label on this record)
        lut = np.array(
            [classes.get(n, missing) if labelled else NO_LABEL for n in names] + [missing],
            dtype=np.int32,
        )
        if self.count:
            labels = np.memmap(
                self.folder / "labels.bin", dtype=np.int32, mode="r+", shape=(self.count,)
            )
            for start in range(0, self.count, 1 << 20):  # chunked: constant memory
                labels[start : start + (1 << 20)] = lut[labels[start : start + (1 << 20)]]
            labels.flush()
            del labels
        self._hash.update(json.dumps(classes, sort_keys=True).encode())
        meta = {"count": self.count, "classes": classes, "sha256": self._hash.hexdigest()}
        (self.folder / "meta.json").write_text(json.dumps(meta))
        return meta


class Index:
    """Read-only, memory-mapped view of an ``IndexWriter`` folder (cheap to open per process)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.count: int = meta["count"]
        self.classes: dict[str, int] = meta["classes"]
        self.sha256: str = meta["sha256"]
        n = self.count
        if n:
            self._refs = (
                np.memmap(self.folder / "refs.bin", dtype=np.uint8, mode="r")
                if (self.folder / "refs.bin").stat().st_size
                else np.zeros(0, np.uint8)
            )
            self._offsets = np.memmap(
                self.folder / "offsets.bin", dtype=np.int64, mode="r", shape=(n + 1,)
            )
            self._labels = np.memmap(
                self.folder / "labels.bin", dtype=np.int32, mode="r", shape=(n,)
            )
            self._locs = np.memmap(self.folder / "locs.bin", dtype=np.int64, mode="r", shape=(n, 2))
        self._names = {v: k for k, v in self.classes.items()}

    def __len__(self) -> int:
        return self.count

    def ref(self, i: int) -> str:
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        return bytes(self._refs[a:b]).decode("utf-8", "surrogateescape")

    def label(self, i: int) -> int:
        return int(self._labels[i])

    def class_name(self, label: int) -> str | None:
        return self._names.get(label)

    def loc(self, i: int) -> tuple[int, int]:
        return int(self._locs[i, 0]), int(self._locs[i, 1])


def sort_class_names(names: list[str]) -> list[str]:
    """Numeric order when every name is an integer ("2" < "10"), else string order."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


# ---------------------------------------------------------------------------------------
# Source description (picklable, handed to workers) and reader
# ---------------------------------------------------------------------------------------


@dataclass
class SourceSpec:
    kind: str
    """files (folder or list file) | zip | tar | array."""
    path: str
    """Folder / list-file folder / archive (or its spool) / pixel array file."""
    index_dir: str
    name: str
    """Dataset name for the manifest (``digits``, the folder or archive stem)."""
    array_shape: tuple[int, ...] = ()
    """For kind array: [N, H, W, C] of the uint8 pixel file."""
    skip_min_size: bool = False
    """True for the built-in array datasets, whose small fixed size is intended."""


class SourceReader:
    """Reads one record's raw input (encoded bytes, or a uint8 [H, W, C] array) in any process."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.index = Index(spec.index_dir)
        self._zip: zipfile.ZipFile | None = None
        self._tar = None
        self._pixels: np.ndarray | None = None

    def read(self, i: int) -> bytes | np.ndarray:
        kind, ref = self.spec.kind, self.index.ref(i)
        if kind == "array":
            if self._pixels is None:
                self._pixels = np.memmap(
                    self.spec.path, dtype=np.uint8, mode="r", shape=self.spec.array_shape
                )
            return np.array(self._pixels[self.index.loc(i)[0]])
        if kind == "zip":
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.spec.path)
            info = self._zip.getinfo(ref)
            _check_size(info.file_size)
            return self._zip.read(info)
        if kind == "tar":
            if self._tar is None:
                self._tar = open(self.spec.path, "rb")  # noqa: SIM115 - kept open for the process
            offset, size = self.index.loc(i)
            _check_size(size)
            self._tar.seek(offset)
            return self._tar.read(size)
        # files: a folder, or a list file's entries (relative to the list's folder, or URLs)
        if "://" in ref:
            import fsspec

            with fsspec.open(ref, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            _check_size(len(data))
            return data
        path = os.path.join(self.spec.path, ref)
        _check_size(os.stat(path).st_size)
        with open(path, "rb") as f:
            return f.read()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()


def _check_size(size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise SkipInput(TOO_LARGE, f"{size} bytes > {MAX_FILE_BYTES}")


# ---------------------------------------------------------------------------------------
# Enumeration
# ---------------------------------------------------------------------------------------


def source_name(source: str) -> str:
    name = Path(source.rstrip("/")).name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip", ".gz", ".csv", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)] or "data"
    return name or "data"


def build_index(cfg: PrepConfig, folder: str | Path) -> tuple[SourceSpec, Index, list[Skip]]:
    """Enumerate ``cfg.source`` into an index under ``folder``; returns (spec, index, skips)."""
    folder = Path(folder)
    source = cfg.source
    writer = IndexWriter(folder / "index")
    name = source_name(source)
    if source == "digits":
        spec, meta_classes, labelled = _digits(writer, folder, cfg)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"source: {source} does not exist; give a folder, a .zip/.tar/.tar.gz archive, "
                f"cifar-10-python.tar.gz, an MNIST *-images-idx3-ubyte[.gz] file, a .csv/.jsonl "
                f"list file, or 'digits'"
            )
        lower = path.name.lower()
        if path.is_dir():
            spec, meta_classes, labelled = _folder(writer, path, cfg), None, None
        elif lower.startswith("cifar-10") and lower.endswith((".tar.gz", ".tgz")):
            spec, meta_classes, labelled = _cifar10(writer, path, folder, cfg)
        elif "idx3-ubyte" in lower:
            spec, meta_classes, labelled = _mnist(writer, path, folder, cfg)
        elif lower.endswith(".zip"):
            spec, meta_classes, labelled = _zip(writer, path, cfg), None, None
        elif lower.endswith((".tar", ".tar.gz", ".tgz")):
            spec, meta_classes, labelled = _tar(writer, path, folder, cfg), None, None
        elif lower.endswith(LIST_SUFFIXES):
            spec, meta_classes, labelled = _list_file(writer, path, cfg), None, None
        else:
            raise SourceError(
                f"source: {source} is not a supported input (folder, .zip, .tar, .tar.gz, "
                f"cifar-10-python.tar.gz, *-images-idx3-ubyte[.gz], .csv, .jsonl or 'digits')"
            )
        spec.name = spec.name or name
    if labelled is None:
        labelled = _folder_labelled(writer, cfg, spec.kind, source)
    writer.finish(labelled=labelled, classes=meta_classes)
    return spec, Index(writer.folder), writer.skipped


def _folder_labelled(writer: IndexWriter, cfg: PrepConfig, kind: str, source: str) -> bool:
    """Labels policy for folder-like sources (folder, archives, list files)."""
    names = writer.label_names
    if cfg.labels == "none":
        return False
    if kind == "files" and source.lower().endswith(LIST_SUFFIXES):
        if cfg.labels == "folder":
            raise SourceError(
                f"labels: 'folder' does not apply to the list file {source}; its label "
                f"column gives the labels (use labels auto or none)"
            )
        return bool(names)
    if cfg.labels == "folder":
        if not names:
            raise SourceError(
                f"labels: 'folder' needs images inside first-level subfolders of "
                f"{source}, found none; use --labels none"
            )
        return True
    # auto: labelled when every image is in a subfolder and there are at least two of them
    return len(names) >= 2 and not writer.has_root_files


def _first_level(rel: str) -> str:
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else ""


def _add_with_folder_label(writer: IndexWriter, rel: str, loc: tuple[int, int] = (0, 0)) -> None:
    label = _first_level(rel)
    if not label:
        writer.has_root_files = True
    writer.add(rel, label, loc)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/")) or "__MACOSX" in rel.split("/")


def _folder(writer: IndexWriter, root: Path, cfg: PrepConfig) -> SourceSpec:
    stack = [""]
    while stack:  # pre-order walk, entries sorted: deterministic, one directory listing in RAM
        rel_dir = stack.pop()
        files, subdirs = [], []
        try:
            with os.scandir(root / rel_dir) as it:  # names only: one listing's strings in RAM
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(f"{rel_dir}/{entry.name}" if rel_dir else entry.name)
                    elif entry.is_file():
                        files.append(f"{rel_dir}/{entry.name}" if rel_dir else entry.name)
        except OSError as exc:
            writer.skip(rel_dir or ".", UNREADABLE, str(exc))
            continue
        for rel in sorted(files):
            _add_with_folder_label(writer, rel)
        subdirs.sort()
        stack.extend(reversed(subdirs))
    return SourceSpec(kind="files", path=str(root), index_dir=str(writer.folder), name="")


def is_unsafe_member(name: str) -> bool:
    """Absolute paths, drive letters and any `..` component (zip-slip) are refused."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in re.split(r"[/\\]", name))


def _zip(writer: IndexWriter, path: Path, cfg: PrepConfig) -> SourceSpec:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = sorted(zf.infolist(), key=lambda i: i.filename)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"source: {path} is not a readable zip archive ({exc})") from None
    for info in infos:
        name = info.filename
        if is_unsafe_member(name):
            writer.skip(name, UNSAFE_PATH, "absolute or '..' path in archive; refused")
            continue
        if info.is_dir() or _hidden(name):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            writer.skip(name, NOT_A_FILE, "symbolic link in archive; not followed")
            continue
        _add_with_folder_label(writer, name)
    return SourceSpec(kind="zip", path=str(path), index_dir=str(writer.folder), name="")


def _tar(writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig) -> SourceSpec:
    tar_path = path
    if path.name.lower().endswith((".gz", ".tgz")):
        # gzip has no random access: decompress once into a single spool file (not extracted)
        tar_path = folder / "spool.tar"
        try:
            with gzip.open(path, "rb") as src, open(tar_path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as exc:
            raise SourceError(f"source: {path} is not a readable .tar.gz ({exc})") from None
    try:
        tf = tarfile.open(tar_path, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"source: {path} is not a readable tar archive ({exc})") from None
    size = os.path.getsize(tar_path)
    with tf:
        while True:
            try:
                member = tf.next()
            except tarfile.TarError as exc:
                writer.skip(str(path), TRUNCATED_ARCHIVE, f"stopped reading the archive: {exc}")
                break
            if member is None:
                break
            tf.members.clear()  # tarfile keeps every header otherwise: constant memory
            name = member.name
            if is_unsafe_member(name):
                writer.skip(name, UNSAFE_PATH, "absolute or '..' path in archive; refused")
                continue
            if member.isdir() or _hidden(name):
                continue
            if not member.isreg():
                writer.skip(name, NOT_A_FILE, "link or special file in archive; not followed")
                continue
            if member.offset_data + member.size > size:
                writer.skip(name, TRUNCATED_ARCHIVE, "member data runs past the end of the archive")
                continue
            _add_with_folder_label(writer, name, (member.offset_data, member.size))
    return SourceSpec(kind="tar", path=str(tar_path), index_dir=str(writer.folder), name="")


def _list_file(writer: IndexWriter, path: Path, cfg: PrepConfig) -> SourceSpec:
    """CSV (``path[,label]``, optional header naming the columns) or JSONL (``{"path", "label"}``)."""
    with open(path, newline="", encoding="utf-8") as f:
        if path.name.lower().endswith(".jsonl"):
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    ref, label = row["path"], row.get("label")
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    raise SourceError(
                        f"{path}:{lineno}: each line must be a JSON object with a "
                        f"'path' (and optional 'label'), got {line.strip()[:80]!r}"
                    ) from None
                writer.add(str(ref), None if label is None else str(label))
        else:
            reader = csv.reader(f)
            path_col, label_col = 0, 1
            for lineno, row in enumerate(reader, 1):
                if not row or not "".join(row).strip():
                    continue
                if lineno == 1 and "path" in [c.strip().lower() for c in row]:
                    header = [c.strip().lower() for c in row]
                    path_col = header.index("path")
                    label_col = header.index("label") if "label" in header else -1
                    continue
                if path_col >= len(row):
                    raise SourceError(f"{path}:{lineno}: no path column in {row!r}")
                label = row[label_col].strip() if 0 <= label_col < len(row) else ""
                writer.add(row[path_col].strip(), label or None)
    return SourceSpec(kind="files", path=str(path.parent), index_dir=str(writer.folder), name="")


# -- array datasets ------------------------------------------------------------------------


def _array_labels_policy(cfg: PrepConfig, source: str) -> bool:
    if cfg.labels == "folder":
        raise SourceError(
            f"labels: 'folder' does not apply to {source}, which has its own labels "
            f"(use labels auto or none)"
        )
    return cfg.labels != "none"


def _array_spec(writer: IndexWriter, pixels: Path, shape: tuple[int, ...], name: str) -> SourceSpec:
    return SourceSpec(
        kind="array",
        path=str(pixels),
        index_dir=str(writer.folder),
        name=name,
        array_shape=tuple(int(s) for s in shape),
        skip_min_size=True,
    )


def _digits(writer: IndexWriter, folder: Path, cfg: PrepConfig):
    from sklearn.datasets import load_digits

    digits = load_digits()
    # values 0..16 -> 0..255
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    pixels = folder / "pixels.u8"
    images.tofile(pixels)
    labels = [str(int(t)) for t in digits.target]
    for i, label in enumerate(labels):
        writer.add(f"digits[{i}]", label, (i, 0))
    classes = {str(i): i for i in range(10)}
    return (
        _array_spec(writer, pixels, images.shape, "digits"),
        classes,
        _array_labels_policy(cfg, "digits"),
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10 batches are pickles: rebuild numpy arrays and plain containers, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _load_cifar_pickle(data: bytes) -> dict:
    obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError("not a dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar10(writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig):
    """The 50,000 training images of cifar-10-python.tar.gz (as NVlabs dataset_tool)."""
    pixels = folder / "pixels.u8"
    count = 0
    try:
        with tarfile.open(path, "r:gz") as tf, open(pixels, "wb") as out:
            names = {m.name: m for m in tf.getmembers() if m.isreg()}
            batches = sorted(n for n in names if re.search(r"(^|/)data_batch_\d+$", n))
            meta_name = next((n for n in names if n.endswith("batches.meta")), None)
            if not batches:
                raise SourceError(
                    f"source: {path} has no cifar-10-batches-py/data_batch_* members; "
                    f"is it the CIFAR-10 python version?"
                )
            class_names = [str(i) for i in range(10)]
            if meta_name is not None:
                meta = _load_cifar_pickle(tf.extractfile(names[meta_name]).read())
                class_names = [
                    n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]
                ]
            for batch_name in batches:
                batch = _load_cifar_pickle(tf.extractfile(names[batch_name]).read())
                data = (
                    np.asarray(batch["data"], dtype=np.uint8)
                    .reshape(-1, 3, 32, 32)
                    .transpose(0, 2, 3, 1)
                )
                out.write(np.ascontiguousarray(data).tobytes())
                short = batch_name.rsplit("/", 1)[-1]
                for row, label in enumerate(batch["labels"]):
                    writer.add(f"{short}[{row}]", class_names[int(label)], (count + row, 0))
                count += len(data)
    except (
        tarfile.TarError,
        OSError,
        EOFError,
        pickle.UnpicklingError,
        KeyError,
        ValueError,
    ) as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(
            f"source: {path} is not a readable CIFAR-10 python tarball ({exc})"
        ) from None
    classes = {name: i for i, name in enumerate(class_names)}
    labelled = _array_labels_policy(cfg, str(path))
    return _array_spec(writer, pixels, (count, 32, 32, 3), "cifar10"), classes, labelled


def _open_idx(path: Path):
    f = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08:
        f.close()
        raise SourceError(
            f"source: {path} is not an MNIST IDX file of unsigned bytes (bad magic {head!r})"
        )
    dims = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
    return f, dims


def _mnist(writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig):
    """An MNIST ``*-images-idx3-ubyte[.gz]`` file; labels from the sibling ``*-labels-idx1-ubyte``."""
    pixels = folder / "pixels.u8"
    try:
        f, dims = _open_idx(path)
        with f, open(pixels, "wb") as out:
            if len(dims) != 3:
                raise SourceError(f"source: {path} holds {len(dims)}-d data; MNIST images are 3-d")
            n, h, w = dims
            for start in range(0, n, 10000):  # stream: constant memory
                k = min(10000, n - start)
                chunk = f.read(k * h * w)
                if len(chunk) < k * h * w:
                    raise SourceError(f"source: {path} is truncated (expected {n} images)")
                out.write(chunk)
        labels = None
        stem = path.name.replace("images-idx3-ubyte", "labels-idx1-ubyte")
        for cand in (
            stem,
            stem.removesuffix(".gz"),
            stem if stem.endswith(".gz") else stem + ".gz",
        ):
            if cand != path.name and (path.parent / cand).is_file():
                lf, ldims = _open_idx(path.parent / cand)
                with lf:
                    labels = np.frombuffer(lf.read(ldims[0]), dtype=np.uint8)
                if len(labels) != n:
                    raise SourceError(
                        f"source: {path.parent / cand} has {len(labels)} labels for {n} images"
                    )
                break
    except (OSError, EOFError, struct.error) as exc:
        raise SourceError(f"source: {path} is not a readable MNIST IDX file ({exc})") from None
    for i in range(n):
        writer.add(f"{path.name}[{i}]", None if labels is None else str(int(labels[i])), (i, 0))
    classes = None
    labelled = labels is not None and _array_labels_policy(cfg, str(path))
    if labels is not None:
        classes = {str(v): v for v in range(int(labels.max()) + 1)} if n else {}
    return _array_spec(writer, pixels, (n, h, w, 1), "mnist"), classes, labelled
