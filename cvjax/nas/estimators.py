"""Performance estimation: how good is an architecture? (Elsken et al. 2019, Sec. 4)

An `Estimator` is built once per search; `prepare(workdir)` does any one-time work (resumable:
it finds its own results in the workdir), then `evaluate(arch, trial_dir)` returns a dict with
"score" (higher is better) and any other metrics worth keeping in trials.jsonl.

- `TabularEstimator`: looks the architecture up in a CSV (columns index, arch, <metric>), such as
  the NAS-Bench-201 table; nothing is trained.
- `TrainEstimator`: proxy training of the candidate with the ordinary training engine (few
  epochs, a data subset, a small width) in its own trial directory, which resumes if interrupted.
- `cvjax.nas.supernet.SupernetEstimator`: a weight-sharing one-shot supernet, trained once and
  then queried with each architecture as a traced input.
"""

import abc
import csv
import functools
import os

import ml_collections

from cvjax.errors import UserError, unknown_name
from cvjax.nas.spaces import SearchSpace


class Estimator(abc.ABC):
    """Scores architectures; see the module docstring."""

    def prepare(self, workdir: str) -> None:  # noqa: B027 (optional hook)
        """One-time setup before the first trial (default: nothing)."""

    @abc.abstractmethod
    def evaluate(self, arch: str, trial_dir: str) -> dict[str, float]:
        """{"score": ..., other metrics}; `trial_dir` is this trial's own directory."""


class TabularEstimator(Estimator):
    """Scores from a table: a CSV with columns index, arch, <metric>[, more metrics].

    Every numeric column of the architecture's row goes to the trial's metrics; `metric` is the
    score. With `metric=""` a table with one metric column uses that column.
    """

    def __init__(self, csv_path: str, metric: str = "", space: SearchSpace | None = None):
        if not csv_path:
            raise UserError("tabular search needs a table; set --config.benchmark.csv=PATH")
        if not os.path.isfile(csv_path):
            raise UserError(
                f"benchmark table {csv_path!r} does not exist; fix --config.benchmark.csv"
            )
        stat = os.stat(csv_path)
        columns, rows = _read_csv(csv_path, stat.st_mtime_ns, stat.st_size)
        if "arch" not in columns:
            raise UserError(
                f"{csv_path} has no 'arch' column (it has {columns}); "
                "use a CSV with columns index,arch,<metric>"
            )
        metrics = [c for c in columns if c not in ("index", "arch")]
        if not metric:
            if len(metrics) != 1:
                raise UserError(
                    f"{csv_path} has metric columns {metrics}; "
                    "choose one with --config.benchmark.metric"
                )
            metric = metrics[0]
        if metric not in metrics:
            raise unknown_name(f"metric column of {os.path.basename(csv_path)}", metric, metrics)
        self.metric = metric
        self.table: dict[str, dict[str, float]] = {}
        for line, row in enumerate(rows, start=2):
            arch = row["arch"]
            if space is not None:
                space.validate(arch)  # A table of another space fails here, naming the string.
            values = {}
            for c in metrics:
                try:
                    values[c] = float(row[c])
                except (TypeError, ValueError):
                    if c == metric:
                        raise UserError(
                            f"{csv_path} line {line}: {metric}={row[c]!r} is not a number"
                        ) from None
            self.table.setdefault(arch, values)

    def evaluate(self, arch: str, trial_dir: str) -> dict[str, float]:
        if arch not in self.table:
            raise UserError(
                f"architecture {arch!r} is not in the benchmark table; "
                "the table must cover the search space"
            )
        values = self.table[arch]
        return {"score": values[self.metric], **values}

    def best(self) -> tuple[str, float]:
        """The table's optimum (for reporting how close a search got)."""
        arch = max(self.table, key=lambda a: self.table[a][self.metric])
        return arch, self.table[arch][self.metric]


@functools.lru_cache(maxsize=4)
def _read_csv(path: str, mtime_ns: int, size: int) -> tuple[list[str], list[dict[str, str]]]:
    """The CSV's columns and rows, read once per file version (studies run many searches)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


class TrainEstimator(Estimator):
    """Proxy training of each candidate with the training engine (cvjax/train/loop.py).

    The trial runs `config` (its dataset, `train_examples` subset, `holdout` validation set,
    epochs and optimizer) with the candidate's model from `space.model(arch)` in `trial_dir`; an
    interrupted trial resumes from its checkpoints. The score is `metric` of the final evaluation
    ("eval/accuracy": on the held-out examples when `config.holdout` > 0, which a search should
    use so that the test split stays unseen), in % for accuracies. With jax's persistent
    compilation cache (cvjax.main sets it) a candidate compiled before compiles from disk.
    """

    def __init__(
        self, config: ml_collections.ConfigDict, space: SearchSpace, metric: str = "eval/accuracy"
    ):
        self.config, self.space, self.metric = config, space, metric

    def trial_config(self, arch: str) -> ml_collections.ConfigDict:
        config = ml_collections.ConfigDict(self.config.to_dict())
        for key in ("search", "benchmark", "supernet", "darts"):
            if key in config:
                del config[key]
        name, kwargs = self.space.model(arch)
        config.model = name
        config.model_kwargs = ml_collections.ConfigDict(
            {**self.config.get("model_kwargs", {}), **kwargs}
        )
        config.image_size = self.space.resolution(arch) or config.image_size
        return config

    def evaluate(self, arch: str, trial_dir: str) -> dict[str, float]:
        from cvjax.train import loop  # The engine is only needed when something trains.

        result = loop.train_and_evaluate(self.trial_config(arch), trial_dir)
        if self.metric not in result:
            raise UserError(
                f"training reports {sorted(result)}, not {self.metric!r}; "
                "fix --config.search.metric"
            )
        score = float(result[self.metric])
        if self.metric.endswith("accuracy"):
            score *= 100.0  # In %, as the benchmark tables and the supernet's scores.
        return {"score": score, **{k: float(v) for k, v in result.items()}}
