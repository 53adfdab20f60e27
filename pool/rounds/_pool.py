"""The supervisor: a pool of booted appliances that late-bind one VM after another.

    async with Pool(size=2) as pool:
        result = await pool.inspect(vm, ["os"])

Works under trio (the default) and asyncio through anyio.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from guestpool._errors import (
    ApplianceError,
    GuestpoolError,
    HostileGuest,
    ImageError,
    LateBindingUnavailable,
    SetupError,
)
from guestpool.appliance._abc import Appliance, Spawn
from guestpool.appliance._accel import resolve_accel
from guestpool.appliance._process import WorkerAppliance
from guestpool.appliance._protocol import (
    Attach,
    Attached,
    Boot,
    Booted,
    Cold,
    ColdDone,
    Detach,
    Detached,
    DiskRef,
    Inspect,
    Inspected,
    Layer,
    Ping,
    Pong,
)
from guestpool.appliance._sizing import DEFAULT_MEMSIZE_MB, default_pool_size
from guestpool.fleet._model import VM
from guestpool.fleet._safety import ChainFiles, SafetyPolicy, check_vm, luks_keys
from guestpool.inspectors._registry import resolve_specs
from guestpool.inspectors._specs import InspectorSpec
from guestpool.store._results import InspectResult, Stats, own_seconds

from ._fingerprint import Fingerprint, take_fingerprint
from ._plan import Strategy

log = logging.getLogger("guestpool")

TrustPolicy = Literal["group", "strict"]
#: A choice of inspectors: registered names, ``module:Class`` paths or specs with options.
InspectorChoice = str | InspectorSpec
BOOT_TIMEOUT_S = 240.0
OP_TIMEOUT_S = 90.0
EventHook = Callable[[str, dict[str, Any]], None]


#: VMs an appliance inspects before it is replaced (hygiene: whatever a guest
#: left in it goes; within one trust group). 500 at ~1 s per VM under TCG is a
#: boot (~18 s) every ~8 minutes per appliance: ~3% of its time.
DEFAULT_MAX_JOBS = 500


class Pool:
    """A pool of pre-booted appliances (``pooled``) or a boot per VM (``cold``).

    ``size`` appliances are kept booted; ``max_jobs`` retires an appliance
    after that many VMs; ``max_rss_mb`` retires one whose qemu grew past it.
    ``trust`` is ``"group"`` (an appliance serves one trust group for life) or
    ``"strict"`` (one VM per appliance). ``safety`` is checked on the host before
    any disk reaches qemu (``None`` turns the checks off: only for simulations).
    ``spawn`` makes one appliance (default: a worker process,
    :meth:`WorkerAppliance.spawn`); a test or a simulator passes its own, the
    contract is :class:`guestpool.Appliance`.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        strategy: Strategy = "pooled",
        accel: str | None = None,
        memsize: int = DEFAULT_MEMSIZE_MB,
        smp: int | None = None,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_rss_mb: int | None = None,
        trust: TrustPolicy = "group",
        op_timeout: float = OP_TIMEOUT_S,
        boot_timeout: float = BOOT_TIMEOUT_S,
        on_event: EventHook | None = None,
        safety: SafetyPolicy | None = SafetyPolicy(),  # noqa: B008 (frozen, shared safely)
        spawn: Spawn | None = None,
    ) -> None:
        if size is not None and size < 1:
            raise SetupError(f"pool size must be at least 1, got {size}")
        if strategy not in ("pooled", "cold"):
            raise SetupError(f"unknown strategy {strategy!r}: use pooled or cold")
        if trust not in ("group", "strict"):
            raise SetupError(f"unknown trust policy {trust!r}: use group or strict")
        self.size = size or default_pool_size(memsize)
        self.strategy: Strategy = strategy
        self._accel_request = accel
        self.accel = "tcg"
        self.memsize, self.smp = memsize, smp
        self.max_jobs, self.max_rss_mb, self.trust = max_jobs, max_rss_mb, trust
        #: VMs still to inspect by trust group, kept by the round using the pool:
        #: when an appliance must switch groups, the one whose group needs it least goes
        self.pending: Mapping[str, int] = {}
        self.op_timeout, self.boot_timeout = op_timeout, boot_timeout
        self.safety = safety
        self.stats = Stats()
        self.appliances: dict[int, Appliance] = {}
        self._on_event = on_event
        self._tg: TaskGroup | None = None
        self._stack = AsyncExitStack()
        self._changed = anyio.Event()
        self._cold_slots = anyio.Semaphore(self.size)
        self._boot_failures = 0
        self._spawn: Spawn = spawn or WorkerAppliance.spawn

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Pool:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self._running())
        except BaseException:
            await stack.__aexit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._stack.__aexit__(*exc)

    @property
    def running(self) -> bool:
        """Whether the pool is started (entered, or kept warm by :meth:`warm`)."""
        return self._tg is not None

    @asynccontextmanager
    async def warm(self) -> AsyncIterator[Pool]:
        """Keep this pool's appliances booted across rounds (``monitor``, ``serve``):
        the boots start now, in the background, and a round given this pool waits
        for the first one within its own budget (:meth:`ready`). Appliances keep
        their trust group and are retired and replaced as usual between rounds."""
        async with self._running(wait=False):
            yield self

    async def ready(self) -> None:
        """Wait until an appliance is idle; SetupError if none could boot."""
        await self._wait_first_ready()

    @asynccontextmanager
    async def _running(self, wait: bool = True) -> AsyncIterator[None]:
        if self._accel_request in ("kvm", "tcg"):
            verdict = resolve_accel(self._accel_request)  # an override: nothing to probe
        else:
            verdict = await anyio.to_thread.run_sync(resolve_accel, self._accel_request)
        self.accel = verdict.accel
        self._emit("accel", accel=verdict.accel, source=verdict.source)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.strategy == "pooled":
                    for _ in range(self.size):
                        tg.start_soon(self._boot_one)
                    if wait:
                        await self._wait_first_ready()
                yield
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as closer:
                    for app in list(self.appliances.values()):
                        closer.start_soon(app.close)
                self.appliances.clear()

    async def _wait_first_ready(self) -> None:
        while not any(a.state == "idle" for a in self.appliances.values()):
            if self._boot_failures >= self.size:
                if self.strategy == "cold":  # late binding unavailable: fell back
                    return
                raise SetupError("no appliance could boot; run `guestpool doctor` to see why")
            await self._wait_change()

    async def _wait_change(self) -> None:
        event = self._changed
        await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _emit(self, name: str, **data: Any) -> None:
        if self._on_event is not None:
            self._on_event(name, data)

    async def _boot_one(self) -> None:
        app = await self._spawn()
        self.appliances[app.id] = app
        app.state = "booting"
        self._emit("boot_start", appliance=app.id)
        self._notify()
        try:
            reply = await app.call(Boot(self.accel, self.memsize, self.smp), self.boot_timeout,
                                   Booted)
        except GuestpoolError as e:
            self._boot_failures += 1
            self.stats.failures["boot"] += 1
            self.appliances.pop(app.id, None)
            await app.kill()
            self._emit("boot_failed", appliance=app.id, error=str(e))
            log.warning("appliance %s failed to boot: %s", app.id, e)
            if isinstance(e, LateBindingUnavailable) and self.strategy == "pooled":
                log.warning("late binding is unavailable on this host (%s); "
                            "falling back to the cold strategy (one boot per VM)", e)
                self.strategy = "cold"
            self._notify()
            return
        self._boot_failures = 0
        app.qemu_pid, app.boot_seconds = reply.qemu_pid, reply.seconds
        app.state = "idle"
        self.stats.boots += 1
        self.stats.boot_seconds.append(reply.seconds)
        self._emit("boot_done", appliance=app.id, seconds=reply.seconds)
        self._notify()

    async def _retire(self, app: Appliance, reason: str, replace: bool = True) -> None:
        self.appliances.pop(app.id, None)
        self.stats.retirements[reason] += 1
        self._emit("retire", appliance=app.id, reason=reason)
        if replace and self._tg is not None:
            self._tg.start_soon(self._boot_one)
        self._notify()
        await app.close()

    # -- scheduling ------------------------------------------------------------

    def counts(self) -> Counter[str]:
        """Appliances by state: booting, idle, busy."""
        return Counter(a.state for a in self.appliances.values())

    def has_appliance_for(self, group: str) -> bool:
        """Whether a job of ``group`` can run without retiring an appliance of
        another group (one of ``group``, or one not yet bound to any, exists)."""
        return any(a.trust_group in (None, group) for a in self.appliances.values())

    async def _acquire(self, group: str, exclude: set[int]) -> Appliance:
        while True:
            idle = [a for a in self.appliances.values()
                    if a.state == "idle" and a.id not in exclude]
            # one already bound to this group first: an unbound one may suit another
            for app in sorted(idle, key=lambda a: a.trust_group != group):
                if app.trust_group in (None, group):
                    app.state, app.trust_group = "busy", group
                    return app
            booting = [a for a in self.appliances.values()
                       if a.state in ("starting", "booting") and a.trust_group in (None, group)]
            # a retired appliance's replacement may not be started yet: it comes unbound
            due = len(self.appliances) < self.size
            if idle and not booting and not due:
                # every free appliance belongs to another trust group: retire the one
                # whose group has the fewest VMs left to inspect
                victim = min(idle, key=lambda a: self.pending.get(a.trust_group or "", 0))
                await self._retire(victim, "trust-group-switch")
            if not self.appliances and self._boot_failures >= self.size:
                raise ApplianceError("no appliance could boot; run `guestpool doctor`")
            await self._wait_change()

    async def _release(self, app: Appliance, vms: int = 1) -> None:
        app.jobs += vms  # max_jobs counts VMs: a batch of two is two jobs
        if self.trust == "strict":
            await self._retire(app, "strict-trust")
        elif app.jobs >= self.max_jobs:
            await self._retire(app, "max-jobs")
        elif self.max_rss_mb is not None:
            ping = await app.call(Ping(), 10, Pong)
            if ping.rss_kb > self.max_rss_mb * 1024:
                await self._retire(app, "memory")
                return
            app.state = "idle"
        else:
            app.state = "idle"
        self._notify()

    # -- the job ---------------------------------------------------------------

    async def inspect(self, vm: VM, inspectors: Sequence[InspectorChoice] | None = None
                      ) -> InspectResult:
        """Inspect one VM; appliance failures are retried once on another appliance.

        ``inspectors`` defaults to ``os`` and ``filesystems``; names are checked
        (:func:`guestpool.inspectors.resolve_specs`) before any appliance is used.
        Image problems (missing, corrupt, refused) come back as a result with
        ``ok=False`` and ``error.kind == "image"``; they are not retried.
        """
        specs = resolve_specs(inspectors)
        result = InspectResult(vm.name, False, strategy=self.strategy,
                               live="possibly inconsistent" if vm.live else None)
        tried: set[int] = set()
        start = anyio.current_time()
        try:
            vm, result.fingerprint, disks = await self._checked(vm)
        except ImageError as e:
            result.error = {"kind": "image", "message": str(e)}
            self.stats.failures["image"] += 1
            self._emit("job_done", vm=vm.name, ok=False, error=result.error)
            return result
        for attempt in (1, 2):
            result.attempts = attempt
            try:
                if self.strategy == "cold":
                    await self._inspect_cold(vm, specs, result)
                else:
                    await self._inspect_pooled(vm, specs, result, tried, disks)
                result.ok, result.error = True, None
                break
            except ImageError as e:
                result.error = {"kind": "image", "message": str(e)}
                self.stats.failures["image"] += 1
                break
            except HostileGuest as e:  # another appliance would be tainted the same way
                result.error = {"kind": "hostile", "message": str(e)}
                self.stats.failures["hostile"] += 1
                break
            except ApplianceError as e:
                result.error = {"kind": "appliance", "message": str(e)}
                result.first_error = result.first_error or dict(result.error)
                self.stats.failures["appliance"] += 1
                log.info("VM %s: appliance failure (attempt %d): %s", vm.name, attempt, e)
        result.timings["total"] = anyio.current_time() - start
        self._job_done(result)
        return result

    def _job_done(self, result: InspectResult) -> None:
        """Count a finished job and tell the listeners its own time apart from the
        time it waited for an appliance."""
        result.timings["job"] = own_seconds(result.timings, self.strategy)
        self.stats.jobs += 1
        self.stats.job_phases.append(dict(result.timings))
        self._emit("job_done", vm=result.vm, ok=result.ok, error=result.error,
                   seconds=result.timings["job"], wait=result.timings.get("wait", 0.0),
                   strategy=self.strategy)

    async def inspect_batch(self, vms: Sequence[VM],
                            inspectors: Sequence[InspectorChoice] | None = None
                            ) -> list[InspectResult]:
        """Inspect several VMs on one appliance: attach all their disks at once,
        inspect each VM on its own devices, detach all at once.

        The VMs must share a trust group and must not be clones of one template
        (clones share filesystem and LVM UUIDs; see :func:`batchable`). On an
        image or appliance problem the batch falls back to one VM at a time.
        """
        if len(vms) <= 1 or self.strategy == "cold" or self.trust == "strict":
            # strict trust: one VM per appliance, so never two at once
            return [await self.inspect(vm, inspectors) for vm in vms]
        if not batchable(vms):
            raise GuestpoolError("these VMs cannot share an appliance: mixed trust groups "
                                 "or clones of one template")
        specs = resolve_specs(inspectors)
        try:
            checked = [await self._checked(vm) for vm in vms]
        except ImageError:
            return [await self.inspect(vm, inspectors) for vm in vms]
        vms = [vm for vm, _, _ in checked]
        start = anyio.current_time()
        app = await self._acquire(vms[0].trust_group, set())
        waited = anyio.current_time() - start
        try:
            async with self._holding(app, len(vms)):
                outs, inspect_times, attach, detach = await self._run_on(
                    app, vms, specs, [d for _, _, disks in checked for d in disks])
        except (ImageError, ApplianceError, HostileGuest) as e:
            log.info("batch of %d VMs fell back to one at a time: %s", len(vms), e)
            first = {"kind": "batch", "message": f"batch of {len(vms)} fell back: {e}"}
            retried = [await self.inspect(vm, inspectors) for vm in vms]
            for r in retried:  # the batch was the first attempt
                r.attempts += 1
                r.first_error = r.first_error or first
            return retried
        results = []
        for (vm, prints, _), out, w in zip(checked, outs, inspect_times, strict=True):
            r = InspectResult(vm.name, True, out.results, appliance=app.id,
                              qemu_pid=app.qemu_pid, attempts=1, steps=dict(out.steps),
                              fingerprint=prints, timings={
                                  "wait": waited, "attach": attach / len(vms), "inspect": w,
                                  "detach": detach / len(vms)})
            r.timings["total"] = sum(r.timings.values())
            self._job_done(r)
            results.append(r)
        return results

    @asynccontextmanager
    async def _holding(self, app: Appliance, vms: int = 1) -> AsyncIterator[None]:
        """Give ``app`` back after a job: released if it is known clean (success or an
        image refused before use), retired otherwise."""
        healthy, reason = False, "error"
        try:
            yield
            healthy = True
        except ImageError:
            healthy = True
            raise
        except anyio.get_cancelled_exc_class():
            reason = "cancelled"  # e.g. the round's budget ran out mid-job
            raise
        except HostileGuest:
            reason = "tainted"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if healthy:
                    await self._release(app, vms)
                else:
                    await self._retire(app, reason)

    async def _run_on(self, app: Appliance, vms: Sequence[VM], specs: Sequence[InspectorSpec],
                      disks: list[DiskRef]
                      ) -> tuple[list[Inspected], list[float], float, float]:
        """Attach every disk of ``vms`` at once, inspect each VM on its own devices,
        detach all: (results per VM, inspect seconds per VM, attach s, detach s).
        An image qemu refuses is unplugged again by the worker before ImageError."""
        keys = [luks_keys(vm) for vm in vms]  # an unreadable key fails before attaching
        t = anyio.current_time()
        attached = (await app.call(Attach(disks), self.op_timeout, Attached)).labels
        labels = iter(attached)
        attach = anyio.current_time() - t
        self.stats.attaches += len(disks)
        outs, inspect_times = [], []
        deadline = _seconds(specs) + 30
        try:
            for vm, vm_keys in zip(vms, keys, strict=True):
                t = anyio.current_time()
                own = [next(labels) for _ in vm.disks]
                reply = await app.call(Inspect(vm.name, own, list(specs), vm_keys), deadline,
                                       Inspected)
                outs.append(reply)
                inspect_times.append(anyio.current_time() - t)
        except ImageError:  # the VM's results were refused; the appliance is clean
            await app.call(Detach(attached), self.op_timeout, Detached)
            raise
        t = anyio.current_time()
        await app.call(Detach(attached), self.op_timeout, Detached)
        self.stats.detaches += len(disks)
        return outs, inspect_times, attach, anyio.current_time() - t

    async def _checked(self, vm: VM) -> tuple[VM, Fingerprint | None, list[DiskRef]]:
        """The VM checked (paths resolved), its disk files' fingerprint, taken from
        the stats the checks made before reading each file, and what to attach
        (:func:`disk_refs`); no checks, no fingerprint."""
        if self.safety is None:
            return vm, None, disk_refs(vm, None)
        safety = self.safety

        def check() -> tuple[VM, Fingerprint | None, list[DiskRef]]:
            files: ChainFiles = []
            checked = check_vm(vm, safety, files)
            return checked, take_fingerprint(files), disk_refs(checked, files)

        return await anyio.to_thread.run_sync(check)

    async def _inspect_pooled(self, vm: VM, specs: Sequence[InspectorSpec], result: InspectResult,
                              tried: set[int], disks: list[DiskRef]) -> None:
        t0 = anyio.current_time()
        app = await self._acquire(vm.trust_group, tried)
        tried.add(app.id)
        result.appliance, result.qemu_pid = app.id, app.qemu_pid
        result.timings["wait"] = anyio.current_time() - t0
        async with self._holding(app):
            (out,), (inspect,), attach, detach = await self._run_on(app, [vm], specs, disks)
        result.results, result.steps = out.results, dict(out.steps)
        result.timings.update(attach=attach, inspect=inspect, detach=detach)

    async def _inspect_cold(self, vm: VM, specs: Sequence[InspectorSpec],
                            result: InspectResult) -> None:
        async with self._cold_slots:
            app = await self._spawn()
            self.appliances[app.id] = app
            app.state = "busy"
            try:
                disks = [DiskRef(d.path, d.format) for d in vm.disks]  # opened by path
                deadline = self.boot_timeout + _seconds(specs)
                reply = await app.call(Cold(vm.name, disks, list(specs), self.accel,
                                            self.memsize, self.smp, luks_keys(vm)),
                                       deadline, ColdDone)
            finally:
                self.appliances.pop(app.id, None)
                await app.close()
        self.stats.boots += 1
        self.stats.boot_seconds.append(reply.boot_seconds)
        result.appliance, result.qemu_pid = app.id, reply.qemu_pid
        result.results = reply.results
        result.timings.update(boot=reply.boot_seconds, inspect=reply.inspect_seconds)


def _seconds(specs: Sequence[InspectorSpec]) -> float:
    """What the inspectors of one VM may take together (specs are resolved: each
    has its deadline)."""
    return sum(s.deadline or 0.0 for s in specs)


def batchable(vms: Sequence[VM]) -> bool:
    """Whether these VMs may share an appliance at once: one trust group, and no two
    clones of one template (they share filesystem and LVM UUIDs)."""
    templates = [vm.clone_of for vm in vms if vm.clone_of]
    return len({vm.trust_group for vm in vms}) <= 1 and len(templates) == len(set(templates))


def disk_refs(vm: VM, files: ChainFiles | None) -> list[DiskRef]:
    """What the worker attaches for ``vm``: each disk with every file the checks
    opened for it (by device and inode: ``Layer``), so it attaches exactly those;
    without checks (``files`` None), the bare paths."""
    if files is None:
        return [DiskRef(d.path, d.format, vm.live) for d in vm.disks]
    chains: list[list[Layer]] = []
    for f in files:  # in the checks' order: each disk, then its data and backing files
        if f.role == "disk":
            chains.append([])
        chains[-1].append(Layer(f.path, f.format, f.role, f.stat.st_dev, f.stat.st_ino))
    return [DiskRef(d.path, d.format, vm.live, chain)
            for d, chain in zip(vm.disks, chains, strict=True)]
