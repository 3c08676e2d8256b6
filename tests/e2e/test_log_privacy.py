"""A full fault run on the real processes, then every log line it wrote is searched: no patient's
number (in any format) and nothing a patient answered may be in them.

Patients text intakes through gunicorn; a worker is killed with -9 mid-run and replaced;
PostgreSQL goes away for a while (the webhook spools, the replay catches up); and a request
with a 300-character CallSid (once a 500 whose traceback showed the caller's number) is sent.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from tests.e2e.harness import TcpProxy, clinic_phone, patient_phone, scalar, seed_clinic, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(480)]

# Distinctive free text in the answers: none of it may reach a log.
ANSWERS = ["BACK", "yes", "no Rosalind knows", "no", "no", "no", "no", "no", "no",
           "no", "no", "sixty one next Tuesday", "since the Harbourview fall", "4"]
SECRET_WORDS = ("Rosalind", "sixty one", "Harbourview")


def _signed_post(stack, fake, path: str, params: dict) -> requests.Response:
    url = stack.web_url + path
    signature = RequestValidator(fake.auth_token).compute_signature(url, params)
    return requests.post(url, data=urlencode(params), timeout=30,
                         headers={"X-Twilio-Signature": signature,
                                  "Content-Type": "application/x-www-form-urlencoded"})


def _number_forms(e164: str) -> list[str]:
    digits = e164[2:]  # +1 and ten digits
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    return [e164, digits, f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}",
            f"{area}.{exchange}.{line}", f"{area} {exchange} {line}"]


def test_a_fault_run_logs_no_number_nor_answer(make_stack, pg_url, pg_engine, fake, tmp_path):
    number = clinic_phone(0)
    seed_clinic(pg_url, number=number)
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    through_proxy = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    patients = [patient_phone(i) for i in range(3)]
    try:
        stack = make_stack(web_database_url=through_proxy)
        stack.web(workers=2, threads=4)
        first = stack.worker("a")
        stack.beat("main")
        sent = 0
        for step, body in enumerate(ANSWERS):
            if step == 2:
                first.kill9()  # mid-run, whatever it was sending
                stack.worker("b")
            if step == 4:
                proxy.stop()  # the database is away: the webhook spools
            if step == 7:
                proxy.start()
            for i, phone in enumerate(patients):
                answer = _signed_post(stack, fake, "/twilio/sms", {
                    "MessageSid": f"SM{i:02d}{step:030d}", "AccountSid": fake.account_sid,
                    "From": phone, "To": number, "Body": body, "NumMedia": "0"})
                assert answer.status_code == 200, answer.text
                sent += 1
            time.sleep(0.5)
        hostile = _signed_post(stack, fake, "/twilio/voice", {
            "CallSid": "CA" + "7" * 298, "AccountSid": fake.account_sid,
            "From": patients[0], "To": number})
        assert hostile.status_code == 400
        wait_for(lambda: scalar(pg_engine, "SELECT count(*) FROM webhook_receipts") == sent,
                 timeout=180, what="every inbound text processed")
        wait_for(lambda: scalar(pg_engine, "SELECT count(*) FROM outbox WHERE status <> 'sent'")
                 == 0, timeout=180, what="every text sent")
    finally:
        proxy.stop()
    stack.stop()

    logs = {path.name: path.read_text(errors="replace") for path in Path(tmp_path).glob("*.log")}
    assert {"web.log", "worker-a.log", "worker-b.log", "beat-main.log"} <= set(logs), logs.keys()
    everything = "\n".join(logs.values())
    assert "inbound sms" in everything  # the web process did log at INFO
    assert "spooled" in everything  # and the outage happened
    leaks = [(name, secret) for name, text in logs.items()
             for secret in [*SECRET_WORDS, *(f for p in patients for f in _number_forms(p))]
             if secret in text]
    assert leaks == []
