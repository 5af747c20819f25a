"""`tubelet serve`'s command line: its flags, and what a missing extra or a bad value says."""

from __future__ import annotations

import sys

import pytest

from tubelet.cli import main


def test_every_flag_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--max-upload-mb", "--queue", "--batch", "--device", "--top-k"):
        assert flag in out
    assert "127.0.0.1" in out and "tubelet[serve]" in out


def test_a_missing_extra_says_how_to_install_it(monkeypatch, capsys, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert main(["serve", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tubelet serve: error:") and "pip install 'tubelet[serve]'" in err and "uvicorn" in err


def test_bad_values_are_usage_errors(capsys, tiny_checkpoint, tmp_path):
    assert main(["serve", str(tiny_checkpoint), "--queue", "0"]) == 2
    assert "--queue 0 must be at least 1" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err
