"""``SourceSpec`` (picklable, handed to workers) and ``SourceReader``: one record's raw input."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ..skips import MAX_FILE_BYTES, TOO_LARGE, SkipInput
from .index import Index


@dataclass
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


Enumerated = tuple[SourceSpec, "dict[str, int] | None", "bool | None"]
"""What every enumerator returns: (spec, classes, labelled); None for classes/labelled: decided
from the label names found (folder-like sources)."""
