"""SMS segment counting: GSM-7 (with its double-cost extension table) versus UCS-2, at the exact
boundaries carriers bill by (160/153 septets, 70/67 UTF-16 units)."""

from __future__ import annotations

import pytest

from flows.sms import GSM7_BASIC, GSM7_EXTENDED, count_segments, is_gsm7

EXTENSION = "^{}\\[~]|€"
EMOJI = "😀"  # outside the Basic Multilingual Plane: a surrogate pair, 2 UTF-16 units


@pytest.mark.parametrize(
    ("text", "encoding", "units", "count"),
    [
        ("", "GSM-7", 0, 0),
        ("a", "GSM-7", 1, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("a" * 459, "GSM-7", 459, 3),
        ("a" * 460, "GSM-7", 460, 4),
        ("a" * 612, "GSM-7", 612, 4),
        ("a" * 613, "GSM-7", 613, 5),
        ("á", "UCS-2", 1, 1),
        ("á" * 70, "UCS-2", 70, 1),
        ("á" * 71, "UCS-2", 71, 2),
        ("á" * 134, "UCS-2", 134, 2),
        ("á" * 135, "UCS-2", 135, 3),
        ("á" * 201, "UCS-2", 201, 3),
        ("á" * 202, "UCS-2", 202, 4),
        ("á" * 268, "UCS-2", 268, 4),
        ("á" * 269, "UCS-2", 269, 5),
    ],
    ids=lambda v: None if isinstance(v, str) and len(v) > 3 else repr(v),
)
def test_single_and_multipart_boundaries(text, encoding, units, count):
    seg = count_segments(text)
    assert (seg.encoding, seg.units, seg.count) == (encoding, units, count)


@pytest.mark.parametrize("char", list(EXTENSION))
def test_each_extension_character_is_gsm7_and_counts_double(char):
    assert is_gsm7(char) and char in GSM7_EXTENDED and char not in GSM7_BASIC
    assert count_segments(char).units == 2
    assert count_segments(char * 80) == count_segments("a" * 160)  # 160 septets: 1 segment
    assert count_segments(char * 80 + "a").count == 2  # 161 septets
    assert count_segments("a" * 159 + char).count == 2  # 161 septets, only 160 characters
    assert count_segments("a" * 158 + char) .count == 1  # exactly 160 septets


def test_an_extension_character_is_not_split_across_segments():
    # 152 septets + an escape pair would be 154 in the first part: the pair moves to the second.
    straddling = "a" * 152 + "€" + "a" * 152  # 306 septets, but 152 + 154 per part
    assert count_segments(straddling).units == 306
    assert count_segments(straddling).count == 3
    fitting = "a" * 151 + "€" + "a" * 153  # 153 + 153
    assert (count_segments(fitting).units, count_segments(fitting).count) == (306, 2)


def test_an_emoji_counts_two_utf16_units_and_is_not_split():
    assert count_segments(EMOJI) .units == 2 and count_segments(EMOJI).encoding == "UCS-2"
    assert count_segments(EMOJI * 35).count == 1  # 70 units
    assert count_segments(EMOJI * 35 + "a").count == 2  # 71 units
    assert count_segments("a" * 69 + EMOJI).count == 2  # 71 units, only 70 characters
    assert count_segments("a" * 68 + EMOJI).count == 1  # exactly 70 units
    assert count_segments("a" * 66 + EMOJI + "a" * 66).count == 3  # 134 units, 66 + 68 split
    assert count_segments("a" * 65 + EMOJI + "a" * 67).count == 2  # 67 + 67


@pytest.mark.parametrize("char", list("éèùìòÇØøÅåÄÖÑÜäöñüàßÉ¿¡£¥§"))
def test_accents_in_the_gsm7_table_keep_gsm7(char):
    seg = count_segments(char + "a" * 159)
    assert (seg.encoding, seg.count) == ("GSM-7", 1)


@pytest.mark.parametrize("char", list("áíóúÁÍÓÚçâêôãõ“”’…") + [EMOJI, "\u00a0"])
def test_a_character_outside_gsm7_forces_ucs2_for_the_whole_text(char):
    text = "a" * 70
    assert count_segments(text).encoding == "GSM-7"
    seg = count_segments(text + char)
    assert seg.encoding == "UCS-2"
    assert seg.count == 2  # 71+ UCS-2 units: one accent more than doubles the cost


def test_e_acute_stays_gsm7_but_a_acute_does_not():
    assert count_segments("Qué bien").encoding == "GSM-7"
    assert count_segments("Está bien").encoding == "UCS-2"
    # a Spanish question mark and ñ are GSM-7 too; í is not
    assert count_segments("¿Año?").encoding == "GSM-7"
    assert count_segments("¿Sí?").encoding == "UCS-2"


def test_extension_characters_count_single_once_the_text_is_ucs2():
    assert count_segments("€" * 70).units == 140  # GSM-7: 2 septets each
    assert count_segments("á" + "€" * 69).units == 70  # UCS-2: 1 unit each
    assert count_segments("á" + "€" * 69).count == 1


def test_the_gsm7_tables_have_their_sizes():
    assert len(GSM7_BASIC) == 128
    assert set(EXTENSION) <= GSM7_EXTENDED
    assert not GSM7_BASIC & GSM7_EXTENDED
