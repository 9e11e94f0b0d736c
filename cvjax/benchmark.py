"""Times the real jitted train step (or inference) of a registered model on synthetic data.

    python -m cvjax.benchmark --model=resnet50 --batch_size=32 --image_size=224 --mode=train

Reports compile_s, the median step_ms over --steps timed steps after --warmup steps, and
images_per_sec; `--json` prints one JSON object with those keys.
"""

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cvjax import models, optim
from cvjax.configs import base_config
from cvjax.train import steps as steps_lib
from cvjax.train.state import create_train_state

_MODEL = flags.DEFINE_string("model", "resnet20", "Registered model name.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global batch size.")
_SIZE = flags.DEFINE_integer("image_size", 0, "Input resolution; 0: the model's default.")
_CLASSES = flags.DEFINE_integer("num_classes", 0, "Classes; 0: the model's default.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "infer"], "What to time.")
_HALF = flags.DEFINE_bool("half_precision", False, "bfloat16 compute.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object.")
_MODEL_KWARGS = flags.DEFINE_string(
    "model_kwargs", "{}", "create() kwargs as JSON, e.g. '{\"cifar_stem\": true}'."
)


def run(
    model_name: str,
    batch_size: int,
    image_size: int = 0,
    num_classes: int = 0,
    mode: str = "train",
    half_precision: bool = False,
    steps: int = 10,
    warmup: int = 2,
    model_kwargs: dict | None = None,
) -> dict:
    """Benchmarks one configuration; returns step_ms, images_per_sec, compile_s."""
    info = models.model_info(model_name)
    size = image_size or info["input_size"]
    classes = num_classes or info["num_classes"]
    dtype = jnp.bfloat16 if half_precision else jnp.float32
    model = models.create(model_name, num_classes=classes, dtype=dtype, **(model_kwargs or {}))
    mesh = steps_lib.create_mesh()
    config = base_config()
    tx, _ = optim.create_optimizer(config, steps_per_epoch=1)
    shape = (batch_size, size, size, model.in_channels)
    rng = np.random.default_rng(0)
    images = steps_lib.put_replicated(rng.integers(0, 256, shape, dtype=np.uint8), mesh)
    labels = steps_lib.put_replicated(rng.integers(0, classes, batch_size).astype(np.int32), mesh)
    cfg = steps_lib.StepConfig(
        batch_size=batch_size, steps_per_epoch=1, mean=(127.0,), std=(64.0,), dtype=dtype
    )
    state = jax.jit(lambda k: create_train_state(model, tx, k, (1, *shape[1:])))(
        jax.random.PRNGKey(0)
    )
    if mode == "train":
        step = steps_lib.make_train_step(model, tx, cfg, mesh)
        perm = steps_lib.put_replicated(np.arange(batch_size), mesh)
        args = lambda s: (s, images, labels, perm)  # noqa: E731

        def call(s):
            s, sums = step(*args(s))
            return s, sums["loss"]
    else:
        step = steps_lib.make_eval_step(model, cfg, mesh)
        mask = steps_lib.put_replicated(np.ones(batch_size, np.float32), mesh)

        def call(s):
            return s, step(s.variables(), images, labels, mask, 0)["loss"]

    start = time.perf_counter()
    state, out = call(state)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - start  # First call: trace + compile + one step.
    for _ in range(warmup):
        state, out = call(state)
    jax.block_until_ready(out)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, out = call(state)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    result = {
        "model": model_name,
        "mode": mode,
        "batch_size": batch_size,
        "image_size": size,
        "half_precision": half_precision,
        "devices": mesh.size,
        "backend": jax.default_backend(),
        "step_ms": step_s * 1e3,
        "images_per_sec": batch_size / step_s,
        "compile_s": compile_s,
    }
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["peak_memory_mb"] = stats["peak_bytes_in_use"] / 2**20
    return result


def _parse_kwargs(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as error:
        raise app.UsageError(
            f"--model_kwargs is not JSON ({error}); e.g. '{{\"cifar_stem\": true}}'"
        ) from None
    if not isinstance(kwargs, dict):
        raise app.UsageError("--model_kwargs must be a JSON object, e.g. '{\"cifar_stem\": true}'")
    return kwargs


def main(argv):
    del argv
    result = run(
        _MODEL.value,
        _BATCH.value,
        _SIZE.value,
        _CLASSES.value,
        _MODE.value,
        _HALF.value,
        _STEPS.value,
        _WARMUP.value,
        _parse_kwargs(_MODEL_KWARGS.value),
    )
    if _JSON.value:
        print(json.dumps(result))
    else:
        print(
            " | ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
            )
        )


if __name__ == "__main__":
    app.run(main)
