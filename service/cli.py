"""The `triage` command line: database migrations and clinic set-up (and Flask's run/shell)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import FlaskGroup
from sqlalchemy.engine import make_url

from service import create_app
from service.conversations import consent
from service.store import get_db
from service.store.session import normalize_url


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False)
def main() -> None:
    """Back-pain check-ins: configure with DATABASE_URL, TWILIO_*, SECRET_KEY, ..."""


# No app context: the terminal check-in runs the pure flow and needs no database or app.
@main.command("chat", with_appcontext=False)
@click.option("--lang", type=click.Choice(["en", "es"]), default="en", show_default=True)
@click.option("--followup", is_flag=True, help="The 4-6-week follow-up check instead of the intake.")
@click.option("--baseline", type=click.IntRange(0, 10), help="Follow-up: the intake's pain score.")
@click.option("--final", is_flag=True, help="Follow-up: this is the final (day 42) check.")
@click.option("--cancer-history", is_flag=True, help="Follow-up: the intake's cancer answer was yes.")
def chat(lang: str, followup: bool, baseline: int | None, final: bool,
         cancer_history: bool) -> None:
    """Talk to the real check-in flow in this terminal, as a patient would by SMS."""
    from service.conversations.chat import run_chat

    if not followup and (baseline is not None or final or cancer_history):
        raise click.UsageError("--baseline, --final and --cancer-history need --followup")
    level = run_chat(lang=lang, followup=followup, baseline=baseline, final=final,
                     cancer_history=cancer_history, write=click.echo)
    if level is None:
        raise click.exceptions.Exit(1)  # ended before an outcome


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision.")
def db_upgrade(revision: str) -> None:
    """Migrate the database at DATABASE_URL (SQLite or PostgreSQL)."""
    from service.store import migrate

    url = current_app.config["DATABASE_URL"]
    migrate.upgrade(url, revision)
    shown = make_url(normalize_url(url)).render_as_string(hide_password=True)
    click.echo(f"{shown} is at revision {migrate.current_revision(url)}")


@main.group()
def clinic() -> None:
    """Clinics and their Twilio numbers."""


@clinic.command("create")
@click.option("--name", required=True, help="Shown to patients; at most 40 characters.")
@click.option(
    "--number",
    "numbers",
    multiple=True,
    required=True,
    help="A Twilio number of the clinic (repeat for several).",
)
@click.option("--timezone", default="America/New_York", show_default=True)
@click.option("--emergency-number", default="911", show_default=True)
@click.option("--phone", help="Number HELP replies give; default: the first --number.")
@click.option("--oncall", help="Number that gets urgent and emergency alerts by SMS.")
@click.option(
    "--twilio-optout/--no-twilio-optout",
    default=False,
    show_default=True,
    help="Twilio's own STOP handling is on for these numbers.",
)
@click.option("--keywords", default="PAIN,BACK,DOLOR", show_default=True)
@click.option("--followup-first-day", type=click.IntRange(28, 35), default=28, show_default=True)
@click.option("--followup-final-day", type=click.IntRange(42, 49), default=42, show_default=True)
@click.option("--region", default="US", show_default=True, help="For numbers without +country.")
def clinic_create(
    name: str,
    numbers: tuple[str, ...],
    timezone: str,
    emergency_number: str,
    phone: str | None,
    oncall: str | None,
    twilio_optout: bool,
    keywords: str,
    followup_first_day: int,
    followup_final_day: int,
    region: str,
) -> None:
    """Create a clinic; prints its id."""
    from service.accounts.clinics import create_clinic, parse_keywords

    try:
        with get_db().transaction() as session:
            created = create_clinic(
                session,
                name=name,
                numbers=numbers,
                timezone=timezone,
                emergency_number=emergency_number,
                phone=phone,
                oncall_number=oncall,
                twilio_optout_handling=twilio_optout,
                start_keywords=parse_keywords(keywords),
                followup_first_day=followup_first_day,
                followup_final_day=followup_final_day,
                region=region,
                actor_id="cli",
            )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(created.id)


@clinic.command("list")
def clinic_list() -> None:
    """One line per clinic: id, name, timezone, numbers."""
    from service.accounts.clinics import list_clinics

    with get_db().transaction() as session:
        clinics = list_clinics(session)
    for each in clinics:
        numbers = ",".join(number.phone_e164 for number in each.numbers)
        click.echo(f"{each.id}\t{each.name}\t{each.timezone}\t{numbers}")


@main.command("enroll")
@click.option("--clinic", "clinic_id", type=int, required=True, help="The clinic's id.")
@click.option("--phone", required=True, help="The patient's mobile, e.g. +1 617 555 0142.")
@click.option("--name", help="For staff only; never put in a text.")
@click.option("--dob", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Date of birth, YYYY-MM-DD (the age question is then not asked).")
@click.option("--language", type=click.Choice(["en", "es"]), default="en", show_default=True)
@click.option("--timezone", help="IANA name like America/Chicago; default: the clinic's.")
@click.option("--calls-allowed", is_flag=True, help="The patient agreed to voice calls.")
@click.option("--region", default="US", show_default=True, help="For numbers without +country.")
def enroll(clinic_id: int, phone: str, name: str | None, dob, language: str,
           timezone: str | None, calls_allowed: bool, region: str) -> None:
    """Enroll a patient and queue the consent text (no health question before YES); prints
    the patient's id."""
    import zoneinfo
    from datetime import date

    from service import clock
    from service.conversations import checkins
    from service.phones import normalize_phone
    from service.records import audit
    from service.store.models import Clinic

    now = clock.now()
    born = dob.date() if dob else None
    if born is not None and not date(1900, 1, 1) <= born <= now.date():
        raise click.BadParameter("must be between 1900-01-01 and today", param_hint="--dob")
    if timezone is not None and timezone not in zoneinfo.available_timezones():
        raise click.BadParameter(f"{timezone!r} is not an IANA timezone like America/New_York",
                                 param_hint="--timezone")
    try:
        number = normalize_phone(phone, region)
        with get_db().transaction() as session:
            clinic_row = session.get(Clinic, clinic_id)
            if clinic_row is None:
                raise click.ClickException(
                    f"no clinic with id {clinic_id} (see: triage clinic list)")
            patient = consent.enroll_patient(
                session, clinic_row, phone=number, now=now, name=name, date_of_birth=born,
                language=language, timezone=timezone, calls_allowed=calls_allowed)
            audit.record(session, clinic_id=clinic_row.id, patient_id=patient.id,
                         action="patient_enrolled", actor_type="system", actor_id="cli", now=now)
    except (ValueError, checkins.CheckInError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(patient.id)


@main.command("followups")
@click.option("--show", type=click.Choice(["due", "pending", "failed"]), default="due",
              show_default=True, help="Which follow-ups to list under the counts.")
@click.option("--limit", type=click.IntRange(0, 10000), default=50, show_default=True)
def followups_command(show: str, limit: int) -> None:
    """Follow-ups due now, pending (scheduled later), failed (paused, or a text failed)."""
    from service import clock
    from service.followups.schedule import report

    now = clock.now()
    with get_db().transaction() as session:
        out = report(session, now, show=show, limit=limit)
        rows = [(f.id, f.patient_id, f.episode_id, f.kind, f.status, f.due_at, f.attempts)
                for f in out.rows]
    click.echo(f"due {out.due}\tpending {out.pending}\tfailed {out.failed}\t"
               f"oldest_due_seconds {int(out.oldest_due_seconds)}\t"
               f"outbox_due {out.outbox_due}\toutbox_failed {out.outbox_failed}")
    if rows:
        click.echo("id\tpatient\tepisode\tkind\tstatus\tdue_at\tattempts")
    for fid, patient, episode, kind, status, due_at, attempts in rows:
        click.echo(f"{fid}\t{patient}\t{episode}\t{kind}\t{status}\t"
                   f"{due_at.isoformat(timespec='minutes')}\t{attempts}")


@main.group()
def token() -> None:
    """Bearer tokens of the clinic JSON API (/api/v1)."""


@token.command("create")
@click.option("--clinic", "clinic_id", type=int, required=True, help="The clinic's id.")
@click.option("--name", required=True, help="Which system uses it, e.g. 'EHR sync'.")
@click.option("--read-only", is_flag=True, help="May read but not enroll, change or erase.")
def token_create(clinic_id: int, name: str, read_only: bool) -> None:
    """Create a token; it is printed once and only its hash is kept."""
    from datetime import UTC, datetime

    from service.accounts.api_tokens import create_token

    try:
        with get_db().transaction() as session:
            row, secret = create_token(session, clinic_id=clinic_id, name=name,
                                       read_only=read_only, now=datetime.now(UTC))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token {row.id} for clinic {clinic_id} (shown once, keep it secret):", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--clinic", "clinic_id", type=int, help="Only this clinic's tokens.")
def token_list(clinic_id: int | None) -> None:
    """One line per token: id, clinic, name, read-only, created, revoked."""
    from service.accounts.api_tokens import list_tokens

    with get_db().transaction() as session:
        rows = list_tokens(session, clinic_id)
    for row in rows:
        click.echo(f"{row.id}\t{row.clinic_id}\t{row.name}\t"
                   f"{'read-only' if row.read_only else 'read-write'}\t"
                   f"{row.created_at:%Y-%m-%d}\t"
                   f"{'revoked ' + format(row.revoked_at, '%Y-%m-%d') if row.revoked_at else ''}")


@token.command("revoke")
@click.argument("token_id", type=int)
def token_revoke(token_id: int) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    from datetime import UTC, datetime

    from service.accounts.api_tokens import revoke_token

    try:
        with get_db().transaction() as session:
            revoke_token(session, token_id, datetime.now(UTC))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token {token_id} revoked")


@main.group()
def staff() -> None:
    """Dashboard staff accounts."""


@staff.command("create")
@click.option("--clinic", "clinic_id", type=int, required=True, help="The clinic's id.")
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["clinician", "admin"]), default="clinician",
              show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Prompted for when not given (better: it stays out of shell history).")
def staff_create(clinic_id: int, email: str, role: str, password: str) -> None:
    """Create a staff login for the dashboard; prints its id."""
    from service import clock
    from service.accounts.staff import StaffError, create_staff

    try:
        with get_db().transaction() as session:
            created = create_staff(session, clinic_id=clinic_id, email=email, password=password,
                                   role=role, now=clock.now(), actor_id="cli")
    except StaffError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(created.id)


@staff.command("sign-out")
@click.option("--email", required=True, help="The staff member's login email.")
def staff_sign_out(email: str) -> None:
    """End every dashboard session of one staff member (a lost laptop, someone who left)."""
    from service import clock
    from service.accounts.staff import end_all_sessions, staff_by_email

    with get_db().transaction() as session:
        found = staff_by_email(session, email)
        if found is None:
            raise click.ClickException(f"no staff account {email}")
        ended = end_all_sessions(session, found.id, clock.now(), actor_id="cli")
    click.echo(f"{ended} session(s) of {found.email} ended")


@main.group()
def spool() -> None:
    """The inbound spool: texts kept while the database is away."""


@spool.command("remember-opt-outs")
def spool_remember_opt_outs() -> None:
    """Tell the spool every patient who has opted out, so that none gets the holding reply
    while the database is away (once, after upgrading from a version before 2026-12-03)."""
    with get_db().transaction() as session:
        count = consent.remember_all_opted_out(current_app.extensions["spool"], session)
    click.echo(f"{count} opted-out patient(s) known to the spool")


@main.group()
def demo() -> None:
    """A demo clinic for a first try (development only)."""


@demo.command("seed")
def demo_seed() -> None:
    """Create (or find) "Demo Clinic" on +16175550100 and an admin login; prints the login."""
    from service import clock
    from service.accounts.demo import seed_demo

    try:
        with get_db().transaction() as session:
            login = seed_demo(session, now=clock.now(),
                              production=current_app.config["ENV"] == "production")
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Demo clinic {login.clinic_id} ({'created' if login.clinic_created else 'exists'})"
               f" answers texts to {login.number}")
    click.echo(f"Dashboard login: {login.email} / {login.password}  (development only)")
