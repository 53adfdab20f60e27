"""Connecting to NATS (always authenticated, reconnecting for ever) and the
JetStream set-up the coordinator owns: streams, the hosts bucket, host consumers."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from guestpool._errors import SetupError

from ._subjects import (
    COORDINATOR_CONSUMER,
    HOSTS_BUCKET,
    JOBS_STREAM,
    RESULTS_STREAM,
    host_consumer,
    inbox_prefix,
    jobs_subject,
)

log = logging.getLogger("guestpool")
#: results and jobs are de-duplicated by id over this window (longer than a round)
DUPLICATE_WINDOW_S = 2 * 3600.0
#: a delivered job not acknowledged this long goes to another agent of its host;
#: above any one job's deadline (inspectors plus attach and detach), and agents
#: send in-progress acknowledgements while a job waits for an appliance
ACK_WAIT_S = 180.0
#: deliveries of one job before JetStream gives up on it (an agent that dies on it)
MAX_DELIVER = 5


@dataclass(frozen=True)
class NatsSettings:
    """Where the NATS server is and how to prove who we are (one of user and
    password, token or a credentials file is required), with optional TLS."""

    url: str
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    #: an NKey seed file (``guestpool nats-config --nkeys``)
    nkey: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def check(self) -> None:
        if not (self.user and self.password) and not (self.token or self.creds or self.nkey):
            raise SetupError("NATS needs credentials: --nats-password-file (with --nats-user), "
                             "--nats-nkey, --nats-token-file or --nats-creds "
                             "(see `guestpool nats-config`)")

    def connect_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.user:
            opts.update(user=self.user, password=self.password)
        if self.token:
            opts["token"] = self.token
        if self.creds:
            opts["user_credentials"] = self.creds
        if self.nkey:
            opts["nkeys_seed"] = self.nkey
        if self.tls_ca or self.tls_cert:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            opts["tls"] = ctx
        return opts


def read_secret(path: str | Path | None) -> str | None:
    return Path(path).read_text().strip() if path else None


async def _log_error(e: Exception) -> None:
    # permission violations do not fail the call that caused them: say so here
    log.warning("NATS: %s", e)


@asynccontextmanager
async def connected(settings: NatsSettings, name: str, host: str | None = None,
                    on_error: Callable[[Exception], Awaitable[None]] = _log_error
                    ) -> AsyncIterator[Client]:
    """A client that reconnects for ever (a restarted server is waited for), with
    reply subjects under ``host``'s own inbox prefix; closed on the way out.
    Asynchronous errors (a permission violation) go to ``on_error``."""
    settings.check()
    try:
        nc = await nats.connect(
            servers=[u.strip() for u in settings.url.split(",")], name=name,
            inbox_prefix=inbox_prefix(host).encode(), max_reconnect_attempts=-1,
            reconnect_time_wait=0.5, connect_timeout=5, allow_reconnect=True, error_cb=on_error,
            **settings.connect_options())
    except Exception as e:
        raise SetupError(f"cannot connect to NATS at {settings.url}: "
                         f"{type(e).__name__}: {e}") from None
    try:
        yield nc
    finally:
        if not nc.is_closed:
            await nc.close()


async def ensure_streams(js: JetStreamContext) -> None:
    """Create (or bring up to date) the jobs and results streams and the hosts bucket."""
    jobs = StreamConfig(name=JOBS_STREAM, subjects=["guestpool.jobs.*"],
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                        duplicate_window=DUPLICATE_WINDOW_S)
    results = StreamConfig(name=RESULTS_STREAM, subjects=["guestpool.results.*"],
                           retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                           duplicate_window=DUPLICATE_WINDOW_S, max_age=7 * 86400.0)
    for config in (jobs, results):
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with other settings: bring it up to date
            await js.update_stream(config)
    try:
        await js.key_value(HOSTS_BUCKET)
    except Exception:
        await js.create_key_value(KeyValueConfig(bucket=HOSTS_BUCKET, history=1,
                                                 storage=StorageType.FILE))
    await js.add_consumer(RESULTS_STREAM, ConsumerConfig(
        durable_name=COORDINATOR_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL, ack_wait=60.0, max_ack_pending=20000))


async def ensure_host(js: JetStreamContext, host: str, ack_wait: float = ACK_WAIT_S) -> None:
    """The durable pull consumer of ``host``'s jobs (agents only bind to it)."""
    try:
        await js.consumer_info(JOBS_STREAM, host_consumer(host))
        return
    except NotFoundError:
        pass
    await js.add_consumer(JOBS_STREAM, ConsumerConfig(
        durable_name=host_consumer(host), filter_subject=jobs_subject(host),
        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait, max_deliver=MAX_DELIVER, max_ack_pending=1000))
