# The two commands a new user needs: `make up` (deploy the dev stack) and `make test`.
# Both create the virtualenv and install the pinned requirements first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
STACK ?= dev

.PHONY: test up plan compare destroy venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pyright metaflow_infra __main__.py
	$(VENV)/bin/python -m pytest

up: $(STAMP)
	pulumi stack select --create $(STACK)
	pulumi up --stack $(STACK)

plan: $(STAMP)
	$(VENV)/bin/python -m metaflow_infra plan --stack $(STACK)

compare: $(STAMP)
	$(VENV)/bin/python -m metaflow_infra plan --compare

destroy:
	pulumi destroy --stack $(STACK)
