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
from hessop.landscape import (
    LossLandscape,
    filter_normalized_direction,
    loss_gradient,
    loss_landscape_1d,
    loss_landscape_2d,
)
from hessop.stages import default_blocks, parameter_blocks, select_block

__all__ = [
    "ConvergenceWarning",
    "DensityCurve",
    "DiagonalResult",
    "EigenResult",
    "HessianOperator",
    "LanczosResult",
    "LossLandscape",
    "ParameterInfo",
    "ParameterLayout",
    "SpectralDensity",
    "TraceResult",
    "__version__",
    "default_blocks",
    "diagonal",
    "eigenvalues",
    "filter_normalized_direction",
    "hutchinson",
    "lanczos",
    "loss_gradient",
    "loss_landscape_1d",
    "loss_landscape_2d",
    "parameter_blocks",
    "partition",
    "power_iteration",
    "select_block",
    "slq",
    "trace",
]
