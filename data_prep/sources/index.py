"""The on-disk record index of a source: one record per input, in flat binary files.

Each record is a reference string (relative path, member name or ``name[row]``), a class id and
a location (archive offset/size or array row). ``IndexWriter`` appends records during
enumeration; ``Index`` memory-maps them in any process, so no Python list of millions of paths
is ever held or pickled.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np

from ..skips import Skip

NO_LABEL = -1  # unlabelled dataset
MISSING_LABEL = -2  # labelled dataset, this record has none (skipped as unlabelled)


class SourceError(ValueError):
    """The source as a whole is unusable; the message names it and what to do."""


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
