"""The WSGI app the webhook load benchmark serves: the real app plus three endpoints that exist
for this benchmark only and are never part of the product:

- POST /bench/bare: a fixed TwiML reply, the floor the webhook is compared with (issue 5);
- POST /bench/accept: checks the signature and durably stores the text (one INSERT and a
  commit), then answers an empty TwiML reply: the least any webhook can do when Twilio does
  not retry inbound SMS, whatever the design (store-and-forward included);
- POST /bench/floor: one mid-conversation step done with five hand-written SQLAlchemy Core
  statements (patient lock with clinic and receipt, check-in read, check-in update, both
  messages, receipt) and no ORM: what the real webhook's work costs without the application
  around it. It handles only a consented patient answering an SMS question (no keywords, no
  outcomes), so it measures, it does not serve.

The two reference endpoints check the signature Twilio computed for /twilio/sms, so the same
pre-signed requests drive all of them.

gunicorn --chdir benchmarks --pythonpath .. bench_app:app   (configured from the environment)
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from flask import Response, abort, current_app, request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from flows import engine
from flows.loader import get_flow
from service import clock, create_app
from service.store import get_db
from service.store.models import CheckIn, Clinic, ClinicNumber, Message, Patient, WebhookReceipt

FIXED_TWIML = str(MessagingResponse().message("Do you have any NEW weakness in your arms or "
                                              "legs, or trouble walking? Reply YES or NO."))
EMPTY_TWIML = str(MessagingResponse())

app = create_app()


@app.post("/bench/bare")
def bare() -> Response:
    return Response(FIXED_TWIML, mimetype="text/xml")


def _signed_form() -> dict:
    form = request.form.to_dict()
    url = current_app.config["PUBLIC_BASE_URL"].rstrip("/") + "/twilio/sms"
    signature = request.headers.get("X-Twilio-Signature", "")
    if not RequestValidator(current_app.config["TWILIO_AUTH_TOKEN"]).validate(url, form,
                                                                               signature):
        abort(403)
    return form


_RECEIPT = sa.insert(WebhookReceipt.__table__)


@app.post("/bench/accept")
def accept() -> Response:
    form = _signed_form()
    with get_db().engine.begin() as connection:
        connection.execute(_RECEIPT, {"sid": form["MessageSid"], "kind": "bench",
                                      "response_body": json.dumps(form),
                                      "created_at": clock.now()})
    return Response(EMPTY_TWIML, mimetype="text/xml")


_P, _C, _N, _CI = (model.__table__ for model in (Patient, Clinic, ClinicNumber, CheckIn))
_SENDER = (
    sa.select(_P.c.id, _P.c.clinic_id,
              sa.select(WebhookReceipt.response_body)
              .where(WebhookReceipt.sid == sa.bindparam("sid")).scalar_subquery())
    .select_from(_P.join(_C, _C.c.id == _P.c.clinic_id).join(_N, _N.c.clinic_id == _C.c.id))
    .where(_N.c.phone_e164 == sa.bindparam("to"), _P.c.phone_e164 == sa.bindparam("from_"),
           _P.c.erased_at.is_(None))
    .with_for_update(of=_P.c.id)
)
_CHECKIN = sa.select(_CI.c.id, _CI.c.state, _CI.c.flow_id, _CI.c.flow_version).where(
    _CI.c.patient_id == sa.bindparam("patient_id"), _CI.c.status == "active")
_UPDATE = sa.update(_CI).where(_CI.c.id == sa.bindparam("checkin_id")).values(
    state=sa.bindparam("state"), answers=sa.bindparam("answers"),
    language=sa.bindparam("language"), next_event_at=sa.bindparam("next_event_at"))
_MESSAGES = sa.insert(Message.__table__)


@app.post("/bench/floor")
def floor() -> Response:
    form = _signed_form()
    sid, to, from_, body = form["MessageSid"], form["To"], form["From"], form.get("Body", "")
    now = clock.now()
    with get_db().engine.begin() as connection:
        patient_id, clinic_id, answered = connection.execute(
            _SENDER, {"sid": sid, "to": to, "from_": from_}).one()
        if answered is not None:
            return Response(answered, mimetype="text/plain")
        checkin = connection.execute(_CHECKIN, {"patient_id": patient_id}).one()
        flow = get_flow(checkin.flow_id, checkin.flow_version)
        state, actions = engine.step(flow, checkin.state, engine.Reply(body.strip()), now)
        texts = [action.text for action in actions if isinstance(action, engine.Send)]
        connection.execute(_UPDATE, {"checkin_id": checkin.id, "state": state,
                                     "answers": dict(state["answers"]), "language": state["lang"],
                                     "next_event_at": engine.next_event_at(state)})
        row = {"clinic_id": clinic_id, "patient_id": patient_id, "checkin_id": checkin.id,
               "channel": "sms", "error_code": None, "created_at": now, "updated_at": now}
        connection.execute(_MESSAGES, [
            {**row, "direction": "in", "from_number": from_, "to_number": to, "body": body,
             "twilio_sid": sid, "status": "received"},
            *({**row, "direction": "out", "from_number": to, "to_number": from_, "body": text,
               "twilio_sid": None, "status": "replied"} for text in texts)])
        connection.execute(_RECEIPT, {"sid": sid, "kind": "sms", "created_at": now,
                                      "response_body": json.dumps(texts)})
    reply = MessagingResponse()
    for text in texts:
        reply.message(text)
    return Response(str(reply), mimetype="text/xml")


# ---- tracing (benchmarks/webhook_tail.py): only with BENCH_TRACE_DIR set ------------------
#
# One line per request and per stall candidate, written by each gunicorn worker to
# $BENCH_TRACE_DIR/trace-<pid>.jsonl, all times wall-clock (time.time(), seconds):
#   {"k": "req", "t0", "ms", "path", "sid", "thread", "commit_ms", "exec_ms", "checkout_ms",
#    "gc_ms"}  every request: its time in the app (Flask before_request .. teardown), of which
#              waiting for COMMIT, for the other statements, for a pool checkout (including
#              the pre-ping), and in the garbage collector while it ran;
#   {"k": "gc", "t0", "ms", "gen", "collected"}  every collection longer than 2 ms.
# The driver correlates them with the requests it saw slow (webhook_tail.py).

import gc  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from flask import g  # noqa: E402

TRACE_DIR = os.environ.get("BENCH_TRACE_DIR")

if TRACE_DIR:
    _trace_file = open(os.path.join(TRACE_DIR, f"trace-{os.getpid()}.jsonl"), "a",  # noqa: SIM115
                       buffering=1)
    _trace_lock = threading.Lock()
    _local = threading.local()
    _gc_total = [0.0]  # seconds spent in collections by this process so far
    _gc_start = [0.0, 0.0]

    def _emit(record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with _trace_lock:
            _trace_file.write(line)

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _gc_start[0], _gc_start[1] = time.perf_counter(), time.time()
            return
        took = time.perf_counter() - _gc_start[0]
        _gc_total[0] += took
        if took > 0.002:
            _emit({"k": "gc", "t0": _gc_start[1], "ms": took * 1000,
                   "gen": info.get("generation"), "collected": info.get("collected")})

    gc.callbacks.append(_on_gc)

    def _timed(call, slot: str):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                if getattr(_local, "active", False):
                    setattr(_local, slot, getattr(_local, slot) + time.perf_counter() - started)
        return timed

    def _instrument() -> None:
        engine = get_db(app).engine
        dialect = engine.dialect
        dialect.do_commit = _timed(dialect.do_commit, "commit")
        for name in ("do_execute", "do_executemany", "do_execute_no_params"):
            setattr(dialect, name, _timed(getattr(dialect, name), "execute"))
        engine.pool._do_get = _timed(engine.pool._do_get, "checkout")
        dialect.do_ping = _timed(dialect.do_ping, "checkout")

    _instrument()

    @app.before_request
    def _trace_start() -> None:
        _local.active = True
        _local.commit = _local.execute = _local.checkout = 0.0
        g.trace = (time.time(), time.perf_counter(), _gc_total[0])

    @app.teardown_request
    def _trace_end(_exc) -> None:
        t0, started, gc0 = g.pop("trace", (None, None, None))
        _local.active = False
        if t0 is None:
            return
        _emit({"k": "req", "t0": t0, "ms": (time.perf_counter() - started) * 1000,
               "path": request.path, "sid": request.form.get("MessageSid"),
               "thread": threading.get_ident(), "commit_ms": _local.commit * 1000,
               "exec_ms": _local.execute * 1000, "checkout_ms": _local.checkout * 1000,
               "gc_ms": (_gc_total[0] - gc0) * 1000})

    @app.post("/bench/gc")
    def full_collection() -> Response:
        """What one full collection costs this worker now (the driver asks at the end)."""
        started = time.perf_counter()
        gc.collect()
        took = (time.perf_counter() - started) * 1000
        return Response(json.dumps({"pid": os.getpid(), "ms": took,
                                    "tracked": len(gc.get_objects()),
                                    "frozen": gc.get_freeze_count(),
                                    "collections": [s["collections"] for s in gc.get_stats()]}),
                        mimetype="application/json")
