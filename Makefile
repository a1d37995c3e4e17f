# Switchboard: `make run` starts the embedded default, `make test` runs the whole suite.
# Both set up what they need first: Python packages from the lock file (with uv), the socket.io
# browser client from npm's lock file, and (for tests, as root) Debian's redis-server and chromium.

PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
PYTEST_ARGS ?=
SIMULATOR_PORT ?= 9100

.DEFAULT_GOAL := help
.PHONY: help setup python bytecode web system-deps run run-simulated cluster certs test test-stressed fuzz faults lint typecheck bench clean

help:
	@echo "make run    start everything in one process at https://localhost:8443"
	@echo "make run-simulated   the same, with the ticker fed by a local Bitstamp simulator"
	@echo "make cluster   the deployment's topology without Docker: nginx, Redis, 2 replicas each, coturn"
	@echo "make certs  a self-signed certificate in gateway/certs, for docker compose"
	@echo "make test   run the whole test suite (installs what it needs)"
	@echo "make test-stressed   the same, with one busy process per core competing for the CPU"
	@echo "make lint   ruff and mypy"
	@echo "make bench  benchmarks (see docs/benchmarks.md)"
	@echo "make fuzz   the packet fuzzer's long run: FUZZ_FRAMES (100000) frames a namespace"
	@echo "make faults the rolling restart's long run: FAULT_ROUNDS (10) rounds of all eight replicas"

setup: python web

python: .venv/.synced

.venv/.synced: pyproject.toml uv.lock */pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	@scripts/system-deps.sh build
	$(UV) sync --frozen
	@touch $@

# Compiled modules, cached: the environment may set PYTHONDONTWRITEBYTECODE, and then every
# service a test starts compiles fastapi, pydantic and socket.io anew (an import of the chat
# service: 2.9 s uncompiled, 1.2 s cached). Up-to-date files are skipped (2 s for all).
BYTECODE_DIRS = .venv/lib switchboard/src chat-service/src cursor-service/src \
	signalling-service/src ticker-service/src
bytecode: python
	@.venv/bin/python -m compileall -q -j0 $(BYTECODE_DIRS)

web: web/vendor/socket.io.esm.min.js

web/vendor/socket.io.esm.min.js: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	mkdir -p web/vendor
	cp web/node_modules/socket.io-client/dist/socket.io.esm.min.js web/vendor/

system-deps:
	@scripts/system-deps.sh

run: setup
	$(UV) run --frozen python -m switchboard.embedded

# The docker compose topology on this machine (scripts/cluster.sh; Ctrl-C stops it all).
cluster: setup
	@scripts/system-deps.sh cluster
	@scripts/cluster.sh

# A self-signed certificate for docker compose's gateway (CERTS_DIR in .env).
certs: python
	.venv/bin/python -m switchboard.certs gateway/certs

# For demos without internet: the simulator on a local port, and the ticker pointed at it.
run-simulated: setup
	@.venv/bin/python -m ticker_service.simulator --port $(SIMULATOR_PORT) & simulator=$$!; \
	trap 'kill $$simulator 2>/dev/null' EXIT INT TERM; \
	TICKER_UPSTREAM_URL=ws://127.0.0.1:$(SIMULATOR_PORT) \
	TICKER_REST_URL=http://127.0.0.1:$(SIMULATOR_PORT) \
	.venv/bin/python -m switchboard.embedded

test: setup system-deps bytecode
	$(UV) run --frozen pytest $(PYTEST_ARGS)

# The suite as a busy machine runs it: stress-ng keeps one busy process per core for as long as
# the tests run (and stops by itself after STRESS_SECONDS if it is left behind). No test may
# depend on how fast or idle the machine is; this is how that is checked.
STRESS_SECONDS ?= 3600
test-stressed: setup bytecode
	@scripts/system-deps.sh stressed
	@stress-ng --cpu "$$(nproc)" --timeout $(STRESS_SECONDS)s --quiet & load=$$!; \
	trap 'kill $$load 2>/dev/null; wait $$load 2>/dev/null' EXIT INT TERM; \
	echo "stress-ng: $$(nproc) busy processes (pid $$load)"; \
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: python
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

# The packet fuzzer's long run (by hand): FUZZ_FRAMES random frames to every namespace of every
# service (make test sends 300); FUZZ_SEED picks the frames. See tests/foundation/test_fuzz.py.
FUZZ_FRAMES ?= 100000
FUZZ_SEED ?= 12
fuzz: setup system-deps
	FUZZ_FRAMES=$(FUZZ_FRAMES) FUZZ_SEED=$(FUZZ_SEED) $(UV) run --frozen pytest -s \
		-o addopts="" --timeout=0 tests/foundation/test_fuzz.py

# The rolling restart's long run (by hand): FAULT_ROUNDS rounds of restarting all eight
# replicas behind the gateway while every app is in use (make test does 1). docs/faults.md.
FAULT_ROUNDS ?= 10
FAULT_RECONNECTS ?= 100
faults: setup system-deps
	FAULT_ROUNDS=$(FAULT_ROUNDS) FAULT_RECONNECTS=$(FAULT_RECONNECTS) \
		$(UV) run --frozen pytest -s -o addopts="" --timeout=0 \
		tests/faults/test_rolling_cluster.py tests/faults/test_pubsub.py

bench: setup system-deps
	$(UV) run --frozen python bench/chat_fanout.py

clean:
	rm -rf .venv web/node_modules web/vendor .pytest_cache .mypy_cache .ruff_cache
