"""The primitives: each a small Function class with its forward and backward side by side.

arithmetic: Add Mul Div Pow Matmul; pointwise: Exp Log Log1p Expm1 Sqrt Sin Cos Tanh Sigmoid ReLU
Erf Abs Maximum Minimum Clamp Where Clone Cast; reduce: Sum Amax Amin Prod Logsumexp Softmax LogSoftmax;
fused (for measured speed): Linear SoftmaxCrossEntropy; movement: Reshape Permute Expand Cat Stack Index IndexAdd IndexPut.
"""
from chainrule.ops.arithmetic import Add, Div, Matmul, Mul, Pow, matmul, sub
from chainrule.ops.pointwise import (Abs, Cast, Clamp, Clone, Cos, Erf, Exp, Expm1, Log, Log1p,
                                     Maximum, Minimum, ReLU, Sigmoid, Sin, Sqrt, Tanh, Where, cast,
                                     clamp, compare, maximum, minimum, where)
from chainrule.ops.reduce import (Amax, Amin, Logsumexp, LogSoftmax, Prod, Softmax, Sum, amax,
                                  amin, log_softmax, logsumexp, normalize_dim, prod, reduce_args,
                                  softmax, sum)
from chainrule.ops.movement import (Cat, Expand, Index, IndexAdd, IndexPut, Permute, Reshape,
                                    Stack, cat, expand, getitem, inplace, permute, reshape,
                                    setitem, stack)
from chainrule.ops.fused import Linear, SoftmaxCrossEntropy
