"""Schedules: closed-form values at chosen steps, parameter checks, and the LambdaLR bridge."""

from __future__ import annotations

import io
import math

import pytest
import torch

from sat_toolkit.plugins import get_plugin_host
from sat_toolkit.schedules import (
    ConstantSchedule,
    CosineSchedule,
    LinearRampSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    StepSchedule,
    lambda_lr,
)
from sat_toolkit.schedules.base import to_steps

BASE = 0.4


def test_builtin_schedules_register_through_their_entry_point(fresh_plugin_host: None) -> None:
    host = get_plugin_host()
    assert {"constant", "step", "multistep", "cosine", "one_cycle", "linear_ramp"} <= set(
        host.names("schedule")
    )
    assert host.get("schedule", "cosine") is CosineSchedule
    record = next(r for r in host.records("schedule") if r.name == "cosine")
    assert (record.distribution, record.entry_point) == ("smooth-adversarial-training", "builtin-schedules")


def test_to_steps_rounds_halves_up_and_ignores_float_noise() -> None:
    assert to_steps(0.5, 5) == 3  # round() would give 2
    assert to_steps(0.3, 100) == 30  # 0.3 * 100 == 30.000000000000004
    assert to_steps(0.7, 10) == 7


def test_constant_is_base_and_warmup_is_linear_from_base_over_w() -> None:
    assert [ConstantSchedule().value(s, 10, BASE) for s in (0, 5, 9)] == [BASE] * 3
    warm = ConstantSchedule(warmup_steps=4)
    values = [warm.value(s, 100, BASE) for s in range(6)]
    assert values == pytest.approx([BASE / 4, BASE / 2, 3 * BASE / 4, BASE, BASE, BASE])
    # warmup_fraction: 5% of 200 steps = 10 steps; step 9 reaches base.
    frac = ConstantSchedule(warmup_fraction=0.05)
    assert frac.warmup_length(200) == 10
    assert frac.value(0, 200, BASE) == pytest.approx(BASE / 10)
    assert frac.value(9, 200, BASE) == pytest.approx(BASE)
    # warmup_steps, when > 0, wins over warmup_fraction.
    assert ConstantSchedule(warmup_steps=2, warmup_fraction=0.5).warmup_length(100) == 2


def test_step_multiplies_by_gamma_every_period() -> None:
    schedule = StepSchedule(period=0.3, gamma=0.5)
    total = 100
    expected = {0: 1, 29: 1, 30: 0.5, 59: 0.5, 60: 0.25, 90: 0.125, 99: 0.125}
    for step, factor in expected.items():
        assert schedule.value(step, total, BASE) == pytest.approx(BASE * factor), step


def test_multistep_is_exactly_gamma_to_the_k_after_each_milestone() -> None:
    schedule = MultiStepSchedule(milestones=[0.3, 0.6, 0.9], gamma=0.1)
    total = 100
    for k, milestone in enumerate((30, 60, 90), start=1):
        assert schedule.value(milestone - 1, total, BASE) == BASE * 0.1 ** (k - 1)
        assert schedule.value(milestone, total, BASE) == BASE * 0.1**k
    assert schedule.value(0, total, BASE) == BASE


def test_multistep_milestones_are_fractions_of_the_run_including_warmup() -> None:
    # The paper's ResNet recipe: 5 of 100 epochs warm-up, x0.1 at 30/60/90.
    schedule = MultiStepSchedule(milestones=[0.3, 0.6, 0.9], gamma=0.1, warmup_fraction=0.05)
    total = 1000
    assert schedule.value(0, total, BASE) == pytest.approx(BASE / 50)
    assert schedule.value(49, total, BASE) == pytest.approx(BASE)
    assert schedule.value(299, total, BASE) == pytest.approx(BASE)
    assert schedule.value(300, total, BASE) == pytest.approx(BASE * 0.1)


def test_cosine_closed_form() -> None:
    floor = 0.01
    schedule = CosineSchedule(floor=floor)
    total = 100
    assert schedule.value(0, total, BASE) == pytest.approx(BASE)
    assert schedule.value(50, total, BASE) == pytest.approx((BASE + floor) / 2)
    assert schedule.value(25, total, BASE) == pytest.approx(
        floor + (BASE - floor) * (1 + math.cos(math.pi / 4)) / 2
    )
    assert schedule.value(total, total, BASE) == pytest.approx(floor)
    assert schedule.value(10 * total, total, BASE) == pytest.approx(floor)  # past the end: final value


def test_cosine_after_warmup_spans_the_remaining_steps() -> None:
    schedule = CosineSchedule(floor=0.0, warmup_steps=20)
    total = 120
    assert schedule.value(0, total, BASE) == pytest.approx(BASE / 20)
    assert schedule.value(19, total, BASE) == pytest.approx(BASE)
    assert schedule.value(20, total, BASE) == pytest.approx(BASE)
    assert schedule.value(70, total, BASE) == pytest.approx(BASE / 2)  # half-way through the cosine part


def test_one_cycle_closed_form() -> None:
    schedule = OneCycleSchedule(pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
    total = 100
    start, end = BASE / 10, BASE / 10 / 100
    assert schedule.value(0, total, BASE) == pytest.approx(start)
    assert schedule.value(25, total, BASE) == pytest.approx(BASE)
    assert schedule.value(12, total, BASE) == pytest.approx(
        start + (BASE - start) * (1 - math.cos(math.pi * 12 / 25)) / 2
    )
    assert schedule.value(25 + 75 // 2, total, BASE) == pytest.approx(
        end + (BASE - end) * (1 + math.cos(math.pi * 37 / 75)) / 2
    )
    assert schedule.value(total, total, BASE) == pytest.approx(end)


def test_linear_ramp_for_epsilon() -> None:
    eps = 8 / 255
    ramp = LinearRampSchedule(ramp_fraction=0.2)
    total = 100
    assert ramp.value(0, total, eps) == 0.0  # first step is clean
    assert ramp.value(10, total, eps) == pytest.approx(eps / 2)
    assert ramp.value(20, total, eps) == pytest.approx(eps)
    assert ramp.value(99, total, eps) == pytest.approx(eps)
    half_start = LinearRampSchedule(ramp_steps=10, ramp_fraction=0.9, start=0.5)
    assert half_start.ramp_length(total) == 10
    assert half_start.value(0, total, eps) == pytest.approx(eps / 2)
    assert half_start.value(5, total, eps) == pytest.approx(0.75 * eps)
    assert LinearRampSchedule(ramp_fraction=0.0).value(0, total, eps) == pytest.approx(eps)


@pytest.mark.parametrize(
    ("cls", "params", "problem"),
    [
        (StepSchedule, {"gamma": 0.0}, ("gamma", "must be > 0, got 0.0")),
        (StepSchedule, {"period": 1.5}, ("period", "must be <= 1, got 1.5")),
        (
            MultiStepSchedule,
            {"milestones": [0.6, 0.3]},
            ("milestones", "must be strictly increasing, got [0.6, 0.3]"),
        ),
        (
            MultiStepSchedule,
            {"milestones": []},
            ("milestones", "must be a non-empty list of fractions, got []"),
        ),
        (MultiStepSchedule, {"milestones": [1.2]}, ("milestones", "each item must be < 1, got 1.2")),
        (CosineSchedule, {"floor": -1.0}, ("floor", "must be >= 0, got -1.0")),
        (CosineSchedule, {"warmup_fraction": 1.0}, ("warmup_fraction", "must be < 1, got 1.0")),
        (ConstantSchedule, {"warmup_steps": True}, ("warmup_steps", "expected an integer, got boolean true")),
        (ConstantSchedule, {"warmup_steps": -1}, ("warmup_steps", "must be >= 0, got -1")),
        (OneCycleSchedule, {"pct_start": 0.0}, ("pct_start", "must be > 0, got 0.0")),
        (LinearRampSchedule, {"start": 2.0}, ("start", "must be <= 1, got 2.0")),
        (CosineSchedule, {"floor": float("nan")}, ("floor", "must be a finite number, got nan")),
    ],
)
def test_bad_parameters_are_refused_by_the_declared_schema(cls: type, params: dict, problem: tuple) -> None:
    from sat_toolkit.params import check

    assert check(cls, params)[1] == [problem]


def test_value_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="step must be >= 0"):
        CosineSchedule().value(-1, 10, BASE)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        ConstantSchedule().value(0, 0, BASE)


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSchedule(warmup_steps=3),
        StepSchedule(period=0.2, gamma=0.5, warmup_fraction=0.1),
        MultiStepSchedule(milestones=[0.5, 0.8], gamma=0.2),
        CosineSchedule(floor=0.001, warmup_steps=5),
        OneCycleSchedule(pct_start=0.4),
        LinearRampSchedule(ramp_steps=7, start=0.1),
    ],
)
def test_hparams_rebuild_an_equal_schedule(schedule) -> None:
    rebuilt = type(schedule)(**schedule.hparams())
    assert rebuilt == schedule
    assert [rebuilt.value(s, 50, BASE) for s in range(50)] == [schedule.value(s, 50, BASE) for s in range(50)]


def _optimizer(lrs: tuple[float, ...]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def test_lambda_lr_follows_the_schedule_for_every_param_group() -> None:
    total = 20
    schedule = CosineSchedule(floor=0.0, warmup_steps=4)
    optimizer = _optimizer((0.1, 0.01))
    scheduler = lambda_lr(optimizer, schedule, total)
    for step in range(total):
        for group, base in zip(optimizer.param_groups, (0.1, 0.01), strict=True):
            assert group["lr"] == pytest.approx(schedule.value(step, total, base)), step
        optimizer.step()
        scheduler.step()


def test_lambda_lr_state_is_just_the_step_and_resumes_exactly() -> None:
    total = 30
    schedule = MultiStepSchedule(milestones=[0.5], gamma=0.1, warmup_steps=3)
    optimizer = _optimizer((0.2,))
    scheduler = lambda_lr(optimizer, schedule, total)
    for _ in range(17):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # no pickled callables inside
    assert state["lr_lambdas"] == [None]

    resumed_optimizer = _optimizer((0.2,))
    resumed = lambda_lr(resumed_optimizer, schedule, total)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 17
    # LambdaLR applies the restored step on the next step() call.
    optimizer.step()
    scheduler.step()
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule.value(18, total, 0.2))
