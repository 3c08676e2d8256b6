"""Inbound SMS: one text from a patient (or a stranger), read and answered in the caller's
transaction, with the replies recorded; and the replay of texts spooled while the database
was away."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from flows import engine, keywords, menus, parsing, reading, routing
from flows.loader import get_flow, messages
from service.conversations import checkins, consent
from service.conversations.checkins import text_for
from service.logs import mask_phone
from service.messaging import outbox
from service.messaging.delivery import reply_key
from service.phones import normalize_phone
from service.records.alerts import raise_alert
from service.store.models import CheckIn, Clinic, ClinicNumber, Message, Patient, WebhookReceipt
from service.store.queries import active_checkin, open_episode, send_soon

log = logging.getLogger(__name__)


@dataclass
class InboundResult:
    replies: list[str] = field(default_factory=list)
    duplicate: bool = False
    reason: str = ""  # why there is no reply, for logs: unknown_clinic, opted_out, ...
    # The sender and the conversation as the use case left them, so that recording the replies
    # does not read them again; None when the use case did not have them at hand.
    patient: Patient | None = field(default=None, compare=False, repr=False)
    checkin: CheckIn | None = field(default=None, compare=False, repr=False)
    send_soon: bool = False  # it queued texts or raised an alert: the sender has work now


def clinic_for_number(session: Session, to_number: str) -> Clinic | None:
    try:
        phone = normalize_phone(to_number)
    except ValueError:
        return None
    # The numbers come in the same statement: every inbound text records the clinic's number.
    row = session.execute(
        sa.select(Clinic).join(ClinicNumber).where(ClinicNumber.phone_e164 == phone)
        .options(joinedload(Clinic.numbers))
    ).unique().scalar_one_or_none()
    return row


def lock_patient(session: Session, clinic_id: int, phone: str) -> Patient | None:
    """The patient row, locked until commit on PostgreSQL so one patient's messages queue up."""
    return session.execute(
        sa.select(Patient)
        .where(Patient.clinic_id == clinic_id, Patient.phone_e164 == phone,
               Patient.erased_at.is_(None))
        .with_for_update()
    ).scalar_one_or_none()


_SENDER = (
    sa.select(Patient, Clinic,
              sa.select(WebhookReceipt.response_body)
              .where(WebhookReceipt.sid == sa.bindparam("sid")).scalar_subquery())
    .join(Clinic, Clinic.id == Patient.clinic_id)
    .join(ClinicNumber, ClinicNumber.clinic_id == Clinic.id)
    .where(ClinicNumber.phone_e164 == sa.bindparam("clinic_phone"),
           Patient.phone_e164 == sa.bindparam("phone"), Patient.erased_at.is_(None))
    .with_for_update(of=Patient)
)


_INSERT_MESSAGES = sa.insert(Message.__table__)


_INSERT_RECEIPT = sa.insert(WebhookReceipt.__table__)

# The columns every inbound text's message rows give (_message_row, _stranger_row).
_MESSAGE_COLUMNS = {"clinic_id", "patient_id", "checkin_id", "channel", "created_at",
                    "updated_at", "direction", "body", "from_number", "to_number", "twilio_sid",
                    "status"}
_RECEIPT_COLUMNS = ("sid", "kind", "response_body", "created_at")


@lru_cache(maxsize=64)
def _text_statement(rows: int, with_receipt: bool,
                    checkin_columns: tuple[str, ...] = ()) -> sa.Insert:
    """INSERT of `rows` messages (parameters `<column>_<i>`), with the receipt's INSERT
    (`receipt_<column>`) and the check-in's UPDATE of `checkin_columns` (`checkin_<column>`,
    `checkin_id`) as CTEs, built once per shape. The rows come as a UNION ALL of one-row
    SELECTs rather than a multi-row VALUES: SQLAlchemy does not cache the compiled form of a
    multi-row VALUES, and compiling it again for every text cost the webhook 1.5 ms. PostgreSQL
    runs a UNION ALL's branches in order, so the rows get their ids in order (the text's before
    its replies'), as with VALUES."""
    messages, receipts, checkins_ = (Message.__table__, WebhookReceipt.__table__,
                                     CheckIn.__table__)
    columns = sorted(_MESSAGE_COLUMNS)
    # Each parameter with its column's type, so that PostgreSQL is told each value's type.
    selects = [sa.select(*(sa.bindparam(f"{column}_{i}", type_=messages.c[column].type)
                           for column in columns)) for i in range(rows)]
    statement = sa.insert(messages).from_select(
        columns, selects[0] if rows == 1 else sa.union_all(*selects), include_defaults=False)
    if with_receipt:
        statement = statement.add_cte(sa.insert(receipts).values(
            {column: sa.bindparam(f"receipt_{column}", type_=receipts.c[column].type)
             for column in _RECEIPT_COLUMNS}).cte("receipt"))
    if checkin_columns:
        statement = statement.add_cte(
            sa.update(checkins_).where(checkins_.c.id == sa.bindparam("checkin_id"))
            .values({column: sa.bindparam(f"checkin_{column}", type_=checkins_.c[column].type)
                     for column in checkin_columns}).cte("checkin"))
    return statement


def _lock_sender(session: Session, clinic_phone: str, phone: str,
                 sid: str) -> tuple[Patient, Clinic, str | None] | None:
    """(patient, clinic, reply already given to `sid`) in one statement, the patient row locked
    until commit on PostgreSQL; None when the number is no patient of the clinic texted.

    The receipt is read with the statement's snapshot, taken before any wait on the lock: a
    duplicate delivery racing the first one can miss it. It then fails on a unique key when it
    writes the text (`messages.twilio_sid`, else the receipt's key) and its transaction is
    rolled back; `Database.run` runs it again, and the new statement sees the receipt.
    """
    row = session.execute(_SENDER, {"sid": sid, "clinic_phone": clinic_phone,
                                    "phone": phone}).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


def handle_inbound_sms(session: Session, *, to: str, from_: str, body: str | None, sid: str,
                       now: datetime, opt_out_type: str | None = None,
                       replies_via_outbox: bool = False) -> InboundResult:
    """One inbound text: the whole use case, in the caller's transaction.

    The replies are returned for the webhook's TwiML and recorded as messages. With
    `replies_via_outbox` (a spooled text replayed after its webhook answered) they are queued in
    the outbox instead, to go out at once; the send records them, so each exists once.

    A duplicate delivery racing the first one raises IntegrityError: call it through
    `Database.run`, which runs it again in a new transaction.
    """
    clinic_phone, phone = _phone_or_none(to), _phone_or_none(from_)
    found = _lock_sender(session, clinic_phone, phone, sid) if clinic_phone and phone else None
    if found is not None:
        patient, clinic, answered = found
    else:
        # Not a patient of the clinic texted (or no such clinic): the slower, rarer path.
        clinic = clinic_for_number(session, to)
        if clinic is None:
            log.warning("inbound sms to a number no clinic owns (sid=%s)", sid)
            return InboundResult(reason="unknown_clinic")
        if phone is None:
            log.warning("inbound sms from a malformed number (sid=%s)", sid)
            return InboundResult(reason="bad_from")
        patient = lock_patient(session, clinic.id, phone)
        receipt = session.get(WebhookReceipt, sid) if sid else None
        answered = receipt.response_body if receipt is not None else None
    if sid and answered is not None:
        replies = json.loads(answered)
        if replies_via_outbox and patient is not None:
            # A spooled retry of a text handled before (Twilio retried: the first answer may
            # never have reached it): the replies no status callback has confirmed go again.
            _resend_unconfirmed(session, clinic, patient, sid, replies, now)
        return InboundResult(replies, duplicate=True)
    text = (body or "").replace("\x00", "").strip()  # PostgreSQL text cannot hold NUL
    # clinic_phone is set: the clinic was found by it.
    sms = _Text(clinic_phone, phone, text, sid, now, opt_out_type)
    result = _inbound(session, clinic, patient, sms)
    _deliver_replies(session, clinic, sms, result, via_outbox=replies_via_outbox)
    receipt = {"sid": sid, "kind": "sms", "created_at": now,
               "response_body": json.dumps(result.replies)} if sid else None
    _write_text(session, sms.messages, receipt, result.checkin)
    result.send_soon = send_soon(session)
    return result


def _write_text(session: Session, rows: list[dict], receipt: dict | None,
                checkin: CheckIn | None = None) -> None:
    """The text's message rows and its receipt: the one place an inbound text is written.

    Written as plain rows (nothing reads them back in this unit of work): the ORM's unit of
    work would fetch each message's id and cost the webhook a third of its CPU. On PostgreSQL
    in one statement, the receipt's INSERT a CTE of the messages' INSERT (one round trip
    instead of two, or three with the executemany's pipeline), and so is the UPDATE the
    answer made to the check-in (_checkin_changes): the commit then has nothing to flush. The
    text's SID is unique in both tables: this is what stops a racing duplicate (see
    _lock_sender), so every delivery with a SID must write one of them; either unique key
    fails the whole statement.
    """
    if rows and session.get_bind().dialect.name == "postgresql" \
            and all(row.keys() == _MESSAGE_COLUMNS for row in rows):
        params = {f"{column}_{i}": value for i, row in enumerate(rows)
                  for column, value in row.items()}
        if receipt is not None:
            params.update((f"receipt_{column}", value) for column, value in receipt.items())
        changes = _checkin_changes(session, checkin)
        if changes:
            params["checkin_id"] = checkin.id
            params.update((f"checkin_{column}", value) for column, value in changes.items())
        session.execute(_text_statement(len(rows), receipt is not None, tuple(changes)), params)
        if changes:
            # Written: the check-in leaves the unit of work as it is (its attributes stay
            # readable), so that the commit's flush does not look it over again for nothing.
            for key, value in changes.items():
                set_committed_value(checkin, key, value)
            session.expunge(checkin)
        return
    if rows:
        session.execute(_INSERT_MESSAGES, rows)
    if receipt is not None:
        session.execute(_INSERT_RECEIPT, receipt)


def _checkin_changes(session: Session, checkin: CheckIn | None) -> dict[str, object]:
    """The columns the commit's flush would write to the text's check-in (its engine state,
    answers, next event), for _write_text to write them in its statement instead; {} when
    there are none, or when the flush must do it: rows are pending (an UPDATE written ahead of
    them could name one before it exists), or a change the ORM computes at flush (a
    relationship set, a column default on update) is involved."""
    if checkin is None or session.new or session.deleted:
        return {}
    state = sa.inspect(checkin)
    if not state.persistent or not state.modified \
            or any(column.onupdate is not None for column in state.mapper.local_table.c):
        return {}
    changes: dict[str, object] = {}
    for attr in state.mapper.column_attrs:
        history = state.attrs[attr.key].history
        if not history.added:
            continue
        column = attr.columns[0]
        if column.primary_key or column.key != attr.key:
            return {}  # the flush knows how to write these
        changes[column.key] = history.added[0]  # (an attribute set to what it was has none)
    if any(state.attrs[rel.key].history.has_changes() for rel in state.mapper.relationships):
        return {}
    return changes


def _phone_or_none(text: str) -> str | None:
    try:
        return normalize_phone(text)
    except ValueError:
        return None


@dataclass(slots=True)
class _Text:
    """One inbound text (the clinic number it was sent to and the sender's, both E.164), and
    the message rows it leaves: the text itself and the replies, written in one statement."""

    clinic_phone: str
    phone: str
    text: str
    sid: str
    now: datetime
    opt_out_type: str | None
    messages: list[dict] = field(default_factory=list)


def _inbound(session, clinic, patient, sms: _Text) -> InboundResult:
    word = keywords.classify(sms.text)
    # Twilio's own opt-out handling says what it did with this text (its keywords may go beyond
    # ours, e.g. YES as an opt-in word): the patient's choice is recorded here too.
    word = {"STOP": "stop", "START": "start"}.get((sms.opt_out_type or "").upper(), word)
    if patient is None:
        patient = _unknown_number(session, clinic, sms, word)
        if isinstance(patient, InboundResult):
            return patient
        _record_in(patient, sms, None)
        return InboundResult(checkins.start(session, clinic, patient, "intake", sms.now, reply=True),
                             patient=patient)
    if patient.number_invalid:
        # Twilio refused texts to this number once; the patient just texted from it, so it
        # takes texts: their follow-ups and queued texts are no longer held back.
        patient.number_invalid = False
        log.info("patient %s texted in: the number refused before takes texts", patient.id)
    checkin = active_checkin(session, patient.id)
    _record_in(patient, sms, checkin)
    result = _from_patient(session, clinic, patient, checkin, sms.text, word, sms.now,
                           sms.opt_out_type)
    result.patient, result.checkin = patient, checkin
    return result


def _from_patient(session, clinic, patient, checkin, text, word, now, opt_out_type):
    """One text from an enrolled patient: read once (flows.reading), routed (flows.routing),
    carried out here."""
    lang = patient.language
    node = None
    if checkin is not None and checkin.channel == "sms":
        node = engine.current_question(get_flow(checkin.flow_id, checkin.flow_version),
                                       checkin.state)
    said = reading.read(text, lang=lang, question_kind=node.parse if node else None,
                        clinic_start_keywords=clinic.start_keywords)
    if (word == "stop" or (word == "start" and patient.opted_out)) and said.kind != word:
        # Twilio's own opt-out handling says what it did with this text (its keywords may go
        # beyond ours, e.g. YES as an opt-in word): the patient's choice is recorded here too.
        # Its START for a patient who never opted out changes nothing: their "yes" is read as
        # what it says (an answer, an acknowledgement), not as a new check-in.
        said = replace(said, kind=reading.OPT_OUT if word == "stop" else reading.START)
    route = routing.route(said, opted_out=patient.opted_out,
                          consented=patient.consent == "given",
                          in_conversation=checkin is not None)
    if checkin is None and route.answers and route.action not in (
            routing.OPT_OUT, routing.OPT_IN, routing.HELP, routing.CONSENT) \
            and said.kind not in _ASKED_TO_START:
        held = _held_back(session, clinic, patient, text, now)
        if held:
            # Outside a question an auto-responder would get answers forever: the text is
            # stored (and shown) and not answered; one that asks for a call or reports
            # symptoms still reaches staff, unless it is the same text again.
            log.info("inbound text from patient %s not answered: %s", patient.id, held)
            if held == "reply_limit" and (said.callback or said.symptoms):
                raise_alert(session, clinic, patient, now=now, summary=text[:1600],
                            kind=routing.CALLBACK_REQUESTED if said.callback
                            else routing.PATIENT_MESSAGE, level="soon",
                            episode=open_episode(session, patient.id))
            return InboundResult(reason=held)
    if (checkin is not None and route.action == routing.STEP and said.kind == reading.UNCLEAR
            and _seen_within(session, patient, text, now, REPEAT_WINDOW, outside_only=True)):
        # The same text again as one that came outside a question within the hour (an
        # auto-responder, whose first text started this check): not answered again, nothing
        # recorded. Within a conversation an unclear reply is always asked again (CLINICAL.md
        # §6); its three strikes per question bound a loop there.
        log.info("inbound text from patient %s not answered: repeated_text", patient.id)
        return InboundResult(reason="repeated_text")
    if route.alert is not None:
        raise_alert(session, clinic, patient, kind=route.alert, level=route.alert_level, now=now,
                    episode=open_episode(session, patient.id), checkin=checkin,
                    summary=text[:1600])
    replies = [text_for(key, clinic, lang) for key in route.reply_keys]
    action = route.action
    if action == routing.OPT_OUT:
        return InboundResult(consent.opt_out(session, clinic, patient, text, now, opt_out_type))
    if action == routing.OPT_IN:
        return InboundResult(consent.opt_in(session, clinic, patient, text, now, opt_out_type),
                             reason="" if not consent.twilio_answered(
                                 clinic, text, opt_out_type, "START") else "twilio_confirms_start")
    if action == routing.HELP:
        return InboundResult([text_for("help", clinic, lang)])
    if action == routing.CONSENT:
        patient.consent, patient.consented_at = "given", now
        return InboundResult(checkins.start(session, clinic, patient, "intake", now, reply=True))
    if action == routing.CONSENT_WAIT:
        return InboundResult(replies + [text_for("consent.waiting", clinic, lang)])
    if action == routing.REPEAT or (action == routing.STEP and checkin.channel != "sms"):
        if checkin.channel != "sms":
            # Begun on a call: the patient has not seen this question in writing, so this text
            # is not taken as its answer; the check-in goes on by text from this question.
            checkins.switch_channel(checkin, "sms")
        return InboundResult(replies + checkins.repeat_question(checkin))
    if action == routing.STEP:
        return InboundResult(replies + checkins.step(session, clinic, patient, checkin,
                                                     engine.Reply(text), now, reply=True))
    if action == routing.START:
        if said.kind in _ASKED_TO_START:
            kind = "intake"
        else:  # out of the blue: an early check of the open episode, else an intake
            kind = "followup" if open_episode(session, patient.id) is not None else "intake"
        return InboundResult(replies + checkins.start(session, clinic, patient, kind, now,
                                                      reply=True))
    if action == routing.LANGUAGE:
        patient.language = said.kind[-2:]
    return InboundResult(replies, reason=route.reason or ("" if replies else "no_reply"))


# A patient asking to start (PAIN, START, RESTART) is always answered: no auto-responder says so.
_ASKED_TO_START = (reading.START, reading.START_KEYWORD, reading.RESTART)
# Readings that get an answer outside a question (a call confirmation, an early check, the
# stop hint): what the reply limit counts; acknowledgements and start words it does not.
_ANSWERED_OUTSIDE = (reading.CALLBACK, reading.UNCLEAR, reading.OTHER_SENSE)
# Loops and repeats (CLINICAL.md §6), outside a question.
REPEAT_WINDOW = timedelta(hours=1)  # the same text again within this is answered once
REPLY_WINDOW = timedelta(minutes=10)
MAX_REPLIES = 3  # at most this many answered texts per REPLY_WINDOW outside a question


def _held_back(session, clinic: Clinic, patient: Patient, text: str, now: datetime) -> str:
    """Why this text outside a question gets no answer ("" when it gets one): the same text
    outside a question within the hour, or MAX_REPLIES texts outside a question answered in the
    last ten minutes."""
    if _seen_within(session, patient, text, now, REPEAT_WINDOW, outside_only=True):
        return "repeated_text"
    earlier = _earlier_texts(session, patient, now - REPLY_WINDOW, outside_only=True)
    recent = [body for body, _ in earlier
              if reading.read(body, lang=patient.language,
                              clinic_start_keywords=clinic.start_keywords).kind
              in _ANSWERED_OUTSIDE]
    return "reply_limit" if len(recent) >= MAX_REPLIES else ""


def _earlier_texts(session, patient: Patient, since: datetime, *, outside_only: bool):
    query = sa.select(Message.body, Message.created_at).where(
        Message.patient_id == patient.id, Message.direction == "in", Message.channel == "sms",
        Message.created_at >= since)
    if outside_only:
        query = query.where(Message.checkin_id.is_(None))
    return session.execute(query).all()


def _seen_within(session, patient: Patient, text: str, now: datetime, window: timedelta, *,
                 outside_only: bool) -> bool:
    """Did the patient send this same text (case, accents and punctuation aside) already?"""
    same = parsing.normalize(text)
    return any(parsing.normalize(body) == same
               for body, _ in _earlier_texts(session, patient, now - window,
                                             outside_only=outside_only))


def _unknown_number(session, clinic, sms: _Text, word):
    phone, text, now, opt_out_type = sms.phone, sms.text, sms.now, sms.opt_out_type
    lang = menus.first_text_language(text)
    if keywords.is_start_keyword(text, clinic.start_keywords):
        patient = Patient(clinic_id=clinic.id, phone_e164=phone, language=lang, consent="given",
                          consented_at=now, created_at=now)
        session.add(patient)
        session.flush()
        log.info("new patient %s by start keyword (clinic %s)", mask_phone(phone), clinic.id)
        return patient
    if word == "stop":
        # Remember the refusal so nothing is ever sent to this number.
        patient = Patient(clinic_id=clinic.id, phone_e164=phone, language=lang, consent="pending",
                          opted_out=True, opted_out_at=now, created_at=now)
        session.add(patient)
        session.flush()
        _record_in(patient, sms, None, sid="")
        if consent.twilio_answered(clinic, text, opt_out_type, "STOP"):
            return InboundResult(reason="twilio_confirms_stop")
        return InboundResult([text_for("optout.confirm", clinic, lang)])
    # A number no patient of this clinic has: its text is kept (with no patient), and it gets
    # HELP's answer, or the line's introduction at most once a day (CLINICAL.md §6).
    sms.messages.append(_stranger_row(clinic, sms, direction="in", body=text,
                                      from_number=phone, to_number=sms.clinic_phone,
                                      twilio_sid=sms.sid or None, status="received"))
    if word == "help":
        return InboundResult([text_for("help", clinic, lang)])
    answered = session.execute(sa.select(Message.id).where(
        Message.clinic_id == clinic.id, Message.patient_id.is_(None),
        Message.direction == "out", Message.to_number == phone,
        Message.created_at >= now - STRANGER_WINDOW).limit(1)).first()
    if answered is not None:
        return InboundResult(reason="unknown_number_answered_today")
    return InboundResult([text_for("unknown_number", clinic, lang)], reason="unknown_number")


STRANGER_WINDOW = timedelta(days=1)  # a number no clinic knows gets at most one reply a day


def _stranger_row(clinic, sms: _Text, **values) -> dict:
    return {"clinic_id": clinic.id, "patient_id": None, "checkin_id": None, "channel": "sms",
            "created_at": sms.now, "updated_at": sms.now, **values}


def _record_in(patient, sms: _Text, checkin, *, sid: str | None = None) -> None:
    sid = sms.sid if sid is None else sid
    sms.messages.append(_message_row(patient, checkin, sms, direction="in", body=sms.text,
                                     from_number=sms.phone, to_number=sms.clinic_phone,
                                     twilio_sid=sid or None, status="received"))


def _message_row(patient, checkin, sms: _Text, **values) -> dict:
    return {"clinic_id": patient.clinic_id, "patient_id": patient.id,
            "checkin_id": checkin.id if checkin else None, "channel": "sms",
            "created_at": sms.now, "updated_at": sms.now, **values}


def _deliver_replies(session, clinic, sms: _Text, result: InboundResult, *,
                     via_outbox: bool) -> None:
    """Records the replies to one inbound text: as TwiML replies (sent by Twilio from the number
    the patient texted), or queued in the outbox. They belong to the sender's active check-in
    as the use case left it."""
    if not result.replies:
        return
    patient = result.patient
    if patient is None:  # a patient the use case created, or none
        patient = session.execute(
            sa.select(Patient).where(Patient.clinic_id == clinic.id,
                                     Patient.phone_e164 == sms.phone,
                                     Patient.erased_at.is_(None))).scalar_one_or_none()
    checkin = result.checkin
    if checkin is None or checkin.status != "active":  # ended, or another one started
        checkin = active_checkin(session, patient.id) if patient is not None else None
    for index, text in enumerate(result.replies):
        if via_outbox:
            # An opted-out patient's only reply is the opt-out confirmation: it must still go.
            kind = "optout_confirm" if patient is not None and patient.opted_out else "reply"
            outbox.enqueue(session, clinic=clinic, body=text, kind=kind, now=sms.now,
                           patient=patient, to=None if patient else sms.phone, checkin=checkin,
                           quiet=False)
        else:
            values = dict(direction="out", body=text, from_number=sms.clinic_phone,
                          # Until its status callback gives its SID.
                          twilio_sid=reply_key(sms.sid, index) if sms.sid else None,
                          status="replied")
            sms.messages.append(
                _message_row(patient, checkin, sms, to_number=patient.phone_e164, **values)
                if patient is not None else
                _stranger_row(clinic, sms, to_number=sms.phone, **values))


def _resend_unconfirmed(session, clinic, patient: Patient, sid: str, replies: list[str],
                        now: datetime) -> None:
    """Queues, once, the TwiML replies to `sid` that Twilio never confirmed (their message rows
    still carry their reply keys as "replied"): a repeated question beats a missing one."""
    for index, text in enumerate(replies):
        row = session.execute(sa.select(Message).where(
            Message.twilio_sid == reply_key(sid, index), Message.status == "replied")
        ).scalar_one_or_none()
        if row is None:
            continue
        row.status = "resent"
        outbox.enqueue(session, clinic=clinic, patient=patient, body=text, kind="reply",
                       now=now, checkin=active_checkin(session, patient.id), quiet=False)


def text_for_holding(lang: str = "en") -> str:
    """The holding reply while the database is away (no clinic details are at hand)."""
    return messages().get("holding", lang)


def replay_spooled(db, record: dict, now: datetime, *, spool=None) -> None:
    """Processes one spooled inbound message; its replies go out through the outbox at once
    (its webhook answered with the holding text long ago). A record seen before does nothing.
    `spool`: the spool it came from, told what the text did to the sender's opt-out."""
    result = db.run(handle_inbound_sms, to=record["to"], from_=record["from"],
                    body=record.get("body"), sid=record["sid"], now=now,
                    opt_out_type=record.get("opt_out_type"), replies_via_outbox=True)
    if spool is not None:
        remember_opt_out(spool, record, result)


def remember_opt_out(spool, record: dict, result: InboundResult) -> None:
    """Keeps the spool's list of opted-out senders (who get no holding reply while the
    database is away) in step with what the database just said about this text's sender:
    opted out, or opted back in with this text. `record`: the text as the spool keeps it."""
    if result.duplicate or result.reason == "unknown_clinic":
        return
    word = keywords.classify(record.get("body") or "")
    twilio_says = (record.get("opt_out_type") or "").upper()
    patient = result.patient
    if patient is None:  # a number no patient has: its STOP is remembered all the same
        if word == "stop" or twilio_says == "STOP":
            spool.remember_opt_out(record["to"], record["from"], True)
        return
    if patient.opted_out or word == "start" or twilio_says == "START":
        spool.remember_opt_out(record["to"], record["from"], patient.opted_out)

