"""Where a training step's time goes: microseconds per step for each phase of one chainrule
training step (the batch fetch, forward, backward, optimizer step), eager and compiled, next to
the hand-written NumPy step, in one process. A diagnostic for the per-op overhead W2 measures,
not a workload of the suite:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/phases.py [--workload W2] [--steps N]

Each phase runs `--steps` times on one fixed batch (the same batch every time, so the phases are
separable); the phases take turns over `--reps` rounds and each one's best round is printed. The sum of the phases is close to, not equal
to, a real step: a real step also frees the last step's graph and fetches new data.
"""
import argparse
import os
import sys
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def measure(workload="W2", steps=2000, reps=5, quick=False):
    """{phase: microseconds per step}."""
    import chainrule as cr
    import workloads
    from systems import NumPy, _cr_model, _cr_optimizer, _cr_train_step

    spec = workloads.make(workload, quick=quick)
    model = _cr_model(spec)
    opt = _cr_optimizer(spec, model)
    loader = cr.data.DataLoader(cr.data.TensorDataset(spec.X, spec.y), spec.batch, shuffle=True,
                                generator=cr.Generator(spec.seed))
    x, y = next(iter(loader))
    eager = lambda: cr.cross_entropy(model(x), y)  # noqa: E731
    compiled = cr.compile(lambda a, b: cr.cross_entropy(model(a), b))
    compiled(x, y).backward()
    opt.zero_grad()

    compiled_step = cr.compile(_cr_train_step(model, opt))
    compiled_step(x, y)

    def fetch():
        for _ in loader:
            pass

    def step_of(loss_fn):
        def step():
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        return step

    def backward_of(loss_fn):
        def fwd_bwd():
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
        return fwd_bwd

    numpy_epoch = NumPy().prepare(spec)
    batches = -(-spec.n // spec.batch)
    phases = {
        "fetch a batch (DataLoader)": (fetch, batches, 1),
        "eager forward + loss": (eager, steps, 1),
        "eager forward + backward": (backward_of(eager), steps, 1),
        "eager whole step": (step_of(eager), steps, 1),
        "eager whole step, fused as in cr.fit": (cr.nn.fusing()(step_of(eager)), steps, 1),
        "compiled forward + loss": (lambda: compiled(x, y), steps, 1),
        "compiled forward + backward": (backward_of(lambda: compiled(x, y)), steps, 1),
        "compiled whole step": (step_of(lambda: compiled(x, y)), steps, 1),
        "compiled step function (loss, zero_grad, backward, step)":
            (lambda: compiled_step(x, y).item(), steps, 1),
        "optimizer step": (opt.step, steps, 1),
        "hand-written NumPy step (an epoch / its steps)": (numpy_epoch, 1, spec.steps),
    }
    out = {}
    for _ in range(reps):  # rounds over all phases, so a noisy moment hits one round of each
        for name, (fn, number, per) in phases.items():
            seconds = timeit.timeit(fn, number=number) / number / per
            if name.startswith("fetch"):
                seconds /= batches
            out[name] = min(out.get(name, float("inf")), seconds * 1e6)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="W2", choices=("W1", "W2", "W3"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="the workload's tiny size")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(args.threads):
        result = measure(args.workload, args.steps, args.reps, args.quick)
    print(f"{args.workload}, {args.threads} BLAS thread(s): microseconds per step (best round)")
    for name, us in result.items():
        print(f"  {us:9.1f}  {name}")


if __name__ == "__main__":
    main()
