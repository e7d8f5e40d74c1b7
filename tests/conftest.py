"""Shared fixtures: offline runs of the program on Pulumi's mock runtime."""

from __future__ import annotations

import gc

# Importing pulumi-aws, metaflow, moto and the tests allocates about a million objects that all live
# for the whole run: the cyclic collector walked them again and again (a third of collection time),
# so it is off until collection ends, and then they are frozen out of its passes (a quarter of the
# tests' CPU time). (`pytest --fixtures`, which collects without this hook, leaves it off: harmless.)
gc.disable()

import copy
import datetime
import importlib
import json
import re
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from metaflow_infra.offline import OfflineRun

TODAY = datetime.date(2026, 11, 24)
PACKAGE = Path(__file__).resolve().parent.parent / "metaflow_infra"


def _preload_pulumi_aws_modules() -> None:
    """Import the pulumi-aws modules the program uses, ignoring the warnings some emit at import
    time for *other* deprecated classes in them. What stays armed (pyproject filterwarnings and the
    check in `offline`) is what the program itself declares."""
    used = set(re.findall(r"\baws\.([a-z0-9_]+)\.", "".join(p.read_text() for p in PACKAGE.glob("*.py"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in sorted(used):
            hasattr(importlib.import_module(f"pulumi_aws.{module}"), "_loaded")  # runs the lazy module


def pytest_configure(config: pytest.Config) -> None:
    # Under xdist the controller only hands tests out: pulumi-aws is loaded where they run (~2 s of CPU).
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        _preload_pulumi_aws_modules()


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    try:
        return (yield)
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()


def stack_config(
    preset: str = "minimal", overrides: dict[str, Any] | None = None, region: str = "us-east-1"
) -> dict[str, Any]:
    """Config as Pulumi hands it to the program: `namespace:key` to string values."""
    raw: dict[str, Any] = {"aws:region": region, "metaflow:preset": preset}
    for key, value in (overrides or {}).items():
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    return raw


_RUNS: dict[str, OfflineRun] = {}
"""Offline runs, once per test process: about half the suite's runs repeat one."""


def offline(preset: str = "minimal", overrides: dict[str, Any] | None = None, **kwargs: Any) -> OfflineRun:
    """Run the program offline (each test gets its own copy); a deprecated pulumi-aws resource or
    argument fails the test."""
    from metaflow_infra.offline import run_offline

    config = stack_config(preset, overrides, kwargs.pop("region", "us-east-1"))
    if "declare" in kwargs:  # another program: run as asked
        run = run_offline(config, today=TODAY, **kwargs)
    else:  # a stack name and subnet fixtures are plain values (frozen dataclasses): part of the key
        key = json.dumps(config, sort_keys=True) + repr(sorted(kwargs.items()))
        if key not in _RUNS:
            _RUNS[key] = run_offline(config, today=TODAY, **kwargs)
        run = copy.deepcopy(_RUNS[key])
    assert not run.deprecations, run.deprecations
    return run


def policy_of(resource_inputs: dict[str, Any], key: str = "policy") -> dict[str, Any]:
    return json.loads(resource_inputs[key])


@pytest.fixture(scope="session")
def minimal() -> OfflineRun:
    return offline("minimal")
