"""Why an input was skipped: the reasons reported in ``skipped.jsonl`` and the manifest.

A skipped input never stops a prep job; it is listed with its reason so that nothing is lost
silently. Reasons are short fixed strings so that the manifest can count them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Found while enumerating the source (every partition sees them; reported once by merge).
UNSAFE_PATH = "unsafe-path"  # archive member with an absolute or `..` path: refused, never read
NOT_A_FILE = "not-a-regular-file"  # archive link/device/fifo member: never followed
TRUNCATED_ARCHIVE = "truncated-archive"  # the archive ends early; members up to there are kept
# Found while reading/decoding one input.
UNREADABLE = "unreadable"  # missing file, permission denied, I/O error
EMPTY = "empty"  # zero bytes
TOO_LARGE = "too-large"  # the file itself is larger than MAX_FILE_BYTES
NOT_AN_IMAGE = "not-an-image"  # no image format recognises it
TRUNCATED = "truncated"  # image data ends early
CORRUPT = "corrupt"  # recognised but undecodable
DECOMPRESSION_BOMB = "decompression-bomb"  # more pixels than max_image_pixels
TOO_SMALL = "too-small"  # shorter side below min_size
WRONG_SIZE = "wrong-size"  # transform "none" and not resolution x resolution
UNLABELLED = "unlabelled"  # a labelled dataset, but this input has no label

MAX_FILE_BYTES = 1 << 30
"""Inputs larger than this (1 GiB) are skipped before they are read into memory."""


@dataclass
class Skip:
    """One skipped input: ``source`` is its path/member name as enumerated."""

    source: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class SkipInput(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised while reading/decoding one input; the shard writer records it and moves on."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
