"""Fixtures of tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest
from .video_helpers import CODECS, write_video


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """One small video per codec, written once per session."""
    folder = tmp_path_factory.mktemp("videos")
    return {codec: write_video(folder / f"clip_{codec}", codec) for codec in CODECS}
