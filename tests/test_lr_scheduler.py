"""cr.optim.lr_scheduler against torch.optim.lr_scheduler (lr and momentum sequences over 30
steps), ReduceLROnPlateau on scripted metrics, state_dict round trips; cr.nn.utils clipping
against torch.nn.utils."""
import numpy as np
import pytest

import chainrule as cr
from chainrule import optim
from chainrule.nn.utils import clip_grad_norm_, clip_grad_value_, get_total_norm
from chainrule.optim import lr_scheduler as sched

STEPS = 30


def _torch():
    return pytest.importorskip("torch")


def _optimizer(optim_mod, params, kind):
    groups = [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.02}]
    if kind == "adam":
        return optim_mod.Adam(groups, lr=0.1, betas=(0.9, 0.99))
    return optim_mod.SGD(groups, lr=0.1, momentum=0.9)


def _params(lib):
    if lib == "cr":
        return [cr.ones(2, dtype=cr.float64, requires_grad=True),
                cr.ones(1, dtype=cr.float64, requires_grad=True)]
    torch = _torch()
    return [torch.ones(2, dtype=torch.float64, requires_grad=True),
            torch.ones(1, dtype=torch.float64, requires_grad=True)]


def _groups_record(opt, scheduler):
    g = opt.param_groups
    return (list(scheduler.get_last_lr()) + [x["lr"] for x in g]
            + [x["betas"][0] if "betas" in x else x["momentum"] for x in g])


def _schedule(lib, make, kind="sgd", steps=STEPS, metrics=None):
    mod, sched_mod = (optim, sched) if lib == "cr" else (_torch().optim,
                                                        _torch().optim.lr_scheduler)
    opt = _optimizer(mod, _params(lib), kind)
    schedulers = make(sched_mod, opt)
    schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
    record = [_groups_record(opt, schedulers[-1])]
    for i in range(steps):
        opt.step()
        for s in schedulers:
            s.step() if metrics is None else s.step(metrics[i])
        record.append(_groups_record(opt, schedulers[-1]))
    return np.array(record, dtype=float)


# (id, factory(lr_scheduler module, optimizer) -> scheduler or list of schedulers, optimizer kind)
CASES = [
    ("step", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5), "sgd"),
    ("multistep", lambda m, o: m.MultiStepLR(o, milestones=[8, 3, 20, 8], gamma=0.3), "sgd"),
    ("exponential", lambda m, o: m.ExponentialLR(o, gamma=0.9), "sgd"),
    ("cosine", lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001), "sgd"),
    ("cosine-no-min", lambda m, o: m.CosineAnnealingLR(o, T_max=7), "adam"),
    ("linear-up", lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=12), "sgd"),
    ("linear-down", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1,
                                           total_iters=9), "adam"),
    ("onecycle-momentum", lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=STEPS),
     "sgd"),
    ("onecycle-beta1-linear-3phase", lambda m, o: m.OneCycleLR(
        o, max_lr=0.4, epochs=6, steps_per_epoch=5, pct_start=0.25, anneal_strategy="linear",
        three_phase=True, base_momentum=0.8, max_momentum=[0.9, 0.95], div_factor=10.0,
        final_div_factor=100.0), "adam"),
    ("onecycle-no-momentum", lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=STEPS,
                                                        cycle_momentum=False), "sgd"),
    ("chained-step-exponential", lambda m, o: [m.StepLR(o, step_size=4, gamma=0.5),
                                               m.ExponentialLR(o, gamma=0.95)], "sgd"),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,make,kind", CASES, ids=IDS)
def test_schedule_matches_torch(name, make, kind):
    ours = _schedule("cr", make, kind)
    theirs = _schedule("torch", make, kind)
    assert len(np.unique(ours[:, 0])) > 2  # the lr really changes
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-15)


# (id, kwargs, metric sequence)
PLATEAU = [
    ("min-rel", dict(patience=2, factor=0.5, threshold=0.01, cooldown=1, min_lr=[0.001, 0.004]),
     [1.0, 0.9, 0.895, 0.9, 0.93, 0.89, 0.7, 0.75, 0.71, 0.72, 0.70, 0.69, 0.8, 0.8, 0.8, 0.8,
      0.8, 0.6, 0.61, 0.62, 0.63, 0.64, 0.65, 0.5, 0.66, 0.67, 0.68, 0.69, 0.7, 0.71]),
    ("max-abs", dict(mode="max", patience=1, factor=0.3, threshold=0.05, threshold_mode="abs",
                     cooldown=2, min_lr=0.003),
     [0.1, 0.2, 0.22, 0.24, 0.4, 0.41, 0.39, 0.5, 0.5, 0.5, 0.5, 0.56, 0.6, 0.6, 0.6, 0.6, 0.7,
      0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8]),
    ("max-rel-patience0", dict(mode="max", patience=0, factor=0.9, eps=1e-3),
     [1.0, 1.0, 2.0, 1.5, 1.5, 2.0, 2.001, 2.5, 2.4, 2.3, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7, 1.6,
      1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]),
]


@pytest.mark.parametrize("name,kwargs,metrics", PLATEAU, ids=[p[0] for p in PLATEAU])
def test_reduce_lr_on_plateau_matches_torch(name, kwargs, metrics):
    make = lambda m, o: m.ReduceLROnPlateau(o, **kwargs)  # noqa: E731
    ours = _schedule("cr", make, metrics=metrics)
    theirs = _schedule("torch", make, metrics=metrics)
    assert len(np.unique(ours[:, 0])) > 2
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)


def test_reduce_lr_on_plateau_by_hand():
    W = cr.ones(1, requires_grad=True)
    opt = optim.SGD([W], lr=1.0)
    s = sched.ReduceLROnPlateau(opt, patience=1, factor=0.5, min_lr=0.3)
    lrs = []
    for metric in [5, 4, 4, 4, 4, 3, 3, 3, 3, 3]:
        s.step(cr.tensor(float(metric)))  # a 0-d Tensor works as the metric
        lrs.append(s.get_last_lr()[0])
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3]


@pytest.mark.parametrize("name,make,kind", CASES + [
    ("plateau", lambda m, o: m.ReduceLROnPlateau(o, patience=1, cooldown=1), "sgd")],
    ids=IDS + ["plateau"])
def test_state_dict_round_trip(name, make, kind):
    """Save optimizer + scheduler after 10 steps, restore into fresh ones, continue: the same
    lrs and momenta as the uninterrupted run."""
    metrics = [1.0 / (1 + (i % 7)) for i in range(STEPS)]
    use_metrics = name == "plateau"

    def run(steps, start=None):
        opt = _optimizer(optim, _params("cr"), kind)
        schedulers = make(sched, opt)
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        if start is not None:
            opt.load_state_dict(start[0])
            for s, sd in zip(schedulers, start[1]):
                s.load_state_dict(sd)
        out = []
        offset = 0 if start is None else 10
        for i in range(steps):
            opt.step()
            for s in schedulers:
                s.step(metrics[offset + i]) if use_metrics else s.step()
            out.append(_groups_record(opt, schedulers[-1]))
        return out, opt, schedulers

    full, _, _ = run(STEPS)
    first, opt, schedulers = run(10)
    saved = (opt.state_dict(), [s.state_dict() for s in schedulers])
    assert all("optimizer" not in sd for sd in saved[1])
    rest, _, _ = run(STEPS - 10, start=saved)
    np.testing.assert_array_equal(np.array(first + rest), np.array(full))


def test_scheduler_errors():
    W = cr.ones(1, requires_grad=True)
    with pytest.raises(TypeError, match="not an Optimizer"):
        sched.StepLR(object(), step_size=2)
    with pytest.raises(cr.ArgumentError, match="initial_lr"):
        sched.StepLR(optim.SGD([W], lr=0.1), step_size=2, last_epoch=3)
    with pytest.raises(cr.ArgumentError, match="momentum or betas"):
        sched.OneCycleLR(optim.Adagrad([W]), max_lr=1.0, total_steps=10)
    with pytest.raises(cr.ArgumentError, match="total_steps"):
        sched.OneCycleLR(optim.SGD([W], momentum=0.9), max_lr=1.0)
    with pytest.raises(cr.ArgumentError, match="max_lr has 2 values for 1 param groups"):
        sched.OneCycleLR(optim.SGD([W], momentum=0.9), max_lr=[1.0, 2.0], total_steps=5)
    s = sched.OneCycleLR(optim.SGD([W], momentum=0.9), max_lr=1.0, total_steps=2)
    s.step()
    s.step()
    with pytest.raises(cr.ArgumentError, match="tried to step 3 times"):
        s.step()
    with pytest.raises(cr.ArgumentError, match="factor"):
        sched.ReduceLROnPlateau(optim.SGD([W]), factor=1.0)
    with pytest.raises(cr.ArgumentError, match="mode"):
        sched.ReduceLROnPlateau(optim.SGD([W]), mode="best")


# ---- gradient clipping ------------------------------------------------------------------------
def _grads_pair(seed=0):
    torch = _torch()
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    grads = [rng.standard_normal(s) * 3 for s in shapes]
    ours, theirs = [], []
    for g in grads:
        p = cr.zeros(*g.shape, dtype=cr.float64, requires_grad=True)
        p.grad = cr.tensor(g.copy(), dtype=cr.float64)
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(g.copy())
        ours.append(p)
        theirs.append(t)
    # a parameter without a gradient is ignored by both
    ours.append(cr.zeros(2, dtype=cr.float64, requires_grad=True))
    theirs.append(torch.zeros(2, dtype=torch.float64, requires_grad=True))
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = _torch()
    ours, theirs = _grads_pair()
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, cr.Tensor) and total.shape == () and total.dtype == np.float64
    np.testing.assert_allclose(total.item(), t_total.item(), rtol=1e-12)
    for p, t in zip(ours[:-1], theirs[:-1]):
        np.testing.assert_allclose(p.grad.data, t.grad.numpy(), rtol=1e-12)
    assert ours[-1].grad is None
    if max_norm < 1:  # clipped: the new norm is max_norm
        np.testing.assert_allclose(get_total_norm([p.grad for p in ours[:-1]], norm_type).item(),
                                   max_norm, rtol=1e-5)


def test_clip_grad_norm_in_place_single_tensor_and_nonfinite():
    p = cr.zeros(2, dtype=cr.float64, requires_grad=True)
    p.grad = g = cr.tensor([3.0, 4.0], dtype=cr.float64)
    total = clip_grad_norm_(p, 1.0)
    assert p.grad is g and total.item() == 5.0
    np.testing.assert_allclose(g.data, [0.6, 0.8], rtol=1e-5)
    p.grad = cr.tensor([np.nan, 1.0], dtype=cr.float64)
    with pytest.raises(cr.AnomalyError, match="non-finite|nan"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert clip_grad_norm_([cr.zeros(1, requires_grad=True)], 1.0).item() == 0.0  # no grads


def test_clip_grad_value_matches_torch():
    torch = _torch()
    ours, theirs = _grads_pair(1)
    clip_grad_value_(ours, 1.5)
    torch.nn.utils.clip_grad_value_(theirs, 1.5)
    for p, t in zip(ours[:-1], theirs[:-1]):
        np.testing.assert_array_equal(p.grad.data, t.grad.numpy())
    assert max(np.abs(p.grad.data).max() for p in ours[:-1]) == 1.5
