"""minires.optim: optimiser steps against hand-computed values (and PyTorch where installed),
parameter groups, state_dict round trips, and schedule values at chosen iterations."""
import math

import numpy as np
import pytest

import minires as mr
from minires.optim import (
    SGD,
    Adam,
    AdamW,
    ConstantLR,
    CosineAnnealingLR,
    MultiStepLR,
    OneCycleLR,
    Warmup,
    split_weight_decay,
)


def param(values):
    return mr.tensor(np.asarray(values, dtype=np.float32), requires_grad=True)


def run(opt_cls, grads, p0=1.0, **kw):
    """Scalar parameter p0, one step per gradient; returns the values after each step."""
    p = param([p0])
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = np.array([g], dtype=np.float32)
        opt.step()
        out.append(float(p.data[0]))
    return out


# --- SGD, by hand ---------------------------------------------------------------------------------
def test_sgd_plain_and_weight_decay():
    assert run(SGD, [1.0, 2.0], lr=0.1) == pytest.approx([0.9, 0.7])
    # g' = g + wd * p: 1 + 0.1 * 1 = 1.1 -> p = 1 - 0.11 = 0.89
    assert run(SGD, [1.0], lr=0.1, weight_decay=0.1) == pytest.approx([0.89])


def test_sgd_momentum_by_hand():
    # buf1 = g1 = 1              -> p1 = 1 - 0.1 * 1 = 0.9
    # buf2 = 0.9 * 1 + 2 = 2.9   -> p2 = 0.9 - 0.29 = 0.61
    # buf3 = 0.9 * 2.9 - 1 = 1.61 -> p3 = 0.61 - 0.161 = 0.449
    assert run(SGD, [1.0, 2.0, -1.0], lr=0.1, momentum=0.9) == pytest.approx([0.9, 0.61, 0.449])


def test_sgd_nesterov_by_hand():
    # buf1 = 1,   d1 = 1 + 0.9 * 1 = 1.9       -> p1 = 1 - 0.19 = 0.81
    # buf2 = 2.9, d2 = 2 + 0.9 * 2.9 = 4.61    -> p2 = 0.81 - 0.461 = 0.349
    assert run(SGD, [1.0, 2.0], lr=0.1, momentum=0.9, nesterov=True) == pytest.approx([0.81, 0.349])


def test_sgd_nesterov_with_weight_decay_by_hand():
    # g1' = 1 + 0.5 * 1 = 1.5, buf1 = 1.5, d1 = 1.5 + 0.9 * 1.5 = 2.85 -> p1 = 1 - 0.285 = 0.715
    # g2' = 2 + 0.5 * 0.715 = 2.3575, buf2 = 0.9 * 1.5 + 2.3575 = 3.7075,
    # d2 = 2.3575 + 0.9 * 3.7075 = 5.69425 -> p2 = 0.715 - 0.569425 = 0.145575
    assert run(SGD, [1.0, 2.0], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5) == \
        pytest.approx([0.715, 0.145575], rel=1e-6)


def test_sgd_dampening_by_hand():
    # buf1 = g1 = 1 (no dampening on the first step), buf2 = 0.9 + 0.5 * 2 = 1.9
    assert run(SGD, [1.0, 2.0], lr=0.1, momentum=0.9, dampening=0.5) == pytest.approx([0.9, 0.71])


# --- Adam, by hand --------------------------------------------------------------------------------
def test_adam_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    # step 1: m = 0.1, v = 0.001; m_hat = 1, v_hat = 1 -> p = 1 - 0.01 * 1 / (1 + eps)
    p1 = 1 - lr * 1 / (1 + eps)
    # step 2 (g = 2): m = 0.09 + 0.2 = 0.29, v = 0.000999 + 0.004 = 0.004999
    m_hat, v_hat = 0.29 / (1 - b1 ** 2), 0.004999 / (1 - b2 ** 2)
    p2 = p1 - lr * m_hat / (math.sqrt(v_hat) + eps)
    assert run(Adam, [1.0, 2.0], lr=lr) == pytest.approx([p1, p2], rel=1e-6)


def test_adam_l2_and_adamw_decoupled_decay_by_hand():
    lr, wd = 0.1, 0.5
    # Adam: g' = 1 + 0.5 * 1 = 1.5; first step moves by lr * sign(g') -> 0.9
    assert run(Adam, [1.0], lr=lr, weight_decay=wd) == pytest.approx([0.9], rel=1e-6)
    # AdamW: p = 1 * (1 - 0.1 * 0.5) = 0.95, then the Adam step of the raw gradient: 0.95 - 0.1
    assert run(AdamW, [1.0], lr=lr, weight_decay=wd) == pytest.approx([0.85], rel=1e-6)
    # with a negative gradient the decoupled decay still shrinks p: 0.95 + 0.1 = 1.05
    assert run(AdamW, [-1.0], lr=lr, weight_decay=wd) == pytest.approx([1.05], rel=1e-6)


# --- against PyTorch ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kw", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-4)),
    ("SGD", dict(lr=0.1, momentum=0.8, dampening=0.3)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
])
def test_against_torch(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w = [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (3,)]]
    ours = [param(a) for a in w]
    theirs = [torch.tensor(a, requires_grad=True) for a in w]
    opt = getattr(mr.optim, name)(
        [{"params": ours[:1]}, {"params": ours[1:], "weight_decay": 0.0}], **kw)
    ref = getattr(torch.optim, name)(
        [{"params": theirs[:1]}, {"params": theirs[1:], "weight_decay": 0.0}], **kw)
    for _ in range(6):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad, t.grad = g, torch.tensor(g)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6)


# --- mechanics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda ps: Adam(ps, lr=0.1, weight_decay=1e-3),
    lambda ps: AdamW(ps, lr=0.1),
])
def test_updates_in_place_in_float32_and_skip_params_without_grad(make):
    p, q = param(np.ones((3, 2))), param(np.ones(2))
    array = p.data
    opt = make([p, q])
    p.grad = np.full((3, 2), 0.5, dtype=np.float32)
    opt.step()
    assert p.data is array and p.data.dtype == np.float32
    assert not np.allclose(p.data, 1.0)
    np.testing.assert_array_equal(q.data, np.ones(2, np.float32))        # q.grad is None
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, np.ndarray):
                assert v.dtype == np.float32


def test_param_groups_and_split_weight_decay():
    model = mr.nn.Sequential(mr.nn.Linear(3, 4), mr.nn.BatchNorm1d(4), mr.nn.Linear(4, 2))
    groups = split_weight_decay(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups[0]["params"]) == ["0.weight", "2.weight"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == \
        ["0.bias", "1.bias", "1.weight", "2.bias"]
    opt = SGD(groups, lr=1.0)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    opt.step()                          # zero gradient: only weight decay moves a parameter
    for n, p in model.named_parameters():
        if n.endswith("weight") and n != "1.weight":
            np.testing.assert_allclose(p.data, before[n] * 0.9, rtol=1e-6)
        else:
            np.testing.assert_array_equal(p.data, before[n])


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: Adam(ps, lr=0.01),
])
def test_state_dict_round_trip_continues_identically(make):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(6)]
    a = param(np.ones((2, 3)))
    opt_a = make([a])
    for g in grads[:3]:
        a.grad = g
        opt_a.step()
    b = param(a.data.copy())
    opt_b = make([b])
    opt_b.load_state_dict(opt_a.state_dict())
    for g in grads[3:]:
        a.grad, b.grad = g, g.copy()
        opt_a.step()
        opt_b.step()
    np.testing.assert_array_equal(a.data, b.data)


def test_zero_grad():
    p = param([1.0, 2.0])
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(2, np.float32)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, [0, 0])
    opt.zero_grad()
    assert p.grad is None


def test_bad_settings_are_named():
    p = param([1.0])
    with pytest.raises(ValueError, match="nesterov needs momentum > 0 and dampening 0"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="SGD: lr must be >= 0"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match=r"unknown group settings \['wd'\]"):
        SGD([{"params": [p], "wd": 0}], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError,
                       match=r"expected parameters \(objects with .data and .grad\), got ndarray"):
        SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match=r"betas must lie in \[0, 1\)"):
        Adam([p], betas=(0.9, 1.0))
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError,
                       match=r"gradient of shape \(3,\) for a parameter of shape \(1,\)"):
        opt.step()


# --- schedules ------------------------------------------------------------------------------------
def sgd(lr=0.1):
    return SGD([param([0.0])], lr=lr)


def lrs(sched, steps):
    """The rate of iterations 0..steps-1, stepping as the training loop does."""
    out = []
    for _ in range(steps):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.step()
    return out


def test_paper_step_schedule_by_iteration():
    sched = MultiStepLR(sgd(), [32000, 48000], gamma=0.1)
    assert sched.lr_at(0) == [0.1] and sched.lr_at(31999) == [0.1]
    assert sched.lr_at(32000) == [pytest.approx(0.01)]
    assert sched.lr_at(47999) == [pytest.approx(0.01)]
    assert sched.lr_at(48000) == [pytest.approx(0.001)]
    assert sched.lr_at(63999) == [pytest.approx(0.001)]


def test_multistep_by_epoch():
    sched = MultiStepLR(sgd(), [2, 3], gamma=0.5, steps_per_epoch=10)
    assert lrs(sched, 31) == [0.1] * 20 + [0.05] * 10 + [0.025]


def test_cosine_values():
    sched = CosineAnnealingLR(sgd(), total_steps=100, min_lr=0.001)
    assert sched.lr_at(0)[0] == pytest.approx(0.1)
    assert sched.lr_at(50)[0] == pytest.approx((0.1 + 0.001) / 2)
    assert sched.lr_at(25)[0] == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 4)) / 2)
    assert sched.lr_at(100)[0] == pytest.approx(0.001)
    assert sched.lr_at(150)[0] == pytest.approx(0.001)


def test_linear_warmup_alone_and_composed_with_cosine():
    warm = Warmup(sgd(), warmup_steps=10, start_factor=0.1)
    ramp = [0.1 * (0.1 + 0.9 * t / 10) for t in range(10)]
    assert lrs(warm, 12) == pytest.approx(ramp + [0.1, 0.1])
    opt = sgd()
    both = Warmup(opt, 10, start_factor=0.0, schedule=CosineAnnealingLR(opt, total_steps=100))
    cosine = CosineAnnealingLR(sgd(), total_steps=100)
    assert both.lr_at(0) == [0.0]
    assert both.lr_at(5)[0] == pytest.approx(0.5 * cosine.lr_at(5)[0])
    for t in (10, 40, 99):
        assert both.lr_at(t)[0] == pytest.approx(cosine.lr_at(t)[0])


def test_constant_warmup_of_the_paper_for_resnet110():
    opt = sgd()
    sched = Warmup(opt, 400, start_factor=0.1, mode="constant",
                   schedule=MultiStepLR(opt, [32000, 48000]))
    assert sched.lr_at(0)[0] == pytest.approx(0.01) and sched.lr_at(399)[0] == pytest.approx(0.01)
    assert sched.lr_at(400)[0] == pytest.approx(0.1)
    assert sched.lr_at(32000)[0] == pytest.approx(0.01)


def test_one_cycle_values():
    sched = OneCycleLR(sgd(), total_steps=100, pct_start=0.3, div_factor=25, final_div_factor=1e4)
    assert sched.lr_at(0)[0] == pytest.approx(0.1 / 25)
    assert sched.lr_at(29)[0] == pytest.approx(0.1)                    # peak at pct * T - 1
    assert sched.lr_at(99)[0] == pytest.approx(0.1 / 25 / 1e4)
    # up phase: cosine from 0.004 (t = 0) to the peak 0.1 (t = 29)
    up = 0.1 + (0.004 - 0.1) / 2 * (math.cos(math.pi * 14 / 29) + 1)
    assert sched.lr_at(14)[0] == pytest.approx(up)
    # down phase: cosine from the peak (t = 29) to the final rate (t = 99)
    down = 4e-7 + (0.1 - 4e-7) / 2 * (math.cos(math.pi * 35 / 70) + 1)
    assert sched.lr_at(64)[0] == pytest.approx(down)
    assert max(sched.lr_at(t)[0] for t in range(100)) == pytest.approx(0.1)


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    T = 60

    def torch_lrs(make):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        out = []
        for _ in range(T):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    L = torch.optim.lr_scheduler
    pairs = [
        (OneCycleLR(sgd(), T + 1),
         lambda o: L.OneCycleLR(o, 0.1, total_steps=T + 1, cycle_momentum=False)),
        (CosineAnnealingLR(sgd(), T, min_lr=1e-3),
         lambda o: L.CosineAnnealingLR(o, T, eta_min=1e-3)),
        (MultiStepLR(sgd(), [20, 45]), lambda o: L.MultiStepLR(o, [20, 45])),
        (Warmup(sgd(), 15, 0.2), lambda o: L.LinearLR(o, 0.2, 1.0, 15)),
    ]
    for ours, make in pairs:
        np.testing.assert_allclose(lrs(ours, T), torch_lrs(make), rtol=1e-9, atol=1e-12)


def test_schedule_state_dict_resumes_the_same_rates():
    opt = sgd()
    a = Warmup(opt, 5, schedule=OneCycleLR(opt, 50))
    first = lrs(a, 20)
    opt2 = sgd()
    b = Warmup(opt2, 5, schedule=OneCycleLR(opt2, 50))
    b.load_state_dict(a.state_dict())
    assert b.t == 20 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert lrs(b, 30) == lrs(a, 30)
    assert first[0] != first[10]
    with pytest.raises(ValueError, match="belongs to a Warmup schedule"):
        ConstantLR(sgd()).load_state_dict(a.state_dict())


def test_schedule_sets_every_group_from_its_own_base_rate():
    p, q = param([0.0]), param([0.0])
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 0.01}], lr=0.1)
    sched = MultiStepLR(opt, [1], gamma=0.5)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.005]


def test_bad_schedule_settings():
    with pytest.raises(ValueError, match="milestones must be increasing"):
        MultiStepLR(sgd(), [5, 2])
    with pytest.raises(ValueError, match="unknown mode 'cubic'"):
        Warmup(sgd(), 5, mode="cubic")
    with pytest.raises(ValueError, match="pct_start must lie in"):
        OneCycleLR(sgd(), 10, pct_start=1.5)
    with pytest.raises(ValueError, match="same optimizer"):
        Warmup(sgd(), 5, schedule=ConstantLR(sgd()))
