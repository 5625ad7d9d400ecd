"""Each source type shards with its labels; archive members with unsafe paths are refused."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from prep_helpers import cfg, image_bytes, write

from data_prep import shard_dataset
from data_prep.sources import SourceError, is_unsafe_member


def samples(manifest, split="train") -> list[dict]:
    """Every sample of a split via plain webdataset, sorted by key."""
    urls = manifest.shard_urls(split)
    out = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"))
    return sorted(out, key=lambda s: s["__key__"])


def by_source(manifest) -> dict[str, int]:
    return {s["json"]["source"]: s.get("cls", -1) for s in samples(manifest)}


def test_folder_recursive_with_folder_labels(labelled_folder, tmp_path):
    m = shard_dataset(cfg(labelled_folder), out=str(tmp_path / "out"), progress=False)
    assert m.classes == {"cats": 0, "dogs": 1}
    assert by_source(m) == {
        "cats/a.png": 0,
        "cats/b.jpg": 0,
        "cats/deep/c.png": 0,
        "dogs/d.png": 1,
        "dogs/e.png": 1,
    }
    assert m.num_samples == 5 and m.resolution == 8 and m.channels == 3


def test_folder_with_root_images_is_unlabelled_unless_asked(labelled_folder, tmp_path):
    write(labelled_folder / "root.png", image_bytes(seed=9))
    m = shard_dataset(cfg(labelled_folder), out=str(tmp_path / "auto"), progress=False)
    assert m.classes == {} and m.num_samples == 6
    assert all("cls" not in s for s in samples(m))
    forced = shard_dataset(
        cfg(labelled_folder, labels="folder"), out=str(tmp_path / "folder"), progress=False
    )
    assert forced.classes == {"cats": 0, "dogs": 1} and forced.num_samples == 5
    assert forced.skipped == {"unlabelled": 1}


def _archive_members(folder: Path) -> list[tuple[str, bytes]]:
    return sorted(
        (p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    )


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_archives_match_the_folder(labelled_folder, tmp_path, kind):
    archive = tmp_path / f"images.{kind}"
    members = _archive_members(labelled_folder)
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in members:
                zf.writestr(name, data)
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tf:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    folder = shard_dataset(cfg(labelled_folder), out=str(tmp_path / "f"), progress=False)
    m = shard_dataset(cfg(archive), out=str(tmp_path / kind), progress=False)
    assert m.name == "images" and m.classes == folder.classes
    assert by_source(m) == by_source(folder)
    # same records in the same order -> the very same shard bytes as the folder
    assert [s.sha256 for s in m.shards] == [s.sha256 for s in folder.shards]


def test_unsafe_archive_members_are_refused(tmp_path):
    png = image_bytes()
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok.png", png)
        zf.writestr("../escape.png", png)
        zf.writestr("/abs.png", png)
    tpath = tmp_path / "evil.tar"
    with tarfile.open(tpath, "w") as tf:
        for name in ("ok.png", "../../escape.png", "/etc/abs.png", "a/../../b.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png)
            tf.addfile(info, io.BytesIO(png))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    for path, unsafe, links in ((zpath, 2, 0), (tpath, 3, 1)):
        out = tmp_path / f"out-{path.suffix[1:]}"
        m = shard_dataset(cfg(path), out=str(out), progress=False)
        assert m.num_samples == 1 and by_source(m) == {"ok.png": -1}
        assert (
            m.skipped.get("unsafe-path") == unsafe
            and m.skipped.get("not-a-regular-file", 0) == links
        )
        reported = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
        assert {r["reason"] for r in reported} >= {"unsafe-path"}
    assert not list(tmp_path.parent.glob("escape.png")) and not (tmp_path / "escape.png").exists()
    assert (
        is_unsafe_member("C:\\x.png")
        and is_unsafe_member("a\\..\\b")
        and not is_unsafe_member("a/b..png")
    )


def _cifar_tarball(path: Path, n_per_batch=3) -> np.ndarray:
    rng = np.random.default_rng(0)
    all_data = []
    with tarfile.open(path, "w:gz") as tf:

        def add(name, obj):
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        add(
            "batches.meta",
            {
                b"label_names": [b"airplane", b"automobile", b"bird"]
                + [b"x%d" % i for i in range(7)]
            },
        )
        for b in (1, 2):
            data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
            all_data.append(data)
            add(
                f"data_batch_{b}", {b"data": data, b"labels": [b % 3, (b + 1) % 3, 2][:n_per_batch]}
            )
        add(
            "test_batch",
            {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [0, 1]},
        )
    return np.concatenate(all_data)


def test_cifar10_tarball(tmp_path):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    data = _cifar_tarball(tarball)
    m = shard_dataset(
        cfg(tarball, resolution=32, resize_filter="box"), out=str(tmp_path / "c"), progress=False
    )
    assert m.num_samples == 6  # training batches only, as NVlabs dataset_tool
    assert list(m.classes)[:3] == ["airplane", "automobile", "bird"] and m.classes["bird"] == 2
    got = {s["json"]["source"]: s for s in samples(m)}
    assert got["data_batch_1[0]"]["cls"] == 1 and got["data_batch_2[1]"]["cls"] == 0
    # 32x32 at resolution 32: pixels pass through losslessly
    expected = data[0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(got["data_batch_1[0]"]["png"]), expected)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        data = pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(SourceError, match="refusing to load"):
        shard_dataset(cfg(tarball), out=str(tmp_path / "c"), progress=False)


def _idx(array: np.ndarray) -> bytes:
    return (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    write(tmp_path / f"train-images-idx3-ubyte{suffix}", pack(_idx(images)))
    write(tmp_path / f"train-labels-idx1-ubyte{suffix}", pack(_idx(labels)))
    m = shard_dataset(
        cfg(tmp_path / f"train-images-idx3-ubyte{suffix}", channels=1, resolution=32),
        out=str(tmp_path / "m"),
        progress=False,
    )
    assert m.num_samples == 7 and m.channels == 1 and m.classes == {str(i): i for i in range(10)}
    got = {s["json"]["source"].split("[")[1].rstrip("]"): s["cls"] for s in samples(m)}
    assert got == {str(i): int(v) for i, v in enumerate(labels)}


def test_list_files_csv_and_jsonl(labelled_folder, tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "path,label\nimages/cats/a.png,cat\nimages/dogs/d.png,dog\n"
        f"{labelled_folder / 'dogs' / 'e.png'},dog\nimages/missing.png,cat\n"
    )
    m = shard_dataset(cfg(csv_path), out=str(tmp_path / "csv"), progress=False)
    assert m.classes == {"cat": 0, "dog": 1} and m.num_samples == 3
    assert m.skipped == {"unreadable": 1}
    assert sorted(by_source(m).values()) == [0, 1, 1]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(
        '{"path": "images/cats/a.png", "label": 10}\n\n{"path": "images/cats/b.jpg", "label": 2}\n'
        '{"path": "images/dogs/d.png"}\n'
    )
    m = shard_dataset(cfg(jsonl), out=str(tmp_path / "jsonl"), progress=False)
    assert m.classes == {"2": 0, "10": 1}  # numeric names sort numerically
    assert m.skipped == {"unlabelled": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "x.png"}\n')
    with pytest.raises(SourceError, match=r"bad.jsonl:1"):
        shard_dataset(cfg(bad), out=str(tmp_path / "bad"), progress=False)


def test_digits_defaults(tmp_path):
    m = shard_dataset(cfg("digits", resolution=32), out=str(tmp_path / "d"), progress=False)
    assert m.num_samples == 1797 and m.resolution == 32 and m.channels == 3
    assert m.classes == {str(i): i for i in range(10)} and len(m.split_shards("train")) == 16
    first = samples(m)[0]
    assert (
        first["png"].size == (32, 32) and first["png"].mode == "RGB" and first["json"]["width"] == 8
    )


def test_missing_or_unsupported_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shard_dataset(cfg(tmp_path / "nope"), out=str(tmp_path / "o"), progress=False)
    (tmp_path / "x.rar").write_bytes(b"x")
    with pytest.raises(SourceError, match="not a supported input"):
        shard_dataset(cfg(tmp_path / "x.rar"), out=str(tmp_path / "o"), progress=False)
    with pytest.raises(SourceError, match="labels: 'folder'"):
        shard_dataset(cfg("digits", labels="folder"), out=str(tmp_path / "o"), progress=False)
