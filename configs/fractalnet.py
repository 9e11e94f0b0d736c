"""FractalNet (Larsson et al. 2017) on CIFAR-10: the 20-layer network of Sec. 4.

Default: `fractalnet` (B = 5 blocks, C = 3 columns, channels 64-128-256-512-512) with dropout
(0, 0.1, 0.2, 0.3, 0.4) per block and drop-path (local drop rate 0.15; half of the mini-batches
global, one column for the whole network), crop (4-pixel zero pad) + flip ("C10+"). Recipe of
Sec. 4: SGD momentum 0.9, batch 100, 400 epochs, lr 0.02 divided by 10 each time the number of
remaining epochs halves (epochs 200, 300, 350 and 375). The paper states no weight decay, and
the PyTorch reproduction khanrc/pt.fractalnet uses none: 0 here.

    python -m cvjax.main --config=configs/fractalnet.py --workdir=/tmp/cvjax/fractalnet

Published (Table 1, C10+ test error): 4.60% with drop-path + dropout (4.68% for its deepest
column alone), 5.22% without either. khanrc/pt.fractalnet reports 6.44% / 6.06% for the same
setting and could not reproduce the paper. Variants (`:key=value,...`):

    configs/fractalnet.py:drop=false (no dropout and no drop-path: the paper's 5.22% row)
    configs/fractalnet.py:epochs=5 (shorter; the schedule is scaled to fit)

The deepest column of a trained network is `models.create("fractalnet", column=2)` applied to
the same variables (the paper's "deepest column alone").

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): fractalnet, 33,724,618 params, 0.691 GMACs at 32x32, 5 train images/s at
batch 100: 0.016 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1000 on 1,000 test images (100
per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/fractalnet \
        --config=configs/fractalnet.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.016
"""

from cvjax.configs import base_config, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="fractalnet", dataset="cifar10", epochs=0.0, drop=True)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    if not arg.drop:
        config.model_kwargs.block_dropout = (0.0,) * 5
        config.model_kwargs.local_drop_rate = 0.0
        config.model_kwargs.global_drop_ratio = 0.0
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.batch_size = 100
    config.num_epochs = 400
    config.learning_rate = 0.02
    config.schedule.name = "piecewise"
    config.schedule.boundaries_epochs = (200, 300, 350, 375)
    config.schedule.decay_factor = 0.1
    config.weight_decay = 0.0
    config.eval_every = "5ep"
    config.checkpoint_every = "5ep"
    return shorten(config, arg.epochs)
