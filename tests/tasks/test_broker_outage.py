"""A consumer's channel after Redis went away, lost as Celery's consumer loses a connection
(collected, then closed), on the real kombu transport against a private redis-server that is
killed mid-delivery.

With kombu's own Redis transport the channel's close, and then the late acknowledgement, raise
AttributeError, which Celery treats as unrecoverable: the worker exits (the CI failure of
2026-12-02 ended in exactly this traceback). The project's transport (service/broker.py) turns
it into a connection error, so the ack is logged as not done and the worker goes on."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
from celery import Celery
from kombu.common import ignore_errors

from service import taskqueue
from tests.e2e.harness import RedisServer

pytestmark = pytest.mark.redis

QUEUE = kombu.Queue("outage-test", routing_key="outage-test")
# A broadcast queue (fanout, auto-delete), as a worker's control queue is.
BROADCAST = kombu.Queue("outage-test-all", auto_delete=True,
                        exchange=kombu.Exchange("outage-test-all", type="fanout"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def lost_mid_delivery(server: RedisServer,
                      transport: str | None) -> tuple[kombu.Connection, kombu.Message]:
    """A message delivered and not yet acknowledged (acks_late) on a channel that also listens
    to a broadcast queue; then Redis killed and the connection lost as Celery's consumer loses
    it: collected, then the channel closed, ignoring connection errors.

    One sequence that leaves a channel half-closed (its pool dropped, its transport attached
    without a client), the state of the CI traceback. Celery's own task channel (the default
    one, a BRPOP in flight) did not reach it in these steps; whatever the way in, every use of
    such a channel goes through `Channel._connparams`, which is what service/broker.py guards."""
    with kombu.Connection(server.url, transport=transport) as producer:
        queue = producer.SimpleQueue(QUEUE.name)
        queue.put({"task": "x"})
        queue.close()
    connection = kombu.Connection(server.url, transport=transport)
    got: list[kombu.Message] = []
    channel = connection.channel()
    kombu.Consumer(channel, queues=[QUEUE, BROADCAST],
                   callbacks=[lambda _body, message: got.append(message)],
                   accept=["json"]).consume()
    connection.drain_events(timeout=5)
    assert len(got) == 1
    server.kill()
    connection.collect(socket_timeout=1)
    ignore_errors(connection, channel.close)
    return connection, got[0]


def late_ack(connection: kombu.Connection, message: kombu.Message) -> None:
    """As Celery acknowledges a task that finished during the outage (acks_late)."""
    message.ack_log_error(logging.getLogger("celery.worker"),
                          connection.connection_errors + connection.channel_errors)


def test_the_projects_broker_settings_name_the_fixed_transport(redis_server):
    settings = taskqueue.broker_settings({"REDIS_URL": redis_server.url})
    app = Celery("outage-test", set_as_current=False)
    app.conf.update(settings)
    with app.connection_for_read() as connection:
        assert type(connection.transport).__module__ == "service.broker"
        assert connection.default_channel.client.ping()
    # The filesystem broker (local runs) keeps kombu's own transport.
    assert "broker_transport" not in taskqueue.broker_settings({})


@pytest.mark.parametrize("url, cert_reqs", [
    ("rediss://redis.example.org:6380/0", ssl.CERT_REQUIRED),  # verified unless told not to
    ("rediss://redis.example.org:6380/0?ssl_cert_reqs=none", ssl.CERT_NONE),
    ("redis://redis.example.org:6379/0", None),
])
def test_a_rediss_url_still_gets_tls(url, cert_reqs):
    # kombu turns TLS on from the scheme only for a transport named "rediss"; this one is
    # named by its module. (Nothing is connected here.)
    app = Celery("tls-test", set_as_current=False)
    app.conf.update(taskqueue.broker_settings({"REDIS_URL": url}))
    connection = app.connection_for_write()
    assert connection.transport_cls == taskqueue.REDIS_TRANSPORT
    assert (connection.ssl or {}).get("ssl_cert_reqs") == cert_reqs


def test_an_ack_after_redis_went_away_is_logged_not_fatal(redis_server, caplog):
    connection, message = lost_mid_delivery(redis_server, taskqueue.REDIS_TRANSPORT)
    redis_server.start()  # back, empty, as after a restart
    with caplog.at_level(logging.CRITICAL):
        late_ack(connection, message)
    assert "Couldn't ack" in caplog.text
    # A new connection works as ever.
    with kombu.Connection(redis_server.url, transport=taskqueue.REDIS_TRANSPORT) as again:
        assert again.default_channel.client.ping()


def test_kombus_own_transport_still_raises_attribute_error_there(redis_server):
    """The fault service/broker.py works around. If this fails, kombu fixed it upstream and
    service/broker.py (and the broker_transport setting) can go."""
    with pytest.raises(AttributeError, match="hostname"):  # the channel's close, after collect
        lost_mid_delivery(redis_server, None)
