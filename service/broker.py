"""kombu's Redis transport, with one fault fixed: a channel whose connection is gone raises a
connection error, as every caller in kombu and Celery expects, instead of an AttributeError.

When Redis goes away, Celery's consumer collects the broken connection, which leaves the
transport without its client; the channel's close then fails half-way (its pool dropped, its
transport still attached). From then on a late acknowledgement of a task that finished during
the outage, or the next close of that channel, read the transport's missing client and raised
`AttributeError: 'NoneType' object has no attribute 'hostname'` — not a connection error, so
Celery took it for an unrecoverable one and the worker exited (seen once in CI, mid-run; shown
step by step in tests/tasks/test_broker_outage.py). `taskqueue.broker_settings` names it.

With a connection error instead, kombu does what it does for any ack on a dead connection: it
logs "Couldn't ack" and goes on; the message stays unacknowledged in Redis and is delivered
again (the tasks are idempotent: every row they act on is claimed under a lease first).
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
