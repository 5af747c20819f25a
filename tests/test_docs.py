"""Every shell command in the README and the docs runs as written.

Each command line of a ``bash`` / ``console`` block is found here. Every ``tubelet`` command (also
under ``torchrun``) is parsed by the real command-line parser, so a renamed or removed flag in the
docs fails; a ``torchrun`` line must also split its batch over its processes. The cheap ones then
run for real in a scratch folder that holds what they name (a tiny run in ``runs/k400``, a video
``clip.mp4``, ...), training ones with small sizes appended. The rest are listed in ``NOT_RUN`` with
the reason; a command that is in neither list fails the test, so a new command in the docs must be
placed in one of them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "experiments").glob("*.md"))]
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 4, "mlp_dim": 32, "temporal_layers": 1}
SMALL_TRAINING = ["--max-steps", "1", "--num-frames", "8", "--image-size", "32", "--frame-stride", "1",
                  "--batch-size", "2", "--workers", "0", "--eval-views", "1", "--eval-crops", "1",
                  "--model-args", json.dumps(TINY)]

# Commands that do not run here, by a pattern of their text, with the reason.
NOT_RUN: list[tuple[str, str]] = [
    (r"^pip install", "installs packages: the README's set-up commands, which CI runs"),
    (r"^python -m pytest", "the test suite itself"),
    (r"^tubelet (train|eval) .*~/(kinetics400|epic|ssv2)|--preset (k400|k600|mit|ek100|ssv2)",
     "needs a downloaded dataset and a GPU (Kinetics, EPIC-KITCHENS, SSv2); its flags are parsed"),
    (r"^torchrun ", "needs 8 GPUs and SSv2; its flags are parsed and its batch is split over its processes "
                    "(tests/train/test_torchrun.py runs torchrun with 2 CPU processes)"),
    (r"^tubelet convert --from (scenic|hf|vit) ",
     "needs released weights (reference, transformers or image ViT) that are not shipped; the conversions "
     "are tested on the reference fixtures in tests/convert"),
    (r"^tubelet (generate|draft) ", "loads SmolLM2-135M (tests/generate runs it); its flags are parsed"),
    (r"--model.decoder smollm2", "trains around SmolLM2-135M, minutes on two cores (tests/train/test_caption.py "
                                 "runs it with a tiny stand-in); its flags are parsed"),
    (r"^tubelet train --init runs/default --data mydata",
     "needs your own videos in mydata/ (tests/train/test_optim.py and the small-data run test the flags)"),
    (r"^python (benchmarks|experiments)/",
     "a benchmark or experiment: tests/benchmarks runs every --quick mode; here the script must exist"),
    (r"'\[--", "a usage line, not a command"),
    (r"^SCRIPT ", "a shell script with loops and variables (a measurement recipe): read, not run"),
    (r"^tubelet serve ", "a server runs until Ctrl-C: tests/serve start it on a free port and talk to it"),
    (r"^curl ", "talks to a running tubelet serve: tests/serve send the same requests"),
]


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) for every command line of the docs' shell blocks, && chains split."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for block in re.finditer(r"```(bash|sh|console|shell)\n(.*?)```", text, re.S):
            lang, body = block.groups()
            line_no = text[:block.start()].count("\n") + 2
            if re.search(r"^\s*(for|while|if) .*(; do|; then)?$", body, re.M):  # a script, not commands
                found.append((f"{path.relative_to(REPO)}:{line_no}", "SCRIPT " + body.splitlines()[0]))
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip()
                if lang == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                words = shlex.split(line, comments=True)
                while words:  # `a && b`: two commands
                    cut = words.index("&&") if "&&" in words else len(words)
                    found.append((f"{path.relative_to(REPO)}:{line_no}", shlex.join(words[:cut])))
                    words = words[cut + 1:]
    return found


def tubelet_argv(command: str) -> list[str] | None:
    """The arguments after `tubelet` (or `torchrun ... -m tubelet`), else None."""
    words = shlex.split(command)
    if words[0] == "tubelet":
        return words[1:]
    if words[0] == "torchrun" and "-m" in words and words[words.index("-m") + 1] == "tubelet":
        return words[words.index("-m") + 2:]
    return None


def not_run_reason(command: str) -> str | None:
    return next((why for pattern, why in NOT_RUN if re.search(pattern, command)), None)


COMMANDS = doc_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) > 20
    assert any(c == "tubelet train" for _, c in COMMANDS)


def is_usage_line(command: str) -> bool:
    return "'[--" in command


@pytest.mark.parametrize("where, command", [c for c in COMMANDS if tubelet_argv(c[1]) is not None
                                            and not is_usage_line(c[1])],
                         ids=lambda x: x if ":" in str(x) else None)
def test_every_tubelet_command_parses(where, command):
    from tubelet.cli import build_parser
    argv = [os.path.expanduser(a) for a in tubelet_argv(command)]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `{command}` does not parse (exit {e.code})")
    if command.startswith("torchrun") and argv[0] == "train":
        from tubelet.config import resolve_config
        from tubelet.train.loop import micro_batch
        procs = int(re.search(r"--nproc_per_node[ =](\d+)", command).group(1))
        cfg = resolve_config(args)
        micro_batch(cfg.optim.batch_size, cfg.optim.micro_batch_size, procs)  # raises if it cannot split


def test_every_script_named_exists():
    for where, command in COMMANDS:
        match = re.match(r"python ((benchmarks|experiments)/\S+\.py)", command)
        if match:
            assert (REPO / match.group(1)).is_file(), f"{where}: {match.group(1)} does not exist"


def run_tubelet(argv: list[str], capsys) -> tuple[int, str]:
    """`tubelet ARGV` in this process (the docs' commands are many: a process each would spend most
    of the test importing torch); (exit status, what it wrote to stderr)."""
    from tubelet.cli import main
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as e:  # argparse
        status = e.code
    return status, capsys.readouterr().err


@pytest.fixture
def workspace(tmp_path, monkeypatch, capsys):
    """A scratch folder holding what the runnable commands name, as the working folder and $HOME."""
    from tubelet.data.synth import SynthConfig, generate
    ws = tmp_path
    data = ws / "tiny"
    generate(data, SynthConfig(videos_per_class=2, val_videos_per_class=1, size=32, frames=8, captions=True),
             progress=False, workers=2)
    (ws / "home").mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("HOME", str(ws / "home"))
    monkeypatch.setenv("TUBELET_CACHE", str(ws / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run = ws / "runs" / "k400"
    status, err = run_tubelet(["train", "--data", str(data), "--out", str(run), *SMALL_TRAINING,
                               "--max-steps", "2", "--checkpoint-every", "1"], capsys)
    assert status == 0, err[-2000:]
    shutil.copytree(run / "final", ws / "k400_b16x2")
    shutil.copytree(run, ws / "runs" / "default")
    clips = sorted((data / "validate").rglob("*.mp4"))
    shutil.copy(clips[0], ws / "clip.mp4")
    shutil.copy(clips[1], ws / "match.mp4")
    shutil.copytree(data / "validate", ws / "videos")
    (ws / "list.txt").write_text("".join(f"{p}\n" for p in clips[:2]))
    return ws, data


# How a runnable command is made small: extra arguments by pattern (first match).
SMALLER: list[tuple[str, list[str]]] = [
    (r"^tubelet data synth", ["--videos-per-class", "2", "--val-videos-per-class", "1", "--size", "32",
                              "--frames", "8"]),
    (r"^tubelet train --out \S+ --resume", []),  # resumes the tiny run as saved
    (r"^tubelet train --task caption", ["DATA", *SMALL_TRAINING, "--out", "runs/caption"]),  # then captioned
    (r"^tubelet train", ["DATA", *SMALL_TRAINING]),
    (r"^tubelet eval .*--data \S+", ["--views", "1", "--crops", "1", "--workers", "0"]),
]


@pytest.mark.slow
def test_the_cheap_commands_run_as_written(workspace, capsys):
    ws, data = workspace
    ran, listed = [], []
    for where, command in COMMANDS:
        if command in ran:  # the same command in several places runs once
            continue
        why = not_run_reason(command)
        if why is not None:
            listed.append((command, why))
            continue
        argv = shlex.split(command)
        if argv[0] != "tubelet":
            pytest.fail(f"{where}: `{command}` is neither run here nor listed in NOT_RUN with a reason")
        extra = next((e for pattern, e in SMALLER if re.search(pattern, command)), [])
        if "DATA" in extra:
            extra = ["--data", str(data), *extra[1:]]
            if "--out" not in argv and "--out" not in extra:
                extra += ["--out", str(ws / "runs" / f"doc-{len(ran)}")]
        if "--data" in argv and argv[0:2] == ["tubelet", "eval"]:
            argv[argv.index("--data") + 1] = str(data)
        status, err = run_tubelet([*argv[1:], *extra], capsys)
        assert status == 0, f"{where}: `{command}` failed:\n{err[-2000:]}"
        ran.append(command)
    print(f"\nran {len(ran)} command(s) of the docs; not run here:")
    for command, why in listed:
        print(f"  {command[:90]}: {why}")
    assert any(c.startswith("tubelet train") for c in ran) and any(c.startswith("tubelet info") for c in ran)
    # what the commands were to make is there
    assert (ws / "data" / "motion" / "train.csv").is_file()  # tubelet data synth
    assert (ws / "data" / "captioned" / "captions.csv").is_file()  # tubelet data synth --captions
    assert (ws / "for_transformers" / "config.json").is_file() and (ws / "k400_gqa4" / "config.json").is_file()
    assert any((ws / "default-onnx").iterdir()) and any((ws / "default-ep").iterdir())  # tubelet export
    assert (ws / "runs" / "caption" / "final" / "config.json").is_file()  # tubelet train --task caption
    assert (ws / "maps" / "clip.png").is_file() and (ws / "maps" / "clip.mp4").is_file()  # predict --explain
