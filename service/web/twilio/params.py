"""What Twilio's webhook parameters look like. Anything else is a broken or forged request
(its signature may still be right: whoever holds the token can sign anything) and gets a 400
naming the parameter, never a 500 from a database that cannot store it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from flask import Response

# Twilio SIDs are two letters and 32 hex digits: 34 characters.
SID_LENGTH = 34
_SID = re.compile(r"[A-Za-z]{2}[0-9A-Za-z]{1,32}")
SHORT_MAX = 32  # numbers ("+16175550142", "client:alice", "anonymous"), statuses, keys pressed
TEXT_MAX = 4000  # what speech recognition heard


def bad_request(message: str) -> Response:
    return Response(message, status=400, mimetype="text/plain")


def check(form: Mapping[str, str], *, sids: Iterable[str] = (), short: Iterable[str] = (),
          text: Iterable[str] = ()) -> Response | None:
    """None when every named parameter that is present looks like Twilio's, else the 400."""
    for name in sids:
        value = form.get(name)
        if value and not _SID.fullmatch(value):
            return bad_request(f"{name} is not a Twilio SID")
    for name in short:
        value = form.get(name)
        if value and (len(value) > SHORT_MAX or not value.isprintable()):
            return bad_request(f"{name} is not a Twilio value (at most {SHORT_MAX} printable "
                               "characters)")
    for name in text:
        value = form.get(name)
        if value and (len(value) > TEXT_MAX or "\x00" in value):
            return bad_request(f"{name} is too long or holds a NUL character")
    return None
