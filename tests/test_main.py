"""The CLI: config files with ':arg', overrides, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from cvjax.configs import parse_arg
from cvjax.errors import UserError
from tests.conftest import REPO


def run_main(*args, workdir):
    return subprocess.run(
        [sys.executable, "-m", "cvjax.main", f"--workdir={workdir}", *args],
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_config_arg_and_overrides_reach_the_resolved_config(tmp_path):
    run = run_main(
        "--config=configs/resnet.py:model=resnet8,dataset=digits,epochs=1",
        "--config.batch_size=64",
        "--config.augment.flip=False",
        "--config.optimizer.name=nesterov",
        workdir=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    assert (config["model"], config["dataset"], config["num_epochs"]) == ("resnet8", "digits", 1)
    assert config["batch_size"] == 64 and config["optimizer"]["name"] == "nesterov"
    assert config["augment"]["flip"] is False
    assert "eval/accuracy" in run.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.model=resnet_20"], "error: unknown model 'resnet_20'; did you mean resnet20"),
        (["--config.dataset=digitz"], "error: unknown dataset 'digitz'; did you mean digits"),
        (["--config.optimizer.name=adamm"], "error: unknown optimizer 'adamm'; did you mean adam"),
        (["--config.eval_every=often"], "error: eval_every='often' is not an interval"),
        (["--mode=eval"], "error: no checkpoint in"),
    ],
)
def test_bad_input_ends_in_one_line(tmp_path, args, message):
    run = run_main(
        "--config=configs/quickstart.py", "--config.num_epochs=1", *args, workdir=tmp_path
    )
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(message), run.stderr[-2000:]
    assert "Traceback" not in run.stderr


def test_unknown_config_key_is_rejected(tmp_path):
    run = run_main("--config=configs/quickstart.py", "--config.num_epoch=3", workdir=tmp_path)
    assert run.returncode != 0
    assert "num_epoch" in run.stderr


def test_parse_arg():
    arg = parse_arg("model=resnet50,epochs=2", model="resnet20", epochs=0.0, ema=False)
    assert (arg.model, arg.epochs, arg.ema) == ("resnet50", 2.0, False)
    with pytest.raises(UserError, match="bad config argument"):
        parse_arg("modle=x", model="resnet20")
