"""Run every example in examples/ and write all of their figures into docs/figures/.

Run from anywhere: python docs/make_figures.py [--quick] [--only 01,04]
The full run takes a few minutes (07, depth vs width, is most of it); --quick takes seconds but
draws the small versions. The tutorial (docs/tutorial.md) shows the figures of a full run.
"""
import argparse
import importlib.util
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"


def examples():
    """The numbered example scripts, in order."""
    return sorted(p for p in (ROOT / "examples").glob("[0-9][0-9]_*.py"))


def load(path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(quick=False, only=None):
    FIGURES.mkdir(parents=True, exist_ok=True)
    for path in examples():
        if only and path.name[:2] not in only:
            continue
        print(f"==== {path.name}", flush=True)
        began = time.perf_counter()
        load(path).main(quick=quick, out=str(FIGURES))
        print(f"==== {path.name}: {time.perf_counter() - began:.1f}s", flush=True)
    for png in sorted(FIGURES.glob("*.png")):
        print(f"{png.relative_to(ROOT)}  {png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the examples' small versions")
    ap.add_argument("--only", type=lambda s: s.split(","), help="example numbers, e.g. 01,04")
    sys.exit(main(**vars(ap.parse_args())))
