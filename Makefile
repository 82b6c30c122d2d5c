# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test lint format bench bench-audit soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@# PostgreSQL with two roles: the migration role creates the runtime role (DATABASE_URL's).
	@if [ -n "$$MIGRATION_DATABASE_URL" ]; then $(BIN)/python manage.py db_roles --execute; fi
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py first_run
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	PORT=$(PORT) $(BIN)/python manage.py serve

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	@# pytest exits 5 when it collected nothing: say so, and stay red.
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; fi; \
	  exit $$rc

# Not part of `make test`: needs wrk (apt-get install -y wrk), optionally node.
# BENCH_ARGS="--only portal --concurrency 16 --duration 3" for a quick point.
bench: $(VENV)/.installed-run
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Audit export rate, peak memory and audit_record cost on PostgreSQL (not a test; minutes of CPU).
AUDIT_BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mip_audit_bench
AUDIT_BENCH_EVENTS ?= 1000000
bench-audit: $(VENV)/.installed-dev
	DATABASE_URL=$(AUDIT_BENCH_DATABASE_URL) $(BIN)/python bench/audit_bench.py --events $(AUDIT_BENCH_EVENTS)

# The soak (not part of `make test`; README "When a dependency fails"): web, worker with
# beat, PostgreSQL and two redis-servers of its own, SOAK_RATE tokens/s for SOAK_DURATION
# seconds with the faults of tests/faults injected in turn; report under var/soak/.
SOAK_RATE ?= 100
SOAK_DURATION ?= 600
SOAK_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mip_soak
soak: $(VENV)/.installed-run
	SOAK_DATABASE_URL=$(SOAK_DATABASE_URL) $(BIN)/python -m bench.soak --rate $(SOAK_RATE) --duration $(SOAK_DURATION) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var
