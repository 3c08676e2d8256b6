"""Messaging: the outbox and its senders, delivery callbacks, the inbound spool, send rates, quiet hours."""
