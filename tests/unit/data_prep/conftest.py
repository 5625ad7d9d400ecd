"""Fixtures for the data_prep tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from prep_helpers import image_bytes, write


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """cats/ and dogs/ with 3 + 2 small PNG/JPEG images (one nested a level deeper)."""
    root = tmp_path / "images"
    write(root / "cats" / "a.png", image_bytes(seed=1))
    write(root / "cats" / "b.jpg", image_bytes(seed=2, fmt="JPEG"))
    write(root / "cats" / "deep" / "c.png", image_bytes(seed=3))
    write(root / "dogs" / "d.png", image_bytes(seed=4))
    write(root / "dogs" / "e.png", image_bytes(seed=5))
    return root
