#!/usr/bin/env bash
# Makes sure the services the tests talk to are up: PostgreSQL and Redis on 127.0.0.1, and
# Debian's Chromium for the browser tests. Starts them, or installs them as root on Debian,
# or stops with a message naming what to install.
set -euo pipefail
as_root() { [ "$(id -u)" = 0 ]; }
have_apt() { command -v apt-get >/dev/null; }
apt_updated=""
apt_install() {
  if ! as_root || ! have_apt; then
    echo "error: please install $* (Debian/Ubuntu: sudo apt-get install -y $*)" >&2
    exit 1
  fi
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  echo "==> installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  for _ in $(seq 30); do pg_up && break; sleep 1; done
  pg_up || { echo "error: PostgreSQL is not accepting connections on 127.0.0.1:5432" >&2; exit 1; }
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  echo "error: cannot connect as user postgres to 127.0.0.1:5432 without a password (trust auth is expected for tests)" >&2
  exit 1
fi
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server
  echo "==> starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 20); do redis_up && break; sleep 0.5; done
  redis_up || { echo "error: Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi
command -v redis-server >/dev/null || apt_install redis-server
[ -x /usr/bin/chromium ] || apt_install chromium
command -v wrk >/dev/null || apt_install wrk || true
