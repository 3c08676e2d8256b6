"""SMS segment counting: GSM-7 (with its extension table) versus UCS-2, as carriers bill them."""

from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 basic character set (the 128 one-septet characters).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each costs an escape septet plus itself, so it counts double.
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def count_segments(text: str) -> Segments:
    """How many SMS segments `text` is sent as.

    A long message is split into parts of 153 septets (GSM-7) or 67 UTF-16 units (UCS-2), and a
    character is never split across two parts: an extension character (escape + itself) or a
    surrogate pair that would straddle a boundary starts the next part, as Twilio counts them.
    """
    if is_gsm7(text):
        sizes = [2 if ch in GSM7_EXTENDED else 1 for ch in text]
        single, multi, enc = GSM7_SINGLE, GSM7_MULTI, "GSM-7"
    else:
        # Characters outside the Basic Multilingual Plane (most emoji) take two UTF-16 units.
        sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
        single, multi, enc = UCS2_SINGLE, UCS2_MULTI, "UCS-2"
    units = sum(sizes)
    if units == 0:
        return Segments(enc, 0, 0)
    if units <= single:
        return Segments(enc, units, 1)
    count, used = 1, 0
    for size in sizes:
        if used + size > multi:
            count, used = count + 1, 0
        used += size
    return Segments(enc, units, count)
