"""The catalog the settings are checked against, read directly: presets, the AWS provider's own
settings, instance families by region, zones, PostgreSQL dates and Fargate sizes."""

from __future__ import annotations

import datetime

import pytest

from metaflow_infra.settings import (
    FARGATE_MEMORY_BY_CPU,
    available_presets,
    default_preset,
    offered_families,
    postgres_end_of_standard_support,
    preset_summary,
    presets,
    unsupported_zone_ids,
)
from metaflow_infra.settings.catalog import MINIMUM_SERVICE_VERSION, data_file, provider_settings

FARGATE_SIZES_MIB = {
    256: [512, 1024, 2048],
    512: [1024, 2048, 3072, 4096],
    1024: list(range(2048, 8192 + 1, 1024)),
    2048: list(range(4096, 16384 + 1, 1024)),
    4096: list(range(8192, 30720 + 1, 1024)),
    8192: list(range(16384, 61440 + 1, 4096)),
    16384: list(range(32768, 122880 + 1, 8192)),
}
"""The task sizes Fargate accepts (Linux), cpu units -> memory MiB: Amazon ECS Developer Guide, "Task
CPU and memory" (docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html)."""


def test_presets_are_read_from_the_data_file_with_their_config_summary_and_availability() -> None:
    assert presets()["dev"]["metadata:enabled"] is True
    assert presets()["minimal"] == {}
    assert default_preset() == "dev"
    assert available_presets() == ("minimal", "dev", "production")
    assert preset_summary("minimal") == "S3 and Batch on spot, local metadata: nothing bills while idle"


def test_presets_hand_out_copies_so_a_caller_cannot_change_the_catalog() -> None:
    presets()["dev"]["metadata:enabled"] = False
    assert presets()["dev"]["metadata:enabled"] is True


def test_data_files_are_parsed_toml() -> None:
    assert data_file("zones.toml")["unsupported_zone_ids"]["us-east-1"] == ["use1-az3"]


def test_every_provider_setting_is_keyed_in_camel_case_with_its_parameter_and_kind() -> None:
    settings = provider_settings()
    assert settings["accessKey"] == ("access_key", "str")  # the first parameter
    assert settings["insecure"] == ("insecure", "bool")
    assert settings["maxRetries"] == ("max_retries", "int")
    assert settings["sharedConfigFiles"] == ("shared_config_files", "strings")
    assert settings["allowedAccountIds"] == ("allowed_account_ids", "strings")
    assert settings["assumeRoles"] == ("assume_roles", "objects")
    assert settings["endpoints"] == ("endpoints", "objects")
    assert settings["ignoreTags"] == ("ignore_tags", "object")
    assert settings["assumeRoleWithWebIdentity"] == ("assume_role_with_web_identity", "object")
    assert {kind for _, kind in settings.values()} == {"str", "bool", "int", "strings", "objects", "object"}


def test_the_provider_settings_the_program_sets_itself_are_not_offered() -> None:
    assert "region" not in provider_settings() and "defaultTags" not in provider_settings()
    assert "profile" in provider_settings()


def test_offered_families_are_cpu_or_gpu_families_of_the_region_or_of_every_region() -> None:
    us_east, sa_east = offered_families("us-east-1"), offered_families("sa-east-1")
    assert {"c5", "c6i", "c7i"} <= set(us_east) and not {"g4dn", "g5"} & set(us_east)
    assert "c5" in sa_east and "c7i" not in sa_east
    assert offered_families("us-east-1", gpu=True) == ["g4dn", "g5", "g6", "g6e", "p4d", "p5"]
    assert not {"inf2", "trn1"} & set(us_east)
    assert offered_families("xx-nowhere-1") == ["c5", "m5", "r5"]  # the families offered everywhere


def test_unsupported_zones_are_listed_per_region_and_none_elsewhere() -> None:
    assert unsupported_zone_ids("us-east-1") == ["use1-az3"]
    assert unsupported_zone_ids("eu-west-1") == []


def test_postgres_versions_are_whole_numbers_with_their_end_of_standard_support() -> None:
    calendar = postgres_end_of_standard_support()
    assert calendar[13] == datetime.date(2026, 2, 28)
    assert all(isinstance(version, int) for version in calendar)


def test_the_metadata_service_floor_is_the_first_release_with_tls_to_postgres() -> None:
    assert MINIMUM_SERVICE_VERSION == (2, 4, 6)


def test_the_fargate_cpu_sizes_are_awss() -> None:
    assert list(FARGATE_MEMORY_BY_CPU) == list(FARGATE_SIZES_MIB)


@pytest.mark.parametrize("cpu", FARGATE_SIZES_MIB)
def test_each_fargate_cpu_size_accepts_exactly_the_memory_aws_does(cpu: int) -> None:
    assert list(FARGATE_MEMORY_BY_CPU[cpu]) == FARGATE_SIZES_MIB[cpu]
