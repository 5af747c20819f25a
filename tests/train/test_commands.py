"""`tubelet train / eval / predict` as a user runs them: classes by name, resume, errors, JSON."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tubelet.checkpoint import load_model
from tubelet.train.loop import micro_batch

from .conftest import REPO, TINY_MODEL, losses, run_tubelet, train_args


def strict_json(text: str):
    """JSON as the standard has it: NaN / Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    done = run_tubelet(train_args(tiny_data, run, "--max-steps", "8"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return run


def _without_class(tiny_data, tmp_path, drop: str):
    """The validation videos as class folders and as the dataset's CSV, both lacking class ``drop``."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shutil.rmtree(data / "validate" / drop)
    (data / "classes.txt").unlink()  # the data names only the classes it has
    rows = list(csv.reader((data / "validate.csv").open()))
    with (data / "validate.csv").open("w", newline="") as f:
        csv.writer(f).writerows([r for r in rows if r[0] != drop])
    return data / "validate", data / "validate.csv"


def test_eval_matches_classes_by_name_and_agrees_with_predict(trained, tiny_data, tmp_path):
    """Show 2: a validation folder lacking one class and a CSV of the same videos give the top-1 of
    counting predict's answers (eval used to number the classes from the data)."""
    classes = (tiny_data / "classes.txt").read_text().splitlines()
    drop = classes[0]
    folder, table = _without_class(tiny_data, tmp_path, drop)
    common = ("--views", "1", "--crops", "1")
    out = run_tubelet(["predict", str(trained), str(folder), "--json", "--top-k", "1", *common], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    answers = strict_json(out.stdout)
    right = sum(a["heads"][0]["top"][0]["label"] == os.path.basename(os.path.dirname(a["video"])) for a in answers)
    expected = right / len(answers)
    for data in (folder, table):
        ev = run_tubelet(["eval", str(trained), "--data", str(data), "--json", "--workers", "0", *common],
                         timeout=300)
        assert ev.returncode == 0, ev.stderr[-2000:]
        metrics = strict_json(ev.stdout)  # also: valid JSON although a class has no video (NaN recall)
        assert metrics["count"] == len(answers)
        assert metrics["top1"] == pytest.approx(expected), (data, metrics["top1"], expected)
        assert metrics["absent_classes"] == [drop]


def test_eval_refuses_a_class_the_model_does_not_know(trained, tiny_data, tmp_path):
    data = tmp_path / "val"
    shutil.copytree(tiny_data / "validate", data)
    (data / "moving left").rename(data / "jumping")
    ev = run_tubelet(["eval", str(trained), "--data", str(data), "--views", "1", "--crops", "1"], timeout=300)
    assert ev.returncode == 1 and "'jumping'" in ev.stderr and "Traceback" not in ev.stderr


def test_final_model_describes_itself(trained, tiny_data):
    model = load_model(trained)  # a run folder is a model
    names = tuple((tiny_data / "classes.txt").read_text().splitlines())
    assert model.info.class_names == (names,)
    assert model.info.preprocessing.num_frames == 8 and model.info.preprocessing.frame_stride == 1
    assert model.info.provenance["steps"] == 8 and "top1" in model.info.provenance["metrics"]
    assert not (trained / "final" / "classes.json").exists()


def test_sigint_then_resume_finishes_the_recipe_with_the_uninterrupted_losses(tiny_data, tmp_path):
    """Show 3: `tubelet train --out RUN --resume` alone continues the saved recipe; config.yaml unchanged."""
    common = ("--max-steps", "14", "--checkpoint-every", "100", "--optimizer", "sgd", "--lr", "0.05")
    straight = run_tubelet(train_args(tiny_data, tmp_path / "straight", *common), timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = losses(tmp_path / "straight")

    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tubelet", *train_args(tiny_data, run, *common)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and max(losses(run), default=0) >= 3:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    stopped = max(losses(run))
    assert 3 <= stopped < 14
    config = (run / "config.yaml").read_text()

    resumed = run_tubelet(["train", "--out", str(run), "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "config.yaml").read_text() == config
    got = losses(run)
    assert sorted(got) == list(range(1, 15))
    for step in got:
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step


def test_resume_refuses_to_change_the_recipe(trained):
    before = (trained / "config.yaml").read_text()
    out = run_tubelet(["train", "--out", str(trained), "--resume", "--lr", "0.5"], timeout=300)
    assert out.returncode == 2 and "optim.lr" in out.stderr and "Traceback" not in out.stderr
    assert (trained / "config.yaml").read_text() == before


def test_micro_batch_defaults_to_the_global_batch_over_the_processes():
    """The README's `torchrun --nproc_per_node 8 ... --preset ssv2` (batch 64) used to fail."""
    assert micro_batch(64, None, 8) == 8 and micro_batch(64, None, 1) == 64
    assert micro_batch(64, 4, 2) == 4  # 8 accumulation steps
    with pytest.raises(Exception, match="multiple of micro_batch_size=3"):
        micro_batch(64, 3, 2)


def test_model_args_may_set_the_frame_count(tiny_data, tmp_path):
    """`--model-args '{"num_frames": 4}'` used to crash (the frame count was passed twice)."""
    args = train_args(tiny_data, tmp_path / "run", "--max-steps", "1")
    i = args.index("--model-args")
    args[i + 1] = json.dumps({**TINY_MODEL, "num_frames": 4})
    args[args.index("--num-frames"):args.index("--num-frames") + 2] = []
    out = run_tubelet(args, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert load_model(tmp_path / "run").config.num_frames == 4


@pytest.mark.parametrize("argv, status, words", [
    (["--lr", "-1"], 2, "optim.lr=-1.0 must be greater than 0"),
    (["--num-frames", "0"], 2, "num_frames=0 must be at least 1"),
    (["--model-args", '{"num_head": 2}'], 2, "did you mean 'model.num_heads'"),
])
def test_bad_values_are_one_line_errors(tiny_data, tmp_path, argv, status, words):
    out = run_tubelet(train_args(tiny_data, tmp_path / "run", "--max-steps", "1") + argv, timeout=300)
    assert out.returncode == status and words in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


def test_a_yaml_syntax_error_is_one_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("optim:\n  lr: [0.1\n")
    out = run_tubelet(["train", "--config", str(bad)], timeout=120)
    assert out.returncode == 2 and "not valid YAML" in out.stderr and "Traceback" not in out.stderr


def test_a_non_square_model_trains_evaluates_and_predicts(tiny_data, tmp_path):
    """`image_size[0]` used to be all that reached the data: a 32x48 model could not be trained."""
    args = train_args(tiny_data, tmp_path / "run", "--max-steps", "2")
    args[args.index("--image-size") + 1] = "32x48"
    out = run_tubelet(args, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    model = load_model(tmp_path / "run")
    assert model.config.image_size == (32, 48) and model.info.preprocessing.image_size == (32, 48)
    video = next((tiny_data / "validate").rglob("*.mp4"))
    pred = run_tubelet(["predict", str(tmp_path / "run"), str(video), "--json", "--crops", "3"], timeout=300)
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert len(strict_json(pred.stdout)[0]["heads"][0]["top"]) == 5


def test_init_keeps_the_head_only_for_the_same_class_names(trained):
    """`--init` with the same number of classes but other names gets a new head."""
    import torch

    from tubelet.config import preset
    from tubelet.train.init import initialise

    source = load_model(trained)
    names = source.info.class_names
    cfg = preset("default").with_values({"model.init": str(trained)})
    logs: list[str] = []
    same, _ = initialise(cfg, num_classes=len(names[0]), class_names=names, log=logs.append)
    assert torch.equal(same.head.weight, source.head.weight) and not logs
    renamed = (tuple(f"{n} (other)" for n in names[0]),)
    other, _ = initialise(cfg, num_classes=len(names[0]), class_names=renamed, log=logs.append)
    assert not torch.equal(other.head.weight, source.head.weight)
    assert any("new classifier head" in line for line in logs)
