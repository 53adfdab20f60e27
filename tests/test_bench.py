"""bench: boot phases (real appliance), bad input, simulation basics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guestpool import GuestpoolError
from guestpool.bench import boot
from guestpool.bench.simulate import Costs, simulate

GUESTPOOL = [sys.executable, "-m", "guestpool"]


@pytest.mark.appliance
def test_boot_phases_sum_to_the_total() -> None:
    passes = boot.run_passes({"default": {}}, passes=1, warmup=0)
    (p,) = passes
    names = list(p.phases)
    for must in ("kernel", "/init", "guestfsd start", "shutdown"):
        assert any(must in n for n in names), names
    assert abs(sum(d for _, d in p.phases.values()) - p.total) <= 0.05 * p.total
    assert "udev settle" in p.init_steps
    phases, _steps, total, _sd = boot.summarise(passes)
    assert abs(sum(ph.share for ph in phases) - 1.0) < 0.05
    assert total == p.total


def test_variant_parsing() -> None:
    assert boot.parse_variant("small:memsize=512,smp=2") == ("small", {"memsize": 512, "smp": 2})
    with pytest.raises(GuestpoolError, match="unknown setting 'colour'"):
        boot.parse_variant("x:colour=red")
    with pytest.raises(GuestpoolError, match="is not int"):
        boot.parse_variant("x:memsize=lots")


def test_comparison_flags_real_differences() -> None:
    a = [boot.Pass("a", total=t, phases={"kernel": (0.0, t)}) for t in (10.0, 10.2, 9.9)]
    b = [boot.Pass("b", total=t, phases={"kernel": (0.0, t)}) for t in (12.0, 12.1, 11.9)]
    c = [boot.Pass("c", total=t, phases={"kernel": (0.0, t)}) for t in (9.8, 10.3, 10.0)]
    rows = boot.compare(a + b + c, "a", "b")
    assert all(r["real"] for r in rows)
    assert not boot.compare(a + c, "a", "c")[0]["real"]


@pytest.mark.parametrize("args, message", [
    (["bench", "boot", "--passes", "0"], "--passes must be at least 1"),
    (["bench", "boot", "--compare", "x:warp=9"], "unknown setting 'warp'"),
    (["bench", "boot", "--results", "/proc/nope"], "not writable"),
])
def test_bench_bad_input(args: list[str], message: str) -> None:
    r = subprocess.run(GUESTPOOL + args, capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_simulation_follows_the_model_and_is_labelled(tmp_path: Path) -> None:
    costs = Costs(boot=(20.0, 0.0), attach=(1.0, 0.0), inspect=(3.0, 0.0), detach=(1.0, 0.0))
    pooled = simulate(1000, 4, 300, costs, "pooled", batch=1)
    # VMs(T) = P (T - B) / (A + W), with 2 s kept for shutdown
    assert len(pooled.covered) == pytest.approx(4 * (298 - 20) / 5, abs=4)
    # costs are per VM: batches change only where the budget cuts (one batch per appliance)
    batched = simulate(1000, 4, 300, costs, "pooled", batch=2)
    assert len(batched.covered) == pytest.approx(4 * (298 - 20) / 5, abs=8)
    cold = simulate(1000, 4, 300, costs, "cold")
    assert len(cold.covered) == pytest.approx(4 * 298 / 23, abs=4)
    r = subprocess.run([*GUESTPOOL, "bench", "simulate", "--vms", "100", "--pool", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SIMULATION" in r.stdout + r.stderr


def test_no_trust_group_switch_is_started_that_cannot_pay_off() -> None:
    """SIMULATION. Three groups of 62 one-second VMs, two appliances: each serves
    one group from the start, and both groups end ~3.6 s before the budget; a boot
    takes 20 s, so the round stops there instead of rebooting for group 2 in vain."""
    costs = Costs(boot=(20.0, 0.0), attach=(0.1, 0.0), inspect=(1.0, 0.0), detach=(0.1, 0.0))
    late = simulate(186, 2, 100, costs, groups=3)
    assert len(late.covered) == 124 and late.retirements == {}
    assert late.elapsed < 97
    # with time enough, the switch happens and group 2 is served by both
    early = simulate(186, 2, 200, costs, groups=3)
    assert early.retirements["trust-group-switch"] == 2 and len(early.covered) == 186
