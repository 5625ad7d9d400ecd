"""Archive sources, read in place (never extracted): .zip, .tar and .tar.gz (decompressed once
into a single temporary spool file for random access). Unsafe member paths (absolute, ``..``)
and links are refused and reported."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from ..config import PrepConfig
from ..skips import NOT_A_FILE, TRUNCATED_ARCHIVE, UNSAFE_PATH
from .files import add_with_folder_label, is_hidden
from .index import IndexWriter, SourceError
from .reader import Enumerated, SourceSpec


def is_unsafe_member(name: str) -> bool:
    """Absolute paths, drive letters and any `..` component (zip-slip) are refused."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in re.split(r"[/\\]", name))


def enumerate_zip(writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig) -> Enumerated:
    """A .zip archive, read in place; members sorted by name."""
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
        if info.is_dir() or is_hidden(name):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            writer.skip(name, NOT_A_FILE, "symbolic link in archive; not followed")
            continue
        add_with_folder_label(writer, name)
    return SourceSpec(kind="zip", path=str(path), index_dir=str(writer.folder), name=""), None, None


def enumerate_tar(writer: IndexWriter, path: Path, folder: Path, cfg: PrepConfig) -> Enumerated:
    """A .tar (read in place) or .tar.gz (decompressed once into a spool file)."""
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
            if member.isdir() or is_hidden(name):
                continue
            if not member.isreg():
                writer.skip(name, NOT_A_FILE, "link or special file in archive; not followed")
                continue
            if member.offset_data + member.size > size:
                writer.skip(name, TRUNCATED_ARCHIVE, "member data runs past the end of the archive")
                continue
            add_with_folder_label(writer, name, (member.offset_data, member.size))
    spec = SourceSpec(kind="tar", path=str(tar_path), index_dir=str(writer.folder), name="")
    return spec, None, None
