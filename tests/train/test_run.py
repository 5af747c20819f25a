"""The run folder: its default name, and a new run never landing on an existing one."""

import pytest

from tubelet.errors import UsageError
from tubelet.train.run import check_new_run, default_run_dir
from tubelet.train.state import STATE_FILE


def _checkpoint(run, step=3):
    ckpts = run / "checkpoints" / f"step-{step:07d}"
    ckpts.mkdir(parents=True)
    (ckpts / STATE_FILE).write_text("{}")
    (ckpts.parent / "latest").write_text(ckpts.name + "\n")


def test_default_run_folder_is_the_next_free_one(tmp_path):
    assert default_run_dir("k400", False, tmp_path) == tmp_path / "k400"
    (tmp_path / "k400" / "final").mkdir(parents=True)  # a finished run
    assert default_run_dir("k400", False, tmp_path) == tmp_path / "k400-2"
    _checkpoint(tmp_path / "k400-2")
    assert default_run_dir("k400", False, tmp_path) == tmp_path / "k400-3"
    assert default_run_dir("k400", True, tmp_path) == tmp_path / "k400-2"  # --resume: the last run


def test_a_new_run_does_not_land_on_an_existing_one(tmp_path):
    check_new_run(tmp_path / "run", resume=False)  # nothing there yet
    _checkpoint(tmp_path / "run")
    with pytest.raises(UsageError, match="--resume"):
        check_new_run(tmp_path / "run", resume=False)
    check_new_run(tmp_path / "run", resume=True)
