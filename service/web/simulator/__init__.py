"""The web simulator: text the service as a patient of a clinic, without a phone or Twilio."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Blueprint, Flask, abort, current_app, jsonify, render_template, request

from service import clock
from service.conversations import inbound
from service.phones import normalize_phone
from service.store import get_db
from service.store.models import Clinic, ClinicNumber, Message, Outbox, Patient

bp = Blueprint("simulator", __name__, url_prefix="/simulator", template_folder="templates",
               static_folder="static")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.before_request
def _only_when_enabled():
    if not current_app.config.get("SIMULATOR_ENABLED"):
        abort(404)


@bp.get("/")
def page():
    with get_db().transaction() as session:
        numbers = session.execute(
            sa.select(ClinicNumber.phone_e164, Clinic.name).join(Clinic)
            .order_by(ClinicNumber.id)).all()
    return render_template("simulator/phone.html", numbers=numbers)


def _bad(message: str, status: int = 400):
    return jsonify({"error": message}), status


@bp.post("/api/send")
def send():
    data = request.get_json(silent=True) or {}
    try:
        frm = normalize_phone(str(data.get("from", "")))
        to = normalize_phone(str(data.get("to", "")))
    except ValueError as exc:
        return _bad(str(exc))
    body = str(data.get("body", ""))[:1600]
    result = get_db().run(inbound.handle_inbound_sms, to=to, from_=frm, body=body,
                          sid="SIM" + uuid.uuid4().hex, now=clock.now())
    return jsonify({"replies": result.replies, "reason": result.reason})


@bp.get("/api/messages")
def messages():
    """The simulated phone's thread: what it sent, replies, and what the outbox sent or holds."""
    try:
        frm = normalize_phone(request.args.get("from", ""))
        to = normalize_phone(request.args.get("to", ""))
    except ValueError as exc:
        return _bad(str(exc))
    with get_db().transaction() as session:
        clinic_id = session.execute(sa.select(ClinicNumber.clinic_id)
                                    .where(ClinicNumber.phone_e164 == to)).scalar()
        if clinic_id is None:
            return _bad("no clinic owns that number", 404)
        patient = session.execute(sa.select(Patient).where(
            Patient.clinic_id == clinic_id, Patient.phone_e164 == frm)).scalar_one_or_none()
        if patient is None:
            return jsonify({"messages": [], "pending": []})
        rows = session.execute(sa.select(Message).where(Message.patient_id == patient.id)
                               .order_by(Message.created_at, Message.id)).scalars().all()
        pending = session.execute(sa.select(Outbox).where(
            Outbox.patient_id == patient.id, Outbox.status.in_(("pending", "sending")))
            .order_by(Outbox.id)).scalars().all()
        return jsonify({
            "messages": [{"direction": m.direction, "body": m.body, "status": m.status,
                          "channel": m.channel, "at": m.created_at.isoformat()} for m in rows],
            "pending": [{"body": o.body, "not_before": o.not_before.isoformat(), "kind": o.kind}
                        for o in pending],
        })


from service.web.simulator import voice as _voice  # noqa: E402,F401  (adds the call routes to bp)
