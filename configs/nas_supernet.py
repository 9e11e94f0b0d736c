"""Weight-sharing search on the NAS-Bench-201 space: a one-shot supernet trained once by uniform
single-path sampling (SPOS, Guo et al. 2020), then searched with every candidate scored by the
shared weights (random, evolution or REINFORCE; evolution by default).

    python -m cvjax.main --config=configs/nas_supernet.py --workdir=/tmp/cvjax/nas_supernet \
        --config.data_dir=../shared/datasets

The supernet (cvjax/nas/supernet.py) trains in <workdir>/supernet/ (resumable) on the training
split minus `holdout` examples, which score the candidates: each candidate is a (6, 5) one-hot
input to one compiled evaluation, so a score costs a fraction of a second and no compile. Smoke
size on MNIST by default (`cvjax.nas.search.weight_sharing_config`: width 8, 1 cell per stage,
3 epochs on 4,096 images, 20 queries); `:full=True` for NB201's C=16, N=5 supernet with DARTS'
search settings; `:dataset=folder:/tmp/cifar10_jpeg` for the CIFAR-10 copy.

Weight-sharing scores rank architectures poorly on NB201 (Dong & Yang 2020, Table 5: the
weight-sharing methods find cells of 54.30-93.61% there, against 93.92% for REA on the table); see
experiments/results/nas.md for what the smoke run found.

Config args: dataset (default mnist), full, strategy.
"""

from cvjax.configs import parse_arg
from cvjax.nas.search import weight_sharing_config


def get_config(arg=None):
    arg = parse_arg(arg, dataset="mnist", full=False, strategy="evolution")
    return weight_sharing_config(arg.dataset, arg.full, arg.strategy)
