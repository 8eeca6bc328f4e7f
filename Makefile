# Gekko platform: `make deploy` stands the stack up on the local inventory, `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INVENTORY ?= inventories/local
ANSIBLE_ARGS ?=
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)

.PHONY: help setup engine deploy drift deploy-runner deployed-checks checks-then-molecule late-beside-lab teardown test checks lint sanity unit integration coverage molecule e2e bench clean lab lab-down lab-test dashboards

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deploy: setup ## Deploy the platform (INVENTORY=inventories/local, ANSIBLE_ARGS=...)
	$(BIN)/ansible-playbook playbooks/deploy.yml -i $(INVENTORY) $(ANSIBLE_ARGS)

# The same deploy through ansible-runner, as CI runs it: events, stdout and the status of each
# run land in .build/runner/artifacts/<uuid>/ (the deploy summary report stays in .build/reports).
deploy-runner: $(VENV)/.test collections/ansible_collections/gekko/platform ## Deploy through ansible-runner
	mkdir -p .build/runner
	$(BIN)/ansible-runner run $(CURDIR)/.build/runner --project-dir $(CURDIR) \
	  -p playbooks/deploy.yml --inventory $(CURDIR)/$(INVENTORY) --rotate-artifacts 10

drift: setup ## Report what was changed outside Ansible, changing nothing (deploy.yml --check --diff)
	$(BIN)/ansible-playbook playbooks/deploy.yml -i $(INVENTORY) --check --diff $(ANSIBLE_ARGS)

teardown: setup ## Remove the containers, keep the data (ANSIBLE_ARGS="-e gekko_purge_data=true" deletes it)
	$(BIN)/ansible-playbook playbooks/teardown.yml -i $(INVENTORY) $(ANSIBLE_ARGS)

setup: $(VENV)/.controller collections/ansible_collections/gekko/platform ## Controller virtualenv and collections

$(VENV)/.controller: requirements/controller.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required on the controller"'
	$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PIP) -r requirements/controller.txt
	touch $@

# The repository is the gekko.platform collection: make it resolvable under collections_path.
collections/ansible_collections/gekko/platform:
	mkdir -p $(@D)
	ln -sfn ../../.. $@

# ---------------------------------------------------------------- tests

# The fresh deploy runs beside the checks, each side's output printed as a whole when it ends:
# the deploy spends most of its time on downloads, unpacking and image layers, the checks on the
# CPU. What installs packages (the engine, PostgreSQL, Redis, Chromium) runs before, so that the
# two never wait on apt's lock. Molecule runs on the checks' side once that deploy has ended.
# The e2e tests that time rollbacks or count failed requests under load run after the checks, and
# the lab's after them, each alone: a busy machine made them flaky when tried side by side
# (docs/benchmarks.md). The local stack is torn down before the lab (its data kept): `make deploy`
# brings it back.
test: $(VENV)/.test $(VENV)/.system-test-deps $(VENV)/.browser engine collections/ansible_collections/gekko/platform ## Everything CI runs (the deploy through ansible-runner)
	@mkdir -p .build; rm -f .build/deploy-ended
	$(MAKE) --no-print-directory -j2 --output-sync=recurse checks-then-molecule deployed-checks
	$(MAKE) --no-print-directory late-beside-lab

# The late e2e part, with the lab made and deployed to beside it (tests/lab/prepare.py), in a CPU
# group of its own at the lowest weight: the late part's timed tests keep the CPU they use, and
# the lab's first deploy (about 5 minutes of both cores) takes what they leave idle (about half).
# Its activate phase, whose health checks need CPU in time, waits for the late part's end
# (.build/late-part-done), then goes on at the normal weight beside the local stack's teardown
# (its idle containers keep about half a core busy; its data stays). A first deploy that failed
# anyway is made again once. Then the lab's tests run on the deployed lab.
# A failure, or an interrupt, stops the lab's making and removes the lab.
late-beside-lab: $(VENV)/.test $(VENV)/.browser
	@mkdir -p .build; rm -f .build/late-part-done; \
	$(BIN)/python tests/lab/prepare.py --beside > .build/lab-prepare.log 2>&1 & prepare=$$!; \
	stop_lab() { kill $$prepare 2>/dev/null; wait $$prepare; cat .build/lab-prepare.log; $(BIN)/python lab/lab.py down; exit 1; }; \
	trap stop_lab INT TERM; \
	$(MAKE) --no-print-directory e2e E2E_PART=late || stop_lab; \
	touch .build/late-part-done; \
	$(MAKE) --no-print-directory teardown ANSIBLE_ARGS= || stop_lab; \
	wait $$prepare; trap - INT TERM; cat .build/lab-prepare.log; \
	GEKKO_LAB_PREPARED=1 $(MAKE) --no-print-directory lab-test

# The fresh deploy, then, still beside the checks, the e2e tests that need a deployed stack but
# not a quiet machine: those that read, wait on alerts or change the stack without timing it
# (tests/e2e/conftest.py: GEKKO_E2E_PART). The deploy's end, failed or not, is marked for the
# other side's molecule.
deployed-checks: $(VENV)/.test $(VENV)/.browser
	$(MAKE) --no-print-directory deploy-runner; rc=$$?; touch .build/deploy-ended; exit $$rc
	$(MAKE) --no-print-directory e2e E2E_PART=early

# The checks, then molecule, which needs the engine and the base image of the fresh deploy on the
# other side (the checks take three times as long): it waits for that deploy's end, an hour at
# most. Molecule's container is not the platform's (no gekko.platform/deployment label).
checks-then-molecule:
	$(MAKE) --no-print-directory checks
	@for _ in $$(seq 720); do [ -e .build/deploy-ended ] && break; sleep 5; done; \
	  [ -e .build/deploy-ended ] || { echo "molecule: the fresh deploy did not end within an hour" >&2; exit 1; }
	$(MAKE) --no-print-directory molecule

checks: ## lint, sanity, unit, integration and coverage, one after another
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration ENGINE_READY=1
	$(MAKE) --no-print-directory coverage

$(VENV)/.test: $(VENV)/.controller requirements/dev.txt requirements/app.txt requirements/signals.txt requirements/test.txt pyproject.toml
	$(PIP) -r requirements/dev.txt -r requirements/signals.txt -r requirements/test.txt -e .
	touch $@

# PostgreSQL and Redis binaries for the integration tests (servers are started by the fixtures),
# and promtool/amtool (Debian's prometheus and prometheus-alertmanager, the versions the
# monitoring image runs) for the alert rules' tests. policy-rc.d keeps the packages from starting
# their own servers on 5432/6379/9090/9093. The Makefile is a prerequisite so that a stamp made
# before a package was added here is checked again.
$(VENV)/.system-test-deps: Makefile
	@if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || ! command -v redis-server >/dev/null \
	    || ! command -v promtool >/dev/null || ! command -v amtool >/dev/null \
	    || ! command -v rsyslogd >/dev/null || ! command -v logrotate >/dev/null; then \
	  created=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 redis-server prometheus prometheus-alertmanager rsyslog rsyslog-relp logrotate; rc=$$?; \
	  [ -z "$$created" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi
	touch $@

lint: $(VENV)/.test collections/ansible_collections/gekko/platform ## ruff and ansible-lint (production profile)
	$(BIN)/ruff check app tests plugins benchmarks lab dashboards
	$(BIN)/ruff format --check app tests plugins benchmarks lab dashboards
	$(BIN)/ansible-lint

# ansible-test wants the collection under ansible_collections/<ns>/<name> and bootstraps pip with
# a script it downloads from a host that is unreachable here: seed its cache with a pip wheel and
# tests/sanity/get_pip.py under the name it looks for.
ANSIBLE_TEST_PIP := 24.2
SANITY_ROOT := .build/sanity/ansible_collections/gekko/platform
sanity: $(VENV)/.test ## ansible-test sanity on the collection (Python 3.11)
	mkdir -p $(HOME)/.ansible/test/cache
	$(BIN)/pip download --quiet --no-deps -d $(HOME)/.ansible/test/cache pip==$(ANSIBLE_TEST_PIP)
	cp tests/sanity/get_pip.py $(HOME)/.ansible/test/cache/get_pip_$(subst .,_,$(ANSIBLE_TEST_PIP)).py
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	git ls-files -z --cached --others --exclude-standard \
	  | grep -zvE '^(app|benchmarks|lab|tests/integration|tests/e2e|tests/lab)/|^tests/unit/[^/]+$$|^tests/[^/]+\.py$$' \
	  | xargs -0 cp --parents -t $(SANITY_ROOT)
	cd $(SANITY_ROOT) && git init -q && git add -A && \
	  $(BIN)/ansible-test sanity --venv --python 3.11 --color no

# Every pytest run prints its slowest tests, so the cost of each is visible.
PYTEST := $(BIN)/python -m pytest --durations=15 --durations-min=1
COVERAGE_DIR := .build/coverage

unit: $(VENV)/.test $(VENV)/.system-test-deps collections/ansible_collections/gekko/platform ## Unit tests (app and collection plugins), with coverage
	mkdir -p $(COVERAGE_DIR)
	$(PYTEST) tests/unit -q --cov --cov-report=

integration: $(VENV)/.test $(VENV)/.system-test-deps $(if $(ENGINE_READY),,engine) ## The app against real PostgreSQL and Redis
	mkdir -p $(COVERAGE_DIR)
	$(PYTEST) tests/integration -q --cov --cov-append --cov-report=

# The Grafana dashboards, their provisioning files and the Prometheus console pages, all from
# dashboards/definitions.py (docs/dashboards.md). Commit what it writes: tests/unit/test_dashboards.py
# fails when the committed files differ.
dashboards: $(VENV)/.test ## Regenerate the Grafana dashboards and Prometheus console pages
	$(BIN)/python -m dashboards

# Line and branch coverage of app/ and plugins/ from `make unit` and `make integration` (in that
# order: the integration run appends to the unit run's data).
coverage: $(VENV)/.test ## Print the coverage measured by the unit and integration tests
	$(BIN)/coverage report
	$(BIN)/coverage json -q -o $(COVERAGE_DIR)/coverage.json
	$(BIN)/python tests/coverage_summary.py $(COVERAGE_DIR)/coverage.json

# The Docker engine, installed and started by the project's own role (host validation checks it).
.PHONY: engine
engine: setup ## Install and start the Docker engine on the inventory's hosts
	$(BIN)/ansible-playbook playbooks/engine.yml -i $(INVENTORY)

molecule: $(VENV)/.test ## Molecule scenario of host_validation (docker driver; needs the engine and base image from `make deploy`)
	cd roles/host_validation && $(BIN)/molecule test

# Debian's Chromium and its driver for the dashboard test (no browser download).
$(VENV)/.browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	touch $@

E2E_PART ?= all
e2e: $(VENV)/.test $(VENV)/.browser ## End-to-end tests against the deployed stack (run `make deploy` first; E2E_PART=early|late)
	GEKKO_E2E_PART=$(E2E_PART) $(PYTEST) tests/e2e -q

# A lab of four hosts on this machine (network and mount namespaces, an SSH server and a Docker
# engine each), reached over SSH from the lab's controller namespace: see docs/operator-guide.md.
lab: ## Create the lab hosts (removes a leftover lab first); inventory in /var/lib/gekko-lab/inventory
	$(PYTHON) lab/lab.py up

lab-down: ## Remove the lab, by what it recorded
	$(PYTHON) lab/lab.py down

lab-test: $(VENV)/.test ## Deploy to a fresh lab over SSH and test it across hosts (rolling, link cut, rollback), then remove it
	$(PYTEST) tests/lab -q

bench: $(VENV)/.test ## Gateway vs nginx and platform benchmarks (needs `make deploy`; see docs/benchmarks.md)
	@if ! command -v wrk >/dev/null || [ ! -x /usr/sbin/nginx ]; then \
	  created=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk; rc=$$?; \
	  [ -z "$$created" ] || rm -f /usr/sbin/policy-rc.d; [ $$rc -eq 0 ] || exit $$rc; \
	fi
	$(BIN)/python -m benchmarks.run

clean: ## Remove the virtualenv and build leftovers (not the deployed stack)
	rm -rf $(VENV) .build collections/ansible_collections
