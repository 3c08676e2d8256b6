"""Sending an outbox row as the worker's task does: `outbox.send_one` with the conversations'
policy for a text that fails for good."""

from __future__ import annotations

from service.conversations import consent
from service.messaging import outbox


def send_one(*args, **kwargs) -> outbox.SendOutcome:
    return outbox.send_one(*args, on_failed=consent.after_failed_send, **kwargs)
