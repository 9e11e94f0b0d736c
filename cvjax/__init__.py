"""cvjax: convolutional networks, their training and their search, in JAX/Flax."""

from cvjax import xla_flags as _xla_flags

_xla_flags.apply()  # Before JAX's backend starts; see cvjax/xla_flags.py.

__version__ = "0.1.0"
