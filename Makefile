# deltawire — see README.md. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DELTAWIRE_CACHE ?= $(HOME)/.cache/deltawire

.PHONY: install run test test-fast bench bench-compare lint clean services-up services-down envsample fuzz soak web

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "make: installing deltawire and its Python dependencies into $(VENV) (once; a minute or more)" >&2
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

## run: the collector on the embedded SQLite store (ingest 127.0.0.1:7700, HTTP 127.0.0.1:8080)
run: install
	$(VENV)/bin/collector serve --log-level info

## test: everything, installing what it needs (redis-server, the MongoDB-compatible server),
## on PYTEST_WORKERS pytest-xdist workers (default: one a core and one more, see
## tests/conftest.py; 0 runs in this process), modules with slow tests handed out first.
## Each worker starts its own servers on free ports; a module's tests share a worker,
## so its module-scoped fixtures start once. Bytecode is compiled once up front and
## kept (even where PYTHONDONTWRITEBYTECODE is set): every worker and every collector,
## writer and agent process a test starts imports the same modules.
PYTEST_WORKERS ?= auto
test: install
	@bash deploy/install-test-deps.sh
	@$(PY) -m compileall -q -j 0 collector watchdog protocol deltawire tests >/dev/null
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

## bench: codec, ingest, agent and store benchmarks, printed beside their baselines
bench: install
	@bash deploy/install-test-deps.sh
	$(PY) -m bench $(BENCH_ARGS)

## bench-compare: make bench's figures on REF (default HEAD~1) and on this tree, side by
## side (python -m bench.compare --help); e.g. make bench-compare COMPARE_ARGS="--ref main --scale 0.1"
bench-compare: install
	@bash deploy/install-test-deps.sh
	$(PY) -m bench.compare $(COMPARE_ARGS)

## fuzz: every property test at its full count (make test caps them at
## HYPOTHESIS_MAX_EXAMPLES, default 50), the decoder and reassembler fuzzed for longer:
## hypothesis (FUZZ_EXAMPLES, default 5000 a property) and coverage-guided atheris
## (FUZZ_SECONDS, default 120)
fuzz: install
	$(PY) -m pip install -q atheris
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) -m "not slow"
	$(PY) -m bench.fuzz --seconds $${FUZZ_SECONDS:-120}

## soak: agents stream through collectors under kill -9, store, Redis and network faults;
## audits every acked sample; table in bench/results/soak.md (SOAK_SECONDS, default 150)
soak: install
	@bash deploy/install-test-deps.sh
	DELTAWIRE_SOAK=1 HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -s tests/collector/test_hostile.py
	$(PY) -m bench.soak --seconds $${SOAK_SECONDS:-150}

lint: install
	$(VENV)/bin/ruff check collector watchdog protocol deltawire tests bench
	$(VENV)/bin/ruff format --check collector watchdog protocol deltawire tests bench
	$(VENV)/bin/mypy

## web: rebuild the dashboard (frontend/ -> collector/api/static/, committed) with npm;
## static/index.html is the page's one source (web rewrites only its inline script).
## Only for changing the dashboard: running the collector needs neither Node nor npm.
web:
	cd frontend && npm ci --no-audit --no-fund && node build.mjs

envsample: install
	$(PY) -m deltawire.tools.envsample > .env.sample

services-up:
	bash deploy/dev-services.sh up

services-down:
	bash deploy/dev-services.sh down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info .run
