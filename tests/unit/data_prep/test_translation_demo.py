"""The built-in translation demo data: two disjoint domains rendered from bundled photos."""

from __future__ import annotations

import numpy as np
from PIL import Image

from data_prep.translation_demo import (
    colour_distance,
    demo_crops,
    grade,
    ungrade,
    write_demo_domains,
)


def test_grade_is_invertible_and_changes_the_colours():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    back = ungrade(grade(rgb)).astype(int)
    assert np.abs(back - rgb).max() <= 3  # rounding of the gamma only
    assert np.abs(grade(rgb).astype(int) - rgb).mean() > 40
    # channel rotation: a pure red pixel becomes a pure blue one
    assert grade(np.array([255, 0, 0], np.uint8)).tolist() == [0, 0, 255]


def test_domains_are_disjoint_halves_with_different_colour_statistics():
    a, b = demo_crops(size=16, per_cell=1, seed=0)
    assert len(a) == len(b) == 2 * 8 * 12 // 2
    a, b = np.stack(a), np.stack(b)
    graded_a = np.stack([grade(x) for x in a])
    # the style is what separates the domains: grading A lands next to B
    assert colour_distance(a, b) > 0.15
    assert colour_distance(graded_a, b) < colour_distance(a, b) / 5
    # disjoint regions: no B image is the graded version of an A image
    diffs = np.abs(graded_a[:, None].astype(int) - b[None].astype(int)).mean(axis=(2, 3, 4))
    assert diffs.min() > 0.5


def test_write_demo_domains_is_deterministic_and_reused(tmp_path):
    dir_a, dir_b = write_demo_domains(tmp_path / "demo", size=16, per_cell=1, seed=3)
    files = sorted(p.name for p in dir_a.glob("*.png"))
    assert len(files) == 96 and len(list(dir_b.glob("*.png"))) == 96
    first = np.asarray(Image.open(dir_b / files[5]))
    assert first.shape == (16, 16, 3)
    stamp = (dir_a / files[0]).stat().st_mtime_ns
    write_demo_domains(tmp_path / "demo", size=16, per_cell=1, seed=3)
    assert (dir_a / files[0]).stat().st_mtime_ns == stamp  # reused, not rewritten
    other, _ = write_demo_domains(tmp_path / "other", size=16, per_cell=1, seed=3)
    assert np.array_equal(
        np.asarray(Image.open(other / files[0])), np.asarray(Image.open(dir_a / files[0]))
    )
