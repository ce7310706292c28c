#!/usr/bin/env bash
# Make sure Debian's Chromium, PostgreSQL and Redis are installed and running (idempotent).
# Prints the environment the test suite needs (source it: `eval "$(bash infra/services.sh)"`).
set -euo pipefail
log() { echo "[services] $*" >&2; }

need=()
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
# The Twilio contract tests run Prism (npm @stoplight/prism-cli, pinned in infra/twilio-mock).
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian's packages"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# PostgreSQL: start the cluster if it is not answering.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }

pg_url="postgresql://postgres@127.0.0.1:5432/test"
if ! psql "$pg_url" -Atqc 'select 1' >/dev/null 2>&1; then
  # A fresh Debian cluster allows only peer auth locally and passwords over TCP:
  # give the postgres role a password (test machines only) and create the test database.
  log "configuring PostgreSQL for the tests (role password, database test)"
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
  su postgres -c "psql -Atqc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 ||
    su postgres -c "createdb test" >&2
  pg_url="postgresql://postgres:postgres@127.0.0.1:5432/test"
  psql "$pg_url" -Atqc 'select 1' >/dev/null
fi

# Redis: start it if it is not answering (nothing kept on disk; tests use their own prefixes).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis did not start"; exit 1; }

echo "export CALLTRACK_TEST_POSTGRES_URL='$pg_url'"
echo "export CALLTRACK_TEST_REDIS_URL='redis://127.0.0.1:6379/0'"
