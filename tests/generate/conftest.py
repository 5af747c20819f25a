"""Fixtures of the generation tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is fastest, and immune to a busy machine stalling an
    OpenMP region (seen: 10 ms for a (1, 6, 5) softmax with 2 threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
