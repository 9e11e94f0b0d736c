"""Architecture search on MNIST with real training of every candidate (NB201 cell space).

    python -m cvjax.main --config=configs/nas_mnist.py --workdir=/tmp/cvjax/nas_mnist \
        --config.data_dir=../shared/datasets

Each candidate cell trains with the ordinary engine in <workdir>/trials/<n>/ (resumable) and is
scored by its accuracy on held-out training examples, never the test split; trials.jsonl,
best.json, pareto.json/.png and best_cell.png are written as in configs/nas_bench201.py, and a
rerun resumes the search. `cvjax.nas.search.proxy_search_config` has both sizes:
- smoke (default): width-8 networks with 1 cell per stage, 8,000 training images, 2 epochs,
  1,000 held-out images, 6 candidates of regularized evolution (P=3, S=2);
- `:full=True`: NB201's C=16, N=5 networks, 12 epochs on 55,000 images, 5,000 held out, 100
  candidates (a GPU job).

Config args: full, strategy (random, evolution, reinforce), budget. Train the best cell with
configs/nas_train.py:arch=/tmp/cvjax/nas_mnist/best.json,dataset=mnist.

MNIST comes from TFDS, or offline from the original IDX files in `<data_dir>/mnist/`.
Measured here: see experiments/results/nas.md.
"""

from cvjax.configs import parse_arg
from cvjax.nas.search import proxy_search_config


def get_config(arg=None):
    arg = parse_arg(arg, full=False, strategy="evolution", budget=0)
    return proxy_search_config("mnist", arg.full, arg.strategy, arg.budget)
