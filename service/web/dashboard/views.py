"""The dashboard's pages and actions. Views translate: the use cases live in service/."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import (
    session as web_session,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFError

from service import clock, taskqueue
from service.accounts import staff as staff_accounts
from service.conversations import checkins, consent
from service.logs import mask_phone
from service.records import alerts, audit, exports
from service.records import patients as patient_records
from service.store import get_db
from service.store.models import MAX_ID, CheckIn, Clinic, Patient
from service.store.queries import active_checkin
from service.web.dashboard import presenters, queries
from service.web.dashboard.auth import StaffUser, admin_required, safe_next
from service.web.dashboard.forms import (
    HISTORY_LEVELS,
    LANGUAGES,
    parse_date_range,
    parse_enroll,
    parse_history,
    timezones,
)

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static", static_url_path="/static")

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
# An unknown email and a locked account get the same answer (status and words), so that the
# form tells nobody which emails have accounts; only the per-address limit, which says nothing
# about any account, has its own.
_NOT_SIGNED_IN = ("The email or password is wrong, or the account is locked for 15 minutes "
                  "after too many failed sign-ins.", 401)
LOGIN_MESSAGES = {
    "bad_credentials": _NOT_SIGNED_IN,
    "locked": _NOT_SIGNED_IN,
    "address_limited": ("Too many failed sign-ins from this address. Try again later.", 429),
}


# ---- request plumbing ---------------------------------------------------------------------


@bp.before_request
def _protect():
    if request.method not in SAFE_METHODS:
        current_app.extensions["csrf"].protect()


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        # Patient data must not linger in shared caches or the browser's back button.
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError):
    return render_template("dashboard/error.html", title="Form expired",
                           message="The form was too old or not sent from this dashboard. "
                                   "Go back, reload the page and try again."), 400


@bp.errorhandler(403)
def _forbidden(_error):
    return render_template("dashboard/error.html", title="Not allowed",
                           message="Your role does not allow this."), 403


@bp.errorhandler(404)
def _not_found(_error):
    return render_template("dashboard/error.html", title="Not found",
                           message="There is no such record in your clinic."), 404


@bp.app_template_filter("level_label")
def _level_label(level: str | None) -> str:
    return presenters.LEVEL_LABELS.get(level or "", "-")


@bp.app_template_filter("masked")
def _masked(phone: str | None) -> str:
    return mask_phone(phone)


def _staff() -> StaffUser:
    return current_user  # type: ignore[return-value]


def _patient_or_404(session, patient_id: int, *, for_update: bool = False) -> Patient:
    patient = patient_records.get_patient(session, _staff().clinic_id, patient_id,
                                          for_update=for_update)
    if patient is None:
        abort(404)
    return patient


def _record_reads(session, action: str, patient_ids) -> None:
    """A list that shows patients' details is a read of each of their records."""
    audit.record_reads(session, clinic_id=_staff().clinic_id, patient_ids=patient_ids,
                       action=action, actor_type="staff", actor_id=_staff().actor_id,
                       now=clock.now())


def _record(session, action: str, *, patient_id: int | None = None, **detail) -> None:
    audit.record(session, clinic_id=_staff().clinic_id, patient_id=patient_id, action=action,
                 actor_type="staff", actor_id=_staff().actor_id, detail=detail, now=clock.now())


# ---- sign in and out ----------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.queue"))
    error, status = None, 200
    email = ""
    if request.method == "POST":
        email = request.form.get("email", "")
        user = None
        now = clock.now()
        with get_db().transaction() as session:
            # remote_addr is the client's: ProxyFix (TRUSTED_PROXIES) reads X-Forwarded-For.
            result = staff_accounts.authenticate(
                session, email=email, password=request.form.get("password", ""),
                address=request.remote_addr or "", now=now)
            if result.ok:
                token = staff_accounts.open_session(session, result.staff, now)
                user = StaffUser.of(result.staff, session.get(Clinic, result.staff.clinic_id),
                                    token)
        if user is not None:
            web_session.clear()  # a new session (and cookie) on sign-in: no fixation
            login_user(user)
            return redirect(safe_next(request.args.get("next")))
        error, status = LOGIN_MESSAGES[result.outcome]
    return render_template("dashboard/login.html", error=error, email=email), status


@bp.post("/logout")
@login_required
def logout():
    with get_db().transaction() as session:
        staff_accounts.end_session(session, _staff().key, clock.now())
    logout_user()
    web_session.clear()
    flash("You are signed out.")
    return redirect(url_for("dashboard.login"))


@bp.post("/logout/everywhere")
@login_required
def logout_everywhere():
    """Ends every session of this account: other browsers, a forgotten shared computer."""
    with get_db().transaction() as session:
        staff_accounts.end_all_sessions(session, _staff().id, clock.now(),
                                        actor_id=_staff().actor_id)
    logout_user()
    web_session.clear()
    flash("You are signed out on every device.")
    return redirect(url_for("dashboard.login"))


# ---- alert queue --------------------------------------------------------------------------


def _queue_cards(session):
    staff = _staff()
    now = clock.now()
    names = queries.staff_emails(session, staff.clinic_id)
    return [presenters.alert_card(alert, patient, now, staff.clinic_timezone, names)
            for alert, patient in queries.alert_queue(session, staff.clinic_id)]


def _record_queue_reads(session, cards) -> None:
    _record_reads(session, "alert_queue_viewed", (card.patient_id for card in cards))
    # An urgent or emergency card shows the number to call in full, as the patient page does.
    _record_reads(session, "patient_phone_shown",
                  (card.patient_id for card in cards if card.shows_number))


def _signature(cards) -> str:
    raw = json.dumps([(card.id, card.status) for card in cards])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@bp.get("/")
@login_required
def queue():
    with get_db().transaction() as session:
        cards = _queue_cards(session)
        _record_queue_reads(session, cards)
        return render_template("dashboard/queue.html", cards=cards, signature=_signature(cards),
                               poll_ms=int(current_app.config.get("DASHBOARD_POLL_SECONDS", 5)
                                           * 1000))


@bp.get("/alerts.json")
@login_required
def queue_json():
    """What the queue page polls: a signature of the queue, and its HTML when it changed."""
    with get_db().transaction() as session:
        cards = _queue_cards(session)
        signature = _signature(cards)
        body = {
            "signature": signature,
            "count": len(cards),
            "emergency": sum(1 for card in cards if card.level == "emergency"),
            "alerts": [{"id": c.id, "level": c.level, "status": c.status,
                        "patient_id": c.patient_id, "age_seconds": c.age_seconds,
                        "raised_ago": c.raised_ago, "patient_time": c.patient_time}
                       for c in cards],
        }
        if request.args.get("since") != signature:
            body["html"] = render_template("dashboard/_queue_items.html", cards=cards)
            _record_queue_reads(session, cards)
    return jsonify(body)


@bp.get("/alerts/history")
@login_required
def alert_history():
    """Resolved alerts: who acknowledged and resolved them, when, and the note."""
    staff = _staff()
    filters, errors = parse_history(request.args)
    zone = ZoneInfo(staff.clinic_timezone)
    since = datetime.combine(filters.start, time(), zone) if filters.start else None
    until = datetime.combine(filters.end + timedelta(days=1), time(), zone) \
        if filters.end else None
    with get_db().transaction() as session:
        rows, next_before = queries.alert_history(
            session, staff.clinic_id, level=filters.level, since=since, until=until,
            patient_id=filters.patient_id, query=filters.q, before=filters.before,
            limit=int(current_app.config.get("DASHBOARD_HISTORY_PAGE", 100)))
        _record_reads(session, "alert_history_viewed", (row.patient.id for row in rows))
        names = queries.staff_emails(session, staff.clinic_id)
        next_url = url_for("dashboard.alert_history", **filters.args(),
                           before_at=next_before[0].isoformat(),
                           before_id=next_before[1]) if next_before else None
        return render_template(
            "dashboard/history.html", rows=rows, filters=filters, errors=errors,
            names=names, next_url=next_url, levels=HISTORY_LEVELS, tz=staff.clinic_timezone,
            kinds=presenters.ALERT_KIND_LABELS,
            time=presenters.local_time, label=presenters.patient_label), 400 if errors else 200


def _alert_or_404(session, alert_id: int):
    alert = alerts.get_alert(session, _staff().clinic_id, alert_id, for_update=True)
    if alert is None:
        abort(404)
    return alert


@bp.get("/alerts/<id:alert_id>")
@login_required
def alert(alert_id: int):
    """An alert by its link (the on-call text's): the patient's page, at the alert (the read
    is the patient page's, audited there)."""
    with get_db().transaction() as session:
        found = alerts.get_alert(session, _staff().clinic_id, alert_id)
        if found is None:
            abort(404)
        patient_id = found.patient_id
    return redirect(url_for("dashboard.patient", patient_id=patient_id,
                            _anchor=f"alert-{alert_id}"))


@bp.post("/alerts/<id:alert_id>/acknowledge")
@login_required
def acknowledge(alert_id: int):
    with get_db().transaction() as session:
        alert = _alert_or_404(session, alert_id)
        try:
            alerts.acknowledge_alert(session, alert, actor_type="staff",
                                     actor_id=_staff().actor_id, now=clock.now())
        except alerts.AlertStateError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Alert {alert_id} acknowledged.")
    return redirect(_back(url_for("dashboard.queue")))


@bp.post("/alerts/<id:alert_id>/resolve")
@login_required
def resolve(alert_id: int):
    with get_db().transaction() as session:
        alert = _alert_or_404(session, alert_id)
        try:
            alerts.resolve_alert(session, alert, actor_type="staff", actor_id=_staff().actor_id,
                                 note=request.form.get("note", "").replace("\x00", ""),
                                 now=clock.now())
        except (alerts.AlertStateError, ValueError) as exc:
            flash(f"Alert {alert_id} not resolved: {exc}.", "error")
        else:
            flash(f"Alert {alert_id} resolved.")
    return redirect(_back(url_for("dashboard.queue")))


def _id_arg(name: str) -> int | None:
    """A row id from the query string; None when absent or not one a row can have."""
    value = request.args.get(name, type=int)
    return value if value is not None and 0 < value <= MAX_ID else None


def _text_arg(name: str) -> str:
    """Text from the query string, without NUL (which PostgreSQL's text cannot hold)."""
    return request.args.get(name, "").replace("\x00", "")


def _back(default: str) -> str:
    return safe_next(request.form.get("back")) if request.form.get("back") else default


# ---- patients -----------------------------------------------------------------------------


@bp.get("/patients")
@login_required
def patients():
    q = _text_arg("q")
    with get_db().transaction() as session:
        rows = queries.patient_rows(session, _staff().clinic_id, q)
        _record_reads(session, "patient_list_viewed", (row.patient.id for row in rows))
        return render_template("dashboard/patients.html", rows=rows, q=q,
                               tz=_staff().clinic_timezone, date=presenters.local_date)


@bp.route("/patients/new", methods=["GET", "POST"])
@login_required
def enroll():
    form, errors = request.form, {}
    if request.method == "POST":
        now = clock.now()
        data, errors = parse_enroll(form, today=now.date())
        if data is not None:
            with get_db().transaction() as session:
                clinic = session.get(Clinic, _staff().clinic_id)
                try:
                    patient = consent.enroll_patient(
                        session, clinic, phone=data.phone, now=now, name=data.name,
                        date_of_birth=data.date_of_birth, language=data.language,
                        timezone=data.timezone, calls_allowed=data.calls_allowed)
                except (checkins.CheckInError, ValueError) as exc:
                    errors = {"phone": str(exc)}
                else:
                    _record(session, "patient_enrolled", patient_id=patient.id,
                            verbal_consent=True)
                    patient_id = patient.id
                    held = [o.not_before for o in queries.queued_messages(session, patient)
                            if o.not_before > now]
                    zone = presenters.patient_zone(patient, _staff().clinic_timezone)
                    held_until = f"{presenters.local_time(held[0], zone)} {zone}" \
                        if held else None
            if not errors:
                woken = _send_now()
                if held_until:
                    flash("Patient enrolled. The first text (asking them to reply YES) waits "
                          f"for the end of quiet hours: {held_until}.")
                elif woken:
                    flash("Patient enrolled. The first text (asking them to reply YES) is "
                          "going out now.")
                else:  # no Redis to wake a worker with (a laptop): the next beat sends it
                    flash("Patient enrolled. The first text (asking them to reply YES) goes "
                          "out within a minute.")
                return redirect(url_for("dashboard.patient", patient_id=patient_id))
    return render_template("dashboard/enroll.html", form=form, errors=errors,
                           languages=LANGUAGES, timezones=timezones()), 400 if errors else 200


def _send_now() -> bool:
    """Wakes a worker to send what is due now (as the SMS webhook does) instead of leaving it
    to the next beat; the outbox keeps what quiet hours hold. True if the wake-up left."""
    if not current_app.config.get("REDIS_URL"):
        return False
    return taskqueue.send_task("tasks.send_now", config=current_app.config)


@bp.get("/patients/<id:patient_id>")
@login_required
def patient(patient_id: int):
    staff = _staff()
    with get_db().transaction() as session:
        record = _patient_or_404(session, patient_id)
        history = patient_records.patient_history(session, record)
        patient_alerts = queries.patient_alerts(session, record)
        entries = presenters.timeline(
            checkins=history.checkins, messages=history.messages,
            queued=queries.queued_messages(session, record), alerts=patient_alerts,
            followups=history.followups, episodes=history.episodes)
        episode = history.episodes[-1] if history.episodes else None
        scored = [c for c in history.checkins
                  if isinstance((c.answers or {}).get("pain_score"), int)]
        latest_pain = scored[-1].answers["pain_score"] if scored else None
        chart = presenters.pain_chart(history.checkins, staff.clinic_timezone,
                                      baseline=episode.baseline_pain_score if episode else None)
        contexts = _contexts(history.checkins, patient_alerts, history.episodes, latest_pain)
        now = clock.now()
        open_cards = [presenters.alert_card(a, record, now, staff.clinic_timezone,
                                            queries.staff_emails(session, staff.clinic_id))
                      for a in patient_alerts if a.status in queries.QUEUE_STATUSES]
        pending = patient_records.pending_followups(session, record.id)
        _record(session, "patient_viewed", patient_id=record.id)
        return render_template(
            "dashboard/patient.html", patient=record, chart=chart,
            contexts=contexts, episode=episode, latest_pain=latest_pain, cards=open_cards,
            groups=presenters.timeline_groups(entries, history.checkins),
            pending=pending, tz=staff.clinic_timezone, time=presenters.local_time,
            active=active_checkin(session, record.id), label=presenters.patient_label(record),
            zone=presenters.patient_zone(record, staff.clinic_timezone),
            local_now=presenters.local_time(now, presenters.patient_zone(
                record, staff.clinic_timezone)))


def _contexts(checkin_rows, patient_alerts, episodes, latest_pain):
    """Clinician context for the check-ins behind open alerts, and for the latest one."""
    wanted = [a.checkin_id for a in reversed(patient_alerts)
              if a.checkin_id and a.status in queries.QUEUE_STATUSES]
    assessed = [c for c in checkin_rows if c.level]
    if assessed:
        wanted.append(assessed[-1].id)
    by_id = {c.id: c for c in checkin_rows}
    episodes_by_id = {e.id: e for e in episodes}
    seen, result = set(), []
    for checkin_id in wanted:
        if checkin_id in seen or checkin_id not in by_id:
            continue
        seen.add(checkin_id)
        checkin = by_id[checkin_id]
        result.append(presenters.clinician_context(
            checkin, episodes_by_id.get(checkin.episode_id), latest_pain))
    return result[:3]


def _patient_action(patient_id: int, action):
    """Runs `action(session, clinic, patient, now)` and flashes what it returns."""
    with get_db().transaction() as session:
        record = _patient_or_404(session, patient_id, for_update=True)
        clinic = session.get(Clinic, record.clinic_id)
        try:
            message = action(session, clinic, record, clock.now())
        except (checkins.CheckInError, patient_records.PatientStateError, ValueError) as exc:
            flash(str(exc), "error")
        else:
            flash(message)
    return redirect(url_for("dashboard.patient", patient_id=patient_id))


CHECKIN_RESULTS = {
    "consent_requested": "The patient has not replied YES yet: the consent text is queued again.",
    "continued": "A check-in is already going on: its current question is sent again.",
    "intake_started": "Intake check-in started: the first text is queued.",
    "followup_started": "Follow-up check started: the first text is queued.",
}


@bp.post("/patients/<id:patient_id>/checkin")
@login_required
def start_checkin(patient_id: int):
    def act(session, clinic, record, now):
        result = checkins.start_checkin_now(session, clinic, record, now)
        _record(session, "checkin_requested", patient_id=record.id, result=result)
        return CHECKIN_RESULTS.get(result, result)

    return _patient_action(patient_id, act)


@bp.post("/patients/<id:patient_id>/followups/<any(pause, resume, cancel):what>")
@login_required
def followups(patient_id: int, what: str):
    use_case = {"pause": patient_records.pause_followups,
                "resume": patient_records.resume_followups,
                "cancel": patient_records.cancel_patient_followups}[what]
    done = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[what]

    def act(session, clinic, record, now):
        count = use_case(session, record, actor_type="staff", actor_id=_staff().actor_id,
                         now=now)
        return f"{count} follow-up{'s' if count != 1 else ''} {done}."

    return _patient_action(patient_id, act)


@bp.post("/patients/<id:patient_id>/opt-out")
@login_required
def opt_out(patient_id: int):
    def act(session, clinic, record, now):
        # The patient asked us (by phone, in person) to stop: no confirmation text is sent.
        consent.opt_out(session, clinic, record, "", now)
        _record(session, "patient_opted_out", patient_id=record.id)
        # While the database is away, their texts get no holding reply either.
        consent.remember_opted_out(current_app.extensions["spool"], session, record.id)
        return "Marked as opted out: no more texts or calls; follow-ups cancelled."

    return _patient_action(patient_id, act)


@bp.post("/patients/<id:patient_id>/erase")
@login_required
@admin_required
def erase(patient_id: int):
    if request.form.get("confirm", "").strip().upper() != "ERASE":
        flash("Type ERASE to confirm the erasure.", "error")
        return redirect(url_for("dashboard.patient", patient_id=patient_id))
    with get_db().transaction() as session:
        record = _patient_or_404(session, patient_id, for_update=True)
        patient_records.erase_patient(session, record, actor_type="staff",
                                      actor_id=_staff().actor_id, now=clock.now())
    flash(f"Patient {patient_id} erased.")
    return redirect(url_for("dashboard.patients"))


# ---- exports ------------------------------------------------------------------------------


@bp.get("/exports")
@login_required
def exports_page():
    today = clock.now().date()
    return render_template("dashboard/exports.html", start=today - timedelta(days=30), end=today)


@bp.get("/exports/episodes.csv")
@login_required
def episodes_csv():
    start, end, error = parse_date_range(request.args)
    if error:
        flash(error, "error")
        return redirect(url_for("dashboard.exports_page"))
    with get_db().transaction() as session:
        clinic = session.get(Clinic, _staff().clinic_id)
        try:
            text, patient_ids = exports.episodes_csv(session, clinic, start, end)
        except ValueError as exc:
            flash(str(exc), "error")
            return redirect(url_for("dashboard.exports_page"))
        detail = {"start": start.isoformat(), "end": end.isoformat(),
                  "rows": text.count("\r\n") - 1}
        if patient_ids:  # a file of names, levels and pain scores: a read of each record
            audit.record_reads(session, clinic_id=_staff().clinic_id, patient_ids=patient_ids,
                               action="episodes_exported", actor_type="staff",
                               actor_id=_staff().actor_id, detail=detail, now=clock.now())
        else:
            _record(session, "episodes_exported", **detail)
    name = f"episodes-{start.isoformat()}-{end.isoformat()}.csv"
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/exports/checkins.fhir.json")
@login_required
def checkins_fhir():
    """The clinic's check-ins of a date range as one FHIR R4 Bundle; each patient in it is
    audited as read."""
    start, end, error = parse_date_range(request.args)
    if error:
        flash(error, "error")
        return redirect(url_for("dashboard.exports_page"))
    base = current_app.config.get("PUBLIC_BASE_URL") or request.host_url
    with get_db().transaction() as session:
        clinic = session.get(Clinic, _staff().clinic_id)
        try:
            bundle, patient_ids = exports.checkins_bundle(session, clinic, start, end, base,
                                                          clock.now())
        except ValueError as exc:
            flash(str(exc), "error")
            return redirect(url_for("dashboard.exports_page"))
        _record_reads(session, "checkins_exported", patient_ids)
    name = f"checkins-{start.isoformat()}-{end.isoformat()}.fhir.json"
    return Response(json.dumps(bundle, indent=2), mimetype="application/fhir+json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/checkins/<id:checkin_id>/fhir.json")
@login_required
def checkin_fhir(checkin_id: int):
    """The check-in as a FHIR R4 Bundle: its Questionnaire and QuestionnaireResponse."""
    base = current_app.config.get("PUBLIC_BASE_URL") or request.host_url
    with get_db().transaction() as session:
        checkin = exports_checkin(session, checkin_id)
        bundle = exports.checkin_bundle(checkin, base, clock.now())
        _record(session, "checkin_exported", patient_id=checkin.patient_id,
                checkin_id=checkin.id, format="fhir")
    return Response(json.dumps(bundle, indent=2), mimetype="application/fhir+json")


def exports_checkin(session, checkin_id: int) -> CheckIn:
    checkin = session.get(CheckIn, checkin_id)
    if checkin is None or checkin.clinic_id != _staff().clinic_id \
            or checkin.patient.erased_at is not None:
        abort(404)
    return checkin


# ---- admin --------------------------------------------------------------------------------


@bp.get("/admin/audit")
@login_required
@admin_required
def audit_log():
    before, patient_id = _id_arg("before"), _id_arg("patient")
    with get_db().transaction() as session:
        rows = queries.audit_rows(session, _staff().clinic_id, before_id=before,
                                  patient_id=patient_id)
        names = queries.staff_emails(session, _staff().clinic_id)
        return render_template("dashboard/audit.html", rows=rows, names=names,
                               patient_id=patient_id, tz=_staff().clinic_timezone,
                               time=presenters.local_time)
