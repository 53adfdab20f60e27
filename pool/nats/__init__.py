"""Several hosts: per-host agents and a coordinator on NATS JetStream.

Layout: ``_subjects`` (names on the server), ``_messages`` (what travels),
``_connect`` (authenticated connections, streams and consumers), ``_agent``
(one per hypervisor), ``_coordinator`` (rounds across hosts, results into the
store exactly once), ``_config`` (nats-server configuration with per-host users).
All of it runs on anyio's asyncio backend: nats-py is an asyncio client.

May import: ``rounds`` and everything below it. Never ``service`` or ``cli``
(the service holds a coordinator; the coordinator does not know the service).
"""

from __future__ import annotations

from ._agent import Agent, run_agent
from ._config import write_config
from ._connect import NatsSettings
from ._coordinator import Coordinator, HostsRoundReport, open_coordinator

__all__ = ["Agent", "Coordinator", "HostsRoundReport", "NatsSettings", "open_coordinator",
           "run_agent", "write_config"]
