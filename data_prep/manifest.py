"""The manifest contract: one versioned JSON file describing a sharded dataset.

Written by ``ganforge prep`` next to the shards (``manifest.json``); read by the trainer and the
evaluator, which learn everything about the data from it (nobody globs tar files).

Schema (version 1)::

    {
      "schema": "ganforge-manifest", "schema_version": 1,
      "name": "digits", "created": "2026-11-27T03:00:00Z",
      "resolution": 32, "channels": 3, "image_format": "png",
      "num_samples": 1797,                    # all splits together
      "classes": {"0": 0, "1": 1, ...},       # name -> id; {} when unlabelled
      "shards": [{"name": "train-000000.tar", "split": "train", "num_samples": 113,
                  "bytes": 123456, "sha256": "..."}, ...],
      "options": {...},                       # the PrepConfig used
      "skipped": {"corrupt": 2, ...},         # counts of skipped inputs by reason
      "source": "digits"
    }

Shard names are relative to the manifest's folder/URL; ``shard_urls()`` resolves them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import fsspec

SCHEMA = "ganforge-manifest"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """The manifest is missing or malformed; the message names the file and field."""


@dataclass
class ShardInfo:
    name: str
    split: str
    num_samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    name: str
    resolution: int
    channels: int
    image_format: str
    num_samples: int
    classes: dict[str, int]
    shards: list[ShardInfo]
    options: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""
    created: str = ""
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION
    # where it was loaded from (not serialized): base URL for shard names
    location: str = field(default="", compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [name for name, _ in sorted(self.classes.items(), key=lambda kv: kv[1])]

    def split_shards(self, split: str = "train") -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def split_samples(self, split: str = "train") -> int:
        return sum(s.num_samples for s in self.split_shards(split))

    def shard_urls(self, split: str = "train") -> list[str]:
        base = self.location.rstrip("/")
        return [f"{base}/{s.name}" if base else s.name for s in self.split_shards(split)]

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("location", None)
        return json.dumps(d, indent=2, sort_keys=True)

    @property
    def sha256(self) -> str:
        """Content hash of the manifest (identifies the dataset: cache keys, MLflow tags)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def manifest_url(path_or_url: str) -> str:
    """Accept a manifest file or the folder/URL holding ``manifest.json``."""
    p = str(path_or_url).rstrip("/")
    return p if p.endswith(".json") else f"{p}/{MANIFEST_NAME}"


def load_manifest(path_or_url: str) -> Manifest:
    url = manifest_url(path_or_url)
    try:
        with fsspec.open(url, "rt") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ManifestError(
            f"no dataset manifest at {url}; run `ganforge prep --source ... --out {url.rsplit('/', 1)[0]}` first "
            f"or point data.manifest at an existing prep output"
        ) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{url}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise ManifestError(f"{url}: not a ganforge manifest (schema field must be {SCHEMA!r})")
    if int(raw.get("schema_version", -1)) > SCHEMA_VERSION:
        raise ManifestError(
            f"{url}: schema_version {raw.get('schema_version')} is newer than this ganforge supports "
            f"({SCHEMA_VERSION}); upgrade ganforge"
        )
    _check_fields(Manifest, raw, url, "")
    if not isinstance(raw["shards"], list):
        raise ManifestError(f"{url}: shards: expected a list, got {type(raw['shards']).__name__}")
    for i, s in enumerate(raw["shards"]):
        _check_fields(ShardInfo, s, url, f"shards[{i}].")
    shards = [ShardInfo(**s) for s in raw.pop("shards")]
    manifest = Manifest(shards=shards, **raw)
    manifest.location = url.rsplit("/", 1)[0]
    return manifest


_SCALAR_TYPES = {"int": int, "str": str, "dict[str, int]": dict, "dict[str, Any]": dict}


def _check_fields(cls: type, raw: Any, url: str, where: str) -> None:
    """One-line ManifestError naming the field when ``raw`` does not fit dataclass ``cls``:
    not an object, a required field missing, an unknown field, or a value of the wrong type."""
    if not isinstance(raw, dict):
        what = where.rstrip(".") or "the manifest"
        raise ManifestError(f"{url}: {what}: expected an object, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls) if f.name != "location"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ManifestError(
            f"{url}: {where}{unknown[0]}: unknown field (valid: {', '.join(known)})"
        )
    for name, f in known.items():
        if name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ManifestError(f"{url}: {where}{name}: missing (a required field)")
            continue
        expected = _SCALAR_TYPES.get(str(f.type))
        value = raw[name]
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise ManifestError(
                f"{url}: {where}{name}: expected {expected.__name__}, got {value!r:.40}"
            )


def save_manifest(manifest: Manifest, out_dir: str) -> str:
    """Write ``manifest.json`` atomically (temp name + rename/move) into ``out_dir``; returns its URL."""
    fs, root = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    final = f"{root.rstrip('/')}/{MANIFEST_NAME}"
    tmp = f"{root.rstrip('/')}/.{MANIFEST_NAME}.tmp"
    with fs.open(tmp, "wt") as f:
        f.write(manifest.to_json())
    fs.mv(tmp, final)
    return manifest_url(out_dir)
