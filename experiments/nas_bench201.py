"""Random search vs regularized evolution vs REINFORCE on the NAS-Bench-201 CIFAR-10 table.

    python experiments/nas_bench201.py --seeds=20

Every strategy runs the real search job (`cvjax.nas.search.run`, what `python -m cvjax.main
--config=configs/nas_bench201.py` runs) for each seed with a budget of 200 architectures. A
budget-B search is exactly the first B trials of a budget-200 search with the same seed
(strategies are deterministic and the budget only says when to stop; tests/test_nas_search.py
checks this), so the 50-, 100- and 200-query results are read off one run per seed. The curve is
the best score after each query, averaged over seeds.

A second table varies each strategy's own setting (evolution's population P and tournament S,
REINFORCE's learning rate) at the same budgets, with the same seeds.

Writes <out>/nas_bench201.md (tables), .json (every curve) and .png (mean best accuracy vs
queries, with the table's optimum 94.37 drawn as a line).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BUDGETS = (50, 100, 200)
STRATEGIES = {
    "random": {},
    "evolution": {},  # configs/nas_bench201.py's defaults: P=20, S=5.
    "reinforce": {},  # lr 0.05, baseline decay 0.9.
}
VARIANTS = {
    "evolution P=10 S=3": ("evolution", {"population": 10, "sample_size": 3}),
    "evolution P=10 S=5": ("evolution", {"population": 10, "sample_size": 5}),
    "evolution P=50 S=10": ("evolution", {"population": 50, "sample_size": 10}),
    "reinforce lr=0.01": ("reinforce", {"learning_rate": 0.01}),
    "reinforce lr=0.2": ("reinforce", {"learning_rate": 0.2}),
}


def search_curve(strategy: str, seed: int, budget: int, csv: str, workdir: str, **kw) -> list:
    """Best score after each trial of one search run through the real job."""
    from configs import nas_bench201
    from cvjax.nas import search

    config = nas_bench201.get_config(f"strategy={strategy},budget={budget}")
    config.seed = seed
    config.benchmark.csv = csv
    config.benchmark.metric = "cifar10_test_acc_200ep"
    config.search.pictures = False
    for key, value in kw.items():
        config.search[key] = value
    search.run(config, workdir)
    with open(os.path.join(workdir, "trials.jsonl")) as f:
        scores = [json.loads(line)["score"] for line in f]
    # A policy that stops proposing new cells ends early: its best stays where it was.
    scores += [max(scores)] * (budget - len(scores))
    return list(np.maximum.accumulate(scores))


def summarize(curves: np.ndarray, optimum: float) -> dict:
    out = {}
    for b in BUDGETS:
        final = curves[:, b - 1]
        out[b] = {
            "mean": float(final.mean()),
            "std": float(final.std()),
            "gap": float(optimum - final.mean()),
            "hit": float(np.mean(final >= optimum - 1e-9)),
        }
    return out


def why(table, optimum: float) -> list[str]:
    """The landscape facts that explain the ranking, measured on the table."""
    from cvjax.nas import get_space

    space = get_space("nb201")
    scores = {a: v[table.metric] for a, v in table.table.items()}
    values = np.array(list(scores.values()))
    rng = np.random.default_rng(0)
    archs = list(scores)
    pairs = []
    for _ in range(5000):
        parent = archs[int(rng.integers(len(archs)))]
        pairs.append((scores[parent], scores[space.mutate(parent, rng)]))
    corr = float(np.corrcoef(np.array(pairs).T)[0, 1])
    share = {t: (values >= t).mean() * 100 for t in (93.5, 94.0)}
    top = int((values >= optimum - 0.02).sum())
    expected = 1 - (1 - share[94.0] / 100) ** 200
    return [
        "Why:",
        "",
        f"- Good cells are rare: {share[93.5]:.1f}% of the 15,625 cells reach 93.5% and "
        f"{share[94.0]:.2f}% reach 94.0%; {top} are within 0.02 of the optimum. Random search "
        f"finds a 94% cell in 200 queries with probability {expected:.0%}, and it gets no "
        "closer by looking harder: each query is independent.",
        f"- The landscape is smooth under one-edge mutations (the accuracy of a cell and of a "
        f"random one-edge mutant correlate at r = {corr:.2f} over 5,000 pairs), which is what "
        "regularized evolution exploits: tournaments pick parents among the best recent cells, "
        "their mutants are mostly good, and aging keeps the population moving instead of "
        "settling on one early lucky cell.",
        "- REINFORCE learns one independent distribution per edge, so it can only express "
        '"3x3 convolutions are good on most edges", not which combination is best; with '
        "~200 noisy rewards and an EMA baseline it concentrates slowly (lr 0.05), and a faster "
        "rate (0.2) collapses early on a near-optimal cell and then proposes only cells it has "
        "seen (some seeds stop short of 200 distinct cells). It ends between random search "
        "and evolution, the order NAS-Bench-201 reports (REA 93.92 > REINFORCE 93.85 > "
        "random 93.70 at its budget).",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--csv",
        default=os.path.join(
            REPO, "..", "shared", "datasets", "nas_bench_201", "nas_bench_201_cifar10.csv"
        ),
    )
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    parser.add_argument("--no_variants", action="store_true", help="Skip the settings table.")
    args = parser.parse_args()

    from absl import logging

    from cvjax.nas import get_space, plot
    from cvjax.nas.estimators import TabularEstimator

    logging.set_verbosity(logging.WARNING)
    table = TabularEstimator(args.csv, "cifar10_test_acc_200ep", get_space("nb201"))
    optimum_arch, optimum = table.best()
    runs = {name: (name, kw) for name, kw in STRATEGIES.items()}
    if not args.no_variants:
        runs.update(VARIANTS)
    start = time.time()
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (strategy, kw) in runs.items():
            curves[name] = np.array(
                [
                    search_curve(
                        strategy,
                        seed,
                        max(BUDGETS),
                        args.csv,
                        os.path.join(tmp, f"{name}-{seed}".replace(" ", "_")),
                        **kw,
                    )
                    for seed in range(args.seeds)
                ]
            )
            print(f"{name}: {summarize(curves[name], optimum)[max(BUDGETS)]}", flush=True)
    seconds = time.time() - start
    stats = {name: summarize(c, optimum) for name, c in curves.items()}

    os.makedirs(args.out, exist_ok=True)
    queries = np.arange(1, max(BUDGETS) + 1)
    plot.plot_search_curves(
        {
            name: (queries, c.mean(0), c.std(0) / np.sqrt(len(c)))
            for name, c in curves.items()
            if name in STRATEGIES
        },
        os.path.join(args.out, "nas_bench201.png"),
        optimum=optimum,
        title=f"NAS-Bench-201 CIFAR-10 test accuracy, {args.seeds} seeds",
        optimum_label="table optimum",
        ylim=(92.5, optimum + 0.15),  # The first queries start far below; zoom on the race.
    )
    with open(os.path.join(args.out, "nas_bench201.json"), "w") as f:
        json.dump(
            {
                "optimum": optimum,
                "optimum_arch": optimum_arch,
                "seeds": args.seeds,
                "stats": stats,
                "curves": {k: v.tolist() for k, v in curves.items()},
            },
            f,
        )

    def rows(names):
        lines = []
        for name in names:
            cells = [f"{stats[name][b]['mean']:.2f} ± {stats[name][b]['std']:.2f}" for b in BUDGETS]
            hits = f"{stats[name][max(BUDGETS)]['hit'] * 100:.0f}%"
            gap = f"{stats[name][max(BUDGETS)]['gap']:.2f}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {gap} | {hits} |")
        return lines

    header = [
        "| strategy | "
        + " | ".join(f"{b} queries" for b in BUDGETS)
        + f" | gap at {max(BUDGETS)} | seeds at the optimum |",
        "|---|" + "---|" * (len(BUDGETS) + 2),
    ]
    md = [
        "# NAS-Bench-201, CIFAR-10: search strategies on the tabular benchmark",
        "",
        f"`python experiments/nas_bench201.py --seeds={args.seeds}` "
        f"({time.strftime('%Y-%m-%d')}, 2-core CPU, {seconds:.0f} s for everything).",
        "",
        f"Best test accuracy found (%), mean ± std over {args.seeds} seeds "
        f"(seeds 0..{args.seeds - 1});"
        f" the table's optimum is {optimum:.2f} ({optimum_arch}). Budget = distinct cells "
        "evaluated; repeats are free. Gap = optimum − mean.",
        "",
        *header,
        *rows(STRATEGIES),
        "",
        "![mean best accuracy vs queries](nas_bench201.png)",
        "",
    ]
    md += why(table, optimum)
    if not args.no_variants:
        md += [
            "Strategy settings (same seeds and budgets):",
            "",
            *header,
            *rows(
                [
                    "evolution",
                    *[n for n in VARIANTS if n.startswith("evolution")],
                    "reinforce",
                    *[n for n in VARIANTS if n.startswith("reinforce")],
                ]
            ),
            "",
        ]
    with open(os.path.join(args.out, "nas_bench201.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
