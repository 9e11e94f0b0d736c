"""Metric writing: metrics.jsonl, TensorBoard event files, and concise log lines."""

import json
import os

import jax
from absl import logging


class MetricWriter:
    """Writes one JSON object per event to `metrics.jsonl` and scalars to TensorBoard.

    Only process 0 writes, so a multi-host run produces one set of files.
    """

    def __init__(self, workdir: str, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter  # Imported lazily: it is slow to import.

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **scalars}) + "\n")
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def format_scalars(step: int, scalars: dict[str, float]) -> str:
    """A concise one-line summary: "step 100 | train/loss 0.512 | ..."."""
    parts = [f"step {step}"]
    for name, value in scalars.items():
        parts.append(f"{name} {value:.4g}")
    return " | ".join(parts)


def log(step: int, scalars: dict[str, float]) -> None:
    logging.info("%s", format_scalars(step, scalars))
