"""First-order DARTS (Liu et al. 2019, Sec. 2.3 with xi = 0) on the NAS-Bench-201 space.

    python -m cvjax.main --config=configs/nas_darts.py --workdir=/tmp/cvjax/nas_darts \
        --config.data_dir=../shared/datasets

Architecture weights alpha (6 edges x 5 ops) mix every op of the NB201 supernet through a
softmax; each step updates alpha by Adam on a held-out batch and the network weights by SGD on a
training batch (cvjax/nas/darts.py). After every epoch the cell of the strongest op per edge is
scored by the supernet and written to trials.jsonl with alpha; best.json is the last epoch's
cell, as DARTS returns it. `--config.darts.derive_exclude_none=True` leaves "none" out of the
argmax, as the DARTS paper does (NB201's DARTS baseline keeps it). Checkpoints every epoch in
<workdir>/darts/; a rerun resumes.

Smoke size on MNIST by default (width 8, 1 cell per stage, 3 epochs on 4,096 images);
`:full=True` for NB201's C=16, N=5 supernet, 50 epochs and a half/half split (a GPU job).
Published (NB201, Table 5, CIFAR-10): first-order DARTS collapses to a cell of skip connections,
54.30% test accuracy; see experiments/results/nas.md for the smoke run.

Config args: dataset (default mnist), full.
"""

from cvjax.configs import parse_arg
from cvjax.nas.search import weight_sharing_config


def get_config(arg=None):
    arg = parse_arg(arg, dataset="mnist", full=False)
    return weight_sharing_config(arg.dataset, arg.full, "darts")
