"""Neural architecture search: cell search spaces (genotypes, cells, cell networks).

`genotypes` holds the NASNet/DARTS genotype format and known cells (NASNet-A, DARTS V1/V2);
`cells` builds any genotype's cells and the network that stacks them (NASNet-A's models in
cvjax/models/nasnet.py are built with it).
"""

# cvjax.models first: its nasnet module imports cvjax.nas.cells, which imports cvjax.models.layers;
# entering through cvjax.nas.cells would otherwise find cells half-initialized.
import cvjax.models  # noqa: F401, I001
from cvjax.nas import cell_space, mbconv, nb201  # noqa: F401  (they register the spaces)
from cvjax.nas.genotypes import GENOTYPES, OPERATIONS, PRIMITIVES, Genotype, get_genotype
from cvjax.nas.spaces import SearchSpace, get_space, space_names

__all__ = [
    "GENOTYPES",
    "OPERATIONS",
    "PRIMITIVES",
    "Genotype",
    "SearchSpace",
    "get_genotype",
    "get_space",
    "space_names",
]
