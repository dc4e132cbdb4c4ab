# Cassandra Security Manager: developer entry points (GNU make).
# Needs only Python 3.11 on a Debian machine; every target sets up what it needs and is safe to re-run.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

CSM_DATA_DIR ?= ./.csm-data
CSM_HOST ?= 127.0.0.1
CSM_PORT ?= 8000
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not slow' -x"`.
PYTEST_ARGS ?=
# The suite is safe under pytest-xdist (every test has its own data dir and random ports). Two workers per CPU: a
# test often waits (on a server it started, a subprocess, a poll), and with one per CPU the suite kept about one of
# two cores busy. On 2 cores: 16 min with 4 workers (and the bytecode below); 22-30 min before, with 2 and without.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))
# Work stealing: a worker that runs out takes tests queued on a busy one, so the suite's tail (a few 20-30 s tests)
# does not leave workers idle. The same clone, idle machine, back to back: 10 min 51 s of pytest with the default
# `load` distribution, 10 min 12 s with `worksteal` (2026-12-08, one run each).
PYTEST_DIST ?= worksteal
# Extra `python -m bench` arguments, e.g. `make bench BENCH_ARGS="--only http"`.
BENCH_ARGS ?=

# Debian packages the suite's fixtures need, as package:command pairs; a package is installed only when its
# command is missing. Append here as fixtures appear, e.g. redis-server:redis-server slapd:slapd
# softhsm2:softhsm2-util openssh-server:sshd default-jre-headless:keytool golang-cfssl:cfssl wrk:wrk
# A name ending in .so is a loadable module, and one ending in .py a Python module file, looked for under /usr/lib
# (rsyslog-gnutls: rsyslogd's TLS driver; rsyslog-relp: its RELP input imrelp, for the RELP forwarding tests;
# python3-certbot-dns-rfc2136: certbot's --dns-rfc2136 plugin).
# knot: Knot DNS, the authoritative server (RFC 2136 updates with TSIG) that the ACME dns-01 tests start on loopback.
# chromium: the browser UI's tests (tests/e2e/test_ui*.py) drive Debian's Chromium through the playwright package,
# never a browser Playwright downloads.
# prometheus: promtool checks and unit-tests deploy/prometheus/csm-rules.yml, and the server scrapes a real csm serve
# in tests/e2e/test_monitoring.py (installed without its recommended node exporter: --no-install-recommends).
APT_PACKAGES := \
	openssl:openssl \
	sqlite3:sqlite3 \
	default-jre-headless:keytool \
	time:/usr/bin/time \
	slapd:slapd \
	ldap-utils:ldapadd \
	redis-server:redis-server \
	openssh-server:sshd \
	openssh-client:ssh \
	softhsm2:softhsm2-util \
	chromium:chromium \
	certbot:certbot \
	python3-certbot-dns-rfc2136:dns_rfc2136.py \
	lego:lego \
	knot:knotd \
	rsyslog:rsyslogd \
	rsyslog-gnutls:lmnsd_gtls.so \
	rsyslog-relp:imrelp.so \
	prometheus:promtool
# Only `make bench` needs these (the HTTP comparison against cfssl, driven by wrk); installed when missing.
BENCH_APT_PACKAGES := \
	golang-cfssl:cfssl \
	wrk:wrk \
	time:/usr/bin/time
# Packages whose install starts a system daemon, as package:service pairs (slapd on :389 of every interface, redis
# on :6379, sshd on :22, prometheus on :9090). The fixtures start their own on loopback with random ports, so sysdeps
# stops and disables the ones it has just installed (and only those: an sshd that was there before is left alone).
# rsyslog: the system logger on /dev/log (the syslog tests start their own rsyslogd on loopback). knot: knotd on :53.
APT_DAEMONS := slapd:slapd redis-server:redis-server openssh-server:ssh rsyslog:rsyslog prometheus:prometheus \
	knot:knot
# `python3 -m venv` needs ensurepip, which Debian ships separately.
VENV_PACKAGE := $(notdir $(PYTHON))-venv

.PHONY: help setup sysdeps bench-sysdeps bytecode run test bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

sysdeps: ## install missing Debian packages (apt-get; sudo only when not root)
	@missing=""; \
	for entry in $(APT_PACKAGES); do \
	  package="$${entry%%:*}"; cmd="$${entry#*:}"; \
	  case "$$cmd" in \
	    *.so|*.py) [ -n "$$(find /usr/lib -name "$$cmd" -print -quit 2>/dev/null)" ] || missing="$$missing $$package";; \
	    *) command -v "$$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$$cmd" ] || [ -x "/sbin/$$cmd" ] \
	         || missing="$$missing $$package";; \
	  esac; \
	done; \
	if [ ! -x "$(BIN)/python" ] && ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
	  missing="$$missing $(VENV_PACKAGE)"; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "warning: apt-get is not available; install these yourself:$$missing (tests that need them skip)" >&2; \
	  exit 0; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "warning: not root and no sudo; install these yourself:$$missing (tests that need them skip)" >&2; \
	  exit 0; fi; \
	echo "installing Debian packages:$$missing"; \
	$$sudo apt-get update -q && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing && \
	for entry in $(APT_DAEMONS); do \
	  package="$${entry%%:*}"; daemon="$${entry#*:}"; \
	  case " $$missing " in *" $$package "*) \
	    $$sudo systemctl disable --now "$$daemon.socket" >/dev/null 2>&1; \
	    $$sudo systemctl disable --now "$$daemon" >/dev/null 2>&1 \
	      || $$sudo service "$$daemon" stop >/dev/null 2>&1 || true;; \
	  esac; \
	done

$(BIN)/python: | sysdeps
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[test]'
	@touch $@

setup: sysdeps $(STAMP) ## create .venv and install the project (only when pyproject.toml changed)

# The project's bytecode, written here once and again only for changed files: where PYTHONDONTWRITEBYTECODE is set
# (as in this project's CI container) nothing else writes it, and every `csm` process (the CLI, `csm serve` and its
# workers, and each of the hundreds the suite starts) compiled the project's ~270 modules from source again: about
# 0.6 s of CPU at every start, more than the rest of the CLI's start-up.
bytecode: setup
	@$(BIN)/python -m compileall -q -j 0 domain commands projections api infra cli bench

run: bytecode ## initialise the data dir and serve the API on 127.0.0.1:8000
	$(BIN)/csm --data-dir "$(CSM_DATA_DIR)" init
	@echo
	@echo "first sign-in (in another terminal), either an API key:"
	@echo "  TOKEN=\$$($(BIN)/csm $(if $(filter ./.csm-data,$(CSM_DATA_DIR)),,--data-dir $(CSM_DATA_DIR) )admin create-token --name me)"
	@echo "or a user and POST /v1/auth/token (a platform-admin's first token only enrolls TOTP: POST /v1/auth/totp):"
	@echo "  $(BIN)/csm $(if $(filter ./.csm-data,$(CSM_DATA_DIR)),,--data-dir $(CSM_DATA_DIR) )user create admin --role platform-admin --password-file F"
	@echo "  curl -d grant_type=password -d username=admin --data-urlencode \"password=\$$(head -n1 F)\" http://$(CSM_HOST):$(CSM_PORT)/v1/auth/token"
	@echo
	@echo "or open the browser UI (admin dashboard, developer portal): http://$(CSM_HOST):$(CSM_PORT)/ui/"
	@echo
	$(BIN)/csm --data-dir "$(CSM_DATA_DIR)" serve --host "$(CSM_HOST)" --port "$(CSM_PORT)"

test: bytecode ## check the import layers and ruff's checks, then run the whole test suite (its 25 slowest tests listed last)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/pytest -p no:cacheprovider --durations=25 $(if $(PYTEST_WORKERS),-n $(PYTEST_WORKERS) --dist $(PYTEST_DIST)) $(PYTEST_ARGS)

bench-sysdeps: # the Debian packages only the benchmarks need (cfssl, wrk), through the sysdeps recipe
	@$(MAKE) --no-print-directory sysdeps APT_PACKAGES="$(BENCH_APT_PACKAGES)" APT_DAEMONS=

bench: bytecode bench-sysdeps ## run the benchmarks (1M-event store, issuance, wrk vs cfssl) into docs/benchmarks.md
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: setup ## import layers and ruff (pyproject.toml's [tool.ruff])
	$(BIN)/lint-imports
	$(BIN)/ruff check .

clean: ## remove the install stamp and caches (never the data dir)
	rm -f $(STAMP)
	rm -rf .pytest_cache .import_linter_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
