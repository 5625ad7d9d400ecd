"""Folder-like sources: a folder (recursive; labels from first-level subfolders) and a CSV/JSONL
list file (path, optional label); the labels policy they share with the archives."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..config import PrepConfig
from ..skips import UNREADABLE
from .index import IndexWriter, SourceError
from .reader import Enumerated, SourceSpec

LIST_SUFFIXES = (".csv", ".jsonl")


def folder_labelled(writer: IndexWriter, cfg: PrepConfig, kind: str, source: str) -> bool:
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


def first_level(rel: str) -> str:
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else ""


def add_with_folder_label(writer: IndexWriter, rel: str, loc: tuple[int, int] = (0, 0)) -> None:
    label = first_level(rel)
    if not label:
        writer.has_root_files = True
    writer.add(rel, label, loc)


def is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/")) or "__MACOSX" in rel.split("/")


def enumerate_folder(writer: IndexWriter, root: Path, folder: Path, cfg: PrepConfig) -> Enumerated:
    """A folder, walked recursively; labels from first-level subfolders."""
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
            add_with_folder_label(writer, rel)
        subdirs.sort()
        stack.extend(reversed(subdirs))
    return (
        SourceSpec(kind="files", path=str(root), index_dir=str(writer.folder), name=""),
        None,
        None,
    )


def enumerate_list_file(
    writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig
) -> Enumerated:
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
    spec = SourceSpec(kind="files", path=str(path.parent), index_dir=str(writer.folder), name="")
    return spec, None, None
