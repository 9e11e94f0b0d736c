"""Tabular architecture search on NAS-Bench-201 (Dong & Yang 2020): nothing is trained.

    python -m cvjax.main --config=configs/nas_bench201.py --workdir=/tmp/cvjax/nb201_evo \
        --config.search.strategy=evolution --config.search.budget=100 --config.seed=0 \
        --config.benchmark.csv=../shared/datasets/nas_bench_201/nas_bench_201_cifar10.csv \
        --config.benchmark.metric=cifar10_test_acc_200ep

Each query looks the cell up in the table (columns index, arch, <metric>; any such CSV and any
metric column work), so a 100-query search takes about a second. `strategy` is random,
evolution (regularized, P=10, S=3 as NB201's REA baseline) or reinforce; `budget` counts
distinct architectures (a repeated proposal is answered from the record for free; see
cvjax/nas/search.py). Writes trials.jsonl, best.json {"arch", "score", ...}, pareto.json/.png
(score vs GMACs of the C=16, N=5 network) and best_cell.png; a rerun resumes.
`--config.search.max_params=5e5` (or max_gmacs) restricts the search to smaller networks.

Config args (`configs/nas_bench201.py:strategy=random,budget=50`): strategy, budget.

The best cell found trains with configs/nas_train.py:arch=/tmp/cvjax/nb201_evo/best.json.

Published: the table's optimum is 94.37% (NB201 paper, Table 5: 94.37 +- 0.00 "optimal" on the
CIFAR-10 test set); the paper reports REA 93.92 +- 0.30, REINFORCE 93.85 +- 0.37, random
93.70 +- 0.36 (its budget is 12,000 simulated seconds of training, about 100-150 queries).
Measured here: experiments/results/nas_bench201.md (20 seeds, budgets 50/100/200).
"""

import os

from cvjax.configs import base_config, parse_arg
from cvjax.nas.search import benchmark_defaults, search_defaults

# The NAS-Bench-201 CIFAR-10 table beside the checkout (see ../shared/datasets/README.md).
SHARED_TABLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "datasets",
    "nas_bench_201",
    "nas_bench_201_cifar10.csv",
)


def get_config(arg=None):
    arg = parse_arg(arg, strategy="evolution", budget=100)
    config = base_config()
    config.search = search_defaults()
    config.search.space = "nb201"
    config.search.strategy = arg.strategy
    config.search.budget = arg.budget
    config.search.estimator = "tabular"
    config.benchmark = benchmark_defaults()
    if os.path.exists(SHARED_TABLE):
        config.benchmark.csv = os.path.normpath(SHARED_TABLE)
        config.benchmark.metric = "cifar10_test_acc_200ep"
    return config
