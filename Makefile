# Two commands for a newcomer (see README.md): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8080

.PHONY: run test lint snippet bench-collect clean

$(VENV)/.installed-runtime: pyproject.toml
	bash infra/venv.sh $(PYTHON) $(VENV) runtime
	touch $@

$(VENV)/.installed-test: pyproject.toml
	bash infra/venv.sh $(PYTHON) $(VENV) test
	touch $@ $(VENV)/.installed-runtime

## Set up and run the service on the embedded default (SQLite, in-process, simulated carrier).
run: $(VENV)/.installed-runtime
	$(VENV)/bin/calltrack demo --host 127.0.0.1 --port $(PORT)

## Install what the tests need (Chromium, PostgreSQL, Redis), start them, run the whole suite.
test:
	bash infra/test.sh

## Rebuild widget/static/calltrack.min.js (what the server sends) after editing calltrack.js.
snippet:
	bash infra/build-snippet.sh

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check tracker telephony widget dashboard tests
	$(VENV)/bin/ruff format --check tracker telephony widget dashboard tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
