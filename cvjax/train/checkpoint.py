"""Orbax checkpoints: keep the last K and the best by eval/accuracy; skip corrupt ones.

Orbax writes each step into a temporary folder and renames it when complete, so a run killed
mid-save leaves no half-written step behind. A step that is complete on disk but cannot be read
(a damaged file) is moved aside to `corrupt-<step>` (never deleted), and the previous step is
used instead.
"""

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as managers

from cvjax.errors import UserError
from cvjax.train.state import TrainState

BEST_METRIC = "eval/accuracy"


def _best_metric(metrics: dict) -> float:
    return metrics[BEST_METRIC]


class Checkpoints:
    """A thin wrapper over `ocp.CheckpointManager` for `TrainState`."""

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self._check_metadata()
        policy = managers.AnyPreservationPolicy(
            [
                managers.LatestN(n=keep),
                managers.BestN(
                    get_metric_fn=_best_metric, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            create=True,
            enable_async_checkpointing=async_save,
            best_fn=_best_metric,
            best_mode="max",
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, metrics: dict[str, float] | None = None) -> None:
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        if metrics is not None and BEST_METRIC not in metrics:
            metrics = None
        self.manager.save(step, args=ocp.args.StandardSave(_to_tree(state)), metrics=metrics)

    def restore(self, target: TrainState, step: int | str = "latest") -> TrainState | None:
        """The state at `step` ("latest", "best" or a number); None if there is no checkpoint.

        With "latest", an unreadable newest step is moved aside with a warning and the next
        older one is tried.
        """
        steps = self.steps()
        if not steps:
            return None
        if step == "best":
            best = self.manager.best_step()
            if best is None:
                raise UserError(
                    f"no checkpoint in {self.directory} has {BEST_METRIC}; "
                    "use --checkpoint=latest or a step number"
                )
            return self._read(target, best)
        if step != "latest":
            if int(step) not in steps:
                raise UserError(
                    f"no checkpoint for step {step} in {self.directory}; saved steps: {steps}"
                )
            return self._read(target, int(step))
        for candidate in reversed(steps):
            try:
                return self._read(target, candidate)
            except Exception as error:  # noqa: BLE001 - any read failure means a bad checkpoint.
                self._quarantine(candidate, error)
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def _read(self, target: TrainState, step: int) -> TrainState:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_tree(target))
        tree = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return target.replace(**tree)

    def _check_metadata(self) -> None:
        """Moves aside steps whose small JSON files (read when the manager opens) are damaged."""
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if not name.isdigit():
                continue
            for part in (("metrics", "metrics"), ("_CHECKPOINT_METADATA",)):
                path = os.path.join(self.directory, name, *part)
                try:
                    if os.path.exists(path):
                        with open(path) as f:
                            json.load(f)
                except (OSError, ValueError) as error:
                    self._quarantine(int(name), error, reload=False)
                    break

    def _quarantine(self, step: int, error: Exception, reload: bool = True) -> None:
        source = os.path.join(self.directory, str(step))
        dest = os.path.join(self.directory, f"corrupt-{step}")
        suffix = 0
        while os.path.exists(dest):
            suffix += 1
            dest = os.path.join(self.directory, f"corrupt-{step}.{suffix}")
        logging.warning(
            "checkpoint step %d is unreadable (%s: %s); moved to %s, using the one before",
            step,
            type(error).__name__,
            str(error)[:200],
            dest,
        )
        if jax.process_index() == 0:
            os.rename(source, dest)
        if reload:
            self.manager.reload()


def _to_tree(state: TrainState) -> dict[str, Any]:
    tree = {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "rng": state.rng,
    }
    if state.ema_params is not None:
        tree["ema_params"] = state.ema_params
    if state.lookahead is not None:
        tree["lookahead"] = state.lookahead
    return tree
