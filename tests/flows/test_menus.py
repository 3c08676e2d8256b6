"""The voice menus' words and a first text's language (flows/menus.py)."""

from __future__ import annotations

import pytest

from flows import menus


@pytest.mark.parametrize(("digits", "speech", "expected"), [
    ("1", "", "one"), ("2", "", "two"), ("3", "", None),
    ("", "text me please", "one"), ("", "un mensaje", "one"),
    ("", "I want to talk to a nurse", "two"), ("", "hablar con una persona", "two"),
    ("", "text the clinic", None),  # words of both options: unclear, never guessed
    ("", "what", None), ("", "", None),
])
def test_offer_menu(digits, speech, expected):
    assert menus.menu_choice(digits, speech, menus.OFFER) == expected


@pytest.mark.parametrize(("speech", "expected"), [
    ("again please", "one"), ("otra vez", "one"), ("repita", "one"), ("the clinic", "two"),
    ("again or the clinic", None),
])
def test_advice_menu(speech, expected):
    assert menus.menu_choice("", speech, menus.ADVICE) == expected


@pytest.mark.parametrize(("digits", "speech", "expected"), [
    ("1", "", "en"), ("2", "", "es"), ("9", "", None),
    ("", "English", "en"), ("", "español", "es"), ("", "Spanish please", "es"),
    ("", "english or spanish", None), ("", "hello", None),
])
def test_language_menu(digits, speech, expected):
    assert menus.language_choice(digits, speech) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("DOLOR", "es"), ("Ayuda", "es"), ("espalda!", "es"), ("PAIN", "en"), ("hello", "en"),
])
def test_first_text_language(text, expected):
    assert menus.first_text_language(text) == expected
