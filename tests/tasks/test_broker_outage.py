"""A worker's channel after Redis went away: the steps Celery's consumer takes on a connection
loss, on the real kombu transport against a private redis-server that is killed mid-way.

With kombu's own Redis transport the late acknowledgement raises AttributeError, which Celery
treats as unrecoverable: the worker exits (the CI failure of 2026-12-02 ended in exactly this
traceback). The project's transport (service/broker.py) turns it into a connection error, so
the ack is logged as not done and the worker goes on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
from celery import Celery
from kombu.common import ignore_errors

from service import taskqueue
from tests.e2e.harness import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def delivered_then_redis_lost(url: str, transport: str | None) -> tuple[kombu.Connection,
                                                                        kombu.Message]:
    """A message delivered (not yet acknowledged) on a consumer's channel that also listens to
    a broadcast (fanout, auto-delete) queue, as a worker's control queue is."""
    with kombu.Connection(url, transport=transport) as producer:
        queue = producer.SimpleQueue("outage-test")
        queue.put({"task": "x"})
        queue.close()
    connection = kombu.Connection(url, transport=transport)
    got: list[kombu.Message] = []
    consumer = kombu.Consumer(connection.channel(),
                              queues=[kombu.Queue("outage-test", routing_key="outage-test"),
                                      kombu.Queue("outage-test-all", auto_delete=True,
                                                  exchange=kombu.Exchange("outage-test-all",
                                                                          type="fanout"))],
                              callbacks=[lambda _body, message: got.append(message)],
                              accept=["json"])
    consumer.consume()
    connection.drain_events(timeout=5)
    assert len(got) == 1
    return connection, got[0]


def lose_the_connection(server: RedisServer, connection: kombu.Connection,
                        channel) -> None:
    """What Celery's consumer does when Redis is gone: collect the broken connection, then
    (its restart) close the consumers' channels, ignoring connection errors."""
    server.kill()
    connection.collect(socket_timeout=1)
    ignore_errors(connection, channel.close)


def test_the_projects_broker_settings_name_the_fixed_transport(redis_server):
    settings = taskqueue.broker_settings({"REDIS_URL": redis_server.url})
    app = Celery("outage-test", set_as_current=False)
    app.conf.update(settings)
    with app.connection_for_read() as connection:
        assert type(connection.transport).__module__ == "service.broker"
        assert connection.default_channel.client.ping()
    # The filesystem broker (local runs) keeps kombu's own transport.
    assert "broker_transport" not in taskqueue.broker_settings({})


def test_an_ack_after_redis_went_away_is_logged_not_fatal(redis_server, caplog):
    url = redis_server.url
    connection, message = delivered_then_redis_lost(url, taskqueue.REDIS_TRANSPORT)
    lose_the_connection(redis_server, connection, message.channel)
    redis_server.start()  # back, empty, as after a restart

    with caplog.at_level(logging.CRITICAL):
        # As Celery acknowledges a task that finished during the outage (acks_late).
        message.ack_log_error(logging.getLogger("celery.worker"),
                              connection.connection_errors + connection.channel_errors)
    assert "Couldn't ack" in caplog.text
    # A new connection works as ever.
    with kombu.Connection(url, transport=taskqueue.REDIS_TRANSPORT) as again:
        assert again.default_channel.client.ping()


def test_kombus_own_transport_still_raises_attribute_error_there(redis_server):
    """The fault service/broker.py works around. If this fails, kombu fixed it upstream and
    service/broker.py (and the broker_transport setting) can go."""
    connection, message = delivered_then_redis_lost(redis_server.url, None)
    with pytest.raises(AttributeError, match="hostname"):  # the restart's close of the channel
        lose_the_connection(redis_server, connection, message.channel)
    redis_server.start()
    with pytest.raises(AttributeError, match="hostname"):  # the late ack
        message.ack_log_error(logging.getLogger("celery.worker"),
                              connection.connection_errors + connection.channel_errors)
