"""Configuration read from the environment (12-factor), with defaults that work on a laptop.

`ENV` has no default: a process refuses to start until it says `development` (a laptop: SQLite,
the embedded broker, the dry-run sender and the simulator are allowed) or `production` (every
variable in PRODUCTION_REQUIRED must be set, on PostgreSQL and Redis, with Twilio credentials
unless `DRY_RUN=1` says on purpose that nothing is to leave). A forgotten `ENV` on a server
therefore never starts a development service with a simulator open to the internet.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"

ENVIRONMENTS = ("development", "production")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Generated once per process so that every app built in this process (tests, CLI) agrees.
_dev_secret_key: str | None = None


class ConfigError(ValueError):
    """The environment does not describe a configuration we are willing to start with."""


@dataclasses.dataclass(frozen=True)
class Config:
    ENV: str
    DATABASE_URL: str
    REDIS_URL: str | None
    BROKER_URL: str
    BROKER_DIR: str
    SPOOL_DIR: str
    TWILIO_ACCOUNT_SID: str | None
    TWILIO_AUTH_TOKEN: str | None
    TWILIO_FROM_NUMBER: str | None
    TWILIO_MESSAGING_SERVICE_SID: str | None
    PUBLIC_BASE_URL: str | None
    SECRET_KEY: str
    SIMULATOR_ENABLED: bool
    LOG_LEVEL: str
    SESSION_COOKIE_SECURE: bool
    SESSION_COOKIE_SAMESITE: str
    # Production without Twilio credentials, on purpose: nothing is sent, /healthz is degraded.
    DRY_RUN: bool
    # Dashboard sign-in: minutes without a request before a session ends, and how many
    # reverse proxies (each adding one X-Forwarded-For entry) stand in front of the web
    # processes, so that the per-address login limit sees the client's address, not the proxy's.
    STAFF_IDLE_MINUTES: int
    TRUSTED_PROXIES: int
    # Sending and scheduling (tasks/): messages per second per sending number (across all
    # workers), tries before a send is given up with an alert, on-call repeats of an open
    # urgent/emergency alert (every 30 minutes), and how often the beat runs its jobs.
    SEND_RATE_PER_SECOND: float
    # A Messaging Service's throughput (texts per second across its numbers): texts of clinics
    # with several numbers go through the service when TWILIO_MESSAGING_SERVICE_SID is set.
    # Unset, the service is held to one number's rate (the safe reading: never above what
    # Twilio was told).
    MESSAGING_SERVICE_RATE_PER_SECOND: float
    SEND_MAX_ATTEMPTS: int
    ONCALL_MAX_REPEATS: int
    BEAT_INTERVAL_SECONDS: float
    REDIS_KEY_PREFIX: str  # lets several deployments (or test runs) share one Redis database
    TWILIO_API_BASE: str | None  # a fake Twilio server for multi-process tests; never in production
    # Time limits of the database on the request path (service/store/session.py): a statement
    # and a row-lock wait (per transaction, in ms; 0 turns one off), and a pool checkout (s).
    DB_STATEMENT_TIMEOUT_MS: int
    DB_LOCK_TIMEOUT_MS: int
    DB_POOL_TIMEOUT_S: float
    # The connection overrides in the fragment of the webhook URLs set on the Twilio number
    # (e.g. "rc=3&rp=all"): the server never receives a fragment, but Twilio may sign the URL
    # with it, so signatures are checked with and without it (service/web/twilio/signature.py).
    TWILIO_URL_OVERRIDES: str | None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        """Read the environment, then apply overrides (typed values or strings) on top.

        Overrides are applied before derived defaults are computed, so overriding REDIS_URL
        also moves BROKER_URL, and overriding ENV moves SIMULATOR_ENABLED.
        """
        raw: dict[str, Any] = {}
        source = os.environ if environ is None else environ
        for name in ENV_VARS:
            value = source.get(name)
            if value is not None and value.strip() != "":
                raw[name] = value.strip()
        for name, value in (overrides or {}).items():
            if name in ENV_VARS:
                raw[name] = value

        env = _text(raw.get("ENV"))
        if env is None:
            raise ConfigError("ENV must be set: ENV=development on a laptop (scripts/start sets "
                              "it), ENV=production on a server")
        if env not in ENVIRONMENTS:
            raise ConfigError(f"ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
        production = env == "production"
        dry_run = _bool(raw, "DRY_RUN", default=False)
        if production:
            _check_production(raw, dry_run=dry_run)

        database_url = _text(raw.get("DATABASE_URL")) or default_database_url()

        redis_url = _text(raw.get("REDIS_URL"))
        broker_url = _text(raw.get("BROKER_URL")) or redis_url or "filesystem://"

        secret_key = _text(raw.get("SECRET_KEY"))
        if secret_key is None:
            secret_key = _development_secret_key()

        simulator = _bool(raw, "SIMULATOR_ENABLED", default=not production)
        if production and simulator:
            raise ConfigError("SIMULATOR_ENABLED must be off when ENV=production")

        send_rate = _number(raw, "SEND_RATE_PER_SECOND", float, 1.0, low=0.01)

        public_base_url = _text(raw.get("PUBLIC_BASE_URL"))
        if public_base_url is not None:
            # Signatures are computed on PUBLIC_BASE_URL + request path; avoid a double slash.
            public_base_url = public_base_url.rstrip("/")

        return cls(
            ENV=env,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            BROKER_URL=broker_url,
            BROKER_DIR=str(raw.get("BROKER_DIR") or VAR_DIR / "broker"),
            SPOOL_DIR=str(raw.get("SPOOL_DIR") or VAR_DIR / "spool"),
            TWILIO_ACCOUNT_SID=_text(raw.get("TWILIO_ACCOUNT_SID")),
            TWILIO_AUTH_TOKEN=_text(raw.get("TWILIO_AUTH_TOKEN")),
            TWILIO_FROM_NUMBER=_text(raw.get("TWILIO_FROM_NUMBER")),
            TWILIO_MESSAGING_SERVICE_SID=_text(raw.get("TWILIO_MESSAGING_SERVICE_SID")),
            PUBLIC_BASE_URL=public_base_url,
            SECRET_KEY=secret_key,
            SIMULATOR_ENABLED=simulator,
            LOG_LEVEL=(_text(raw.get("LOG_LEVEL")) or "INFO").upper(),
            SESSION_COOKIE_SECURE=_bool(raw, "SESSION_COOKIE_SECURE", default=production),
            SESSION_COOKIE_SAMESITE=_text(raw.get("SESSION_COOKIE_SAMESITE")) or "Lax",
            DRY_RUN=dry_run,
            STAFF_IDLE_MINUTES=_number(raw, "STAFF_IDLE_MINUTES", int, 30, low=1),
            TRUSTED_PROXIES=_number(raw, "TRUSTED_PROXIES", int, 0, low=0),
            SEND_RATE_PER_SECOND=send_rate,
            MESSAGING_SERVICE_RATE_PER_SECOND=_number(raw, "MESSAGING_SERVICE_RATE_PER_SECOND",
                                                      float, send_rate, low=0.01),
            SEND_MAX_ATTEMPTS=_number(raw, "SEND_MAX_ATTEMPTS", int, 6, low=1),
            ONCALL_MAX_REPEATS=_number(raw, "ONCALL_MAX_REPEATS", int, 4, low=0),
            BEAT_INTERVAL_SECONDS=_number(raw, "BEAT_INTERVAL_SECONDS", float, 60.0, low=0.5),
            REDIS_KEY_PREFIX=_text(raw.get("REDIS_KEY_PREFIX")) or "",
            TWILIO_API_BASE=None if production else _text(raw.get("TWILIO_API_BASE")),
            DB_STATEMENT_TIMEOUT_MS=_number(raw, "DB_STATEMENT_TIMEOUT_MS", int, 3000, low=0),
            DB_LOCK_TIMEOUT_MS=_number(raw, "DB_LOCK_TIMEOUT_MS", int, 2000, low=0),
            DB_POOL_TIMEOUT_S=_number(raw, "DB_POOL_TIMEOUT_S", float, 3.0, low=0.1),
            TWILIO_URL_OVERRIDES=(_text(raw.get("TWILIO_URL_OVERRIDES")) or "").lstrip("#")
            or None,
        )

    @property
    def production(self) -> bool:
        return self.ENV == "production"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENV_VARS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Config))

# What ENV=production refuses to start without (TWILIO_* unless DRY_RUN=1).
PRODUCTION_REQUIRED = ("SECRET_KEY", "PUBLIC_BASE_URL", "DATABASE_URL", "REDIS_URL",
                       "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")


def _check_production(raw: Mapping[str, Any], *, dry_run: bool) -> None:
    """Production fails closed: each missing variable is named, none is guessed."""
    for name in PRODUCTION_REQUIRED:
        if name.startswith("TWILIO_") and dry_run:
            continue
        if _text(raw.get(name)) is None:
            hint = " (or DRY_RUN=1 to run on purpose without sending anything)" \
                if name.startswith("TWILIO_") else ""
            raise ConfigError(f"{name} must be set when ENV=production{hint}")
    database = make_url_backend(_text(raw.get("DATABASE_URL")) or "")
    if database != "postgresql":
        raise ConfigError("DATABASE_URL must be a PostgreSQL URL (postgresql://...) when "
                          "ENV=production")
    if not (_text(raw.get("PUBLIC_BASE_URL")) or "").startswith("https://"):
        raise ConfigError("PUBLIC_BASE_URL must be the https:// address Twilio and staff "
                          "reach when ENV=production")


def make_url_backend(url: str) -> str:
    """'postgresql', 'sqlite', ... : the scheme of a database URL before any +driver."""
    scheme = url.partition("://")[0].partition("+")[0].lower()
    return "postgresql" if scheme in ("postgres", "postgresql") else scheme


def load_config(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The app configuration as a dict: environment, then overrides.

    Override keys that are not configuration variables (TESTING, WTF_CSRF_ENABLED, ...) are
    passed through unchanged.
    """
    config = Config.from_env(environ, overrides).as_dict()
    for name, value in (overrides or {}).items():
        if name not in ENV_VARS:
            config[name] = value
    return config


def default_database_url() -> str:
    """A SQLite file under var/ in the project (the directory is created)."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{VAR_DIR / 'triage.db'}"


def database_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """DATABASE_URL alone, for tools (migrations) that need nothing else to be configured."""
    source = os.environ if environ is None else environ
    return _text(source.get("DATABASE_URL")) or default_database_url()


def _development_secret_key() -> str:
    global _dev_secret_key
    if _dev_secret_key is None:
        _dev_secret_key = secrets.token_hex(32)
    return _dev_secret_key


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(raw: Mapping[str, Any], name: str, kind: type, default: Any, *, low: float) -> Any:
    value = raw.get(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if number < low:
        raise ConfigError(f"{name} must be at least {low}, not {value!r}")
    return number


def _bool(raw: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


STATUS_CALLBACK_PATH = "/twilio/status"


def status_callback_url(base_url: str | None, **query: Any) -> str | None:
    """Where Twilio posts a message's or a call's status: `base_url` (PUBLIC_BASE_URL, what
    Twilio reaches) + /twilio/status, with `query` (e.g. the call's id); None without a base."""
    if not base_url:
        return None
    tail = urlencode(query)
    return base_url.rstrip("/") + STATUS_CALLBACK_PATH + (f"?{tail}" if tail else "")
