"""The search job: a strategy proposes, an estimator scores, the workdir keeps everything.

    python -m cvjax.main --config=configs/nas_bench201.py --workdir=W \
        --config.search.strategy=evolution --config.search.budget=100 --config.seed=0

Outputs in W:
- trials.jsonl: one line per evaluated architecture, written as soon as it is scored:
  {"trial", "arch", "score", "metrics", "cost": {"params", "gmacs"}, "wall_s", "elapsed_s"}.
- best.json: {"arch", "score", "trial", "space", "strategy", "metric", "cost", ...}.
- pareto.json (+ pareto.png): the architectures no other beats on both score and GMACs.
- best_cell.png: a picture of the best architecture.

Budget: `search.budget` counts evaluated architectures. A strategy that proposes an
architecture it already evaluated gets the recorded score back at no cost (the benchmark gives the
same number again, and retraining is not a new measurement); `search.count_repeats=True` makes
every query count instead, recording repeats as trials with "repeat": true.

Resume: strategies are deterministic in (seed, scores told), so a rerun of the same command
replays trials.jsonl through a fresh strategy (checking that it proposes the same architectures)
and continues from the first trial not on record: finished trials are never evaluated again, and
the result equals an uninterrupted run's. A trial cut off mid-training resumes from its
checkpoints (trials/<n>/). A half-written last line (a kill during the write) is dropped.
"""

import json
import os
import time

import ml_collections
from absl import logging

from cvjax.errors import UserError
from cvjax.nas import estimators
from cvjax.nas.spaces import SearchSpace, get_space
from cvjax.nas.strategies import create_strategy

# Search keys that decide what trials.jsonl means; a workdir keeps them fixed.
_SEARCH_KEYS = ("space", "space_kwargs", "strategy", "estimator", "max_params", "max_gmacs")


def search_defaults() -> ml_collections.ConfigDict:
    """`config.search` of every search config."""
    s = ml_collections.ConfigDict()
    s.space = "nb201"  # nb201 darts mbconv compound
    s.space_kwargs = ml_collections.ConfigDict()
    s.strategy = "evolution"  # random evolution reinforce darts
    s.budget = 100  # Evaluated architectures (see count_repeats).
    s.count_repeats = False
    s.estimator = "tabular"  # tabular train supernet
    s.metric = "eval/accuracy"  # estimator=train: the final eval metric that is the score.
    s.max_params = 0.0  # > 0: only architectures with at most this many parameters.
    s.max_gmacs = 0.0  # > 0: only architectures with at most this many GMACs.
    s.pictures = True  # best_cell.png and pareto.png (False: JSON only, for large studies).
    s.population = 20  # evolution: P (Real et al. 2019); see experiments/results/nas_bench201.md.
    s.sample_size = 5  # evolution: tournament size S.
    s.learning_rate = 0.05  # reinforce: Adam step on the policy logits.
    s.baseline_decay = 0.9  # reinforce: EMA of rewards.
    return s


def benchmark_defaults() -> ml_collections.ConfigDict:
    b = ml_collections.ConfigDict()
    b.csv = ""  # Table with columns index, arch, <metric>.
    b.metric = ""  # Column that is the score; "" when the table has one.
    return b


def make_estimator(config: ml_collections.ConfigDict, space: SearchSpace):
    kind = config.search.estimator
    if kind == "tabular":
        return estimators.TabularEstimator(config.benchmark.csv, config.benchmark.metric, space)
    if kind == "train":
        return estimators.TrainEstimator(config, space, config.search.metric)
    if kind == "supernet":
        from cvjax.nas import supernet

        return supernet.SupernetEstimator(config, space)
    raise UserError(f"unknown estimator {kind!r}; use tabular, train or supernet")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) the search `config.search` in `workdir`; returns best.json's content."""
    s = config.search
    os.makedirs(workdir, exist_ok=True)
    _check_workdir(config, workdir)
    space = get_space(s.space, **s.space_kwargs)
    if s.strategy == "darts":
        from cvjax.nas import supernet

        return supernet.run_darts(config, workdir)
    if s.budget < 1:
        raise UserError(f"search.budget={s.budget} must be at least 1")

    def accept(arch: str) -> bool:
        if not space.is_valid(arch):
            return False
        if not (s.max_params or s.max_gmacs):
            return True
        cost = space.cost(arch)
        return (not s.max_params or cost["params"] <= s.max_params) and (
            not s.max_gmacs or cost["gmacs"] <= s.max_gmacs
        )

    kwargs = {
        "evolution": {"population": s.population, "sample_size": s.sample_size},
        "reinforce": {"learning_rate": s.learning_rate, "baseline_decay": s.baseline_decay},
    }.get(s.strategy, {})
    strategy = create_strategy(s.strategy, space, config.seed, accept, **kwargs)
    estimator = make_estimator(config, space)
    trials_path = os.path.join(workdir, "trials.jsonl")
    recorded = read_trials(trials_path)
    estimator.prepare(workdir)

    scores: dict[str, float] = {}
    trials: list[dict] = []
    elapsed = recorded[-1]["elapsed_s"] if recorded else 0.0
    start = time.perf_counter() - elapsed
    queries, max_queries = 0, 100 * s.budget + 10_000
    if recorded:
        logging.info("resuming: %d of %d trials on record", len(recorded), s.budget)
    while len(trials) < s.budget:
        if queries >= max_queries:
            logging.warning(
                "stopping: %d queries gave only %d new architectures", queries, len(trials)
            )
            break
        queries += 1
        arch = strategy.ask()
        repeat = arch in scores
        if repeat and not s.count_repeats:
            strategy.tell(arch, scores[arch])
            continue
        n = len(trials)
        if n < len(recorded):
            trial = recorded[n]
            if trial["arch"] != arch:
                raise UserError(
                    f"{trials_path} trial {n} is {trial['arch']!r} but this config proposes "
                    f"{arch!r}: it was written by another seed or config; use a new --workdir"
                )
        elif repeat:
            first = next(t for t in trials if t["arch"] == arch)
            trial = {**first, "trial": n, "repeat": True, "wall_s": 0.0}
            trial["elapsed_s"] = time.perf_counter() - start
            append_record(trials_path, trial)
        else:
            t0 = time.perf_counter()
            result = estimator.evaluate(arch, os.path.join(workdir, "trials", f"{n:05d}"))
            trial = {
                "trial": n,
                "arch": arch,
                "score": float(result["score"]),
                "metrics": {k: v for k, v in result.items() if k != "score"},
                "cost": space.cost(arch),
                "wall_s": time.perf_counter() - t0,
                "elapsed_s": time.perf_counter() - start,
            }
            append_record(trials_path, trial)
            logging.info("trial %d: %.4f %s", n, trial["score"], arch)
        trials.append(trial)
        scores[arch] = trial["score"]
        strategy.tell(arch, trial["score"])
    return _finish(config, space, estimator, trials, queries, workdir)


def _finish(config, space, estimator, trials: list[dict], queries: int, workdir: str) -> dict:
    from cvjax.nas import plot

    s = config.search
    best = max(trials, key=lambda t: t["score"])  # The first of equals: the earliest found.
    summary = {
        "arch": best["arch"],
        "score": best["score"],
        "trial": best["trial"],
        "space": s.space,
        "space_kwargs": s.space_kwargs.to_dict(),
        "strategy": s.strategy,
        "estimator": s.estimator,
        "metric": getattr(estimator, "metric", s.metric),
        "cost": best["cost"],
        "evaluated": len(trials),
        "queries": queries,
        "seed": config.seed,
    }
    if isinstance(estimator, estimators.TabularEstimator):
        summary["table_optimum"] = estimator.best()[1]
    points = [(t["cost"]["gmacs"], t["score"]) for t in trials]
    front = plot.pareto_front(points)
    write_json(os.path.join(workdir, "pareto.json"), [trials[i] for i in front])
    write_json(os.path.join(workdir, "best.json"), summary)
    if s.get("pictures", True):
        try:
            plot.plot_pareto(points, os.path.join(workdir, "pareto.png"), front=front)
            plot.draw_cell(s.space, best["arch"], os.path.join(workdir, "best_cell.png"))
        except UserError as error:  # A picture is a convenience; the results are written.
            logging.warning("no picture: %s", error)
    logging.info("best of %d: %.4f %s", len(trials), best["score"], best["arch"])
    return summary


def load_best(path: str) -> dict:
    """A search's best.json ({"arch", "space", "space_kwargs", "score", ...})."""
    if not path.endswith(".json") or not os.path.isfile(path):
        raise UserError(f"{path!r} is not a file; point it at a search's best.json")
    with open(path) as f:
        result = json.load(f)
    if not isinstance(result, dict) or "arch" not in result or "space" not in result:
        raise UserError(f"{path} has no 'arch' and 'space'; use a best.json written by a search")
    return result


def _check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses to continue another search's trials.jsonl; records this search's config."""
    path = os.path.join(workdir, "search_config.json")
    current = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        keys = [("search", k) for k in _SEARCH_KEYS] + [("seed",), ("benchmark", "csv")]
        keys += [("benchmark", "metric"), ("dataset",), ("model_kwargs",)]
        for key in keys:
            old, new = saved, current
            for part in key:
                old, new = (old or {}).get(part), (new or {}).get(part)
            if old != new:
                raise UserError(
                    f"{workdir} holds a search with {'.'.join(key)}={old!r}, not {new!r}; "
                    "use a new --workdir to start another search"
                )
    write_json(path, current)


def read_trials(path: str) -> list[dict]:
    """trials.jsonl's records; a half-written last line (a kill mid-write) is dropped."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    trials, complete = [], True
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            trials.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1 :]):
                raise UserError(
                    f"{path} line {i + 1} is corrupt; restore it or use a new --workdir"
                ) from None
            complete = False  # A kill mid-write: that trial runs again.
    if not complete:
        logging.warning("dropping the half-written last line of %s", path)
        with open(path + ".tmp", "w") as f:
            f.writelines(json.dumps(t) + "\n" for t in trials)
        os.replace(path + ".tmp", path)
    return trials


def append_record(path: str, record: dict) -> None:
    """Appends one JSON line and syncs it to disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str, obj) -> None:
    """Writes JSON atomically: a reader sees the old file or the new one, never half of one."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def weight_sharing_config(dataset: str, full: bool, strategy: str) -> ml_collections.ConfigDict:
    """A weight-sharing search on the NB201 space: SPOS + a query strategy, or DARTS.

    Smoke (`full=False`, about a minute or two on a 2-core CPU): width-8 supernet with one cell
    per stage, 4,096 training and 1,024 held-out examples, 3 epochs, 8 validation batches per
    score; 20 queries. Full (a GPU): NB201's C=16, N=5 supernet with DARTS' search settings
    (50 epochs, batch 64, SGD lr 0.025 cosine; `supernet_defaults`) and DARTS' half/half split
    of the training set; 100 queries.
    """
    from cvjax.configs import base_config
    from cvjax.nas.darts import darts_defaults
    from cvjax.nas.supernet import supernet_defaults

    config = base_config()
    config.dataset = dataset
    config.search = search_defaults()
    config.search.space = "nb201"
    config.search.strategy = strategy
    config.search.estimator = "supernet"
    config.search.budget = 100 if full else 20
    config.supernet = supernet_defaults()
    config.darts = darts_defaults()
    train = dataset in ("mnist", "fashion_mnist", "digits")
    if full:
        config.holdout = 25_000 if not train else 30_000
    else:
        config.holdout, config.train_examples = 1024, 4096
        for c in (config.supernet, config.darts):
            c.epochs, c.width, c.cells, c.learning_rate, c.eval_batches = 3, 8, 1, 0.05, 8
    if train:  # Digits: a shifted crop, never a mirror image.
        config.augment.crop_padding, config.augment.flip = 2, False
    config.search.space_kwargs = {"width": config.supernet.width, "cells": config.supernet.cells}
    return config


def proxy_search_config(
    dataset: str,
    full: bool,
    strategy: str = "evolution",
    budget: int = 0,
    space: str = "nb201",
) -> ml_collections.ConfigDict:
    """A search that trains every candidate (estimator "train"), at smoke or full size.

    Smoke (`full=False`, minutes on a 2-core CPU): 1,000 held-out training examples as the
    validation set and small networks: NB201 cells at width 8 with one cell per stage (DARTS: 8
    filters, one cell per stage), 6 candidates trained for 2 epochs on 8,000 examples;
    MBConv and compound scaling: B0 at width 0.25, 3 candidates for 1 epoch on 2,000 examples.
    Full (a GPU): NB201's 12-epoch proxy schedule (Dong & Yang 2020, Sec. 3: "H12"; Nesterov
    SGD lr 0.1, cosine, weight decay 5e-4, batch 256) on all training examples but 5,000 held
    out, 100 candidates, the spaces' full-size networks (NB201: C=16, N=5).
    """
    from cvjax.configs import base_config

    config = base_config()
    config.dataset = dataset
    # B0-sized candidates compile for about a minute each on a CPU: fewer, shorter smoke trials.
    heavy = space in ("mbconv", "compound")
    config.holdout = 5000 if full else 1000
    config.train_examples = 0 if full else (2000 if heavy else 8000)
    config.num_epochs = 12 if full else (1 if heavy else 2)
    config.batch_size = 256 if full else 128
    if dataset in ("mnist", "fashion_mnist", "digits"):  # A shifted crop, never a mirror image.
        config.augment.crop_padding, config.augment.flip = 2, False
    config.optimizer.name = "nesterov"
    config.learning_rate = 0.1
    config.weight_decay = 5e-4
    config.eval_every = "0"
    config.checkpoint_every = "1ep"
    config.keep_checkpoints = 1
    config.search = search_defaults()
    config.search.space = space
    config.search.strategy = strategy
    config.search.estimator = "train"
    config.search.budget = budget or (100 if full else (3 if heavy else 6))
    config.search.space_kwargs = {
        "nb201": {"width": 16, "cells": 5} if full else {"width": 8, "cells": 1},
        "mbconv": {"width_mult": 1.0 if full else 0.25},
        "compound": {"base_width": 1.0 if full else 0.25},
        "darts": {} if full else {"filters": 8, "num_cells": 1},
    }[space]
    if not full:
        config.search.population, config.search.sample_size = 3, 2
    return config
