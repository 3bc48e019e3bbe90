"""Optimizers and learning-rate schedulers (`cr.optim.lr_scheduler`), PyTorch's names and
update formulas; updates are in-place NumPy math outside the graph."""
from chainrule.optim.optimizer import Optimizer
from chainrule.optim.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from chainrule.optim import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
