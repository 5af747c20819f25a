"""Shared test fixtures: the reference outputs and real video files kept in tests/fixtures/."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _require(path: Path) -> Path:
    if not path.exists():  # only a broken checkout gets here: the fixtures are part of the repository
        pytest.fail(f"{path} is missing: the fixtures are committed under tests/fixtures/; restore them "
                    "with `git checkout -- tests/fixtures`")
    return path


@pytest.fixture(scope="session")
def scenic_fixtures() -> Path:
    """Folder of the reference ViViT outputs (NAME.json + NAME.npz + NAME.msgpack)."""
    return _require(FIXTURES / "scenic_vivit")


@pytest.fixture(scope="session")
def video_fixtures() -> Path:
    """Folder of real video files (tree.avi, Megamind_bugy.avi, cup.mp4)."""
    return _require(FIXTURES / "videos")
