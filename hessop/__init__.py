"""hessop: the loss Hessian of a PyTorch network as a scipy LinearOperator.

The central object is :class:`HessianOperator`, the Hessian of a model's loss
over a whole dataset as a :class:`scipy.sparse.linalg.LinearOperator`.
"""

from hessop._diagonal import diagonal
from hessop._eigen import eigenvalues
from hessop._hessian import HessianOperator
from hessop._lanczos import lanczos
from hessop._layout import ParameterInfo, ParameterLayout
from hessop._mpi import partition
from hessop._power import power_iteration
from hessop._results import (
    DensityCurve,
    DiagonalResult,
    EigenResult,
    LanczosResult,
    SpectralDensity,
    TraceResult,
)
from hessop._slq import slq
from hessop._trace import hutchinson, trace
from hessop._version import __version__
from hessop._warnings import ConvergenceWarning

__all__ = [
    "ConvergenceWarning",
    "DensityCurve",
    "DiagonalResult",
    "EigenResult",
    "HessianOperator",
    "LanczosResult",
    "ParameterInfo",
    "ParameterLayout",
    "SpectralDensity",
    "TraceResult",
    "__version__",
    "diagonal",
    "eigenvalues",
    "hutchinson",
    "lanczos",
    "partition",
    "power_iteration",
    "slq",
    "trace",
]
