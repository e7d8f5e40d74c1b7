"""The Makefile's targets pass settings through and check what deploying needs before installing anything:
their commands read with `make -n`, and the early refusals run for real (they stop before any install)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from test_docs import README

PROJECT = README.parent
NEW_STACK = "no-such-stack-yet"


def make(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run(
        ["make", "-C", str(PROJECT), "--no-print-directory", *args], capture_output=True, text=True, env=env
    )


def dry_run(*args: str) -> list[str]:
    result = make("-n", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def index_of(lines: list[str], text: str) -> int:
    """The first line running `text` (not one merely naming it in a message)."""
    return next(i for i, line in enumerate(lines) if text in line.split('echo "')[0])


def test_plan_passes_each_setting_of_set_through() -> None:
    [command] = [
        line
        for line in dry_run("plan", "SET=compute:maxVcpus=128 metaflow:tags.team=ds")
        if "metaflow_infra plan" in line
    ]
    assert "--set 'compute:maxVcpus=128' --set 'metaflow:tags.team=ds'" in command
    assert "--stack dev" in command  # no stack of the user's yet: the tracked example


def test_diff_compares_the_settings_against_the_stack_and_takes_more_options() -> None:
    [command] = [
        line for line in dry_run("diff", "SET=metadata:tasks=2", "ARGS=--json") if "metaflow_infra plan" in line
    ]
    assert command.split("metaflow_infra plan ")[1].split() == [
        "--diff",
        "--stack",
        "dev",
        "--set",
        "'metadata:tasks=2'",
        "--json",
    ]


def test_a_stack_named_on_the_command_line_is_planned_even_before_it_exists() -> None:
    [command] = [line for line in dry_run("plan", f"STACK={NEW_STACK}") if "metaflow_infra plan" in line]
    assert f"--stack {NEW_STACK}" in command


def plan_arguments(*args: str) -> list[str]:
    """The arguments `make -n` shows the target giving `python -m metaflow_infra plan`."""
    [command] = [line for line in dry_run(*args) if "metaflow_infra plan" in line]
    return command.split("metaflow_infra plan ")[1].split()


def test_plan_and_diff_plan_in_the_region_and_preset_given() -> None:
    for target, first in (("plan", []), ("diff", ["--diff"])):
        arguments = plan_arguments(target, "REGION=eu-west-1", "PRESET=minimal", "SET=compute:maxVcpus=8")
        assert arguments == [
            *first,
            "--stack",
            "dev",
            "--region",
            "'eu-west-1'",
            "--set",
            "'metaflow:preset=minimal'",
            "--set",
            "'compute:maxVcpus=8'",
        ]


def test_compare_prices_the_region_given_and_takes_more_options() -> None:
    arguments = plan_arguments("compare", "REGION=eu-west-1", "ARGS=--json")
    assert arguments == ["--compare", "--stack", "dev", "--region", "'eu-west-1'", "--json"]


def test_compare_refuses_set_and_preset_before_installing_anything() -> None:
    for variable in ("SET=compute:maxVcpus=128", "PRESET=minimal"):
        result = make("compare", variable)
        name = variable.partition("=")[0]
        assert result.returncode == 2
        assert f"make compare takes no {name}: it prices every preset's own defaults side by side" in result.stderr
        assert "make plan SET=... (its cost is at the end) or make diff SET=..." in result.stderr
        assert "pip" not in result.stdout + result.stderr and "metaflow_infra" not in result.stdout


def test_up_checks_pulumi_then_installs_only_the_runtime_then_plans_the_new_config_before_writing_it() -> None:
    lines = dry_run("up", "PRESET=minimal", f"STACK={NEW_STACK}", "REGION=eu-west-1")
    steps = [
        "command -v pulumi",
        "pulumi whoami",
        "make --no-print-directory .venv/.runtime",  # installs what is missing (below)
        'region="eu-west-1"',
        f'"minimal"; }} > "$scratch/Pulumi.{NEW_STACK}.yaml"',
        f'metaflow_infra plan --summary --dir "$scratch" --stack {NEW_STACK}',
        f'cp "$scratch/Pulumi.{NEW_STACK}.yaml" Pulumi.{NEW_STACK}.yaml',
        f"pulumi stack select --create {NEW_STACK}",
        f"pulumi up --stack {NEW_STACK}",
    ]
    positions = [index_of(lines, step) for step in steps]
    assert positions == sorted(positions), lines
    assert not any("requirements-dev.txt" in line for line in lines)


def test_the_runtime_is_the_pinned_requirements_installed_by_a_pinned_uv() -> None:
    lines = dry_run("-W", "requirements.txt", ".venv/.runtime")  # as if the requirements had changed
    [install] = [line for line in lines if line.startswith(".venv/bin/uv ")]
    assert install == ".venv/bin/uv pip install --quiet --python .venv/bin/python -r requirements.txt"


UV_VERSION = re.search(r"^UV_VERSION := (\S+)$", (PROJECT / "Makefile").read_text(), re.M)[1]


def test_uv_goes_into_a_virtualenv_without_pip_by_the_interpreters_pip_or_else_a_seeded_one() -> None:
    lines = dry_run("-B", f".venv/.uv-{UV_VERSION}")
    assert lines[0] == "python3 -m venv --without-pip .venv"
    installs = [
        line.strip(" \t;}|{\\") for line in lines if " install " in line and "uv==" in line and "echo" not in line
    ]
    assert [install.split(" install ")[0] for install in installs] == [
        "python3 -m pip --python .venv/bin/python",
        ".venv/bin/python -m pip",
    ]
    assert lines[2].strip() == ".venv/bin/python -m ensurepip --default-pip >/dev/null && \\"
    pinned = rf"--quiet --disable-pip-version-check uv=={re.escape(UV_VERSION)}( 2>/dev/null)?$"
    assert all(re.search(pinned, install) for install in installs), installs
    assert f"could not install uv=={UV_VERSION} into .venv: the error above says why" in lines[4]
    assert "where python3 has no pip, install it" in lines[4]


def test_a_new_uv_version_reaches_an_existing_virtualenv() -> None:
    lines = dry_run("-W", "requirements.txt", ".venv/.runtime", "UV_VERSION=99.0.0")
    assert any("uv==99.0.0" in line for line in lines)
    assert lines[-1] == "touch .venv/.runtime"


def test_the_runtime_pins_the_pip_pulumis_pip_toolchain_runs() -> None:
    """The virtualenv has no pip of its own; Pulumi's pip toolchain lists the virtualenv's packages with it."""
    assert "toolchain: pip" in (PROJECT / "Pulumi.yaml").read_text()
    pins = [line for line in (PROJECT / "requirements.txt").read_text().splitlines() if line.startswith("pip==")]
    assert len(pins) == 1


def test_destroy_checks_pulumi_and_installs_nothing() -> None:
    lines = dry_run("destroy", f"STACK={NEW_STACK}")
    assert index_of(lines, "command -v pulumi") < index_of(lines, f"pulumi destroy --stack {NEW_STACK}")
    assert not any("pip" in line or "venv" in line for line in lines)


def test_up_without_the_pulumi_cli_says_how_to_get_it_and_installs_nothing() -> None:
    result = make("up", f"STACK={NEW_STACK}", "PRESET=minimal", path="/usr/bin:/bin")
    assert result.returncode != 0
    assert "make up: the Pulumi CLI is not on PATH. Install it: curl -fsSL https://get.pulumi.com | sh" in result.stderr
    assert "pip" not in result.stdout + result.stderr


def fake_pulumi(directory: Path, whoami_status: int) -> str:
    script = directory / "pulumi"
    script.write_text(f'#!/bin/sh\n[ "$1" = whoami ] && exit {whoami_status}\nexit 0\n')
    script.chmod(0o755)
    return f"{directory}:/usr/bin:/bin"


def test_up_without_a_login_says_how_to_log_in(tmp_path: Path) -> None:
    result = make("up", f"STACK={NEW_STACK}", "PRESET=minimal", path=fake_pulumi(tmp_path, whoami_status=1))
    assert result.returncode != 0
    assert "not logged in. Run `pulumi login` (Pulumi Cloud) or `pulumi login --local`" in result.stderr
    assert "pip" not in result.stdout + result.stderr


def test_a_new_stack_needs_its_preset_chosen_before_anything_is_installed(tmp_path: Path) -> None:
    result = make("up", f"STACK={NEW_STACK}", path=fake_pulumi(tmp_path, whoami_status=0))
    assert result.returncode != 0
    assert f"make up: stack {NEW_STACK} does not exist yet; choose its preset: make up PRESET=minimal" in result.stderr
    assert "pip" not in result.stdout + result.stderr
    assert not (PROJECT / f"Pulumi.{NEW_STACK}.yaml").exists()


def test_up_refuses_to_move_an_existing_stack_to_another_region(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.mine.yaml").write_text("config:\n  aws:region: us-east-1\n  metaflow:preset: minimal\n")
    path = fake_pulumi(tmp_path, whoami_status=0)
    result = subprocess.run(
        ["make", "-C", str(tmp_path), "-f", str(PROJECT / "Makefile"), "up", "STACK=mine", "REGION=eu-west-1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
    )
    assert result.returncode != 0
    assert (
        "make up: REGION=eu-west-1 names the region of a new stack, and stack mine exists in another" in result.stderr
    )
    assert "pip" not in result.stdout + result.stderr


def test_up_leaves_the_tracked_example_stack_alone(tmp_path: Path) -> None:
    result = make("up", "STACK=dev", "PRESET=minimal", path=fake_pulumi(tmp_path, whoami_status=0))
    assert result.returncode != 0
    assert "make up: Pulumi.dev.yaml is the tracked example" in result.stderr
    assert "pip" not in result.stdout + result.stderr


def logging_pulumi(directory: Path) -> tuple[str, Path]:
    """A stand-in Pulumi CLI, logged in, that records each call."""
    log = directory / "pulumi.log"
    script = directory / "bin" / "pulumi"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 0\n')
    script.chmod(0o755)
    return f"{script.parent}:/usr/bin:/bin", log


def make_in(
    directory: Path, path: str, *args: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`make` with this Makefile in another directory, on the project's virtualenv as `make test` left it."""
    venv = PROJECT / ".venv"
    options = [f"VENV={venv}", f"RUNTIME={venv / '.installed'}"]
    return subprocess.run(
        ["make", "-C", str(directory), "-f", str(PROJECT / "Makefile"), "--no-print-directory", *options, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path, "PYTHONPATH": str(PROJECT), **(environment or {})},
    )


def test_up_writes_the_new_stack_with_its_preset_shows_its_idle_cost_then_deploys(tmp_path: Path) -> None:
    path, log = logging_pulumi(tmp_path)
    result = make_in(tmp_path, path, "up", "STACK=new", "PRESET=minimal", "REGION=eu-west-1")
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "Pulumi.new.yaml").read_text()
    assert config == "config:\n  aws:region: eu-west-1\n  metaflow:preset: minimal\n"
    assert "Stack new (minimal preset) in eu-west-1: `pulumi up` would create" in result.stdout
    assert "Always-on monthly cost" in result.stdout
    calls = log.read_text().splitlines()
    assert calls[-3:] == [
        "stack select --create new",
        "config set metaflow:preset minimal --stack new",
        "up --stack new",
    ]


def test_up_refuses_set_and_args_it_would_otherwise_drop(tmp_path: Path) -> None:
    path, log = logging_pulumi(tmp_path)
    for variable, refusal in (
        ("SET=compute:maxVcpus=128", "make up: it deploys the stack's config as it is and takes no SET; set a key"),
        ("ARGS=--yes", "make up: ARGS are options for plan, diff and compare; to give pulumi options, run it yourself"),
    ):
        result = make_in(tmp_path, path, "up", "STACK=new", "PRESET=minimal", variable)
        assert result.returncode == 2 and refusal in result.stderr
    assert not (tmp_path / "Pulumi.new.yaml").exists() and log.read_text().splitlines() == ["whoami"] * 2


@pytest.mark.parametrize(
    "existing, variables, refusal",
    [
        (None, ["PRESET=minimal", "REGION=eu-west1"], "aws:region = 'eu-west1': not in the expected format"),
        (None, ["PRESET=minmal"], "metaflow:preset = 'minmal' is not a preset"),
        ("aws:region: us-east-1\n  metaflow:preset: dev", ["PRESET=minmal"], "'minmal' is not a preset"),
        # plan cannot read a stack with encrypted values: PRESET is checked on a scratch copy of the rest
        ("aws:region: us-east-1\n  db:password:\n    secure: AAAB", ["PRESET=minmal"], "'minmal' is not a preset"),
    ],
    ids=["new-stack-region-typo", "new-stack-preset-typo", "preset-typo", "preset-typo-with-secrets"],
)
def test_up_refuses_a_preset_or_region_typo_before_writing_or_creating_anything(
    tmp_path: Path, existing: str | None, variables: list[str], refusal: str
) -> None:
    path, log = logging_pulumi(tmp_path)
    stack_file = tmp_path / "Pulumi.new.yaml"
    if existing is not None:
        stack_file.write_text(f"config:\n  {existing}\n")
    before = stack_file.read_text() if existing is not None else None
    result = make_in(tmp_path, path, "up", "STACK=new", *variables)
    assert result.returncode != 0
    assert refusal in result.stderr
    assert (stack_file.read_text() if stack_file.exists() else None) == before
    assert log.read_text().splitlines() == ["whoami"]  # no stack created, no config set
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bin", "pulumi.log", *([stack_file.name] * bool(before))]
    )


def test_up_stops_before_deploying_a_config_the_program_refuses(tmp_path: Path) -> None:
    path, log = logging_pulumi(tmp_path)
    (tmp_path / "Pulumi.bad.yaml").write_text("config:\n  aws:region: us-east-1\n  compute:maxVcpus: -1\n")
    result = make_in(tmp_path, path, "up", "STACK=bad")
    assert result.returncode != 0
    assert "compute:maxVcpus = '-1'" in result.stderr
    assert "up --stack bad" not in log.read_text()


def fake_test_tools(directory: Path, pyright_status: int, pytest_status: int) -> Path:
    """A virtualenv (uv installed) whose ruff passes and whose pyright and python (pytest) say what they saw and
    exit as told."""
    for name in ("requirements.txt", "requirements-dev.txt"):
        (directory / name).write_text("")
    bin_dir = directory / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {
        "ruff": "exit 0",
        "pyright": f'echo "pyright checked $*"; exit {pyright_status}',
        "python": 'echo "$* ran with bytecode in ${PYTHONPYCACHEPREFIX-nowhere},'
        f' PYTHONDONTWRITEBYTECODE ${{PYTHONDONTWRITEBYTECODE-unset}}"; exit {pytest_status}',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (directory / "venv" / f".uv-{UV_VERSION}").touch()
    stamp = directory / "venv" / ".installed"
    stamp.touch()
    os.utime(stamp, (stamp.stat().st_mtime + 10,) * 2)  # installed after the requirements last changed
    return directory / "venv"


def run_test_target(directory: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(directory), "-f", str(PROJECT / "Makefile"), "--no-print-directory", f"VENV={venv}", "test"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_make_test_type_checks_and_runs_the_tests_with_bytecode_under_the_virtualenv(tmp_path: Path) -> None:
    venv = fake_test_tools(tmp_path, pyright_status=0, pytest_status=0)
    result = run_test_target(tmp_path, venv)
    assert result.returncode == 0, result.stderr
    assert "pyright checked metaflow_infra __main__.py tools" in result.stdout
    assert (
        f"-m pytest -n auto --maxprocesses 4 --dist worksteal ran with bytecode in {venv}/pycache,"
        " PYTHONDONTWRITEBYTECODE unset" in result.stdout
    )


def test_make_test_fails_when_either_the_types_or_the_tests_fail_and_shows_pyrights_report(tmp_path: Path) -> None:
    for pyright_status, pytest_status in ((1, 0), (0, 1)):
        directory = tmp_path / f"pyright{pyright_status}-pytest{pytest_status}"
        directory.mkdir()
        result = run_test_target(directory, fake_test_tools(directory, pyright_status, pytest_status))
        assert result.returncode != 0, (pyright_status, pytest_status)
        assert "pyright checked" in result.stdout


def test_the_readme_opens_the_ui_of_the_stack_make_up_creates() -> None:
    """`make up` creates the Makefile's default STACK and refuses `dev`: the README's UI commands name that stack."""
    default = re.search(r"^STACK \?= (\S+)$", (PROJECT / "Makefile").read_text(), re.M)[1]
    readme = README.read_text()
    stacks = re.findall(r"metaflow_infra ui --stack (\S+)", readme)
    assert stacks and set(stacks) == {default}
    assert not re.search(r"make \w+ [^`\n]*STACK=dev\b", readme)


def test_the_scratch_copy_is_removed_on_an_interrupt_too() -> None:
    """dash, Debian's /bin/sh, runs no EXIT trap when a signal ends it."""
    scratch = [line for line in dry_run("up", "PRESET=minimal", f"STACK={NEW_STACK}") if "mktemp" in line]
    assert scratch and all("""trap 'rm -rf "$scratch"; exit 130' INT TERM HUP""" in line for line in scratch)


def test_up_switches_the_preset_of_a_stack_whose_region_comes_from_the_environment(tmp_path: Path) -> None:
    path, log = logging_pulumi(tmp_path)
    (tmp_path / "Pulumi.s1.yaml").write_text("config:\n  metaflow:preset: minimal\n  db:password:\n    secure: AAAB\n")
    result = make_in(tmp_path, path, "up", "STACK=s1", "PRESET=dev", environment={"AWS_REGION": "eu-west-1"})
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines()[-2:] == ["config set metaflow:preset dev --stack s1", "up --stack s1"]


def test_compare_with_args_json_prints_json_alone() -> None:
    result = make("compare", "ARGS=--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)


def test_a_stack_pulumi_fails_to_create_leaves_no_file_so_a_retry_starts_afresh(tmp_path: Path) -> None:
    path, log = logging_pulumi(tmp_path)
    script = tmp_path / "bin" / "pulumi"  # creating a stack fails (e.g. no passphrase for its secrets)
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$*" in "stack select --create"*) exit 1;; esac\nexit 0\n')
    result = make_in(tmp_path, path, "up", "STACK=f1", "PRESET=minimal", "REGION=eu-central-1")
    assert result.returncode != 0 and not (tmp_path / "Pulumi.f1.yaml").exists()
    assert "up --stack f1" not in log.read_text()


def test_up_refuses_an_organization_qualified_stack_by_saying_how_to_choose_the_organization(tmp_path: Path) -> None:
    path, log = logging_pulumi(tmp_path)
    result = make_in(tmp_path, path, "up", "STACK=acme/prod", "PRESET=minimal")
    assert result.returncode == 2 and log.read_text().splitlines() == ["whoami"]
    assert "pulumi org set-default ORG`, then STACK=prod" in result.stderr
