"""Reading Flax msgpack files without JAX: arrays as extension type 1, trees in several layouts."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from tubelet.convert.msgpack_io import read_flax_params, read_msgpack
from tubelet.errors import CheckpointError


def _ext(a: np.ndarray) -> msgpack.ExtType:  # what flax.serialization writes for an ndarray
    return msgpack.ExtType(1, msgpack.packb((list(a.shape), a.dtype.name, a.tobytes())))


def _write(path, tree):
    def enc(t):
        return {k: enc(v) for k, v in t.items()} if isinstance(t, dict) else _ext(t)
    path.write_bytes(msgpack.packb(enc(tree)))
    return path


PARAMS = {"embedding": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                        "bias": np.array([1.5, -2.0], dtype=np.float32)}}


@pytest.mark.parametrize("layout", ["optimizer_target", "params", "plain"])
def test_params_found_in_every_layout(tmp_path, layout):
    tree = {"optimizer_target": {"optimizer": {"target": PARAMS, "state": {"step": np.int64(3)}}},
            "params": {"params": PARAMS, "step": np.int64(3)},
            "plain": PARAMS}[layout]
    params = read_flax_params(_write(tmp_path / "ckpt.msgpack", tree))
    np.testing.assert_array_equal(params["embedding"]["kernel"], PARAMS["embedding"]["kernel"])
    assert params["embedding"]["bias"].dtype == np.float32
    params["embedding"]["bias"][0] = 0.0  # arrays are writable copies


def test_fixture_has_released_checkpoint_layout(scenic_fixtures):
    tree = read_msgpack(scenic_fixtures / "model1_spatiotemporal_token.msgpack")
    assert set(tree["optimizer"]) == {"target", "state"}
    assert tree["optimizer"]["target"]["embedding"]["kernel"].shape == (2, 8, 8, 3, 32)


def test_not_a_msgpack_file_is_named(tmp_path):
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\xc1 not msgpack")
    with pytest.raises(CheckpointError, match="bad.msgpack"):
        read_msgpack(bad)
