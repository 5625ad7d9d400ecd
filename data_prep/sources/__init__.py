"""Input sources: any image collection enumerated as a compact, on-disk record index.

Modules: ``index`` (the record index), ``reader`` (one record's bytes in any process),
``files`` (folders, list files), ``archives`` (zip, tar), ``arrays`` (digits, CIFAR-10, MNIST).
``build_index`` picks the enumerator from a lookup table: built-in names first, then the first
row of ``KINDS`` whose test matches the path.

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

from collections.abc import Callable
from pathlib import Path

from ..config import PrepConfig
from ..skips import Skip
from .archives import enumerate_tar, enumerate_zip, is_unsafe_member
from .arrays import enumerate_cifar10, enumerate_digits, enumerate_mnist
from .files import LIST_SUFFIXES, enumerate_folder, enumerate_list_file, folder_labelled
from .index import MISSING_LABEL, NO_LABEL, Index, IndexWriter, SourceError, sort_class_names
from .reader import Enumerated, SourceReader, SourceSpec

Enumerator = Callable[[IndexWriter, "Path | None", Path, PrepConfig], Enumerated]

BUILTIN: dict[str, Enumerator] = {"digits": enumerate_digits}
"""Sources given by name instead of a path."""


def _lower_name(path: Path) -> str:
    return path.name.lower()


KINDS: tuple[tuple[str, Callable[[Path], bool], Enumerator], ...] = (
    ("folder", Path.is_dir, enumerate_folder),
    (
        "CIFAR-10 python tarball",
        lambda p: (
            _lower_name(p).startswith("cifar-10") and _lower_name(p).endswith((".tar.gz", ".tgz"))
        ),
        enumerate_cifar10,
    ),
    ("MNIST IDX file", lambda p: "idx3-ubyte" in _lower_name(p), enumerate_mnist),
    ("zip archive", lambda p: _lower_name(p).endswith(".zip"), enumerate_zip),
    (
        "tar archive",
        lambda p: _lower_name(p).endswith((".tar", ".tar.gz", ".tgz")),
        enumerate_tar,
    ),
    ("list file", lambda p: _lower_name(p).endswith(LIST_SUFFIXES), enumerate_list_file),
)
"""(kind, does this path match, enumerator), in order: the first match wins."""

__all__ = [
    "BUILTIN",
    "KINDS",
    "LIST_SUFFIXES",
    "MISSING_LABEL",
    "NO_LABEL",
    "Index",
    "IndexWriter",
    "SourceError",
    "SourceReader",
    "SourceSpec",
    "build_index",
    "is_unsafe_member",
    "sort_class_names",
    "source_name",
]


def source_name(source: str) -> str:
    name = Path(source.rstrip("/")).name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip", ".gz", ".csv", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)] or "data"
    return name or "data"


def _enumerator(source: str) -> tuple[Enumerator, Path | None]:
    if source in BUILTIN:
        return BUILTIN[source], None
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"source: {source} does not exist; give a folder, a .zip/.tar/.tar.gz archive, "
            f"cifar-10-python.tar.gz, an MNIST *-images-idx3-ubyte[.gz] file, a .csv/.jsonl "
            f"list file, or 'digits'"
        )
    for _kind, matches, enumerate_source in KINDS:
        if matches(path):
            return enumerate_source, path
    raise SourceError(
        f"source: {source} is not a supported input (folder, .zip, .tar, .tar.gz, "
        f"cifar-10-python.tar.gz, *-images-idx3-ubyte[.gz], .csv, .jsonl or 'digits')"
    )


def build_index(cfg: PrepConfig, folder: str | Path) -> tuple[SourceSpec, Index, list[Skip]]:
    """Enumerate ``cfg.source`` into an index under ``folder``; returns (spec, index, skips)."""
    folder = Path(folder)
    enumerate_source, path = _enumerator(cfg.source)
    writer = IndexWriter(folder / "index")
    spec, meta_classes, labelled = enumerate_source(writer, path, folder, cfg)
    spec.name = spec.name or source_name(cfg.source)
    if labelled is None:
        labelled = folder_labelled(writer, cfg, spec.kind, cfg.source)
    writer.finish(labelled=labelled, classes=meta_classes)
    return spec, Index(writer.folder), writer.skipped
