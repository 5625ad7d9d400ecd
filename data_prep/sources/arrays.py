"""Array datasets, decoded once into a memory-mapped uint8 ``[N, H, W, C]`` file: the built-in
digits, the CIFAR-10 python tarball (its pickles read by a restricted unpickler that only
rebuilds numpy arrays) and MNIST IDX files."""

from __future__ import annotations

import gzip
import io
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np

from ..config import PrepConfig
from .index import IndexWriter, SourceError
from .reader import Enumerated, SourceSpec


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


def enumerate_digits(
    writer: IndexWriter, path: Path | None, folder: Path, cfg: PrepConfig
) -> Enumerated:
    """scikit-learn's 1,797 8x8 digits (bundled with it: no download)."""
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


def enumerate_cifar10(writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig) -> Enumerated:
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


def enumerate_mnist(writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig) -> Enumerated:
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
