"""hessop: the loss Hessian of a PyTorch network as a scipy LinearOperator.

The central object is :class:`HessianOperator`, the Hessian of a model's loss
over a whole dataset as a :class:`scipy.sparse.linalg.LinearOperator`.
"""

from hessop._hessian import HessianOperator
from hessop._layout import ParameterInfo, ParameterLayout
from hessop._mpi import partition
from hessop._version import __version__

__all__ = [
    "HessianOperator",
    "ParameterInfo",
    "ParameterLayout",
    "__version__",
    "partition",
]
