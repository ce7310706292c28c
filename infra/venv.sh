#!/usr/bin/env bash
# Create the virtualenv and install Calltrack into it: `runtime` or `test` extras.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
profile=${3:-runtime}

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "Calltrack needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    if command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    fi
    "$python" -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install -q --upgrade pip
if [ "$profile" = test ]; then
  "$venv/bin/python" -m pip install -q -e '.[test]'
else
  "$venv/bin/python" -m pip install -q -e .
fi
