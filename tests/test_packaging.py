"""What the wheel ships: the package data globs of pyproject.toml, and their size."""
from __future__ import annotations

import tomllib
from pathlib import Path

from audioembed import registry

ROOT = Path(__file__).resolve().parent.parent
WHEEL_LIMIT_BYTES = 100 * 10**6  # PyPI's default limit for one file


def packaged_data() -> list[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["audioembed"]
    return sorted({p for pattern in globs for p in (ROOT / "audioembed").glob(pattern)})


def test_the_package_data_fits_in_a_wheel():
    size = sum(p.stat().st_size for p in packaged_data())
    assert 0 < size < WHEEL_LIMIT_BYTES - 2 * 10**6, size  # 2 MB left for the code (~0.4 MB)


def test_every_bundled_release_is_in_the_package_data_and_nothing_else_is():
    shipped = {p.parent.name for p in packaged_data() if p.name == "model.safetensors"}
    bundled = {m.bundled for m in registry.released() if m.bundled is not None}
    assert shipped == bundled
