"""MnasNet/EfficientNet-style block search: kernel, expansion, squeeze-excitation and depth per
stage of EfficientNet-B0 (Tan et al. 2019; Tan & Le 2019), each candidate trained for real.

    python -m cvjax.main --config=configs/nas_mbconv.py:dataset=folder:/tmp/cifar10_jpeg \
        --workdir=/tmp/cvjax/nas_mbconv --config.search.max_gmacs=0.02

The space is cvjax/nas/mbconv.py's `MBConvSpace` (strings like "k3e6se1d2-k5e3se0d3-...", one
group per B0 stage; B0's widths and strides). `--config.search.max_gmacs` / `max_params` keep
the search under a compute target, as MnasNet's latency target does, and pareto.json/.png give
the accuracy-vs-GMACs front of everything evaluated. Smoke size by default (B0 at width 0.25,
32x32 inputs, 2,000 training images for 1 epoch, 1,000 held out, 3 candidates; see
`cvjax.nas.search.proxy_search_config`); `:full=True` for width 1.0, NB201's 12-epoch proxy and
100 candidates on a GPU.

Config args: dataset (default cifar10), full, strategy, budget.
Measured here: see experiments/results/nas.md.
"""

from cvjax.configs import parse_arg
from cvjax.nas.search import proxy_search_config


def get_config(arg=None):
    arg = parse_arg(arg, dataset="cifar10", full=False, strategy="evolution", budget=0)
    return proxy_search_config(arg.dataset, arg.full, arg.strategy, arg.budget, space="mbconv")
