"""EfficientNet's compound-scaling search (Tan & Le 2019, Sec. 3.3, step 1): with phi = 1, find
depth, width and resolution coefficients alpha, beta, gamma under alpha * beta^2 * gamma^2 ~ 2,
by training each scaled copy of a small base network.

    python -m cvjax.main --config=configs/nas_compound.py:dataset=folder:/tmp/cifar10_jpeg \
        --workdir=/tmp/cvjax/nas_compound --config.search.strategy=random

The space is cvjax/nas/mbconv.py's `CompoundSpace`: alpha in 1.0..2.0, beta and gamma in
1.0..1.5 (steps of 0.05), the triples within 0.1 of the FLOPs target (109 of them; the paper's
1.2, 1.1, 1.15 is one). Each candidate is B0 (at width `base_width`) with depth x alpha, width x
beta, and input size 32 x gamma (CIFAR's images resized). The paper grid-searched B0 on
ImageNet; here the proxy is small: B0 at width 0.25, 2,000 training images for 1 epoch, 1,000
held out, 3 candidates (`:full=True`: width 1.0, 12 epochs, 100 of the 109 triples, on
a GPU). best.json's coefficients then scale B0 with configs/efficientnet.py's `phi`.

Config args: dataset (default cifar10), full, strategy, budget.
Measured here: see experiments/results/nas.md.
"""

from cvjax.configs import parse_arg
from cvjax.nas.search import proxy_search_config


def get_config(arg=None):
    arg = parse_arg(arg, dataset="cifar10", full=False, strategy="random", budget=0)
    return proxy_search_config(arg.dataset, arg.full, arg.strategy, arg.budget, space="compound")
