"""gunicorn settings of the web process (Procfile `web`); every value can be moved by the
environment. gunicorn reads this file from the working directory by default.

Production sizes the process with WEB_CONCURRENCY (worker processes, default 2) and
WEB_THREADS (threads per worker, default 8) and binds 0.0.0.0:$PORT, as a Procfile host routes
to it; scripts/start binds 127.0.0.1 instead (GUNICORN_CMD_ARGS).

Time: a request on the request path is bounded well below Twilio's 15 s (the database's waits
in service/store/session.py, Redis's in the spool), so `timeout` is only the heartbeat of a
stuck worker process, and `graceful_timeout` lets requests in flight finish on a restart.

Slow clients: gthread hands a connection to a thread only once it has sent data, but a client
that then sends a byte a second keeps its thread while gunicorn reads the request. Production
puts a buffering reverse proxy in front (nginx: request buffering on, client_header_timeout and
client_body_timeout 10 s, client_max_body_size 256k; most Procfile hosts' routers do the same)
so that only complete requests reach gunicorn. Without one, the limits below keep each request
small and the thread count leaves room for a few slow clients without stalling the webhooks.
"""

import os

bind = [f"0.0.0.0:{os.environ.get('PORT', '5000')}"]
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# A Twilio webhook is a few kilobytes of form fields: nothing needs more than these.
limit_request_line = 4094
limit_request_fields = 60
limit_request_field_size = 8190
# The app answers 413 to a body above MAX_CONTENT_LENGTH (service/__init__.py) without reading it.
accesslog = None  # request lines carry no patient data, but the app logs what matters


def post_worker_init(worker):
    """Once the worker has loaded the app: everything start-up built (the flow definitions and
    the reading-grade dictionary that validated them, SQLAlchemy's mappers, the libraries:
    ~370,000 objects) leaves the garbage collector's reach. Otherwise each full collection
    walks all of it, about 200 ms during which the worker serves nothing (docs/BENCHMARKS.md,
    "Webhook tail latency"). Objects made later are collected as before. WEB_GC_FREEZE=0 turns
    this off (to measure the difference)."""
    import gc

    if os.environ.get("WEB_GC_FREEZE", "1") == "0":
        return
    gc.collect()
    gc.freeze()
