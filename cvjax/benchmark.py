"""Times the real jitted train step (or inference) of a registered model on synthetic data.

    python -m cvjax.benchmark --model=resnet50 --batch_size=32 --image_size=224 --mode=train

Reports compile_s, the median step_ms over --steps timed steps after --warmup steps,
images_per_sec and peak memory (the device's peak where the backend reports one, else the
process's peak resident memory); `--json` prints one JSON object with those keys.

compile_s is tracing, lowering and compiling the step (ahead of time, before the first step,
whose own time is first_step_s); with the persistent compilation cache
(on by default, as in cvjax.main; `--compilation_cache=` turns it off) a repeated run loads the
compiled step from disk.

`--compare` times the same step of the model's PyTorch twin (cvjax/bench_torch.py; PyTorch is an
optional dependency) on the same machine right after, and adds pytorch_step_ms and
ratio_vs_pytorch (cvjax's step time / PyTorch's; below 1 is faster):

    python -m cvjax.benchmark --model=resnet20 --batch_size=128 --mode=train --compare
"""

import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cvjax import models, optim
from cvjax.configs import COMPILATION_CACHE, base_config
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
_COMPARE = flags.DEFINE_bool(
    "compare", False, "Also time the PyTorch twin (cvjax/bench_torch.py) and print the ratio."
)
_COMPILE_CACHE = flags.DEFINE_string(
    "compilation_cache",
    COMPILATION_CACHE,
    "Persistent XLA compilation cache directory (as cvjax.main's); '' disables it.",
)
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
        inputs = (images, labels, perm)
        state_args = lambda s: (s,)  # noqa: E731
    else:
        step = steps_lib.make_eval_step(model, cfg, mesh)
        mask = steps_lib.put_replicated(np.ones(batch_size, np.float32), mesh)
        inputs = (images, labels, mask, 0)
        state_args = lambda s: (s.variables(),)  # noqa: E731

    # Ahead-of-time: trace, lower and compile, timed apart from running (compile_s).
    start = time.perf_counter()
    compiled = step.lower(*state_args(state), *inputs).compile()
    compile_s = time.perf_counter() - start

    def call(s):
        out = compiled(*state_args(s), *inputs)
        if mode == "train":
            s, sums = out
            return s, sums["loss"]
        return s, out["loss"]

    start = time.perf_counter()
    state, out = call(state)
    jax.block_until_ready(out)
    first_step_s = time.perf_counter() - start
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
        "model_kwargs": model_kwargs or {},
        "mode": mode,
        "batch_size": batch_size,
        "image_size": size,
        "num_classes": classes,
        "half_precision": half_precision,
        "devices": mesh.size,
        "backend": jax.default_backend(),
        "step_ms": step_s * 1e3,
        "images_per_sec": batch_size / step_s,
        "compile_s": compile_s,
        "first_step_s": first_step_s,
    }
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["peak_memory_mb"] = stats["peak_bytes_in_use"] / 2**20
        result["peak_memory_kind"] = "device"
    else:  # CPU: XLA keeps no allocator statistics; the process's peak RSS bounds it.
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        result["peak_memory_kind"] = "host peak RSS"
    return result


def compare(result: dict, steps: int, warmup: int) -> dict:
    """`result` with the PyTorch twin's step time and the ratio (cvjax / PyTorch) added."""
    from cvjax import bench_torch
    from cvjax.errors import UserError
    from cvjax.models.__main__ import count_params

    if result["half_precision"] or result["model_kwargs"]:
        raise UserError(
            "--compare times the default float32 model; drop --half_precision and --model_kwargs"
        )
    torch_result = bench_torch.run(
        result["model"],
        result["batch_size"],
        result["image_size"],
        result["num_classes"],
        result["mode"],
        steps,
        warmup,
    )
    params = count_params(result["model"], result["image_size"], num_classes=result["num_classes"])
    if params != torch_result["params"]:
        raise UserError(
            f"the PyTorch twin of {result['model']} has {torch_result['params']:,} parameters, "
            f"cvjax's {params:,}: not the same network"
        )
    return {
        **result,
        "params": params,
        "pytorch": torch_result["framework"],
        "pytorch_threads": torch_result["threads"],
        "pytorch_step_ms": torch_result["step_ms"],
        "ratio_vs_pytorch": result["step_ms"] / torch_result["step_ms"],
    }


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
    if _COMPILE_CACHE.value:  # compile_s then measures a warm start where the cache has it.
        jax.config.update("jax_compilation_cache_dir", _COMPILE_CACHE.value)
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
    if _COMPARE.value:
        from cvjax.errors import UserError

        try:
            result = compare(result, _STEPS.value, _WARMUP.value)
        except UserError as error:
            raise app.UsageError(str(error)) from None
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
