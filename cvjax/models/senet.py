"""SENet (Hu et al. 2018, "Squeeze-and-Excitation Networks") as released in Caffe and ported by
Cadene's pretrainedmodels (timm's `legacy_*` models): registrations of `resnet.ResNet`.

Every residual branch ends in a squeeze-excitation gate (`layers.SqueezeExcite`, reduction 16,
its two FC layers written as 1x1 convolutions with bias) before the addition. What sets these
ports apart from timm's `seresnet50` / `seresnext50_32x4d` (registered in resnet.py):
- the stem max pool is Caffe's ceil-mode 3x3/2 without padding (`ceil_pool`);
- SE-ResNet bottlenecks put the stride on the first 1x1 convolution (`stride_on_1x1`, the original
  Caffe ResNet); SE-ResNeXt and SENet-154 put it on the grouped 3x3;
- SENet-154 (Hu et al. 2018, Sec. 6.1 / appendix: the ILSVRC 2017 winner) is an SE-ResNeXt-152
  64x4d with a stem of three 3x3 convolutions (64, 64, 128; `deep_stem`), a first 1x1 of half the
  grouped width (`reduce_first=2`), 3x3 strided projection shortcuts (`down_kernel=3`) and dropout
  0.2 before the classifier.
timm's SENet class defaults every legacy model to dropout 0.2; the Caffe release and Cadene's port
use it for SENet-154 only, as here (`drop_rate` overrides it). Parameter counts equal timm's.

32x32 inputs (CIFAR): `cifar_stem=True` makes the first stem convolution stride 1 and drops the
max pool (for SENet-154 all three 3x3 convolutions stay), so the stages see 32/16/8/4 maps.
"""

import functools

from cvjax.models.registry import register
from cvjax.models.resnet import ResNet

_SE = dict(se_ratio=1 / 16, ceil_pool=True)


def _register(name: str, **kwargs) -> None:
    register(name, functools.partial(ResNet, **_SE, **kwargs), input_size=224, family="senet")


_register(
    "senet154",
    stage_sizes=(3, 8, 36, 3),
    groups=64,
    width_per_group=4,
    deep_stem=True,
    stem_width=128,
    reduce_first=2,
    down_kernel=3,
    drop_rate=0.2,
)
for _name, _sizes in [("18", (2, 2, 2, 2)), ("34", (3, 4, 6, 3))]:
    _register(f"legacy_seresnet{_name}", stage_sizes=_sizes, bottleneck=False)
for _name, _sizes in [("50", (3, 4, 6, 3)), ("101", (3, 4, 23, 3)), ("152", (3, 8, 36, 3))]:
    _register(f"legacy_seresnet{_name}", stage_sizes=_sizes, stride_on_1x1=True)
for _name, _sizes in [("26", (2, 2, 2, 2)), ("50", (3, 4, 6, 3)), ("101", (3, 4, 23, 3))]:
    _register(f"legacy_seresnext{_name}_32x4d", stage_sizes=_sizes, groups=32, width_per_group=4)
