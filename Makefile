# Everyday commands. `make up PRESET=minimal` deploys (it creates the virtualenv with the runtime
# requirements first); `make test` installs the test tools too and runs the offline tests.
#   STACK   the stack to deploy, plan or open (default: metaflow; its config is Pulumi.<STACK>.yaml,
#           untracked: the tracked Pulumi.dev.yaml is the example `plan` reads before a stack exists)
#   PRESET  the preset of a stack `make up` creates (minimal, dev or production), or switches to; for plan
#           and diff, the preset to plan with (--set metaflow:preset=PRESET)
#   REGION  the region of a stack `make up` creates (default us-east-1); for plan and diff, the region to plan
#           in (--region REGION); for `make compare`, the region to price
#   SET     config overrides for plan and diff, space-separated: SET="compute:maxVcpus=128 metaflow:tags.team=ds"
#   ARGS    more options for plan, diff and compare, e.g. ARGS=--json
# A variable a target cannot use is refused, not dropped: SET and ARGS by `make up` (it deploys the stack's
# config as it is), SET and PRESET by `make compare` (it prices every preset's defaults).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime
STACK ?= metaflow
PRESET ?=
REGION ?=
SET ?=
ARGS ?=
SETS = $(foreach assignment,$(SET),--set '$(assignment)')
PRESET_SET = $(if $(PRESET),--set 'metaflow:preset=$(PRESET)')
OVERRIDES = $(if $(REGION),--region '$(REGION)') $(PRESET_SET) $(SETS)
PLAN = $(VENV)/bin/python -m metaflow_infra plan
# The offline plan of a config written to a scratch directory ($(1): its region), for a stack file that is
# not written yet or that plan cannot read; the scratch copy is removed when the shell exits.
# An empty region leaves the key out (the program then takes AWS_REGION, as pulumi up would); an interrupt
# removes the copy too (dash runs no EXIT trap when a signal ends it).
PLAN_SCRATCH = scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	trap 'rm -rf "$$scratch"; exit 130' INT TERM HUP && region="$(1)" && \
	{ printf 'config:\n'; test -z "$$region" || printf '  aws:region: %s\n' "$$region"; \
	  printf '  metaflow:preset: %s\n' "$(PRESET)"; } > "$$scratch/Pulumi.$(STACK).yaml" && \
	$(PLAN) --summary --dir "$$scratch" --stack $(STACK)
# Before `make up` has created the stack, plan and diff read the tracked example (the dev stack) instead.
PLAN_STACK = $(if $(or $(wildcard Pulumi.$(STACK).yaml),$(filter-out file,$(origin STACK))),$(STACK),dev)
# uv installs the pinned requirements in seconds where pip takes minutes (it downloads in parallel
# and does not byte-compile all of pulumi-aws up front).
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
PIP_QUIET := --quiet --disable-pip-version-check
INSTALL = $(UV) pip install --quiet --python $(VENV)/bin/python -r

.PHONY: test up plan diff compare ui destroy venv mutation pulumi-ready

venv: $(STAMP)

# The virtualenv is created without pip (seeding one took longer than installing everything else; the
# runtime requirements pin the pip Pulumi runs): the interpreter's pip puts the pinned uv in it, or, where
# that fails (no pip, or one older than 22.3, without --python), a pip seeded into the virtualenv after
# all. The stamp names the version, so a new UV_VERSION reaches an existing virtualenv.
$(UV_STAMP):
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(VENV)/bin/python install $(PIP_QUIET) uv==$(UV_VERSION) 2>/dev/null || { \
		$(VENV)/bin/python -m ensurepip --default-pip >/dev/null && \
		$(VENV)/bin/python -m pip install $(PIP_QUIET) uv==$(UV_VERSION); } || { \
		echo "make: could not install uv==$(UV_VERSION) into $(VENV): the error above says why; where $(PYTHON) has no pip, install it (Debian and Ubuntu: apt install python3-pip python3-venv), then run make again" >&2; exit 1; }
	touch $(UV_STAMP)

$(RUNTIME): requirements.txt | $(UV_STAMP)
	$(INSTALL) requirements.txt
	touch $(RUNTIME)

$(STAMP): requirements.txt requirements-dev.txt | $(UV_STAMP)
	$(INSTALL) requirements-dev.txt
	touch $(STAMP) $(RUNTIME)

# Bytecode is written (whatever PYTHONDONTWRITEBYTECODE says) under the virtualenv, not beside the
# sources: without it every process (each test worker, each plan) compiles pulumi-aws and metaflow again.
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
unexport PYTHONDONTWRITEBYTECODE

# pyright uses one core, so it runs beside the tests instead of before them; its report is printed after
# theirs, either failing fails the target, and an interrupt stops it too (a background job ignores Ctrl-C).
# The tests take a worker per core (two on a two-core machine; at most four, since each loads pulumi-aws,
# Metaflow and moto and runs its own offline stacks, and a container may see the host's cores), and a
# worker that runs out takes queued tests from another (worksteal), so one long test near the end does
# not leave a core idle.
test: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright metaflow_infra __main__.py tools > $(VENV)/pyright.log 2>&1 & pyright=$$!; \
	trap 'kill $$pyright 2>/dev/null' INT TERM; \
	$(VENV)/bin/python -m pytest -n auto --maxprocesses 4 --dist worksteal; tests=$$?; \
	wait $$pyright; types=$$?; cat $(VENV)/pyright.log; test $$tests = 0 && test $$types = 0

# What deploying needs, checked before anything is installed.
pulumi-ready:
	@command -v pulumi >/dev/null 2>&1 || { echo "make $(MAKECMDGOALS): the Pulumi CLI is not on PATH. Install it: curl -fsSL https://get.pulumi.com | sh (or see https://www.pulumi.com/docs/install/), then open a new shell" >&2; exit 2; }
	@pulumi whoami >/dev/null 2>&1 || { echo "make $(MAKECMDGOALS): the Pulumi CLI is not logged in. Run \`pulumi login\` (Pulumi Cloud) or \`pulumi login --local\` (state kept on this machine), then run make again" >&2; exit 2; }

# A new stack needs PRESET. The offline plan of the config the stack is about to have shows what it costs
# while idle and checks PRESET and REGION before anything is written or created: a config it refuses (a
# typo) stops here with nothing to undo. Then the stack's file is written (untracked) and the stack created
# (if that fails, the file goes again, so a retry is not taken for an existing stack), and `pulumi up`
# previews the change and asks before deploying.
up: pulumi-ready
	@case "$(STACK)" in */*) echo "make up: STACK takes a stack's own name (its config is Pulumi.NAME.yaml), not $(STACK): choose the organization with \`pulumi org set-default ORG\`, then STACK=$(notdir $(STACK))" >&2; exit 2;; esac
	@test "$(STACK)" != dev || { echo "make up: Pulumi.dev.yaml is the tracked example, and deploying it would write your settings into it. Deploy under a stack of your own: make up PRESET=dev (stack metaflow), or STACK=name" >&2; exit 2; }
	@test -f Pulumi.$(STACK).yaml || test -n "$(PRESET)" || { echo "make up: stack $(STACK) does not exist yet; choose its preset: make up PRESET=minimal (S3 and spot Batch: nothing billed while idle), PRESET=dev (adds the shared metadata service and its database) or PRESET=production (highly available, private, protected). \`make compare\` shows what each costs idle; REGION=... picks the region (default us-east-1)" >&2; exit 2; }
	@test -z "$(REGION)" || ! test -f Pulumi.$(STACK).yaml || grep -q "aws:region: $(REGION)$$" Pulumi.$(STACK).yaml || { echo "make up: REGION=$(REGION) names the region of a new stack, and stack $(STACK) exists in another: moving it replaces every resource (\`make diff SET=aws:region=$(REGION)\` shows it). Leave REGION out, or give a new STACK=name" >&2; exit 2; }
	@test -z "$(SET)" || { echo "make up: it deploys the stack's config as it is and takes no SET; set a key with \`pulumi config set KEY VALUE --stack $(STACK)\` (\`make diff SET=...\` shows first what it changes), then make up" >&2; exit 2; }
	@test -z "$(ARGS)" || { echo "make up: ARGS are options for plan, diff and compare; to give pulumi options, run it yourself: pulumi up --stack $(STACK) $(ARGS)" >&2; exit 2; }
	$(MAKE) --no-print-directory $(RUNTIME)
	@if ! test -f Pulumi.$(STACK).yaml; then \
		$(call PLAN_SCRATCH,$(or $(REGION),us-east-1)) && \
		cp "$$scratch/Pulumi.$(STACK).yaml" Pulumi.$(STACK).yaml && \
		{ pulumi stack select --create $(STACK) || { rm -f Pulumi.$(STACK).yaml; exit 1; }; }; \
	elif grep -q 'secure:' Pulumi.$(STACK).yaml; then \
		echo "(no offline estimate: it cannot read the stack's encrypted values; pulumi up previews the change)"; \
		$(if $(PRESET),$(call PLAN_SCRATCH,$$(sed -n 's/^  aws:region: *//p' Pulumi.$(STACK).yaml)) >/dev/null;) \
	else \
		$(PLAN) --summary --stack $(STACK) $(PRESET_SET); \
	fi
	pulumi stack select --create $(STACK)
	$(if $(PRESET),pulumi config set metaflow:preset $(PRESET) --stack $(STACK))
	pulumi up --stack $(STACK)

# Recipes of the commands that print (plan, diff, compare) are not echoed, so that ARGS=--json is JSON alone.
plan: $(RUNTIME)
	@$(PLAN) --stack $(PLAN_STACK) $(OVERRIDES) $(ARGS)

# What SET, REGION and PRESET change against the stack's own config, property by property.
diff: $(RUNTIME)
	@$(PLAN) --diff --stack $(PLAN_STACK) $(OVERRIDES) $(ARGS)

# Refused variables stop it before anything is installed.
compare:
	@test -z "$(SET)$(PRESET)" || { echo "make compare takes no $(if $(SET),SET,PRESET): it prices every preset's own defaults side by side. To price a change: make plan SET=... (its cost is at the end) or make diff SET=..." >&2; exit 2; }
	@$(MAKE) -s --no-print-directory $(RUNTIME)
	@$(PLAN) --compare --stack $(PLAN_STACK) $(if $(REGION),--region '$(REGION)') $(ARGS)

# Open the deployed Metaflow UI; a private UI's task is started for the session and stopped after the
# last one. Options through UI_ARGS, e.g. `make ui UI_ARGS="--port 8084"` or `make ui UI_ARGS=--stop`.
ui: $(RUNTIME)
	$(VENV)/bin/python -m metaflow_infra ui --stack $(STACK) $(UI_ARGS)

# Mutation testing of the pure modules (a report, never a gate; takes long). Extra options through
# MUTATE_ARGS, e.g. `make mutation MUTATE_ARGS="--rev HEAD --limit 50"`.
mutation: $(STAMP)
	$(VENV)/bin/python tools/mutate.py metaflow_infra/policies.py metaflow_infra/profile.py metaflow_infra/costs.py \
		metaflow_infra/lambdas/authorizer.py metaflow_infra/settings \
		--jobs 2 --report mutation-report.md $(MUTATE_ARGS)

destroy: pulumi-ready
	pulumi destroy --stack $(STACK)
