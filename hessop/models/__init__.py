"""Model zoo: the CIFAR ResNets of He et al. (2016) and small networks.

:func:`build_model` builds a model by name. :class:`CifarResNet` has switches
that remove BatchNorm or residual connections from all stages or from one
stage, which give the network variants of the PyHessian study.
"""

from hessop.models._resnet import BasicBlock, CifarResNet
from hessop.models._small import ACTIVATIONS, MLP, SmallCNN
from hessop.models._zoo import MODEL_NAMES, build_model

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODEL_NAMES",
    "BasicBlock",
    "CifarResNet",
    "SmallCNN",
    "build_model",
]
