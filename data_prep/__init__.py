"""Dataset preparation: image collections -> globally shuffled WebDataset shards + a manifest.

Entry points: ``shard_dataset(cfg)`` (``ganforge prep``), ``merge_partitions(out)``
(``ganforge prep merge``) and ``verify_dataset(url)`` (``ganforge prep verify``). Readers
learn everything about the result from the manifest (``load_manifest``).
"""

from .config import PrepConfig
from .manifest import Manifest, ManifestError, ShardInfo, load_manifest, manifest_url, save_manifest
from .prep import PrepError, merge_partitions, shard_dataset
from .sources import SourceError
from .verify import verify_dataset

__all__ = [
    "Manifest",
    "ManifestError",
    "PrepConfig",
    "PrepError",
    "ShardInfo",
    "SourceError",
    "load_manifest",
    "manifest_url",
    "merge_partitions",
    "save_manifest",
    "shard_dataset",
    "verify_dataset",
]
