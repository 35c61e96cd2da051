# The two commands: `make run` and `make test`. Everything else here serves them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEV    := .dev
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# Development defaults: a local secret generated on first use, SQLite files in instance/, echo AI.
export JWT_SECRET ?= $(shell cat $(DEV)/jwt_secret 2>/dev/null)
export AI_PROVIDER ?= echo
export CONVERSATION_SERVICE_URL ?= http://127.0.0.1:5002

.PHONY: help install run migrate token test lint format clean

help: ## what each target does
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 20

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) ## the virtual environment in .venv, with the dev tools

$(DEV)/jwt_secret:
	mkdir -p $(DEV)
	$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(48))" > $@
	chmod 600 $@
	@echo "Generated a local development JWT secret in $@ (git-ignored)."

# Databases: CHAT_DATABASE_URL / CONVERSATION_DATABASE_URL (or one DATABASE_URL for both), else SQLite in
# instance/; REDIS_URL when set (docs/running.md). Migrations need no secret, only the database URL.
migrate: install ## both services' databases to their newest migration
	$(BIN)/flask --app chat_service db upgrade
	$(BIN)/flask --app conversation_service db upgrade

run: migrate $(DEV)/jwt_secret ## both services on 127.0.0.1 (5001, 5002), the chat page at /chat
	@JWT_SECRET=$$(cat $(DEV)/jwt_secret) BIN=$(BIN) scripts/run-dev

# make token USER=<user id>: a development token for that user, signed with the local secret.
ifeq ($(origin USER),command line)
TOKEN_USER := $(USER)
else
TOKEN_USER := 542738228948500480
endif
token: install $(DEV)/jwt_secret ## a development token: make token USER=<id>
	@JWT_SECRET=$$(cat $(DEV)/jwt_secret) $(BIN)/flask --app chat_service token $(TOKEN_USER)

# make test [PYTEST_WORKERS=N]: N processes (pytest-xdist; 0 runs in this one). Each has its own databases,
# servers and ports; most tests wait on sockets, so 4 on 2 cores is about four times as fast as 1.
PYTEST_WORKERS ?= 4
test: install ## the whole suite (SQLite; .ci/run adds PostgreSQL, MariaDB, Redis)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# make fuzz [FUZZ_MAX_EXAMPLES=N]: the fuzz tests with N examples per operation (random, unlike `make test`).
FUZZ_MAX_EXAMPLES ?= 500
.PHONY: fuzz
fuzz: install ## the fuzz tests with FUZZ_MAX_EXAMPLES examples per operation
	FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) $(BIN)/pytest -q tests/fuzz

# make bench: every benchmark in bench/ with its default arguments, one after the other; figures and
# the machine they were measured on in docs/benchmarks.md. rest_overhead uses wrk when installed.
.PHONY: bench
bench: install ## every benchmark in bench/, figures and MET/MISSED
	$(BIN)/python bench/ws_capacity.py --sockets 10000
	$(BIN)/python bench/relay_latency.py
	$(BIN)/python bench/turn_cpu.py --turns 100
	$(BIN)/python bench/turn_cpu.py --turns 20 --delay 0.002
	$(BIN)/python bench/send_floor.py
	$(BIN)/python bench/broadcast.py
	$(BIN)/python bench/redis_traffic.py
	$(BIN)/python bench/slow_consumer.py
	$(BIN)/python bench/rest_overhead.py
	$(BIN)/python bench/mixed_load.py
	$(BIN)/python bench/paging.py

lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff fix and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove .venv, instance/ and caches
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
