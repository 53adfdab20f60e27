"""Prometheus metrics of the service, fed by the pool's events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PCounter


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.pool_size = Gauge("guestpool_pool_size", "Appliances the warm pool keeps booted "
                               "(its target size)", registry=r)
        self.appliances = Gauge("guestpool_appliances", "Appliances now, by state: starting, "
                                "booting, idle, busy (read at each scrape)", ["state"],
                                registry=r)
        self.boots = PCounter("guestpool_boots", "Appliance boots since the service started",
                              registry=r)
        self.boot_seconds = Histogram("guestpool_boot_seconds", "Seconds from an appliance's "
                                      "start to its first answer",
                                      buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 120), registry=r)
        self.job_seconds = Histogram(
            "guestpool_job_seconds", "Each VM's own job: attach to detach on a pooled "
            "appliance, the inspection on a cold one; waiting for an appliance not included",
            ["strategy"], buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120), registry=r)
        self.wait_seconds = Histogram(
            "guestpool_job_wait_seconds", "Seconds each VM's job waited for an appliance "
            "(booting or busy) before it started", ["strategy"],
            buckets=(0.01, 0.1, 0.5, 1, 5, 10, 20, 30, 60, 120), registry=r)
        self.failures = PCounter("guestpool_failures", "Failed jobs and boots since the "
                                 "service started, by kind (boot, image, appliance, hostile)",
                                 ["kind"], registry=r)
        self.coverage = Gauge("guestpool_round_coverage_ratio",
                              "Share of the last finished round's VMs it covered (inspected "
                              "or verified unchanged), from the store after a restart",
                              registry=r)
        self.overrun = Gauge("guestpool_round_overrun_seconds",
                             "Seconds the last finished round ran past its budget", registry=r)
        self.round_vms_by_state = Gauge(
            "guestpool_round_vms", "VMs of the last round by state: inspected, unchanged "
            "(verified on the host, results carried forward), failed, not_reached (stale)",
            ["state"], registry=r)
        self.carried_age = Gauge(
            "guestpool_round_oldest_carried_seconds", "Age of the oldest result the last "
            "round carried forward for a VM verified unchanged", registry=r)
        self.vuln_findings = Gauge(
            "guestpool_vuln_findings", "Open vulnerability findings by severity (each VM's "
            "latest match recorded by a round with --osv)", ["severity"], registry=r)

        self.hosts = Gauge("guestpool_hosts", "Hosts whose agents announced themselves, "
                           "alive or missing (serve --nats)", ["state"], registry=r)
        self.host_vms = Gauge("guestpool_host_vms", "Each host's VMs in the last round "
                              "across hosts, by outcome", ["host", "state"], registry=r)
        self.results_refused = Gauge(
            "guestpool_nats_results_refused", "Results from hosts the coordinator refused "
            "since it started, by reason: wrong-host (sent as another host), not-announced "
            "(a VM that host did not announce or was not sent), round-closed, malformed",
            ["reason"], registry=r)

        self.fleet_freshness = Gauge(
            "guestpool_fleet_vms", "Live VMs by when their facts were last known current, "
            "inspected or verified unchanged (last_round, last_hour, older, never)",
            ["freshness"], registry=r)
        self.fleet_state = Gauge("guestpool_fleet_vms_by_state", "Live VMs by the state their "
                                 "latest attempt left them in: inspected, unchanged (verified, "
                                 "an earlier inspection carried), failed, never", ["state"],
                                 registry=r)

    def set_fleet(self, view: dict[str, Any]) -> None:
        """The fleet gauges from ``_fleetview.freshness`` (set at each scrape)."""
        for bucket, n in view["freshness"].items():
            self.fleet_freshness.labels(bucket).set(n)
        for state, n in view["states"].items():
            self.fleet_state.labels(state).set(n)

    def set_round(self, summary: dict[str, Any]) -> None:
        """The last finished round's gauges from its summary (``RoundReport.summary``,
        as the store keeps it): after each round, and from the store at start."""
        for state in ("inspected", "unchanged", "failed", "not_reached"):
            self.round_vms_by_state.labels(state).set(summary.get(state) or 0)
        self.carried_age.set(summary.get("oldest_carried_s") or 0.0)
        asked = sum(int(summary.get(k) or 0) for k in ("covered", "failed", "not_reached"))
        self.coverage.set(int(summary.get("covered") or 0) / asked if asked else 1.0)
        self.overrun.set(summary.get("overrun_s") or 0.0)

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        if name == "boot_done":
            self.boots.inc()
            self.boot_seconds.observe(data["seconds"])
        elif name == "boot_failed":
            self.failures.labels("boot").inc()
        elif name == "job_done":
            if "seconds" in data:
                self.job_seconds.labels(data.get("strategy", "pooled")).observe(data["seconds"])
                self.wait_seconds.labels(data.get("strategy", "pooled")).observe(
                    data.get("wait", 0.0))
            if not data.get("ok"):
                self.failures.labels((data.get("error") or {}).get("kind", "unknown")).inc()
