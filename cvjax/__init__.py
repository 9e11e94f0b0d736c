"""cvjax: convolutional networks, their training and their search, in JAX/Flax."""

__version__ = "0.1.0"
