"""ORM models: the tables of the service, portable between SQLite and PostgreSQL.

Times are timezone-aware UTC datetimes in Python (naive datetimes are refused). JSON columns
are plain `sa.JSON`: in-place changes to a loaded list or dict are not detected, so assign a
new value (`checkin.answers = {**checkin.answers, field: value}`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Closed vocabularies. Statuses and levels are also CHECK constraints; the `kind` lists of
# outbox and alerts are not, so that adding a kind does not need a migration.
LANGUAGES = ("en", "es")
CONSENT_STATES = ("pending", "given")
CHANNELS = ("sms", "voice")
LEVELS = ("emergency", "urgent", "soon", "self_care")  # flows.triage Assessment levels


class EpisodeStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    REFERRED = "referred"


class CheckInStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class OutboxStatus(StrEnum):
    PENDING = "pending"  # queued; not before `not_before`
    SENDING = "sending"  # a sender holds it (lease `claimed_until`)
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # the send may have gone out: looked for before any resend


class FollowUpStatus(StrEnum):
    SCHEDULED = "scheduled"
    CLAIMED = "claimed"  # a dispatcher holds it (lease `claimed_until`)
    STARTED = "started"
    DONE = "done"
    CANCELLED = "cancelled"
    PAUSED = "paused"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# The statuses as the CHECK constraints list them (StrEnum members are their strings).
EPISODE_STATUSES = tuple(EpisodeStatus)
CHECKIN_KINDS = ("intake", "followup")
CHECKIN_STATUSES = tuple(CheckInStatus)
DIRECTIONS = ("in", "out")
# "replied": a TwiML reply to the patient's own text; "spoken": said on a call.
# "not_sent": recorded by the dry-run sender in production (DRY_RUN=1), never delivered;
# "resent": a TwiML reply Twilio never confirmed, queued again by a spooled retry of its text.
MESSAGE_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed", "received", "replied",
                    "spoken", "not_sent", "resent")
# consent: the first text; checkin: a question or advice; reply: the answer to a spooled text;
# optout_confirm: the one confirmation after STOP; oncall: to the clinic's on-call number.
OUTBOX_KINDS = ("consent", "checkin", "reply", "optout_confirm", "oncall")
OUTBOX_STATUSES = tuple(OutboxStatus)
FOLLOWUP_KINDS = ("first", "final")
FOLLOWUP_STATUSES = tuple(FollowUpStatus)
ALERT_KINDS = (
    "triage",
    "incomplete",
    "followup",
    "patient_message",
    "callback_requested",
    "unreachable",
    "delivery_failure",
    "invalid_number",
    "send_failed",
)
ALERT_LEVELS = ("emergency", "urgent", "soon", "info")
ALERT_STATUSES = tuple(AlertStatus)
ACTOR_TYPES = ("staff", "api", "system")
STAFF_ROLES = ("clinician", "admin")

DEFAULT_START_KEYWORDS = ("PAIN", "BACK", "DOLOR")


MAX_ID = 2_147_483_647  # ids are 32-bit integers on PostgreSQL (and kept so on SQLite)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    PostgreSQL keeps the offset (timestamptz); SQLite keeps text without one, which is why
    values are converted to UTC on the way in and labelled UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: use a timezone-aware value (utcnow())")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), date: sa.Date()}


def _one_of(column: str, values: Iterable[str]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=column)


def _where(condition: str) -> dict[str, Any]:
    """Keyword arguments for a partial index, on both backends."""
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


class Clinic(Base):
    __tablename__ = "clinics"
    __table_args__ = (
        sa.CheckConstraint("length(name) BETWEEN 1 AND 40", name="name_length"),
        sa.CheckConstraint("followup_first_day BETWEEN 28 AND 35", name="followup_first_day"),
        sa.CheckConstraint("followup_final_day BETWEEN 42 AND 49", name="followup_final_day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))
    timezone: Mapped[str] = mapped_column(sa.String(64), default="America/New_York")
    emergency_number: Mapped[str] = mapped_column(sa.String(20), default="911")
    phone: Mapped[str] = mapped_column(sa.String(20))
    oncall_number: Mapped[str | None] = mapped_column(sa.String(20))
    followup_first_day: Mapped[int] = mapped_column(default=28)
    followup_final_day: Mapped[int] = mapped_column(default=42)
    start_keywords: Mapped[list[str]] = mapped_column(
        sa.JSON, default=lambda: list(DEFAULT_START_KEYWORDS)
    )
    twilio_optout_handling: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    numbers: Mapped[list[ClinicNumber]] = relationship(
        back_populates="clinic", cascade="all, delete-orphan", order_by="ClinicNumber.id"
    )

    def __repr__(self) -> str:
        return f"<Clinic {self.id} {self.name!r}>"


class ClinicNumber(Base):
    """A Twilio number owned by a clinic: inbound to it identifies the clinic."""

    __tablename__ = "clinic_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(
        sa.ForeignKey("clinics.id", ondelete="CASCADE"), index=True
    )
    phone_e164: Mapped[str] = mapped_column(sa.String(20), unique=True)

    clinic: Mapped[Clinic] = relationship(back_populates="numbers")


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        sa.UniqueConstraint("clinic_id", "phone_e164", name="uq_patients_clinic_id_phone_e164"),
        _one_of("consent", CONSENT_STATES),
        sa.Index("ix_patients_phone_e164", "phone_e164"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    phone_e164: Mapped[str] = mapped_column(sa.String(20))
    name: Mapped[str | None] = mapped_column(sa.String(100))
    date_of_birth: Mapped[date | None]
    language: Mapped[str] = mapped_column(sa.String(8), default="en")
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    calls_allowed: Mapped[bool] = mapped_column(default=False)
    consent: Mapped[str] = mapped_column(sa.String(16), default="pending")
    consented_at: Mapped[datetime | None]
    opted_out: Mapped[bool] = mapped_column(default=False)
    opted_out_at: Mapped[datetime | None]
    number_invalid: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    erased_at: Mapped[datetime | None]

    clinic: Mapped[Clinic] = relationship()
    episodes: Mapped[list[Episode]] = relationship(
        back_populates="patient", order_by="Episode.opened_at"
    )

    def __repr__(self) -> str:
        return f"<Patient {self.id} clinic={self.clinic_id}>"


class Episode(Base):
    """One back-pain problem of one patient, from its intake to its closure."""

    __tablename__ = "episodes"
    __table_args__ = (
        _one_of("status", EPISODE_STATUSES),
        _one_of("intake_level", LEVELS),
        _one_of("last_level", LEVELS),
        sa.CheckConstraint("baseline_pain_score BETWEEN 0 AND 10", name="baseline_pain_score"),
        sa.Index("ix_episodes_patient_id", "patient_id"),
        # A patient has at most one open episode (a new intake closes the previous one).
        sa.Index(
            "uq_episodes_open_patient_id", "patient_id", unique=True, **_where("status = 'open'")
        ),
        sa.Index("ix_episodes_clinic_id_status", "clinic_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(sa.String(64))
    baseline_pain_score: Mapped[int | None]
    intake_level: Mapped[str | None] = mapped_column(sa.String(16))
    last_level: Mapped[str | None] = mapped_column(sa.String(16))

    patient: Mapped[Patient] = relationship(back_populates="episodes")
    checkins: Mapped[list[CheckIn]] = relationship(
        back_populates="episode", order_by="CheckIn.started_at"
    )
    followups: Mapped[list[FollowUp]] = relationship(
        back_populates="episode", order_by="FollowUp.due_at"
    )


class CheckIn(Base):
    """One conversation (an intake or a follow-up), its engine state, answers and outcome."""

    __tablename__ = "checkins"
    __table_args__ = (
        _one_of("kind", CHECKIN_KINDS),
        _one_of("channel", CHANNELS),
        _one_of("status", CHECKIN_STATUSES),
        _one_of("level", LEVELS),
        sa.Index("ix_checkins_patient_id", "patient_id"),
        sa.Index("ix_checkins_episode_id", "episode_id"),
        # A patient has at most one active conversation; this is also its lookup index.
        sa.Index(
            "uq_checkins_active_patient_id",
            "patient_id",
            unique=True,
            **_where("status = 'active'"),
        ),
        sa.Index("ix_checkins_next_event_at", "next_event_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    episode_id: Mapped[int | None] = mapped_column(sa.ForeignKey("episodes.id"))
    followup_id: Mapped[int | None] = mapped_column(sa.ForeignKey("followups.id"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    channel: Mapped[str] = mapped_column(sa.String(8), default="sms")
    flow_id: Mapped[str] = mapped_column(sa.String(64))
    flow_version: Mapped[int]
    language: Mapped[str] = mapped_column(sa.String(8), default="en")
    state: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    answers: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    level: Mapped[str | None] = mapped_column(sa.String(16))
    reasons: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    missing: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    final_check: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    next_event_at: Mapped[datetime | None]

    patient: Mapped[Patient] = relationship()
    episode: Mapped[Episode | None] = relationship(back_populates="checkins")
    followup: Mapped[FollowUp | None] = relationship(foreign_keys=[followup_id])


class Message(Base):
    """Every SMS or voice utterance in or out, for the record and for delivery status."""

    __tablename__ = "messages"
    __table_args__ = (
        _one_of("direction", DIRECTIONS),
        _one_of("channel", CHANNELS),
        sa.Index("ix_messages_patient_id_created_at", "patient_id", "created_at"),
        sa.Index("ix_messages_checkin_id", "checkin_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"))
    checkin_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkins.id"))
    direction: Mapped[str] = mapped_column(sa.String(3))
    channel: Mapped[str] = mapped_column(sa.String(8), default="sms")
    from_number: Mapped[str] = mapped_column(sa.String(20))
    to_number: Mapped[str] = mapped_column(sa.String(20))
    body: Mapped[str] = mapped_column(sa.Text)
    twilio_sid: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    # Not constrained: Twilio also reports accepted, sending, read, canceled, ...
    status: Mapped[str | None] = mapped_column(sa.String(24))
    error_code: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    patient: Mapped[Patient | None] = relationship()
    checkin: Mapped[CheckIn | None] = relationship()


class WebhookReceipt(Base):
    """The reply given to a webhook, by Twilio SID: a duplicate delivery gets the same reply."""

    __tablename__ = "webhook_receipts"

    sid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    response_body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


CALL_DIRECTIONS = ("inbound", "outbound")
CALL_PURPOSES = ("checkin", "reminder")
# Where the phone conversation is: which prompt the caller's next key press or words answer.
CALL_STAGES = ("pending", "language", "question", "confirm", "offer", "advice", "ended")


class Call(Base):
    """One phone call (voice check-in or reminder call): found by Twilio's CallSid, it holds
    where the IVR is; the conversation itself is the check-in it points to. A reminder call
    attempt that is yet to be placed is a row with status 'pending' and `not_before`."""

    __tablename__ = "calls"
    __table_args__ = (
        _one_of("direction", CALL_DIRECTIONS),
        _one_of("purpose", CALL_PURPOSES),
        _one_of("stage", CALL_STAGES),
        sa.Index("ix_calls_patient_id", "patient_id"),
        sa.Index("ix_calls_checkin_id", "checkin_id"),
        sa.Index("ix_calls_not_before_pending", "not_before", **_where("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"))
    checkin_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkins.id"))
    followup_id: Mapped[int | None] = mapped_column(sa.ForeignKey("followups.id"))
    call_sid: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    direction: Mapped[str] = mapped_column(sa.String(8))
    purpose: Mapped[str] = mapped_column(sa.String(16), default="checkin")
    from_number: Mapped[str] = mapped_column(sa.String(20))
    to_number: Mapped[str] = mapped_column(sa.String(20))
    # Not constrained: Twilio's call statuses plus our pending / placing / unknown / cancelled.
    status: Mapped[str] = mapped_column(sa.String(24))
    answered_by: Mapped[str | None] = mapped_column(sa.String(32))
    attempt: Mapped[int] = mapped_column(default=1)  # 1..3 for reminder calls
    not_before: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    stage: Mapped[str] = mapped_column(sa.String(16), default="language")
    language: Mapped[str] = mapped_column(sa.String(8), default="en")
    turn: Mapped[int] = mapped_column(default=0)  # numbers the prompts; stale answers are seen
    silences: Mapped[int] = mapped_column(default=0)  # prompts in a row with no input at all
    node: Mapped[str | None] = mapped_column(sa.String(64))  # the question being asked
    pending: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)  # awaiting "1 if right"
    last_reply: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    duration_s: Mapped[int | None]
    error_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    ended_at: Mapped[datetime | None]

    patient: Mapped[Patient | None] = relationship()
    checkin: Mapped[CheckIn | None] = relationship()
    followup: Mapped[FollowUp | None] = relationship()


class Outbox(Base):
    """A message to send, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        _one_of("status", OUTBOX_STATUSES),
        sa.Index("ix_outbox_status_not_before", "status", "not_before"),
        sa.Index("ix_outbox_patient_id", "patient_id"),
        sa.Index("ix_outbox_twilio_sid", "twilio_sid"),
        # One recipient's texts in queue order: the in-order check of every send and the
        # "texts to these patients" read after a batch of follow-ups start. Not partial: a
        # query must not have to name the statuses for PostgreSQL to prefer it over the
        # status index, which it does when the table grew faster than its statistics.
        sa.Index("ix_outbox_to_number_id", "to_number", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"))
    checkin_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkins.id"))
    alert_id: Mapped[int | None] = mapped_column(sa.ForeignKey("alerts.id"))
    kind: Mapped[str] = mapped_column(sa.String(24))
    to_number: Mapped[str] = mapped_column(sa.String(20))
    from_number: Mapped[str | None] = mapped_column(sa.String(20))
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    # The time zone whose quiet hours this text keeps (CLINICAL.md §7: a scheduled message goes
    # out only 08:00-21:00 there), checked when it is queued and again when it is sent; None:
    # it goes at any hour (a reply to the patient's own text, an on-call text to staff).
    quiet_tz: Mapped[str | None] = mapped_column(sa.String(64))
    twilio_sid: Mapped[str | None] = mapped_column(sa.String(64))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    patient: Mapped[Patient | None] = relationship()
    checkin: Mapped[CheckIn | None] = relationship()
    alert: Mapped[Alert | None] = relationship()


class FollowUp(Base):
    """A scheduled 4-6-week check: a row, not a Celery ETA (see DESIGN.md)."""

    __tablename__ = "followups"
    __table_args__ = (
        _one_of("kind", FOLLOWUP_KINDS),
        _one_of("status", FOLLOWUP_STATUSES),
        sa.Index("ix_followups_due_at_scheduled", "due_at", **_where("status = 'scheduled'")),
        sa.Index(
            "ix_followups_claimed_until_claimed", "claimed_until", **_where("status = 'claimed'")
        ),
        sa.Index("ix_followups_episode_id", "episode_id"),
        sa.Index("ix_followups_patient_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    episode_id: Mapped[int] = mapped_column(sa.ForeignKey("episodes.id"))
    kind: Mapped[str] = mapped_column(sa.String(8))
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(16), default="scheduled")
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_until: Mapped[datetime | None]
    # checkins.followup_id points back here: this side is added after both tables exist.
    checkin_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkins.id", use_alter=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Why it was cancelled ("opted_out", "new intake", "resolved", ...): START after an opt-out
    # restores the ones the opt-out cancelled, and only those.
    cancelled_reason: Mapped[str | None] = mapped_column(sa.String(40))

    patient: Mapped[Patient] = relationship()
    episode: Mapped[Episode] = relationship(back_populates="followups")
    checkin: Mapped[CheckIn | None] = relationship(foreign_keys=[checkin_id], post_update=True)


class Alert(Base):
    """Something clinic staff must see, with why (rule ids) and what was not answered."""

    __tablename__ = "alerts"
    __table_args__ = (
        _one_of("level", ALERT_LEVELS),
        _one_of("status", ALERT_STATUSES),
        sa.Index("ix_alerts_clinic_id_status_created_at", "clinic_id", "status", "created_at"),
        sa.Index("ix_alerts_patient_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    episode_id: Mapped[int | None] = mapped_column(sa.ForeignKey("episodes.id"))
    checkin_id: Mapped[int | None] = mapped_column(sa.ForeignKey("checkins.id"))
    kind: Mapped[str] = mapped_column(sa.String(24))
    level: Mapped[str] = mapped_column(sa.String(16))
    reasons: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    missing: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    summary: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(sa.String(255))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(sa.String(255))
    resolution_note: Mapped[str | None] = mapped_column(sa.Text)
    oncall_sent_count: Mapped[int] = mapped_column(default=0)
    oncall_last_at: Mapped[datetime | None]

    patient: Mapped[Patient] = relationship()
    episode: Mapped[Episode | None] = relationship()
    checkin: Mapped[CheckIn | None] = relationship()


class AuditLog(Base):
    """Who did what to which patient's data, and when."""

    __tablename__ = "audit_log"
    __table_args__ = (
        _one_of("actor_type", ACTOR_TYPES),
        sa.Index("ix_audit_log_clinic_id_at", "clinic_id", "at"),
        sa.Index("ix_audit_log_patient_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_type: Mapped[str] = mapped_column(sa.String(16))
    actor_id: Mapped[str | None] = mapped_column(sa.String(255))
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"))
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"))
    action: Mapped[str] = mapped_column(sa.String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


class Staff(Base):
    __tablename__ = "staff"
    __table_args__ = (_one_of("role", STAFF_ROLES),)

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"), index=True)
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16), default="clinician")
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    clinic: Mapped[Clinic] = relationship()


class ApiToken(Base):
    """A clinic's bearer token for the JSON API; only its hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(sa.ForeignKey("clinics.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    token_hash: Mapped[str] = mapped_column(sa.String(128), unique=True)
    # A read-only token may read but not enroll, change or erase (403).
    read_only: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    clinic: Mapped[Clinic] = relationship()


class LoginAttempt(Base):
    """A dashboard login attempt: failed ones from one address count towards its limit."""

    __tablename__ = "login_attempts"
    __table_args__ = (sa.Index("ix_login_attempts_ip_at", "ip", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str] = mapped_column(sa.String(64))
    email: Mapped[str | None] = mapped_column(sa.String(255))
    succeeded: Mapped[bool] = mapped_column(default=False)


class StaffSession(Base):
    """One dashboard sign-in, held on the server so that it can be ended everywhere: the
    browser's cookie carries only a random token whose hash is stored here. Logout ends this
    row; a password change or "sign out everywhere" ends all rows of the staff member; a row
    not seen for STAFF_IDLE_MINUTES is over."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(sa.ForeignKey("staff.id", ondelete="CASCADE"),
                                          index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
