"""Pictures: training curves, decision boundaries, confusion matrices (matplotlib, imported lazily)."""
from chainrule.viz.plots import (plot_confusion_matrix, plot_decision_boundary, plot_history,
                                 pyplot)
