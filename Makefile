# Build, test and local services for exactly.
#
#   make test              vet + start services + unit tests + integration tests (what CI runs)
#   make unit              unit tests (race detector); Postgres tests skip if it is not up
#   make integration       integration tests against running services (fail if absent)
#   make bench             exactly against the alternatives, side by side (docs/PERFORMANCE.md);
#                          its own broker at 127.0.0.1:$(BENCH_KAFKA_PORT_BASE), never part of `make test`
#   make bench-go          the Go benchmarks (go test -bench) of every package
#   make services-up       PostgreSQL + single Kafka broker + 3-node Kafka cluster
#   make kafka-down pg-down
#   make availability      the stalls of issue 11 measured on its own 3-node Kafka cluster
#                          (never part of test); its last line is the summary
#   make chaos             the fault suite on its own 3-node Kafka cluster, on Kafka 4.1.2 and
#                          4.4.0 (`make integration` runs one short cell per fault type, on a
#                          cluster of its own at port base 9992)
#
# Variables already set in the environment win over the defaults below.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

GO ?= go
EXACTLY_KAFKA_BROKERS ?= 127.0.0.1:9092
EXACTLY_KAFKA_CLUSTER ?= 127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194
EXACTLY_PG_URL ?= postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable
EXACTLY_KAFKA_SCRIPT ?= $(CURDIR)/scripts/kafka.sh
INTEGRATION_TIMEOUT ?= 20m
INTEGRATION_FLAGS ?=
BENCH ?= .
BENCH_FLAGS ?=
# make bench: its own broker (ports and state apart from the test services),
# the shared Postgres (own schema exactly_bench), and the driver's flags.
BENCH_KAFKA_PORT_BASE ?= 9692
BENCH_STATE ?= /tmp/exactly-bench-kafka
BENCH_RECORDS ?= 1000000
BENCH_ROUNDS ?= 5
BENCH_ARGS ?=
BENCH_OUT ?= $(CURDIR)/integration/bench/out

# Environment for anything that talks to the services.
SERVICES_ENV = EXACTLY_KAFKA_BROKERS='$(EXACTLY_KAFKA_BROKERS)' \
	EXACTLY_KAFKA_CLUSTER='$(EXACTLY_KAFKA_CLUSTER)' \
	EXACTLY_PG_URL='$(EXACTLY_PG_URL)' \
	EXACTLY_KAFKA_SCRIPT='$(EXACTLY_KAFKA_SCRIPT)'


.PHONY: test vet unit integration bench bench-go bench-unit chaos availability \
	services-up services-down kafka-up kafka-cluster-up kafka-down pg-up pg-down

# Services start before the unit tests: the Postgres sink's tests in ./sinks
# and the ETL's Postgres mode need the database, and under `make test` a test
# whose service is missing fails instead of skipping.
test:
	$(MAKE) vet
	$(MAKE) services-up
	EXACTLY_REQUIRE_SERVICES=1 $(MAKE) unit
	$(MAKE) integration

vet:
	$(GO) vet ./...
	@out="$$(gofmt -l .)"; if [[ -n "$$out" ]]; then \
		echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Every package but ./integration/... (a failing `go list` fails the target).
unit:
	@all="$$($(GO) list ./...)"; pkgs="$$(grep -v '/integration' <<<"$$all" || true)"; \
	if [[ -z "$$pkgs" ]]; then echo "no unit-test packages"; exit 0; fi; \
	echo "$(GO) test -race -count=1 <$$(wc -l <<<"$$pkgs") packages, all but ./integration/...>"; \
	$(SERVICES_ENV) $(GO) test -race -count=1 -timeout 15m $$pkgs

integration:
	EXACTLY_REQUIRE_SERVICES=1 $(SERVICES_ENV) \
		$(GO) test -count=1 -timeout $(INTEGRATION_TIMEOUT) $(INTEGRATION_FLAGS) ./integration/...

# The side-by-side benchmark (integration/bench, its own Go module): starts its
# own broker (stopped again on exit, also on failure) and Postgres if needed,
# builds the Kafka Streams app with Maven, runs every contender in interleaved
# rounds and writes $(BENCH_OUT)/results.{md,json,png}. The last line of its
# output is the summary. Example: make bench BENCH_RECORDS=200000 BENCH_ROUNDS=3
bench:
	@bench_env=(EXACTLY_KAFKA_PORT_BASE=$(BENCH_KAFKA_PORT_BASE) EXACTLY_STATE=$(BENCH_STATE)); \
	trap 'env "$${bench_env[@]}" $(CURDIR)/scripts/kafka.sh down single >/dev/null 2>&1 || true; env "$${bench_env[@]}" $(CURDIR)/scripts/pg.sh down >/dev/null 2>&1 || true' EXIT; \
	trap 'exit 1' INT TERM HUP; \
	env "$${bench_env[@]}" $(CURDIR)/scripts/kafka.sh up >&2; \
	env "$${bench_env[@]}" $(CURDIR)/scripts/pg.sh up >&2; \
	mvn -q -B -f integration/bench/kstreams/pom.xml package dependency:copy-dependencies >&2; \
	cd integration/bench && $(GO) build -o $(BENCH_STATE)/bench . && \
	$(BENCH_STATE)/bench -brokers 127.0.0.1:$(BENCH_KAFKA_PORT_BASE) -pg '$(EXACTLY_PG_URL)' \
		-records $(BENCH_RECORDS) -rounds $(BENCH_ROUNDS) -out '$(BENCH_OUT)' \
		-broker-pid $(BENCH_STATE)/single/pid $(BENCH_ARGS)

# The unit tests of the benchmark's driver (stats, table, last line).
bench-unit:
	cd integration/bench && $(GO) vet ./... && $(GO) test -count=1 ./...

# Go benchmarks everywhere; those under ./integration/ use the services if they
# run and skip otherwise. Example: make bench-go BENCH=Pipeline BENCH_FLAGS=-benchtime=5s
bench-go:
	$(SERVICES_ENV) $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem $(BENCH_FLAGS) ./...

# The fault suite (integration/chaos): workers as OS processes, real faults,
# on its own 3-node cluster (EXACTLY_CHAOS_PORT_BASE 9392: brokers 9492-9494,
# controllers 9592-9594, state EXACTLY_CHAOS_STATE), one per Kafka version of
# -versions (default 4.1.2,4.4.0) in turn, each stopped after its cells.
# Postgres mode uses the schema "chaos" of EXACTLY_PG_URL; when that is the
# machine's own server (127.0.0.1:5432) and CHAOS_FLAGS has no -pg=, the target
# starts it if it is stopped (scripts/pg.sh up, root, installs it if missing)
# and stops it at the end only if it started it. The last line is the summary.
# CHAOS_FLAGS is passed to the driver as written, split on spaces (no shell or
# make quoting needed): make chaos CHAOS_FLAGS='-cells ^(pg-)?zombie$ -versions 4.4.0'
CHAOS_FLAGS ?=
override CHAOS_FLAGS := $(value CHAOS_FLAGS)
export CHAOS_FLAGS
CHAOS_STATE ?= $(or $(EXACTLY_CHAOS_STATE),/tmp/exactly-chaos)
chaos:
	@trap 'EXACTLY_STATE=$(CHAOS_STATE) $(CURDIR)/scripts/pg.sh down >/dev/null 2>&1 || true' EXIT; \
	trap 'exit 1' INT TERM HUP; \
	read -ra flags <<<"$$CHAOS_FLAGS" || true; \
	if [[ '$(EXACTLY_PG_URL)' == *@127.0.0.1:5432/* && " $$CHAOS_FLAGS " != *" -pg="* ]]; then \
		EXACTLY_STATE=$(CHAOS_STATE) $(CURDIR)/scripts/pg.sh up >/dev/null; fi; \
	mkdir -p $(CHAOS_STATE) && $(GO) build -o $(CHAOS_STATE)/driver ./integration/chaos/driver; \
	EXACTLY_PG_URL='$(EXACTLY_PG_URL)' EXACTLY_CHAOS_STATE='$(CHAOS_STATE)' $(CHAOS_STATE)/driver "$${flags[@]}"

# The availability measurement (integration/availability, docs/RELIABILITY.md):
# worker processes on its own 3-node cluster (AVAILABILITY_PORT_BASE: brokers
# base+100..102, controllers base+200..202, state AVAILABILITY_STATE), started
# and stopped by the tool; the trap stops it also if the tool dies. Exits 1 if
# a target of issue 11 is missed (AVAILABILITY_FLAGS=-no-fail only reports).
# AVAILABILITY_FLAGS is passed as written, split on spaces (like CHAOS_FLAGS):
# make availability AVAILABILITY_FLAGS='-no-fail -scenarios ^(restart|failover)$'
AVAILABILITY_PORT_BASE ?= 9792
AVAILABILITY_STATE ?= /tmp/exactly-availability
AVAILABILITY_FLAGS ?=
override AVAILABILITY_FLAGS := $(value AVAILABILITY_FLAGS)
export AVAILABILITY_FLAGS
availability:
	@avail_env=(EXACTLY_KAFKA_PORT_BASE=$(AVAILABILITY_PORT_BASE) EXACTLY_STATE=$(AVAILABILITY_STATE)); \
	trap 'env "$${avail_env[@]}" $(CURDIR)/scripts/kafka.sh down cluster >/dev/null 2>&1 || true' EXIT; \
	trap 'exit 1' INT TERM HUP; \
	read -ra flags <<<"$$AVAILABILITY_FLAGS" || true; \
	mkdir -p $(AVAILABILITY_STATE) && $(GO) build -o $(AVAILABILITY_STATE)/availability ./integration/availability && \
	$(AVAILABILITY_STATE)/availability -port-base $(AVAILABILITY_PORT_BASE) -state $(AVAILABILITY_STATE) "$${flags[@]}"

services-up:
	$(MAKE) pg-up
	$(MAKE) kafka-up
	$(MAKE) kafka-cluster-up

services-down:
	$(MAKE) kafka-down
	$(MAKE) pg-down

kafka-up:
	scripts/kafka.sh up

kafka-cluster-up:
	scripts/kafka.sh cluster-up

kafka-down:
	scripts/kafka.sh down

pg-up:
	scripts/pg.sh up

pg-down:
	scripts/pg.sh down
