"""Issue #16 deploy faults, reproduced the way users hit them: temp copies left by models:/
loads, unbounded --seeds, outputs unreadable to others (0600), and pyfunc code that changed."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from deploy import registry
from deploy.generator import load_generator
from pipeline.cli import main
from tests.unit.deploy.conftest import make_export


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    """Two umasks, so a writer that hard-codes 0644 fails one of them."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def generate(model, *args: str) -> int:
    return main(["generate", "--model", str(model), *args])


def test_models_uri_loads_share_one_cache_entry_per_version(
    tmp_path, tracking_uri, model_cache, monkeypatch
):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    first = make_export(tmp_path / "a", seed=3)
    registry.register_export(
        first, model_name="cached", alias="champion", tracking_uri=tracking_uri
    )
    for ref in ("models:/cached@champion", "models:/cached/1", "models:/cached@champion"):
        load_generator(ref, tracking_uri=tracking_uri)
    for _ in range(3):
        out = ("--seeds", "0-1", "--out", str(tmp_path / "g.png"), "--tracking-uri", tracking_uri)
        assert generate("models:/cached@champion", *out) == 0
    assert list((tmp_path / "tmp").glob("ganforge-model-*")) == []
    entries = [p for p in model_cache.iterdir() if p.name.startswith("cached-")]
    assert [p.name.split("-")[1] for p in entries] == ["v1"]
    # Moving the alias to a new version loads (and caches) that version, not the stale copy.
    second = make_export(tmp_path / "b", seed=4)
    registry.register_export(
        second, model_name="cached", alias="champion", tracking_uri=tracking_uri
    )
    loaded = load_generator("models:/cached@champion", tracking_uri=tracking_uri)
    np.testing.assert_array_equal(loaded.generate([0]), load_generator(second).generate([0]))
    assert sorted(
        p.name.split("-")[1] for p in model_cache.iterdir() if p.name.startswith("cached-")
    ) == ["v1", "v2"]
    assert not list(model_cache.glob(".tmp-*"))


def test_generate_seeds_cap_is_a_clear_error(export_uncond, tmp_path, capsys):
    out = str(tmp_path / "g.png")
    code = generate(export_uncond, "--seeds", "0-100000000", "--out", out)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not Path(out).exists()
    assert len(err.splitlines()) == 1 and "100000001 seeds requested; at most 10000" in err
    assert "--max-seeds" in err
    assert generate(export_uncond, "--seeds", "0-20", "--max-seeds", "8", "--out", out) == 2
    assert generate(export_uncond, "--seeds", "0-20", "--max-seeds", "21", "--out", out) == 0


def test_outputs_get_the_umask_mode_not_0600(export_uncond, tmp_path, umask):
    grid, folder, gif = tmp_path / "grid.png", tmp_path / "separate", tmp_path / "walk.gif"
    assert generate(export_uncond, "--seeds", "0-3", "--out", str(grid)) == 0
    assert generate(export_uncond, "--seeds", "0-1", "--separate", "--out", str(folder)) == 0
    walk = ("--seeds", "0-1", "--interpolate", "--frames", "2", "--out", str(gif))
    assert generate(export_uncond, *walk) == 0
    export = make_export(tmp_path / "export")
    torchscript = ("--format", "torchscript", "--out", str(tmp_path / "g.pt"))
    assert main(["export", "--model", str(export_uncond), *torchscript]) == 0
    files = [grid, gif, *folder.iterdir(), *export.iterdir(), tmp_path / "g.pt"]
    expected = oct(0o666 & ~umask)
    assert {f.name: oct(_mode(f)) for f in files} == {f.name: expected for f in files}


@pytest.mark.parametrize("edited", ["pyfunc_model.py", "layers.py"])
def test_pyfunc_code_hash_is_tagged_and_a_change_is_detected(tmp_path, tracking_uri, edited):
    from mlflow.tracking import MlflowClient

    export = make_export(tmp_path / "e", seed=7)
    name = f"hashed-{Path(edited).stem}"  # the store is shared by the session
    info = registry.register_export(export, model_name=name, tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tag = client.get_model_version(name, info.version).tags["code_sha256"]
    assert len(tag) == 64
    assert registry.verify_model_code(f"models:/{name}/1", tracking_uri=tracking_uri) == tag
    # Someone with write access to the artifact store edits the stored wrapper, or a vendored
    # network file under code/ (which the wrapper imports).
    store = Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
    stored = [p for p in store.rglob(edited) if info.model_uri.split("/")[-1] in str(p)]
    assert len(stored) == 1
    stored[0].write_text(stored[0].read_text() + "\nimport os  # injected\n")
    with pytest.raises(registry.RegistryError, match="code changed since registration"):
        registry.verify_model_code(f"models:/{name}/1", tracking_uri=tracking_uri)
    # The safe path reads only JSON + safetensors: unaffected by the stored code.
    np.testing.assert_array_equal(
        load_generator(f"models:/{name}/1", tracking_uri=tracking_uri).generate([1]),
        load_generator(export).generate([1]),
    )


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_config(**changes):
    def edit(path: Path) -> None:
        config = json.loads(path.read_text())
        config.update(changes)
        if "z_dim" in changes:  # a generator of another shape than the weights
            config["kwargs"]["z_dim"] = changes["z_dim"]
        path.write_text(json.dumps(config))

    return edit


@pytest.mark.parametrize(
    "name,damage,message",
    [
        ("weights.safetensors", _truncate, "weights.safetensors: not a readable safetensors file"),
        ("generator.json", lambda p: p.write_text("{bad"), "generator.json: not valid JSON"),
        ("generator.json", _edit_config(resolution=None), "resolution: expected int, got None"),
        ("generator.json", _edit_config(family="nope"), "unknown model family 'nope'"),
        ("generator.json", _edit_config(z_dim=64), "weights.safetensors: does not fit the"),
    ],
)
def test_damaged_export_is_a_one_line_error_naming_the_file(
    tmp_path, capsys, name, damage, message
):
    export = make_export(tmp_path / "export")
    damage(export / name)
    code = generate(export, "--seeds", "0", "--out", str(tmp_path / "g.png"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err[-500:]
    assert str(export) in err and message in err
