"""`triage chat`: the terminal check-in runs the real flow with no database or app, shows each
message with its SMS segment count and ends with `Level: <value>` and the reasons."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.sms import count_segments
from service.cli import main

# A database nobody can reach: the command must not try to.
NO_DATABASE = {"DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/nothing"}
SELF_CARE = ["no"] * 8 + ["40", "3 days", "no", "3", "no", "yes", "no", "no", "no"]
MESSAGE = re.compile(r"^clinic> (.*)\n {8}\[(\d+) SMS segments?, (GSM-7|UCS-2)\]$", re.M)


def chat(args: list[str], replies: list[str]):
    result = CliRunner().invoke(main, ["chat", *args], input="".join(f"{r}\n" for r in replies),
                                env=NO_DATABASE, catch_exceptions=False)
    return result


def messages_in(output: str) -> list[tuple[str, int, str]]:
    return [(text, int(count), enc) for text, count, enc in MESSAGE.findall(output)]


def assert_ends_with_outcome(output: str, level: str, reasons: str) -> str:
    tail = output[output.rindex("clinic> "):]
    outcome = tail[tail.index("\nLevel: "):]
    assert outcome.startswith(f"\nLevel: {level}\nReasons: {reasons}\n"), outcome
    assert "clinic> " not in outcome
    return outcome


def test_an_intake_shows_every_message_with_its_segments_and_ends_with_the_level():
    result = chat([], SELF_CARE)
    assert result.exit_code == 0, result.output
    shown = messages_in(result.output)
    assert result.output.count("clinic> ") == len(shown) == 1 + len(SELF_CARE) + 1
    for text, count, encoding in shown:
        measured = count_segments(text)
        assert (count, encoding) == (measured.count, measured.encoding)
    assert shown[0][0].startswith("Demo Clinic: Hi!") and shown[0][1] == 2
    assert shown[-1][0].startswith("Thank you. Your answers show no warning signs.")
    outcome = assert_ends_with_outcome(result.output, "self_care", "MECHANICAL")
    assert "Follow-up (first) due" in outcome and "(check-in completed)" in outcome


def test_spanish_emergency_ends_at_once():
    result = chat(["--lang", "es"], ["sí"])
    assert result.exit_code == 0, result.output
    shown = messages_in(result.output)
    assert shown[1][0].startswith("¿Tiene dolor de pecho") and shown[1][2] == "UCS-2"
    assert shown[-1][0].startswith("Sus respuestas pueden indicar un problema grave")
    assert_ends_with_outcome(result.output, "emergency", "CHEST, INCOMPLETE")
    assert "(check-in emergency_stop)" in result.output


def test_advice_names_the_demo_clinics_number_as_its_texts_do():
    cancer_history = ["no", "no", "no", "yes"] + SELF_CARE[4:]  # urgent: call the clinic today
    result = chat([], cancer_history)
    assert result.exit_code == 0, result.output
    advice = messages_in(result.output)[-1][0]
    assert "Call Demo Clinic today at +16175550100." in advice  # as `triage demo seed` has it
    assert "555-0100" not in result.output


@pytest.mark.parametrize(("flags", "level"), [(["--cancer-history"], "urgent"), ([], "soon")])
def test_a_final_follow_up_with_the_same_pain(flags, level):
    result = chat(["--followup", "--baseline", "6", "--final", *flags], ["3", "6"] + ["no"] * 8)
    assert result.exit_code == 0, result.output
    assert messages_in(result.output)[1][0].startswith("How is your back pain now?")
    assert_ends_with_outcome(result.output, level, "PERSISTENT")


def test_a_follow_up_worse_by_two_points_from_the_baseline():
    result = chat(["--followup", "--baseline", "6"], ["2", "8"] + ["no"] * 8)
    assert result.exit_code == 0, result.output
    assert_ends_with_outcome(result.output, "soon", "WORSENING, IMPROVING")


def test_waiting_past_the_timeout_ends_incomplete():
    result = chat([], ["no", "/wait 25h", "/wait 72h"])
    assert result.exit_code == 0, result.output
    assert "We have not heard back from you" in result.output
    outcome = assert_ends_with_outcome(result.output, "soon", "INCOMPLETE")
    (missing,) = re.findall(r"^Not answered: (.*)$", outcome, re.M)
    assert "chest_symptoms" not in missing and "limb_weakness" in missing.split(", ")
    assert "(check-in timed_out)" in outcome


def test_input_that_ends_early_exits_nonzero_without_a_level():
    result = chat([], ["no", "no"])
    assert result.exit_code == 1
    assert "(no more input)" in result.output and "Level:" not in result.output


@pytest.mark.parametrize("args", [["--final"], ["--baseline", "6"], ["--cancer-history"],
                                  ["--followup", "--baseline", "11"], ["--lang", "fr"]])
def test_bad_options_are_usage_errors(args):
    result = CliRunner().invoke(main, ["chat", *args], input="")
    assert result.exit_code == 2, result.output


def test_the_triage_console_script_reads_stdin():
    script = Path(sys.executable).with_name("triage")
    assert script.exists(), "install the project: pip install -e .[dev]"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "FLASK_"))}
    env.update(NO_DATABASE)
    done = subprocess.run([str(script), "chat"], input="\n".join(SELF_CARE) + "\n", env=env,
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    assert len(messages_in(done.stdout)) == 1 + len(SELF_CARE) + 1
    assert_ends_with_outcome(done.stdout, "self_care", "MECHANICAL")


# ---- real-world texts: the same reading and routing as an SMS (CLINICAL.md §6-§7) ----------


@pytest.mark.parametrize(("args", "text", "confirmation"), [
    ([], "NO STOP", "You will get no more texts from us"),
    ([], "I said stop", "You will get no more texts from us"),
    ([], "🛑", "You will get no more texts from us"),
    (["--lang", "es"], "Para por favor", "No recibirá más mensajes"),
    (["--lang", "es"], "no más", "No recibirá más mensajes"),
])
def test_an_opt_out_ends_the_chat_with_its_one_confirmation_and_no_answer(args, text,
                                                                         confirmation):
    result = chat(args, ["no", text, "no", "no"])
    assert result.exit_code == 1, result.output  # ended early, as /quit does
    shown = [t for t, _, _ in messages_in(result.output)]
    assert confirmation in shown[-1]
    assert "(opted out: no more texts; the check-in ends)" in result.output
    assert "Level:" not in result.output  # nothing was assessed from a text that said stop


def test_a_call_request_is_confirmed_and_the_same_question_comes_again():
    result = chat([], ["can someone call me", "/quit"])
    shown = [t for t, _, _ in messages_in(result.output)]
    assert "(the clinic is alerted: callback_requested, level soon)" in result.output
    assert "We told the care team you asked for a call" in shown[-2]
    assert shown[-1] == shown[1]  # the first question, asked again


def test_a_hedged_reply_is_asked_again_and_an_opt_out_word_in_another_sense_says_how_to_stop():
    result = chat([], ["yes but only sometimes", "my pain won't end", "/quit"])
    shown = [t for t, _, _ in messages_in(result.output)]
    assert shown[2] == shown[1]  # the re-ask: same words
    assert shown[3] == "To stop texts from Demo Clinic, reply STOP."
    assert shown[4].endswith("Please reply YES or NO.") or shown[4] == shown[1]


def test_help_is_answered_without_moving_the_conversation_on():
    result = chat([], ["HELP", "/quit"])
    shown = [t for t, _, _ in messages_in(result.output)]
    assert "+16175550100" in shown[2] and "911" in shown[2]
