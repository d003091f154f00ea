# Marketplace — developer entry points. `make` (or `make help`) lists them.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Shared build cache outside the work tree, so fresh clones (CI) reuse the
# compiled dependencies instead of rebuilding them. Override as usual:
#   make test CARGO_TARGET_DIR=target
export CARGO_TARGET_DIR ?= $(HOME)/.cache/marketplace/target

# make's recipe shells are non-login shells; rustup's PATH may be missing.
CARGO_BIN := $(HOME)/.cargo/bin
ifeq ($(filter $(CARGO_BIN),$(subst :, ,$(PATH))),)
export PATH := $(PATH):$(CARGO_BIN)
endif

.PHONY: help up down restart status logs infra build test contracts bench load chaos fmt lint

help: ## List the targets
	@echo "usage: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN { FS = ":.*## " } { printf "  %-9s %s\n", $$1, $$2 }'

up: ## Start deps, build, run all services in the background, seed (REPLICAS=n: n of each)
	bash scripts/fleet.sh up

down: ## Stop the services (PostgreSQL/Redis/RabbitMQ keep running)
	bash scripts/fleet.sh down

restart: ## down, then up (picks up a new build)
	bash scripts/fleet.sh restart

status: ## Services and dependencies: state, pid, port, readiness
	bash scripts/fleet.sh status

# FLEET_STATE_DIR: the same override scripts/fleet.sh honours.
LOG_DIR = $${FLEET_STATE_DIR:-.local}/logs

logs: ## Follow all service logs
	@compgen -G "$(LOG_DIR)/*.log" >/dev/null || { echo "make: no logs in $(LOG_DIR) yet; run 'make up'" >&2; exit 1; }
	tail -f $(LOG_DIR)/*.log

infra: ## Install/start PostgreSQL, Redis, RabbitMQ; create the database
	bash scripts/infra.sh ensure

# release: what `make up` runs, quick to build (no LTO). dist: thin LTO, for images
# and benchmarks (make build PROFILE=dist; FLEET_PROFILE=dist make up).
PROFILE ?= release

build: ## Build the service binaries (PROFILE=release, or dist for thin LTO)
	cargo build --profile $(PROFILE) -p cart -p customer -p inventory -p notification -p order -p vendor --bins

# The tests log in as the project role, like the services (DATABASE_URL from
# .local/db.env unless set). With CI set: nextest's ci profile (no retries, no
# fail-fast, JUnit report, path printed at the end).
NEXTEST_PROFILE = $(if $(CI),ci,default)
JUNIT_PATH = $(CARGO_TARGET_DIR)/nextest/ci/junit.xml

test: ## Run the whole test suite with cargo-nextest (starts deps first)
	bash scripts/infra.sh ensure
	cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest
	if [[ -z $${DATABASE_URL:-} ]]; then export DATABASE_URL=$$(bash scripts/infra.sh database-url); fi; \
	status=0; cargo nextest run --workspace --profile $(NEXTEST_PROFILE) --no-fail-fast || status=$$?; \
	if [[ $(NEXTEST_PROFILE) == ci ]]; then echo "make: JUnit report: $(JUNIT_PATH)"; fi; \
	exit $$status
	bash scripts/test-deploy.sh
	bash scripts/test-proof.sh

contracts: ## Schemathesis contract tests against the running fleet (make up first)
	bash scripts/contracts.sh

# The full sizes: the catalog, reservation, hop and memory figures (bench.sh), the
# checkout saga at rising rates (bench-checkout.sh), then the shop mix with its
# invariants, pgbench and memory at peak (load.sh, LOAD_RATE shoppers/s for LOAD_SECONDS).
LOAD_RATE ?= 30
LOAD_SECONDS ?= 60

bench: ## Full-size figures against the running fleet: bench.sh, bench-checkout.sh, load.sh (make up first)
	bash scripts/bench.sh
	bash scripts/bench-checkout.sh
	bash scripts/load.sh --rate $(LOAD_RATE) --seconds $(LOAD_SECONDS)

load: ## Shop load + invariants + figures against the running fleet (scripts/load.sh)
	bash scripts/load.sh

chaos: ## Faults under load with REPLICAS (default 2) of each service; every invariant checked
	bash scripts/chaos.sh

fmt: ## Format the code
	cargo fmt --all

lint: ## Check formatting, run clippy with warnings as errors, check every service's layers
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-layers.py
