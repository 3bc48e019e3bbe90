"""Step 7, deep versus wide: how many parameters does each shape need to fit a function?

The universal approximation theorem says one hidden layer is enough for any continuous function
on an interval, given enough units; it says nothing about how many. Here we measure it: the same
1-D targets (sin(3 pi x), |x|, a triangle wave with 4 teeth) fitted by one wide hidden layer of
several widths and by narrow nets of several depths, each trained the same way. Read the printed
table and the plot: the numbers, not the theorem, say which shape wins on which target (and the
answer depends on the training budget, too: these are trained nets, not best possible ones).

Same as: chainrule experiment depth-vs-width [--quick] [--out DIR]   (the full run takes minutes)

Run: python examples/07_depth_vs_width.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

from chainrule.experiments import depth_vs_width, report
from chainrule.viz.experiments import plot_depth_vs_width, plot_fits


def main(quick=False, out=None):
    out = out or "figures"
    result = depth_vs_width(quick=quick, progress=not quick)
    print(report(result))
    os.makedirs(out, exist_ok=True)
    plot_depth_vs_width(result, os.path.join(out, "07_depth_vs_width.png"))
    plot_fits(result, os.path.join(out, "07_depth_vs_width_fits.png"))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three sizes per family, 300 steps")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
