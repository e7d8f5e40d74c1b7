"""Shared fixtures: offline runs of the program on Pulumi's mock runtime."""

from __future__ import annotations

import datetime
import json
from typing import Any, Optional

import pytest

from metaflow_infra.offline import OfflineRun, run_offline

TODAY = datetime.date(2026, 11, 24)


def stack_config(preset: str = "minimal", overrides: Optional[dict[str, Any]] = None,
                 region: str = "us-east-1") -> dict[str, Any]:
    """Config as Pulumi hands it to the program: `namespace:key` to string values."""
    raw: dict[str, Any] = {"aws:region": region, "metaflow:preset": preset}
    for key, value in (overrides or {}).items():
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    return raw


def offline(preset: str = "minimal", overrides: Optional[dict[str, Any]] = None, **kwargs: Any) -> OfflineRun:
    return run_offline(stack_config(preset, overrides, kwargs.pop("region", "us-east-1")), today=TODAY, **kwargs)


def policy_of(resource_inputs: dict[str, Any], key: str = "policy") -> dict[str, Any]:
    return json.loads(resource_inputs[key])


@pytest.fixture(scope="session")
def minimal() -> OfflineRun:
    return offline("minimal")
