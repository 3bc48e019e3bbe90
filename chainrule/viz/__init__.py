"""Pictures: training curves, decision boundaries, confusion matrices, training health
(matplotlib, imported lazily),
and the computation graph (DOT text; Graphviz's `dot` renders it)."""
from chainrule.viz.plots import (plot_confusion_matrix, plot_decision_boundary, plot_health,
                                 plot_history, pyplot)
from chainrule.viz.graph import graph, record
