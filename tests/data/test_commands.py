"""``tubelet data synth`` and ``tubelet data inspect``."""

from __future__ import annotations

from tubelet.cli import main


def test_synth_then_inspect(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["data", "synth", str(out), "--videos-per-class", "1", "--val-videos-per-class", "1",
            "--size", "16", "--frames", "4", "--workers", "1"]
    assert main(args) == 0
    assert "20 videos" in capsys.readouterr().out
    assert main(args) == 2  # the folder exists now
    assert "exists and is not empty" in capsys.readouterr().err
    (out / "train" / "growing" / "t0600099_000000_000001.mp4").write_bytes(b"")
    with open(out / "train.csv", "a") as f:
        f.write("growing,t0600099,0,1,train\n")
    assert main(["data", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: " in text and "(kinetics format), 11 videos, 10 classes" in text
    assert "6 growing: 2" in text and "1 file(s) cannot be decoded" in text
    assert "t0600099_000000_000001.mp4: the file is empty" in text


def test_inspect_reports_bad_annotation_line(tmp_path, capsys):
    (tmp_path / "list.txt").write_text("a.mp4 0\nb.mp4\n")
    assert main(["data", "inspect", str(tmp_path / "list.txt")]) == 2
    assert "list.txt, line 2" in capsys.readouterr().err


def test_synth_flag_defaults_are_the_builtin_dataset():
    """`tubelet data synth` with no flags must write the dataset `tubelet train` uses (same hash)."""
    import dataclasses

    from tubelet.cli import build_parser
    from tubelet.data import SynthConfig

    args = build_parser().parse_args(["data", "synth"])
    for field in dataclasses.fields(SynthConfig):
        if field.name != "crf":  # not a flag
            assert getattr(args, field.name) == field.default, field.name
    args = build_parser().parse_args(["data", "synth", "--event-order"])
    assert args.event_order is True


def test_inspect_root_and_missing_flags(tmp_path, capsys, videos):
    import shutil
    store = tmp_path / "store"
    for cls in ("a", "b"):
        (store / cls).mkdir(parents=True)
        shutil.copy(videos["h264"], store / cls / "v.mp4")
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text("a/v.mp4 a\nb/v.mp4 b\nb/gone.mp4 b\n")
    assert main(["data", "inspect", str(listing), "--root", str(store)]) == 0
    out = capsys.readouterr().out
    assert "2 videos, 2 classes" in out and f"missing: {store / 'b' / 'gone.mp4'}" in out
    assert "0 file(s) cannot be decoded" in out
    assert main(["data", "inspect", str(listing), "--root", str(store), "--missing", "error"]) == 2
    err = capsys.readouterr().err
    assert "train.txt, line 3: video" in err and "--missing skip" in err
