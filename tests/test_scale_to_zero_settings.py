"""metadata:scaleToZero and metadata:idleMinutes: what the mode accepts, what it refuses (all at once),
and what it changes by itself."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from conftest import TODAY, stack_config

from metaflow_infra.settings import ConfigError, Settings, aurora_pause_versions, load_settings


def load(preset: str = "dev", overrides: dict[str, Any] | None = None) -> Settings:
    return load_settings(stack_config(preset, overrides), stack="dev", today=TODAY)


def problems_for(overrides: dict[str, Any], preset: str = "dev") -> list[str]:
    with pytest.raises(pulumi.RunError) as raised:
        load(preset, overrides)
    assert isinstance(raised.value, ConfigError)
    return [line.removeprefix("  - ") for line in str(raised.value).splitlines()[1:]]


def test_scale_to_zero_is_off_by_default_and_idles_fifteen_minutes_when_on() -> None:
    assert load().metadata.scale_to_zero is False
    on = load(overrides={"metadata:scaleToZero": True})
    assert on.metadata.scale_to_zero is True and on.metadata.idle_minutes == 15
    assert load(overrides={"metadata:scaleToZero": True, "metadata:idleMinutes": 60}).metadata.idle_minutes == 60


def test_the_dev_presets_spot_gives_way_to_on_demand() -> None:
    assert load().metadata.spot is True
    assert load(overrides={"metadata:scaleToZero": True}).metadata.spot is False


def test_idle_minutes_without_scale_to_zero_is_refused() -> None:
    assert problems_for({"metadata:idleMinutes": 30}) == [
        "metadata:idleMinutes has no effect while metadata:scaleToZero is false; set metadata:scaleToZero true "
        "or unset it"
    ]


@pytest.mark.parametrize("minutes", [4, 1441])
def test_idle_minutes_outside_five_minutes_to_a_day_is_refused(minutes: int) -> None:
    [problem] = problems_for({"metadata:scaleToZero": True, "metadata:idleMinutes": minutes})
    assert problem.startswith(f"metadata:idleMinutes = '{minutes}': accepted: ")


def test_scale_to_zero_without_the_metadata_service_is_refused() -> None:
    assert problems_for({"metadata:scaleToZero": True}, preset="minimal") == [
        "metadata:scaleToZero needs the metadata service: set metadata:enabled true (the dev preset has it)"
    ]


def test_every_setting_that_keeps_something_running_is_refused_at_once() -> None:
    problems = problems_for(
        {
            "metadata:scaleToZero": True,
            "metadata:spot": True,
            "metadata:tasks": 2,
            "db:instanceClass": "db.t4g.small",
            "db:allocatedStorageGb": 40,
            "db:multiAz": True,
            "ui:enabled": True,
            "ui:access": "allowList",
            "ui:allowedCidrs": ["203.0.113.0/24"],
        }
    )
    named = {problem.split(" ", 1)[0] for problem in problems}
    assert named == {
        "metadata:spot",
        "metadata:tasks",
        "db:instanceClass",
        "db:allocatedStorageGb",
        "db:multiAz",
        "ui:access",
    }
    assert all("unset it" in problem or "ui:access private" in problem for problem in problems)


def test_a_version_aurora_cannot_pause_is_refused() -> None:
    [problem] = problems_for({"metadata:scaleToZero": True, "db:engineVersion": 18})
    assert problem.startswith("db:engineVersion = 18: no Aurora PostgreSQL 18 pauses at 0 ACU")
    assert "13, 14, 15, 16, 17" in problem


def test_a_version_in_extended_support_is_refused_and_cannot_be_paid_for() -> None:
    problems = problems_for({"metadata:scaleToZero": True, "db:engineVersion": 13, "db:allowExtendedSupport": True})
    assert [problem.split(" ", 1)[0] for problem in problems] == ["db:allowExtendedSupport"]


@pytest.mark.parametrize("major", [14, 15, 16, 17])
def test_every_pausing_major_in_standard_support_is_accepted(major: int) -> None:
    assert load(overrides={"metadata:scaleToZero": True, "db:engineVersion": major}).db.engine_version == major


def test_pause_versions_are_the_documented_minimums() -> None:
    assert aurora_pause_versions() == {13: "13.15", 14: "14.12", 15: "15.7", 16: "16.3", 17: "17.4"}


def test_a_presets_values_are_named_with_the_value_to_set() -> None:
    problems = problems_for({"metadata:scaleToZero": True}, preset="production")
    assert "db:instanceClass = 'db.t4g.small' does not apply with metadata:scaleToZero" in problems[0]
    assert problems[0].endswith("the production preset sets it: set it to 'db.t4g.micro'")
    assert {problem.split(" ", 1)[0] for problem in problems} == {
        "db:instanceClass",
        "db:multiAz",
        "db:performanceInsights",
        "metadata:tasks",
        "alerts:enabled",
    }


def test_the_private_ui_is_accepted() -> None:
    assert load(overrides={"metadata:scaleToZero": True, "ui:enabled": True}).ui.enabled is True


def test_aurora_keeps_at_least_a_day_of_backups() -> None:
    assert problems_for({"metadata:scaleToZero": True, "db:backupRetentionDays": 0}) == [
        "db:backupRetentionDays = 0 does not apply with metadata:scaleToZero: Aurora keeps automated backups for at "
        "least 1 day (1-35)"
    ]
