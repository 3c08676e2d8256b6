"""kombu's Redis transport, with one fault fixed: a channel whose connection is gone raises a
connection error, as every caller in kombu and Celery expects, instead of an AttributeError.

When Redis goes away, Celery's consumer collects the broken connection, which leaves the
transport without its client; a channel's close can then stop half-way (its pool dropped, its
transport still attached). From then on the next close of that channel, or a late
acknowledgement of a task that finished during the outage, read the transport's missing client
and raised `AttributeError: 'NoneType' object has no attribute 'hostname'` — not a connection
error, so Celery took it for an unrecoverable one and the worker exited (seen once in CI,
mid-run; one sequence that gets there is replayed in tests/tasks/test_broker_outage.py). Every
use of a channel reaches the client through `_connparams`, the one method guarded here.
`taskqueue.broker_settings` names this transport.

With a connection error instead, kombu does what it does for any ack on a dead connection: it
logs "Couldn't ack" and goes on. If Redis kept the message, it stays unacknowledged there and
is delivered again after the visibility timeout (an hour); after a restart without persistence
it is gone. Either way no work is lost: every task acts on rows committed first, which the beat
picks up again (a claimed follow-up once its lease has run out), and each claims its rows
under a lease, so a second delivery does nothing twice.

Only the first broker URL gets this transport: with several (`;`), kombu's failover to the next
one goes back to its own.
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
