"""Logging setup, and masking of phone numbers: full numbers never reach the logs."""

from __future__ import annotations

import logging
import re
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PHONE = re.compile(r"\+\d{7,15}\b")


def mask_phone(number: str | None) -> str:
    """'+15551234567' -> '+1******4567': enough to tell numbers apart, not to dial one."""
    if not number:
        return ""
    text = str(number)
    if len(text) <= 6:
        return "*" * (len(text) - 2) + text[-2:] if len(text) > 2 else "*" * len(text)
    return text[:2] + "*" * (len(text) - 6) + text[-4:]


def mask_phones_in(text: str) -> str:
    """Every E.164-looking number in `text`, masked."""
    return _PHONE.sub(lambda match: mask_phone(match.group(0)), text)


class PhoneMaskingFilter(logging.Filter):
    """A last line of defence on our handler: masks numbers that slipped into a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phones_in(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_OUR_LOGGERS = ("service", "tasks", "flows")


def configure_logging(level: str = "INFO") -> None:
    """Our loggers at `level`, libraries at WARNING, to stderr.

    Handlers are added only when the host (gunicorn, pytest, celery) has not set up its own.
    """
    for name in _OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(PhoneMaskingFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
