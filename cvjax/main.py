"""The cvjax command line: one ml_collections config per experiment.

    python -m cvjax.main --config=configs/resnet.py[:key=value,...] --workdir=DIR \
        [--config.<key>=<value> ...] [--mode=train|eval] [--checkpoint=latest|best|STEP]

Rerunning a training command on the same workdir resumes from its newest checkpoint. A config
with a `search` field (configs/nas_*.py) runs a neural architecture search instead
(cvjax/nas/search.py), which a rerun also resumes.
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cvjax.configs import COMPILATION_CACHE

_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "configs", "quickstart.py"
)

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    _DEFAULT_CONFIG,
    "Config file, optionally with ':arg' (e.g. configs/resnet.py:model=resnet50).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics, config and checkpoints go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes) or eval-only.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "latest", "For --mode=eval: 'latest', 'best' (by eval/accuracy) or a step."
)
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (one process per host)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "With --multihost, where no cluster (SLURM, TPU, ...) is detected: host:port of process 0.",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --coordinator_address.")
_COMPILE_CACHE = flags.DEFINE_string(
    "compilation_cache",
    COMPILATION_CACHE,
    "Persistent XLA compilation cache directory; '' disables it.",
)


class _ConciseLog(std_logging.Filter):
    """Keeps cvjax's INFO lines and every library's warnings; drops libraries' INFO chatter."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or f"{os.sep}cvjax{os.sep}" in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Imported here so that --help and flag errors stay fast.
    import jax

    from cvjax.errors import UserError
    from cvjax.train import loop

    logging.get_absl_handler().addFilter(_ConciseLog())
    if _MULTIHOST.value:
        # CPU processes exchange gradients through gloo; GPUs and TPUs use their own collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    if _COMPILE_CACHE.value:
        jax.config.update("jax_compilation_cache_dir", _COMPILE_CACHE.value)
    if _WORKDIR.value is None:
        _fail("--workdir is required, e.g. --workdir=/tmp/cvjax/run1")
    try:
        if "search" in _CONFIG.value:
            from cvjax.nas import search

            if _MODE.value != "train":
                _fail("a search config runs with --mode=train (a rerun resumes it)")
            result = search.run(_CONFIG.value, _WORKDIR.value)
        elif _MODE.value == "train":
            result = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        else:
            result = loop.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value)
    except UserError as error:
        _fail(str(error))
    print(
        " | ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
        )
    )


def _fail(message: str) -> None:
    logging.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    app.run(main)
