"""The value parsers and each namespace's own validators, tested directly (not through whole stacks)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from metaflow_infra.settings import (
    FARGATE_MEMORY_BY_CPU,
    ComputeSettings,
    DbSettings,
    MetadataSettings,
    MetaflowSettings,
    NetworkSettings,
)
from metaflow_infra.settings.values import check_cidr, parse_bool, parse_int, parse_json

VPC = "vpc-0123456789abcdef0"
SUBNETS = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]


def refused(model: type[BaseModel], **values: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(values)
    return str(raised.value)


@pytest.mark.parametrize("text, value", [("true", True), ("FALSE", False), (" True ", True), (True, True)])
def test_booleans_parse_only_true_and_false(text: Any, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", ["yes", "1", 1, "", None])
def test_anything_else_is_not_a_boolean(text: Any) -> None:
    with pytest.raises(ValueError, match="expected true or false"):
        parse_bool(text)


@pytest.mark.parametrize("text, value", [("12", 12), (" -3 ", -3), (7, 7)])
def test_whole_numbers_parse(text: Any, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["1.5", "12a", True, 2.0, ""])
def test_fractions_words_and_booleans_are_not_whole_numbers(text: Any) -> None:
    with pytest.raises(ValueError, match="expected a whole number"):
        parse_int(text)


def test_structured_values_parse_as_json_or_comma_lists() -> None:
    assert parse_json('{"a": "b"}') == {"a": "b"}
    assert parse_json(" a, b ,,c ") == ["a", "b", "c"]
    assert parse_json(["x"]) == ["x"]
    with pytest.raises(ValueError, match="is not valid JSON"):
        parse_json("[1,")


def test_cidrs_must_be_network_addresses() -> None:
    assert check_cidr("10.0.0.0/16") == "10.0.0.0/16"
    with pytest.raises(ValueError, match="CIDR"):
        check_cidr("10.0.0.1/16")


def test_an_existing_network_needs_both_its_vpc_and_two_subnets() -> None:
    assert NetworkSettings.model_validate({"vpcId": VPC, "subnetIds": SUBNETS}).subnet_ids == SUBNETS
    assert "network:vpcId is set but network:subnetIds is not" in refused(NetworkSettings, vpcId=VPC)
    assert "network:subnetIds is set but network:vpcId is not" in refused(NetworkSettings, subnetIds=SUBNETS)
    assert "has 1 subnet(s)" in refused(NetworkSettings, vpcId=VPC, subnetIds=[SUBNETS[0]])
    repeated = refused(NetworkSettings, vpcId=VPC, subnetIds=[SUBNETS[0], SUBNETS[1], SUBNETS[0]])
    assert f"lists {SUBNETS[0]} more than once" in repeated
    assert "is not a subnet id" in refused(NetworkSettings, vpcId=VPC, subnetIds=["subnet-xyz", SUBNETS[0]])


def test_min_vcpus_may_equal_but_not_exceed_max() -> None:
    assert ComputeSettings.model_validate({"minVcpus": 4, "maxVcpus": 4}).min_vcpus == 4
    assert "greater than compute:maxVcpus" in refused(ComputeSettings, minVcpus=5, maxVcpus=4)
    assert "greater than or equal to 1" in refused(ComputeSettings, maxVcpus=0)


@pytest.mark.parametrize("cpu", FARGATE_MEMORY_BY_CPU)
def test_every_fargate_size_accepts_its_own_memory_range_only(cpu: int) -> None:
    allowed = list(FARGATE_MEMORY_BY_CPU[cpu])
    for memory in (allowed[0], allowed[-1]):
        assert MetadataSettings.model_validate({"cpu": cpu, "memory": memory}).memory == memory
    step = allowed[1] - allowed[0]
    for memory in (allowed[0] - step, allowed[-1] + step, allowed[0] + 1):
        assert f"does not fit metadata:cpu {cpu}" in refused(MetadataSettings, cpu=cpu, memory=memory)


def test_a_quarter_vcpu_task_names_the_three_sizes_it_takes() -> None:
    assert "accepted: 512, 1024, 2048 MiB" in refused(MetadataSettings, cpu=256, memory=1536)


def test_a_cpu_that_is_no_fargate_size_names_the_sizes() -> None:
    assert "256, 512, 1024" in refused(MetadataSettings, cpu=384, memory=1024)


@pytest.mark.parametrize("days, accepted", [(0, True), (35, True), (36, False), (-1, False)])
def test_backup_retention_is_what_rds_allows(days: int, accepted: bool) -> None:
    if accepted:
        assert DbSettings.model_validate({"backupRetentionDays": days}).backup_retention_days == days
    else:
        refused(DbSettings, backupRetentionDays=days)


@pytest.mark.parametrize(
    "prefix, accepted",
    [
        ("metaflow", True),
        ("team-a1", True),
        ("a" * 20, True),
        ("a" * 21, False),
        ("Team", False),
        ("1team", False),
        ("team-", False),
        ("te--am", False),
    ],
)
def test_the_prefix_is_a_short_dns_label(prefix: str, accepted: bool) -> None:
    if accepted:
        assert MetaflowSettings.model_validate({"prefix": prefix}).prefix == prefix
    else:
        refused(MetaflowSettings, prefix=prefix)
