"""Logging setup, and masking of phone numbers: full numbers never reach the logs."""

from __future__ import annotations

import logging
import re
import sys

import phonenumbers

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PHONE = re.compile(r"\+\d{7,15}\b")
# National formats ("(617) 555-0142", "617-555-0142"): what phonenumbers finds as a valid
# number of this region in running text (not digit runs inside SIDs, ids or timestamps).
_NATIONAL_REGION = "US"
_DIGITS_ENOUGH = re.compile(r"(?:\d\D{0,3}){7}")
_TRACEBACKS = logging.Formatter()


def mask_phone(number: str | None) -> str:
    """'+15551234567' -> '+1******4567': enough to tell numbers apart, not to dial one."""
    if not number:
        return ""
    text = str(number)
    if len(text) <= 6:
        return "*" * (len(text) - 2) + text[-2:] if len(text) > 2 else "*" * len(text)
    return text[:2] + "*" * (len(text) - 6) + text[-4:]


def mask_phones_in(text: str) -> str:
    """Every E.164-looking number in `text`, and every valid national one, masked."""
    text = _PHONE.sub(lambda match: mask_phone(match.group(0)), text)
    if not _DIGITS_ENOUGH.search(text):
        return text
    pieces, last = [], 0
    for found in phonenumbers.PhoneNumberMatcher(text, _NATIONAL_REGION,
                                                 leniency=phonenumbers.Leniency.VALID):
        pieces += [text[last:found.start], _mask_digits(found.raw_string)]
        last = found.end
    return "".join(pieces) + text[last:] if pieces else text


def _mask_digits(raw: str) -> str:
    """'(617) 555-0142' -> '(***) ***-0142': the layout stays, all but the last 4 digits go."""
    total = sum(c.isdigit() for c in raw)
    seen, out = 0, []
    for c in raw:
        if c.isdigit():
            seen += 1
            out.append(c if seen > total - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


class PhoneMaskingFilter(logging.Filter):
    """A last line of defence on our handler: masks numbers that slipped into a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phones_in(message)
        if masked != message:
            record.msg, record.args = masked, None
        # A traceback quotes whatever was in play (a query's parameters, a request's form):
        # it is formatted here, masked, and the handler's formatter uses this text.
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phones_in(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phones_in(record.stack_info)
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
