"""Architecture search on CIFAR-10 with real training of every candidate (NB201 cell space).

    mkdir -p /tmp/cifar10_jpeg && tar -xzf \
        ../shared/datasets/cifar10_jpeg_q75/CIFAR-10-images-jpeg.tar.gz -C /tmp/cifar10_jpeg
    python -m cvjax.main --config=configs/nas_cifar10.py:dataset=folder:/tmp/cifar10_jpeg \
        --workdir=/tmp/cvjax/nas_cifar10

The same job as configs/nas_mnist.py (see there and `cvjax.nas.search.proxy_search_config`) on
CIFAR-10 (TFDS `cifar10` by default, or any folder tree such as the JPEG copy): smoke size by
default, `:full=True` for NB201's own networks and 12-epoch proxy on 45,000 / 5,000 images.
That full search is how NAS-Bench-201's table itself was made (there, with 200 epochs): its
results can be compared with experiments/results/nas_bench201.md.

Config args: dataset, full, strategy, budget.
Measured here: see experiments/results/nas.md.
"""

from cvjax.configs import parse_arg
from cvjax.nas.search import proxy_search_config


def get_config(arg=None):
    arg = parse_arg(arg, dataset="cifar10", full=False, strategy="evolution", budget=0)
    return proxy_search_config(arg.dataset, arg.full, arg.strategy, arg.budget)
