# Liaison: every install step lives here, so a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JARS   := .cache/kafka/jars
AGENTS := .cache/kafka/agents
KAFKA_STAMP := .cache/kafka/.copied
JMX_AGENT := jmx_prometheus_javaagent

.PHONY: setup kafka prereqs prereqs-prometheus test unit integration contract lint typecheck up down status demo bench bench-scale bench-audit soak clean

setup: $(STAMP)   ## the project and its dev tools in .venv/ (editable)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

prereqs:          ## Java 17+ and Maven, from Debian's packages when missing
	@command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 || { \
	  echo "installing Java and Maven (apt-get)"; \
	  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null; }

prereqs-prometheus:   ## promtool, which checks and unit-tests deploy/prometheus/, from Debian's package when missing
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Prometheus for its promtool (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

kafka: $(KAFKA_STAMP)   ## the broker's jars and the JMX exporter's agent from Maven Central, copied once

# The agent goes to a folder of its own, off the broker's classpath, under a name without its version.
$(KAFKA_STAMP): deploy/kafka/pom.xml | prereqs
	rm -rf $(JARS) $(AGENTS)
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
	    -DoutputDirectory=$(abspath $(JARS)) -DincludeScope=runtime -DexcludeArtifactIds=$(JMX_AGENT)
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
	    -DoutputDirectory=$(abspath $(AGENTS)) -DincludeArtifactIds=$(JMX_AGENT) -Dmdep.stripVersion=true
	@touch $@

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

unit: setup prereqs-prometheus
	$(PY) -m pytest tests/unit

test: setup kafka prereqs-prometheus lint typecheck   ## ruff, mypy, and every test (a real broker is started by the suite)
	$(PY) -m pytest

up: setup kafka   ## the broker and every bus service, in the background
	$(BIN)/liaison up

down: setup
	$(BIN)/liaison down

status: setup
	$(BIN)/liaison status

demo: setup kafka
	$(BIN)/liaison demo

bench: setup kafka
	$(PY) -m tests.bench.router
	$(PY) -m tests.bench.security
	$(PY) -m tests.bench.secured_router

AUDIT_RECORDS ?= 1000000

bench-audit: setup kafka   ## `liaison case` / `trace` on AUDIT_RECORDS audit records: index, --since, full scan; not part of `make test`
	AUDIT_RECORDS=$(AUDIT_RECORDS) $(PY) -m tests.bench.audit

bench-scale: setup kafka   ## 1,000 agencies on one secured broker (SCALE_AGENCIES, SCALE_MESSAGES); not part of `make test`
	$(PY) -m tests.bench.scale

soak: setup kafka   ## faults at random on a three-node cluster under load for SOAK_MINUTES (default 10); not part of `make test`
	$(PY) -m tests.bench.soak

clean: down
	rm -rf .run
