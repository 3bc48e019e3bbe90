"""cr.nn: modules, layers, activations, losses and initialisers, in PyTorch's names.

    from chainrule import nn
    from chainrule.nn import functional as F
    model = nn.MLP([64, 128, 64, 10])
"""
from chainrule.nn.parameter import Buffer, Parameter
from chainrule.nn.module import Module, ModuleDict, ModuleList, Sequential, fusing
from chainrule.nn import functional, init
from chainrule.nn.activation import (ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU,
                                     Softmax, Softplus, Tanh)
from chainrule.nn.layers import (MLP, BatchNorm1d, Dropout, Embedding, Flatten, Identity,
                                 LayerNorm, Linear)
from chainrule.nn.losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss,
                                 MSELoss, NLLLoss)
from chainrule.nn import utils
