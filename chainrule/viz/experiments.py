"""Pictures of chainrule.experiments results (matplotlib, imported lazily)."""
import math

from chainrule.viz.plots import pyplot, save


def plot_depth_vs_width(result, path):
    plt = pyplot()
    names = list(result["targets"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for family, rows in result["targets"][name]["families"].items():
            ax.loglog([r["params"] for r in rows], [max(r["loss"], 1e-8) for r in rows],
                      marker="o", ms=4, label=family)
        ax.axhline(result["settings"]["threshold"], color="k", ls=":", lw=1, label="threshold")
        ax.set(title=name, xlabel="parameters", ylabel="final loss (MSE / Var), floor 1e-8")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    return save(plt, fig, path, dpi=100)


def plot_fits(result, path):
    """Per target: the target and, for each family, the net whose size is nearest the budget."""
    plt = pyplot()
    budget = result["settings"]["budget"]
    names = list(result["targets"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        entry = result["targets"][name]
        ax.plot(entry["x"], entry["y"], "k", lw=2, alpha=0.3, label="target")
        for family, rows in entry["families"].items():
            r = min(rows, key=lambda r: abs(math.log(r["params"] / budget)))
            ax.plot(entry["x"], r["pred"], lw=1,
                    label=f"{family}, {r['params']} params (loss {r['loss']:.1e})")
        ax.set(title=name, xlabel="x")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return save(plt, fig, path, dpi=100)
