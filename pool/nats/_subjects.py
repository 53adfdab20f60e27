"""Names on the NATS server: streams, subjects, consumers and the hosts bucket.

One place decides them, so the agent, the coordinator and the server
configuration (``_config``) agree, permissions included.
"""

from __future__ import annotations

import re

from guestpool._errors import SetupError

JOBS_STREAM = "GUESTPOOL_JOBS"
RESULTS_STREAM = "GUESTPOOL_RESULTS"
HOSTS_BUCKET = "guestpool-hosts"
COORDINATOR_CONSUMER = "coordinator"
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def check_host(name: str) -> str:
    """A host name usable as one subject token and a consumer name."""
    if not _HOST.fullmatch(name):
        raise SetupError(f"host name {name!r}: use letters, digits, - and _ (up to 63)")
    return name


def fleet_name(host: str, vm: str) -> str:
    """A VM's name across hosts: its host and its own name (``A:web-1``). Names
    are unique per hypervisor only, so the same name on two hosts is two VMs."""
    return f"{host}:{vm}"


def jobs_subject(host: str) -> str:
    return f"guestpool.jobs.{host}"


def results_subject(host: str) -> str:
    return f"guestpool.results.{host}"


def results_host(subject: str) -> str | None:
    """The host whose results subject this is, or None. The server lets each host's
    user publish on its own results subject only, so this, not a field of the
    message, says which host sent a result."""
    prefix, _, host = subject.rpartition(".")
    return host if prefix == "guestpool.results" and _HOST.fullmatch(host) else None


def host_consumer(host: str) -> str:
    """The durable pull consumer every agent of ``host`` shares."""
    return f"host-{host}"


def inbox_prefix(host: str | None) -> str:
    """Reply subjects of one host's agents: no other host may subscribe to them."""
    return f"_INBOX.{host}" if host else "_INBOX"


def kv_key_subject(host: str) -> str:
    return f"$KV.{HOSTS_BUCKET}.{host}"


def job_id(round_uid: str, host: str, vm: str) -> str:
    """The de-duplication id of a job: by the round's uid, not its number, which
    a coordinator given a new store starts again at 1."""
    return f"job:{round_uid}:{host}:{vm}"


def result_id(round_id: int, host: str, vm: str, nonce: str) -> str:
    """The de-duplication id of a result: a round covers a host's VM once. The
    job's ``nonce`` is known only to the coordinator and that host (no other host
    may read its jobs), so no host can publish an id first that would make the
    server drop another host's result as a duplicate."""
    return f"result:{round_id}:{host}:{vm}:{nonce}"
