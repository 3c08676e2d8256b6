"""Conversations: check-ins by text (start, step, repeat the question, finish), consent, the terminal chat."""
