"""The `tubelet` command's one error path: unknown flags, library errors and exit statuses."""

import pytest

from tubelet.cli import main


def test_an_unknown_flag_names_the_closest_one_in_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--optim.lrr", "0.1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "tubelet train" in err and "--optim.lrr -> --optim.lr" in err


def test_library_errors_are_one_line_with_their_exit_status(capsys, tmp_path):
    assert main(["eval", str(tmp_path / "nothing"), "--data", str(tmp_path)]) == 1  # a run that failed
    err = capsys.readouterr().err
    assert err.startswith("tubelet eval: error:") and "does not exist" in err and "Traceback" not in err
    assert main(["info", "vivit_b16x2", "--model.num-heads", "5"]) == 2  # a configuration: usage
    assert "num_heads" in capsys.readouterr().err
