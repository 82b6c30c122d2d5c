# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test lint format bench bench-audit bench-console mutate soak clean

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
# Deployment mode by default (`manage.py serve`: web + Celery worker with beat), peers,
# a 100,000-machine fleet, JWKS and introspection; README "Benchmark" lists the options.
# BENCH_ARGS="--only portal --concurrency 16 --duration 5 --fleet 20000" for a quick point,
# BENCH_ARGS="--web-only" for the web server alone; BENCH_ARGS="--baseline REF ..." adds REF's
# portal (a temporary worktree, venv and database), in turns with this one (README "Benchmark").
# Then the metrics' CPU cost per token request (bench/metrics_cost.py; METRICS_COST_DATABASE_URL,
# else SQLite under var/bench/metrics-cost/).
bench: $(VENV)/.installed-run
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.metrics_cost $(METRICS_COST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Audit export rate, peak memory and audit_record cost on PostgreSQL (not a test; minutes of CPU).
AUDIT_BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mip_audit_bench
AUDIT_BENCH_EVENTS ?= 1000000
bench-audit: $(VENV)/.installed-dev
	DATABASE_URL=$(AUDIT_BENCH_DATABASE_URL) $(BIN)/python bench/audit_bench.py --events $(AUDIT_BENCH_EVENTS)

# Mutation testing of the verification modules (client authentication, token verification,
# keyring, audit chain and verifier) with mutmut, on SQLite: ~4,300 mutants, an hour or more on 2 cores.
# Each mutant runs only the tests that reach the mutated function. Prints the score per
# module and every surviving mutant (`.venv/bin/mutmut show NAME` shows its diff);
# docs/mutation.md explains the survivors that are equivalent. Not part of `make test`.
MUTATE_TARGETS ?= 'clients.authentication.*' 'clients.auth_methods.*' 'clients.credentials.*' \
	'clients.client_assertion.*' 'core.jose.*' \
	'core.client_address.*' 'tokens.key_material.*' 'tokens.keyring.*' \
	'tokens.selectors.x_token_verify__*' 'tokens.selectors.x__signature_verified__*' \
	'tokens.selectors.x_token_record_for__*' 'tokens.selectors.x_token_checksum__*' \
	'audit.chain.*' 'audit.selectors.x_audit_chain_verify__*' \
	'audit.selectors.x_audit_chain_anchor__*' 'audit.selectors.x_audit_chain_head__*'
MUTATE_CHILDREN ?= 2
mutate: $(VENV)/.installed-dev
	rm -rf mutants
	env -u DATABASE_URL -u REDIS_URL -u CACHE_URL -u CELERY_BROKER_URL -u REQUIRE_SERVICES \
	  $(BIN)/mutmut run --max-children $(MUTATE_CHILDREN) $(MUTATE_TARGETS) > mutants.log 2>&1 \
	  || { tail -50 mutants.log; exit 1; }
	@echo "Score per module:"
	@$(BIN)/mutmut results --all true | awk -F': ' '/: / && $$2 != "not checked" { \
	  name = $$1; sub(/^ +/, "", name); module = substr(name, 1, index(name, ".x") - 1); \
	  modules[module] = 1; count[module, $$2]++; total[$$2]++ } \
	  END { for (m in modules) printf "  %-24s killed %4d  survived %3d  timeout %3d  no tests %3d\n", \
	  m, count[m, "killed"], count[m, "survived"], count[m, "timeout"], count[m, "no tests"]; \
	  printf "  %-24s killed %4d  survived %3d  timeout %3d  no tests %3d\n", "all", \
	  total["killed"], total["survived"], total["timeout"], total["no tests"] }' | sort
	@echo "Surviving mutants:"
	@$(BIN)/mutmut results | grep -v ': not checked$$' || true

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

# The console's dashboard and audit log with ten million audit events (PostgreSQL, minutes of
# CPU to load; reruns reuse the loaded events). Not part of `make test`.
CONSOLE_BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mip_console_bench
CONSOLE_BENCH_EVENTS ?= 10000000
bench-console: $(VENV)/.installed-dev
	DATABASE_URL=$(CONSOLE_BENCH_DATABASE_URL) REDIS_URL= CACHE_URL= CELERY_BROKER_URL= \
	  $(BIN)/python bench/console_bench.py --events $(CONSOLE_BENCH_EVENTS)
