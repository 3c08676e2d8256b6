"""The WSGI app the webhook load benchmark serves: the real app plus, for this benchmark only,
POST /bench/bare that answers a fixed TwiML reply (the floor the webhook is compared with).

gunicorn --chdir benchmarks --pythonpath .. bench_app:app   (configured from the environment)
"""

from __future__ import annotations

from flask import Response
from twilio.twiml.messaging_response import MessagingResponse

from service import create_app

FIXED_TWIML = str(MessagingResponse().message("Do you have any NEW weakness in your arms or "
                                              "legs, or trouble walking? Reply YES or NO."))

app = create_app()


@app.post("/bench/bare")
def bare() -> Response:
    return Response(FIXED_TWIML, mimetype="text/xml")
