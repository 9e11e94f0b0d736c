"""NASNet-A (Zoph et al. 2018, "Learning Transferable Architectures for Scalable Image
Recognition"): the NASNet-A genotype in the cell network of cvjax/nas/cells.py.

A model is data: the genotype (`cvjax.nas.genotypes.NASNET_A`, the normal and reduction cells of
Fig. 4) and the macro parameters of TF-slim's configs (`mobile_imagenet_config`,
`large_imagenet_config`), which timm (nasnetalarge) and Cadene's pretrainedmodels
(nasnetamobile) port:

- nasnet_a_mobile, "NASNet-A (4 @ 1056)": 4 normal cells per stage, 44 filters (penultimate
  24 x 44 = 1056), a stem of 32 filters, 224x224;
- nasnet_a_large, "NASNet-A (6 @ 4032)": 6 cells per stage, 168 filters (4032), a stem of 96,
  331x331, and the first cell after each reduction reading the cell before the reduction's input
  (`skip_reduction_input`).

Both: BN epsilon 1e-3, TF "SAME" padding, dropout 0.5 before the classifier (TF-slim's
`dense_dropout_keep_prob`), ReLU before the global pool. Pooling follows TF (padding ignored by
max pools, left out of averages); Cadene's mobile port zero-pads some stride-2 pools instead.
Parameter names follow timm: conv0, cell_stem_0/1, cell_<i>, reduction_cell_<i>, comb_iter_<k>_
<left|right>; normal cells are numbered 0, 1, ... across stages as in TF-slim (Cadene's mobile
port numbers them as the large model: 0-3, 6-9, 12-15).

32x32 inputs: `cifar_stem=True` replaces the stem convolution and two stem cells by a 3x3/1
convolution and BN, as the paper's CIFAR-10 models; the first cell reads the stem output raw
(TF-slim `_cifar_stem`). The paper's CIFAR model "NASNet-A (6 @ 768)" is
`create("nasnet_a_mobile", num_classes=10, cifar_stem=True, num_cells=6, filters=32,
stem_size=96, drop_rate=0.0, bn_eps=1e-5)` (3,346,538 parameters; 3.3M in Table 1); see
configs/nasnet.py. `aux_logits=True` adds the auxiliary head on the last cell of the second stage
(loss weight 0.4 in TF-slim); `drop_path_rate` is ScheduledDropPath's final rate.

darts_cifar: DARTS' CIFAR-10 evaluation network (Liu et al. 2019, Sec. 3.2) for any genotype
string (`genotype`, default DARTS V2; cvjax/nas/cell_space.py searches them): 20 cells (6 normal
cells per stage, 2 reductions), 36 filters, a 3x3 stem of 3 x 36, each cell's inputs
preprocessed by ReLU-conv-BN, no ReLU before the pool, the auxiliary head after the second
reduction, PyTorch BatchNorm (eps 1e-5), no dropout. DARTS V2 has 3,349,342 parameters without
the auxiliary head (3,825,768 with it): DARTS' train.py logs `param size = 3.349342MB` from
`utils.count_parameters_in_MB`, which leaves the auxiliary head out (3.3M in Table 1). DARTS
trains it with `aux_logits=True` (weight 0.4), `drop_path_rate=0.2` (raised linearly over the
epochs there; fixed here, not scaled by depth) and cutout.
"""

import functools

from cvjax.models.registry import register
from cvjax.nas.cells import CellNetwork
from cvjax.nas.genotypes import NASNET_A


def _register(name: str, input_size: int, **kwargs) -> None:
    register(
        name,
        functools.partial(CellNetwork, genotype=NASNET_A, drop_rate=0.5, **kwargs),
        input_size=input_size,
        family="nasnet",
    )


_register("nasnet_a_mobile", 224, num_cells=4, filters=44, stem_size=32)
_register("nasnet_a_large", 331, num_cells=6, filters=168, stem_size=96, skip_reduction_input=True)


# DARTS' CIFAR-10 evaluation network (Liu et al. 2019, Sec. 3.3): 6 normal cells per stage (20
# cells), 36 initial channels, stem 3 x 36, the first cell preprocessing the stem's output.
DARTS_CIFAR = dict(
    num_cells=6,
    filters=36,
    stem_size=108,
    cifar_stem=True,
    preprocess_stem=True,
    final_act=False,
    aux_after_reduction=True,
    scale_drop_path=False,
    bn_eps=1e-5,
)

register(
    "darts_cifar",
    functools.partial(CellNetwork, genotype="DARTS_V2", drop_rate=0.0, **DARTS_CIFAR),
    input_size=32,
    num_classes=10,
    family="nas",
)
