"""`triage enroll`: enrolls through the use case, queues the consent text, audits, and refuses
bad input with a clear message."""

from __future__ import annotations

from datetime import date

import pytest

from service.cli import main
from service.store.models import AuditLog, Outbox, Patient
from tests.support.db import counts, rows


def test_enroll_prints_the_patient_id_and_queues_the_consent_text(runner, db, make_clinic):
    clinic = make_clinic(name="Back Clinic")
    result = runner.invoke(main, [
        "enroll", "--clinic", str(clinic.id), "--phone", "(617) 555-0142", "--name", "Ana Ruiz",
        "--dob", "1980-02-29", "--language", "es", "--timezone", "America/Chicago",
        "--calls-allowed"])

    assert result.exit_code == 0, result.output
    (patient,) = rows(db, Patient)
    assert result.output.strip() == str(patient.id)
    assert (patient.phone_e164, patient.name, patient.date_of_birth, patient.language,
            patient.timezone, patient.calls_allowed, patient.consent, patient.opted_out) == (
        "+16175550142", "Ana Ruiz", date(1980, 2, 29), "es", "America/Chicago", True,
        "pending", False)
    (consent,) = rows(db, Outbox)
    assert (consent.kind, consent.to_number, consent.status) == ("consent", "+16175550142",
                                                                  "pending")
    assert "Back Clinic" in consent.body and "SÍ" in consent.body
    audits = rows(db, AuditLog, AuditLog.action == "patient_enrolled")
    assert [(a.actor_type, a.actor_id, a.clinic_id, a.patient_id) for a in audits] == [
        ("system", "cli", clinic.id, patient.id)]
    assert "0142" not in str(audits[0].detail)  # no phone number in the audit trail


def test_enroll_defaults(runner, db, make_clinic):
    clinic = make_clinic()
    result = runner.invoke(main, ["enroll", "--clinic", str(clinic.id), "--phone", "+16175550142"])
    assert result.exit_code == 0, result.output
    (patient,) = rows(db, Patient)
    assert (patient.language, patient.timezone, patient.date_of_birth, patient.calls_allowed) == (
        "en", None, None, False)


@pytest.mark.parametrize("args, message", [
    (["--phone", "+15551234567"], "not a valid phone number"),
    (["--phone", "12"], "not a phone number"),
    (["--phone", "+16175550142", "--dob", "03/01/1980"], "--dob"),
    (["--phone", "+16175550142", "--dob", "2999-01-01"], "between 1900-01-01 and today"),
    (["--phone", "+16175550142", "--timezone", "Mars/Olympus"], "not an IANA timezone"),
    (["--phone", "+16175550142", "--language", "fr"], "--language"),
])
def test_enroll_refuses_bad_input_clearly(runner, db, make_clinic, args, message):
    clinic = make_clinic()
    before = counts(db)
    result = runner.invoke(main, ["enroll", "--clinic", str(clinic.id), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert counts(db) == before


def test_enroll_refuses_an_unknown_clinic_and_a_second_enrollment(runner, db, make_clinic):
    result = runner.invoke(main, ["enroll", "--clinic", "999", "--phone", "+16175550142"])
    assert result.exit_code == 1 and "no clinic with id 999" in result.output

    clinic = make_clinic()
    args = ["enroll", "--clinic", str(clinic.id), "--phone", "+16175550142"]
    assert runner.invoke(main, args).exit_code == 0
    again = runner.invoke(main, args)
    assert again.exit_code == 1 and "already enrolled" in again.output
    assert len(rows(db, Patient)) == 1 and len(rows(db, Outbox)) == 1
