"""Several hosts: per-host agents and a coordinator on NATS JetStream.

Layout: ``_subjects`` (names on the server), ``_messages`` (what travels),
``_connect`` (authenticated connections, streams and consumers), ``_agent``
(one per hypervisor), ``_coordinator`` (hosts, jobs, and results checked and
stored exactly once), ``_target`` (``HostsTarget``: what ``run_round`` drives
across hosts), ``_config`` (nats-server configuration with per-host users).
All of it runs on anyio's asyncio backend: nats-py is an asyncio client.

May import: ``rounds`` and everything below it. Never ``service`` or ``cli``
(the service holds a coordinator; the coordinator does not know the service).
"""

from __future__ import annotations

from ._agent import Agent, run_agent
from ._config import write_config
from ._connect import NatsSettings
from ._coordinator import Coordinator, open_coordinator
from ._target import HostsRoundReport, HostsTarget, HostTally

__all__ = ["Agent", "Coordinator", "HostTally", "HostsRoundReport", "HostsTarget",
           "NatsSettings", "open_coordinator", "run_agent", "write_config"]
