#!/usr/bin/env bash
# `make test`: install everything the suite needs, start the services, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${VENV:-.venv}

if [ ! -f "$venv/.installed-test" ] || [ pyproject.toml -nt "$venv/.installed-test" ]; then
  bash infra/venv.sh "$python" "$venv" test
  touch "$venv/.installed-test" "$venv/.installed-runtime"
fi
eval "$(bash infra/services.sh)"
"$venv/bin/ruff" check tracker telephony widget dashboard tests
exec "$venv/bin/pytest" -q -p no:cacheprovider "$@"
