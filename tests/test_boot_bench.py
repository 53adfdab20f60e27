"""bench boot detail, baselines and regressions: on a recorded event log, and one real run.

tests/data/boot-pass-q35.json.gz is every event of one real boot on this
machine (TCG, q35, Haswell-v1 CPU, libguestfs 1.48.6, kernel 6.1), as
``bench boot --json`` writes it. Passes for the comparison tests are that
boot with its clock stretched by known factors.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from guestpool import GuestpoolError
from guestpool.bench import _activities, _boot_cli, _regress, _variants, boot
from guestpool.bench._baselines import BootRuns

FIXTURE = Path(__file__).parent / "data" / "boot-pass-q35.json.gz"
GUESTPOOL = [sys.executable, "-m", "guestpool"]
PRINTK = re.compile(r"^\[\s*(\d+\.\d+)\]")
NOISE = (0.0, 0.012, -0.009, 0.004, -0.015, 0.007)  # a spread like real passes (±1.5%)


def recorded_events() -> list[tuple[float, str, str]]:
    with gzip.open(FIXTURE, "rt") as f:
        data = json.load(f)
    return [tuple(e) for e in data["events"]]  # type: ignore[misc]


def stretched(variant: str, factor: float, n: int) -> list[boot.Pass]:
    """``n`` passes of the recorded boot, each stretched by factor × (1 + noise): host
    clock and printk clock alike (initcalls keep their own microseconds)."""
    events = recorded_events()
    passes = []
    for i in range(n):
        k = factor * (1 + NOISE[i % len(NOISE)])

        def printk(m: re.Match[str], k: float = k) -> str:
            return f"[{float(m[1]) * k:12.6f}]"

        p = boot.Pass(variant, events=[(t * k, kind, PRINTK.sub(printk, line))
                                       for t, kind, line in events])
        boot._map_phases(p)
        passes.append(p)
    return passes


# -- the recorded boot, analysed ---------------------------------------------------------

def test_phases_of_the_recorded_boot_sum_to_its_total() -> None:
    (p,) = stretched("a", 1.0, 1)
    assert list(p.phases) == ["library set-up", "supermin check/build", "qemu feature detection",
                              "qemu start", "BIOS + kernel load", "kernel",
                              "supermin mini-initrd", "/init", "guestfsd start", "shutdown"]
    assert sum(d for _s, d in p.phases.values()) == pytest.approx(p.total, abs=1e-9)
    assert 13 < p.total < 16


def test_every_initcall_is_an_activity_with_the_kernels_own_duration() -> None:
    (p,) = stretched("a", 1.0, 1)
    calls = {a.name: a for a in _activities.initcalls(p.events)}
    assert len(calls) > 650  # 710 "calling" lines, 707 returned before the shutdown
    acpi = calls["initcall acpi_init"]
    assert acpi.duration == pytest.approx(0.140)  # "returned 0 after 140000 usecs"
    assert acpi.level == 1
    virtio = calls["initcall virtio_pci_driver_init [virtio_pci]"]
    assert virtio.duration == pytest.approx(0.049762) and virtio.level == 2
    kernel_start, kernel_dur = p.phases["kernel"]
    assert kernel_start <= acpi.start <= kernel_start + kernel_dur


def test_every_supermin_insmod_is_an_activity() -> None:
    (p,) = stretched("a", 1.0, 1)
    mods = _activities.insmods(p.events)
    names = [a.name for a in mods]
    assert len(mods) == 52
    assert names[0] == "insmod crc32-pclmul" and "insmod ext4" in names
    start, dur = p.phases["supermin mini-initrd"]
    assert all(start <= a.start and a.start + a.duration <= start + dur for a in mods)
    assert next(a for a in mods if a.name == "insmod virtio_pci").duration == pytest.approx(
        6.294 - 6.089, abs=0.002)


def test_activities_have_mean_and_sd_over_passes_and_the_longest_come_first() -> None:
    stats = _activities.summarise(stretched("a", 1.0, 4))
    by_name = {s.name: s for s in stats}
    ext4 = by_name["insmod ext4"]
    assert ext4.passes == 4 and ext4.sd > 0
    assert by_name["initcall acpi_init"].sd == 0.0  # the kernel's figure is not stretched
    top = _activities.longest(stats, 20)
    assert len(top) == 20
    assert [s.mean for s in top] == sorted((s.mean for s in top), reverse=True)
    assert top[0].name == "/init"
    assert {"phase", "init step", "insmod", "initcall"} <= {s.kind for s in top}


def test_console_lines_cut_across_chunks_are_joined() -> None:
    calling = "[    0.1] calling  foo+0x0/0x10 @ 1"
    returned = "[    0.2] initcall foo+0x0/0x10 returned 0 after 5 usecs"
    console = boot.ConsoleLines()
    assert console.feed(1.0, calling[:28]) == []
    assert console.feed(1.5, calling[28:] + "\r\n" + returned + "\nsuper") == [
        (1.0, calling), (1.5, returned)]
    assert console.flush() == [(1.5, "super")]
    events = [(1.0, "appliance", calling), (1.5, "appliance", returned)]
    (call,) = _activities.initcalls(events)
    assert call.name == "initcall foo" and call.duration == pytest.approx(5e-6)


# -- comparison against a baseline ----------------------------------------------------------

def test_identical_runs_show_no_regression() -> None:
    deltas = _regress.compare_runs(stretched("a", 1.0, 5), stretched("b", 1.0, 5))
    assert not any(d.regression for d in deltas)
    assert deltas[-1].phase == "TOTAL"


def test_a_slower_run_is_a_regression_in_the_phases_that_grew() -> None:
    deltas = _regress.compare_runs(stretched("a", 1.0, 5), stretched("b", 1.10, 5))
    flagged = {d.phase for d in deltas if d.regression}
    assert {"TOTAL", "kernel", "/init"} <= flagged
    # the millisecond phases also grew by 10% but stay under --min-delta
    assert "qemu feature detection" not in flagged
    assert all(d.lo > 0 for d in deltas if d.regression)


def test_a_real_delta_under_the_threshold_is_not_a_regression() -> None:
    base, new = stretched("a", 1.0, 5), stretched("b", 1.03, 5)
    total = next(d for d in _regress.compare_runs(base, new, fail_over=0.05) if d.phase == "TOTAL")
    assert total.real and not total.regression  # +3%: real, under 5%
    total = next(d for d in _regress.compare_runs(base, new, fail_over=0.02) if d.phase == "TOTAL")
    assert total.regression


def test_a_faster_run_is_an_improvement_not_a_regression() -> None:
    deltas = _regress.compare_runs(stretched("a", 1.0, 5), stretched("b", 0.85, 5))
    assert not any(d.regression for d in deltas)
    assert next(d for d in deltas if d.phase == "TOTAL").improvement


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.05", 0.05), ("12.5 %", 0.125)])
def test_threshold_parsing(text: str, value: float) -> None:
    assert _regress.parse_threshold(text) == pytest.approx(value)


def test_threshold_and_pass_count_errors() -> None:
    with pytest.raises(GuestpoolError, match="percentage like 5%"):
        _regress.parse_threshold("five")
    with pytest.raises(GuestpoolError, match="at least 2 passes"):
        _regress.compare_runs(stretched("a", 1.0, 1), stretched("b", 1.0, 3))


# -- saved runs ---------------------------------------------------------------------------

def test_saved_runs_come_back_reanalysed_newest_first(tmp_path: Path) -> None:
    runs = BootRuns(tmp_path / "store.db")
    first = runs.save("base", {"memsize": 1280}, {"qemu": "7.2"}, stretched("a", 1.0, 2),
                      saved_at=1000.0)
    second = runs.save("base", {}, {"qemu": "7.2"}, stretched("a", 1.2, 2), saved_at=2000.0)
    runs.save("other", {}, {}, stretched("a", 1.0, 2), saved_at=1500.0)
    latest = runs.latest("base")
    assert latest.id == second and first < second
    assert len(latest.passes) == 2
    assert _activities.initcalls(latest.passes[0].events)
    assert latest.summary["TOTAL"]["mean"] == pytest.approx(
        sum(p.total for p in latest.passes) / 2)
    assert [r.name for r in runs.history()] == ["base", "other", "base"]
    assert [r.id for r in runs.history("base")] == [first, second]
    with pytest.raises(GuestpoolError, match=r"no saved boot run named 'nope'.*base, other"):
        runs.latest("nope")
    runs.close()


# -- the command, with recorded passes instead of boots -------------------------------------

@pytest.fixture
def recorded_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """`bench boot` with passes from the recording, slowed by append=slow."""
    from guestpool.appliance import _accel as accel

    def fake_passes(variants: dict[str, dict[str, Any]], passes: int, warmup: int = 3,
                    progress: Any = None) -> list[boot.Pass]:
        (name, settings), = variants.items()
        return stretched(name, 1.25 if settings.get("append") == "slow" else 1.0, passes)

    monkeypatch.setattr(boot, "run_passes", fake_passes)
    monkeypatch.setattr(accel, "resolve_accel",
                        lambda: accel.AccelVerdict("tcg", "override", "test"))
    monkeypatch.setattr(_variants, "host_caps", lambda a: _variants.HostCaps(a))
    monkeypatch.setattr(_variants, "host_facts", lambda a: {"accelerator": a})

    def run(*args: str) -> Any:
        return CliRunner().invoke(_boot_cli.bench_boot, [*args, "--store", str(tmp_path / "s.db"),
                                                          "--results", str(tmp_path)])
    return run


def test_exit_status_guards_a_pipeline(recorded_cli: Any, tmp_path: Path) -> None:
    r = recorded_cli("--save", "base")
    assert r.exit_code == 0, r.output
    assert "initcall acpi_init" in r.output and "longest activities" in r.output
    assert "[virtio_pci]" in r.output  # a module name, not eaten as rich markup
    r = recorded_cli("--against", "base")
    assert r.exit_code == 0, r.output
    assert "no regression" in r.output or "REGRESSION" not in r.output
    r = recorded_cli("--against", "base", "--set", "append=slow")
    assert r.exit_code == _regress.EXIT_REGRESSION, r.output
    assert "append: - → slow" in r.output
    assert (tmp_path / "boot-against-base.png").stat().st_size > 10_000
    assert (tmp_path / "boot-activities-default.png").stat().st_size > 10_000
    r = recorded_cli("--against", "base", "--set", "append=slow", "--fail-over", "40%")
    assert r.exit_code == 0, r.output  # 25% slower is under a 40% threshold
    h = CliRunner().invoke(_boot_cli.bench_history, ["--store", str(tmp_path / "s.db"),
                                                      "--results", str(tmp_path),
                                                      "--phase", "kernel"])
    assert h.exit_code == 0, h.output
    assert "#1" in h.output and (tmp_path / "boot-history-kernel.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--fail-over", "five"], "percentage like 5%"),
    (["--against", "nope"], "no saved boot run named 'nope'"),
    (["--save", "x", "--compare", "a:smp=1", "--compare", "b:smp=2"], "one configuration"),
    (["--against", "x", "--passes", "1"], "--passes 2 or more"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    r = subprocess.run([*GUESTPOOL, "bench", "boot", *args, "--store", str(tmp_path / "s.db"),
                        "--results", str(tmp_path)], capture_output=True, text=True,
                       env=dict(os.environ), timeout=60)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


# -- variants, checked before any boot ------------------------------------------------------

MACHINE_HELP = """Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
none                 empty machine
"""
CPU_HELP = """Available CPUs:
x86 486                   (alias configured by machine type)
x86 Haswell-v1            Intel Core Processor (Haswell)
x86 max                   Enables all features supported by the accelerator in the current host

Recognized CPUID flags:
  3dnow 3dnowext
"""
CAPS = _variants.HostCaps("tcg", _variants.parse_machines(MACHINE_HELP),
                          _variants.parse_cpu_models(CPU_HELP), cores=2, memory_mb=4096)


def test_qemu_lists_are_parsed() -> None:
    assert {"pc", "q35", "microvm", "pc-q35-7.2"} <= CAPS.machines
    assert {"486", "Haswell-v1", "max", "host"} <= CAPS.cpu_models
    assert "3dnow" not in CAPS.cpu_models


@pytest.mark.parametrize("settings, message", [
    ({"machine": "microvm"}, "microvm rejects"),
    ({"machine": "microvm,pcie=on"}, "use machine=pc or machine=q35"),
    ({"machine": "sparc"}, "no machine type 'sparc'"),
    ({"cpu": "Pentium9"}, "no CPU model 'Pentium9'"),
    ({"cpu": "host"}, "cpu=host needs KVM"),
    ({"accel": "kvm"}, "KVM does not work on this host"),
    ({"smp": 0}, "smp must be at least 1"),
    ({"memsize": 100}, "below the appliance's minimum"),
    ({"memsize": 8192}, "more than the 4096 MiB"),
    ({"kernel": "/nonexistent/vmlinuz-9.9"}, "does not exist"),
    ({"modules": "/lib/modules"}, "modules= goes with kernel="),
    ({"append": 'a="b"'}, "without double quotes"),
])
def test_impossible_variants_fail_before_booting(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(GuestpoolError, match=message):
        _variants.validate("v", settings, CAPS)


def test_possible_variants_pass_with_warnings_where_odd(tmp_path: Path) -> None:
    assert _variants.validate("v", {"machine": "q35", "cpu": "Haswell-v1,+avx"}, CAPS) == []
    (warning,) = _variants.validate("v", {"smp": 4}, CAPS)
    assert "more than this host's 2 cores" in warning and "TCG" in warning
    settings: dict[str, Any] = {"cachedir": "tmpfs"}
    _variants.validate("my variant", settings, CAPS)
    assert settings["cachedir"] == "/dev/shm/guestpool-boot-cache-my_variant"
    kernel = tmp_path / "vmlinuz-1.2.3"
    kernel.write_bytes(b"")
    with pytest.raises(GuestpoolError, match="modules=/lib/modules/VERSION"):
        _variants.validate("v", {"kernel": str(kernel)}, CAPS)
    assert _variants.validate("v", {"kernel": str(kernel), "modules": str(tmp_path)}, CAPS) == []
    assert boot._variant_env({"kernel": str(kernel)})["SUPERMIN_KERNEL"] == str(kernel)
    assert "guestpool-boot-kernel-" in boot._variant_env({"kernel": str(kernel)})[
        "LIBGUESTFS_CACHEDIR"]


# -- one real run -------------------------------------------------------------------------

@pytest.mark.appliance
def test_a_real_run_lists_initcalls_and_insmods_and_phases_sum_to_the_total() -> None:
    passes = boot.run_passes({"default": {}}, passes=2, warmup=1)
    for p in passes:
        assert sum(d for _s, d in p.phases.values()) == pytest.approx(p.total, abs=1e-6)
        assert len(_activities.initcalls(p.events)) > 500
        assert len(_activities.insmods(p.events)) > 10
    stats = _activities.summarise(passes)
    assert any(s.kind == "initcall" and s.passes == 2 and s.mean > 0 for s in stats)
    assert len(_activities.longest(stats, 20)) == 20
    deltas = _regress.compare_runs(passes[:1] * 2, passes[1:] * 2)
    assert deltas[-1].phase == "TOTAL"


def test_host_load_is_kept_with_each_pass() -> None:
    (p,) = stretched("a", 1.0, 1)
    assert _regress.mean_load([p]) is None  # recorded before passes kept it
    p.events.insert(0, (0.0, "mark", "@loadavg 1.50"))
    q = stretched("a", 1.0, 1)[0]
    q.events.insert(0, (0.0, "mark", "@loadavg 2.50"))
    assert _regress.mean_load([p, q]) == pytest.approx(2.0)
