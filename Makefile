# The two commands a new user needs: `make up` (deploy the dev stack) and `make test`.
# Both create the virtualenv and install the pinned requirements first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
STACK ?= dev
# uv installs the pinned requirements in seconds where pip takes minutes (it downloads in parallel
# and does not byte-compile all of pulumi-aws up front).
UV_VERSION := 0.13.9

.PHONY: test up plan compare ui destroy venv mutation

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright metaflow_infra __main__.py tools
	$(VENV)/bin/python -m pytest -n 2  # two workers: the machine has two cores

up: $(STAMP)
	pulumi stack select --create $(STACK)
	pulumi up --stack $(STACK)

plan: $(STAMP)
	$(VENV)/bin/python -m metaflow_infra plan --stack $(STACK)

compare: $(STAMP)
	$(VENV)/bin/python -m metaflow_infra plan --compare

# Open the deployed Metaflow UI; a private UI's task is started for the session and stopped after the
# last one. Options through UI_ARGS, e.g. `make ui UI_ARGS="--port 8084"` or `make ui UI_ARGS=--stop`.
ui: $(STAMP)
	$(VENV)/bin/python -m metaflow_infra ui --stack $(STACK) $(UI_ARGS)

# Mutation testing of the pure modules (a report, never a gate; takes long). Extra options through
# MUTATE_ARGS, e.g. `make mutation MUTATE_ARGS="--rev HEAD --limit 50"`.
mutation: $(STAMP)
	$(VENV)/bin/python tools/mutate.py metaflow_infra/policies.py metaflow_infra/profile.py metaflow_infra/costs.py \
		metaflow_infra/lambdas/authorizer.py metaflow_infra/settings \
		--jobs 2 --report mutation-report.md $(MUTATE_ARGS)

destroy:
	pulumi destroy --stack $(STACK)
