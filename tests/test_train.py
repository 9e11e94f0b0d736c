"""The training engine end to end on real (digits) data: outputs, resume, eval-only, parallelism."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cvjax.errors import UserError
from cvjax.train import loop
from cvjax.train import steps as steps_lib
from tests.conftest import REPO, tiny_config


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_parse_interval():
    assert loop.parse_interval("2ep", 50, "k") == 100
    assert loop.parse_interval("30steps", 50, "k") == 30
    assert loop.parse_interval(1, 50, "k") == 50
    assert loop.parse_interval("0", 50, "k") == 0
    with pytest.raises(UserError, match="write e.g. '1ep'"):
        loop.parse_interval("often", 50, "eval_every")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    result = loop.train_and_evaluate(tiny_config(), workdir)
    return workdir, result


def test_training_writes_metrics_tensorboard_config_and_checkpoints(trained):
    workdir, result = trained
    records = read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/accuracy" in r]
    assert {"train/loss", "train/accuracy", "train/images_per_sec"} <= set(train[0])
    assert {"eval/loss", "eval/accuracy", "eval/top5_accuracy"} <= set(evals[-1])
    steps_per_epoch = 1437 // 32
    assert [r["step"] for r in evals] == [steps_per_epoch, 2 * steps_per_epoch]
    assert 0.0 <= evals[-1]["eval/accuracy"] <= 1.0
    assert evals[-1]["eval/accuracy"] > 0.5  # Two epochs of ResNet-8 learn digits well past chance.
    assert evals[-1]["eval/top5_accuracy"] >= evals[-1]["eval/accuracy"]
    assert result["eval/accuracy"] == evals[-1]["eval/accuracy"]
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"] == "resnet8"
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        str(steps_per_epoch),
        str(2 * steps_per_epoch),
    ]


def test_eval_only_mode_reproduces_the_final_eval(trained):
    workdir, result = trained
    latest = loop.evaluate_checkpoint(tiny_config(), workdir, "latest")
    assert latest["eval/accuracy"] == result["eval/accuracy"]
    first = loop.evaluate_checkpoint(tiny_config(), workdir, str(1437 // 32))
    assert first["step"] == 1437 // 32
    best = loop.evaluate_checkpoint(tiny_config(), workdir, "best")
    assert best["eval/accuracy"] == max(first["eval/accuracy"], latest["eval/accuracy"])
    assert os.path.exists(os.path.join(workdir, f"eval_step{latest['step']}.json"))
    with pytest.raises(UserError, match="saved steps"):
        loop.evaluate_checkpoint(tiny_config(), workdir, "7")


def test_rerun_of_a_finished_run_trains_nothing_more(trained):
    workdir, result = trained
    before = len(read_metrics(workdir))
    again = loop.train_and_evaluate(tiny_config(), workdir)
    assert again["eval/accuracy"] == result["eval/accuracy"]
    assert len(read_metrics(workdir)) == before


def test_a_different_model_in_the_same_workdir_is_refused(trained):
    workdir, _ = trained
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    with pytest.raises(UserError, match="holds a run with model='resnet8', not 'resnet20'"):
        loop.train_and_evaluate(tiny_config(model="resnet20"), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_half_precision_trains_with_float32_params_and_statistics(tmp_path):
    result = loop.train_and_evaluate(tiny_config(half_precision=True), str(tmp_path))
    assert result["eval/accuracy"] > 0.5
    from cvjax.train.checkpoint import Checkpoints

    exp = loop.Experiment(tiny_config(half_precision=True), str(tmp_path))
    state = Checkpoints(str(tmp_path / "checkpoints")).restore(exp.initial_state())
    dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.batch_stats))}
    assert dtypes == {np.dtype(np.float32)}


def test_overfits_one_batch():
    config = tiny_config(
        **{
            "batch_size": 16,
            "learning_rate": 0.05,
            "weight_decay": 0.0,
            "schedule.name": "constant",
            "augment.crop_padding": 0,
        }
    )
    from cvjax import data, models, optim
    from cvjax.train.state import create_train_state

    ds = data.load("digits", "train")
    images, labels = ds.images[:16], ds.labels[:16]
    mesh = steps_lib.create_mesh()
    model = models.create("resnet8", num_classes=10, in_channels=1)
    tx, _ = optim.create_optimizer(config, steps_per_epoch=1)
    cfg = steps_lib.StepConfig(batch_size=16, steps_per_epoch=1, mean=(100.0,), std=(100.0,))
    step = steps_lib.make_train_step(model, tx, cfg, mesh)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), (1, 8, 8, 1))
    perm = np.arange(16)
    for _ in range(60):
        state, sums = step(state, images, labels, perm)
    assert float(sums["accuracy"]) == 16
    assert float(sums["loss"]) / 16 < 0.1


def test_corrupt_newest_checkpoint_is_moved_aside_and_the_previous_used(tmp_path):
    workdir = str(tmp_path)
    loop.train_and_evaluate(tiny_config(num_epochs=1), workdir)
    ckpts = os.path.join(workdir, "checkpoints")
    newest = max(int(s) for s in os.listdir(ckpts) if s.isdigit())
    loop.train_and_evaluate(tiny_config(), workdir)
    latest = max(int(s) for s in os.listdir(ckpts) if s.isdigit())
    assert latest == 2 * newest
    # Damage every data file of the newest step.
    for root, _, files in os.walk(os.path.join(ckpts, str(latest))):
        for name in files:
            if not name.startswith("_") and "metadata" not in name:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    result = loop.evaluate_checkpoint(tiny_config(), workdir, "latest")
    assert result["step"] == newest
    assert os.path.isdir(os.path.join(ckpts, f"corrupt-{latest}"))


def test_kill_and_resume_gives_bitwise_identical_results(tmp_path):
    """SIGKILL a run after its first checkpoint; the rerun ends exactly as an uninterrupted one."""
    overrides = [
        "--config.model=resnet8",
        "--config.dataset=digits",
        "--config.num_epochs=20",
        "--config.batch_size=32",
        "--config.eval_every=5ep",
        "--config.checkpoint_every=1ep",
        "--config.augment.flip=False",
        "--config.log_every_steps=20",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")

    def command(workdir):
        return [
            sys.executable,
            "-m",
            "cvjax.main",
            "--config=configs/quickstart.py",
            f"--workdir={workdir}",
            f"--compilation_cache={tmp_path / 'cache'}",
            *overrides,
        ]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    ckpts = killed / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            break
        time.sleep(0.02)
    time.sleep(0.3)  # Land the kill mid-run, maybe mid-save.
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = subprocess.run(
        command(tmp_path / "straight"), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert resumed.stdout.strip().splitlines()[-1] == straight.stdout.strip().splitlines()[-1]
    final = lambda w: [r for r in read_metrics(w) if "eval/loss" in r][-1]  # noqa: E731
    assert final(killed) == final(tmp_path / "straight")
    assert "resumed from step" in resumed.stderr


_PARALLEL_SCRIPT = """
import sys, numpy as np, jax
from cvjax import data, models, optim
from cvjax.train import steps as steps_lib
from cvjax.train.state import create_train_state
from tests.conftest import tiny_config
config = tiny_config(**{"optimizer.name": "sgd", "learning_rate": 1.0, "weight_decay": 0.0,
                        "schedule.name": "constant"})
ds = data.load("digits", "train")
mesh = steps_lib.create_mesh()
model = models.create("resnet8", num_classes=10, in_channels=1)
tx, _ = optim.create_optimizer(config, steps_per_epoch=4)
cfg = steps_lib.StepConfig(batch_size=32, steps_per_epoch=4, mean=(100.0,), std=(100.0,),
                           crop_padding=1)
step = steps_lib.make_train_step(model, tx, cfg, mesh)
state = create_train_state(model, tx, jax.random.PRNGKey(0), (1, 8, 8, 1))
params0 = jax.tree.map(np.asarray, state.params)
put = lambda a: steps_lib.put_replicated(a, mesh)
state, sums = step(state, put(ds.images[:128]), put(ds.labels[:128]), put(np.arange(128)))
# With plain SGD at lr 1, params0 - params1 is the gradient.
grads = jax.tree.map(lambda a, b: a - np.asarray(b), params0, state.params)
flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(grads)}
stats = {jax.tree_util.keystr(k): np.asarray(v)
         for k, v in jax.tree_util.tree_leaves_with_path(state.batch_stats)}
np.savez(sys.argv[1], loss=float(sums["loss"]), devices=mesh.size,
         **{"g" + k: v for k, v in flat.items()}, **{"s" + k: v for k, v in stats.items()})
"""


def why(stderr: str) -> str:
    """A failed run's stderr, less Python's list of loaded extension modules (after a crash)."""
    kept = [line for line in stderr.splitlines() if not line.startswith("Extension modules:")]
    return "\n".join(kept)[-3000:]


def test_eight_simulated_devices_match_one(tmp_path):
    results = {}
    for devices in (1, 8):
        out = tmp_path / f"d{devices}.npz"
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        )
        run = subprocess.run(
            [sys.executable, "-c", _PARALLEL_SCRIPT, str(out)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, why(run.stderr)
        results[devices] = dict(np.load(out))
    one, eight = results[1], results[8]
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    np.testing.assert_allclose(one["loss"], eight["loss"], rtol=1e-5)
    keys = [k for k in one if k.startswith(("g", "s"))]
    assert len(keys) > 10
    for key in keys:
        np.testing.assert_allclose(one[key], eight[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_batch_size_not_divisible_by_devices_is_a_clear_error(tmp_path):
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvjax.main",
            "--config=configs/quickstart.py",
            f"--workdir={tmp_path}",
            "--config.batch_size=60",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "error: batch_size=60 is not divisible by the 8 devices; set --config.batch_size to a "
        "multiple of 8"
    )


def test_streamed_folder_run_matches_the_in_memory_run(tmp_path):
    """Streaming reads the same examples in the same order: the results agree with memory."""
    from PIL import Image

    from cvjax import data

    root = tmp_path / "digits"
    for split in ("train", "test"):
        ds = data.load("digits", split)
        for i, (image, label) in enumerate(zip(ds.images, ds.labels, strict=True)):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(folder / f"{i:04d}.png")
    overrides = {"dataset": f"folder:{root}", "num_epochs": 1, "eval_every": "0"}
    in_memory = loop.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "memory"))
    streamed = loop.train_and_evaluate(
        tiny_config(stream=True, **overrides), str(tmp_path / "stream")
    )
    assert streamed.keys() == in_memory.keys()
    for key, value in in_memory.items():
        np.testing.assert_allclose(streamed[key], value, rtol=1e-5, err_msg=key)
    with pytest.raises(UserError, match="streaming reads folder:<path> and tfds:<name> datasets"):
        loop.train_and_evaluate(tiny_config(stream=True), str(tmp_path / "digits_stream"))


def test_two_processes_match_one_process_with_two_devices(tmp_path):
    """Multi-host data parallelism: 2 processes x 1 CPU device == 1 process x 2 devices."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [
        sys.executable, "-m", "cvjax.main", "--config=configs/quickstart.py",
        "--config.model=resnet8", "--config.num_epochs=1", "--config.batch_size=32",
        "--config.eval_every=1ep", f"--compilation_cache={tmp_path / 'cache'}",
    ]  # fmt: skip

    def env(devices):
        return dict(
            os.environ, JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        )  # fmt: skip

    multi = [
        subprocess.Popen(
            [
                *base,
                f"--workdir={tmp_path / 'multi'}",
                "--multihost",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=REPO,
            env=env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in multi]
    for p, (_, err) in zip(multi, outputs, strict=True):
        assert p.returncode == 0, why(err)
    single = subprocess.run(
        [*base, f"--workdir={tmp_path / 'single'}"], cwd=REPO, env=env(2), capture_output=True,
        text=True,
    )  # fmt: skip
    assert single.returncode == 0, why(single.stderr)
    result = lambda out: dict(  # noqa: E731
        (k, float(v)) for k, v in (part.split() for part in out.strip().splitlines()[-1].split("|"))
    )
    expected = result(single.stdout)
    for out, _ in outputs:
        got = result(out)
        assert got.keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, err_msg=key)
    assert os.path.exists(tmp_path / "multi" / "metrics.jsonl")
    assert any(p.isdigit() for p in os.listdir(tmp_path / "multi" / "checkpoints"))


def test_holdout_replaces_the_test_split_for_evaluation(tmp_path):
    config = tiny_config(num_epochs=1, holdout=200, train_examples=600)
    exp = loop.Experiment(config, str(tmp_path))
    assert (exp.num_train, exp.num_test) == (600, 200)
    with pytest.raises(UserError, match="stream"):
        loop.Experiment(tiny_config(stream=True, holdout=10), str(tmp_path))


def test_train_steps_upload_nothing_and_read_metrics_only_when_logging(tmp_path, monkeypatch):
    """In-memory data stays on the device: every train step runs under JAX's guard against
    host-to-device transfers, and the host reads the training sums once per log interval."""
    from cvjax import metrics

    original_train_on, calls = loop.Experiment.train_on, []

    def guarded(self, state, perm, batches):
        calls.append(1)
        with jax.transfer_guard_host_to_device("disallow"):
            return original_train_on(self, state, perm, batches)

    original_means, reads = metrics.means, []

    def counted(sums, prefix):
        reads.append(prefix)
        return original_means(sums, prefix)

    monkeypatch.setattr(loop.Experiment, "train_on", guarded)
    monkeypatch.setattr(metrics, "means", counted)
    # 1,437 training digits at batch 32 (drop_remainder): 44 steps, logged at 10, 20, 30, 40, 44.
    loop.train_and_evaluate(tiny_config(num_epochs=1, log_every_steps=10), str(tmp_path))
    assert len(calls) == 44
    assert reads.count("train") == 5
