"""Reading config, at the edges of each check: where the region comes from, how a mistyped key or
namespace is answered, how a value in the wrong format is explained, and the boundaries of the
checks that span keys (instance types, PostgreSQL support dates, image releases, compute types, UI modes)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pulumi
import pytest
from conftest import TODAY, stack_config

from metaflow_infra.settings import ConfigError, Settings, load_settings, postgres_end_of_standard_support
from metaflow_infra.settings.loading import FORMAT_EXAMPLES, _format_example, raw_config_from_pulumi

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/1234abcd-12ab-34cd-56ef-1234567890ab"
OFFICE = "203.0.113.0/24"


def load(
    preset: str = "minimal", overrides: dict[str, Any] | None = None, today: datetime.date = TODAY, **kwargs: Any
) -> Settings:
    return load_settings(stack_config(preset, overrides, **kwargs), stack="dev", today=today)


def problems(overrides: dict[str, Any], preset: str = "minimal", **kwargs: Any) -> list[str]:
    """Each problem of the one ConfigError loading raises."""
    with pytest.raises(ConfigError) as raised:
        load(preset, overrides, **kwargs)
    return str(raised.value).split("\n  - ")[1:]


# --- Where the region comes from -----------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_without_aws_region_in_config_the_region_comes_from_the_environment(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv(variable, "eu-west-1")
    raw = stack_config("minimal")
    del raw["aws:region"]
    assert load_settings(raw, stack="dev", today=TODAY).region == "eu-west-1"


# --- Mistyped namespaces and keys -------------------------------------------------------------------------------


def test_a_key_in_an_unknown_namespace_points_to_the_namespace_that_has_that_key() -> None:
    [problem] = problems({"zzz:vpcCidr": "10.0.0.0/16"})  # a namespace like no other: the key decides
    assert "did you mean network:vpcCidr?" in problem


def test_an_unknown_namespace_without_such_a_key_suggests_the_closest_namespace() -> None:
    [problem] = problems({"netwrk:bogus": "x"})
    assert problem == "netwrk:bogus: 'netwrk' is not a config namespace of this program (did you mean network:bogus?)"


def test_an_unknown_namespace_like_no_other_lists_the_namespaces() -> None:
    [problem] = problems({"zzz:bogus": "x"})
    assert "namespaces: aws, metaflow, network, datastore, db" in problem


# --- Values in the wrong format are explained with an example -----------------------------------------------------

WRONG_FORMAT: dict[str, Any] = {
    "aws:region": "Mars",
    "aws:assumeRoles.roleArn": ("aws:assumeRoles", [{"roleArn": "deployer"}]),
    "aws:allowedAccountIds": ["12345"],
    "aws:forbiddenAccountIds": ["12345"],
    "metaflow:prefix": "Team_A",
    "network:vpcId": "vpc-xyz",
    "datastore:kmsKey": "my-key",
    "db:backupWindow": "3:00-3:30",
    "db:maintenanceWindow": "sunday:04:00-sunday:04:30",
    "alerts:email": "ops at example.com",
    "budget:email": "ops@example",
    "ui:certificateArn": "my-cert",
    "ui:domain": "Metaflow.Example.COM",
    "ui:hostedZoneId": "zone",
    "ui:oidc": {
        "issuer": "http://idp.example.com",
        "authorizationEndpoint": "https://idp.example.com/a",
        "tokenEndpoint": "https://idp.example.com/t",
        "userInfoEndpoint": "https://idp.example.com/u",
        "clientId": "c",
        "clientSecret": "s",
    },
    "ecr:imageTag": "-bad",
}
"""Key as FORMAT_EXAMPLES names it -> a value in the wrong format (or the config key and value, for a nested key)."""


def test_every_key_with_a_format_example_is_exercised_here() -> None:
    assert set(WRONG_FORMAT) == set(FORMAT_EXAMPLES)


@pytest.mark.parametrize("key", WRONG_FORMAT)
def test_a_value_in_the_wrong_format_is_explained_with_an_example_of_the_right_one(key: str) -> None:
    config_key, value = WRONG_FORMAT[key] if isinstance(WRONG_FORMAT[key], tuple) else (key, WRONG_FORMAT[key])
    message = "\n".join(problems({config_key: value}, preset="dev"))
    assert f"not in the expected format; accepted: {FORMAT_EXAMPLES[key]}" in message
    assert "pattern" not in message and "^" not in message


def test_a_format_without_an_example_points_to_the_documentation() -> None:
    assert (
        _format_example("ecr:somethingNew") == "a value in the documented format (see the README's configuration table)"
    )


def test_messages_come_without_pydantics_own_prefixes() -> None:
    [enum] = problems({"compute:type": "gpu"})
    assert enum == "compute:type = 'gpu': accepted: 'ec2', 'spot', 'fargate' or 'fargate_spot'"
    [validator] = problems({"compute:minVcpus": 9, "compute:maxVcpus": 8})
    assert validator.startswith("compute:minVcpus (9) is greater than compute:maxVcpus (8)")


# --- Instance types -------------------------------------------------------------------------------------------


def test_an_unknown_instance_type_lists_the_cpu_families_only() -> None:
    [problem] = problems({"compute:instanceTypes": ["x9"]})
    accepted = problem.split("family (")[1].split(")")[0].split(", ")
    assert "c6i" in accepted and "g5" not in accepted and "g4dn" not in accepted


def test_an_accelerator_family_in_the_cpu_list_is_pointed_to_its_own_list() -> None:
    [gpu] = problems({"compute:instanceTypes": ["g5"]})
    assert gpu.startswith("compute:instanceTypes: 'g5' is a GPU family and this list takes CPU families")
    assert gpu.endswith("; GPU families go in compute:gpuInstanceTypes")
    [neuron] = problems({"compute:instanceTypes": ["inf2"]})
    assert neuron.startswith("compute:instanceTypes: 'inf2' is an Inferentia/Trainium family")
    assert neuron.endswith("; Inferentia/Trainium families go in compute:neuronInstanceTypes")


def test_multi_node_families_are_refused_while_multi_node_is_off() -> None:
    assert problems({"compute:multiNodeInstanceTypes": ["c5"]}) == [
        "compute:multiNodeInstanceTypes has no effect while compute:multiNode is false; "
        "set compute:multiNode true or unset compute:multiNodeInstanceTypes"
    ]


def test_gpus_in_a_region_offering_none_of_the_default_gpu_families_must_be_named() -> None:
    assert problems({"compute:gpu": True}, region="sa-east-1") == [
        "compute:gpu = true: none of the default GPU families (g4dn, g5) is known to be offered in sa-east-1; "
        "name GPU families offered there in compute:gpuInstanceTypes (none known)"
    ]


def test_batchs_arm_keyword_must_stand_alone() -> None:
    assert load("minimal", {"compute:instanceTypes": ["default_arm64"]}).compute.instance_types == ["default_arm64"]
    assert problems({"compute:instanceTypes": ["default_arm64", "c5"]}) == [
        "compute:instanceTypes: 'default_arm64' picks ARM instances and cannot share an environment with "
        "x86 families or types; give it alone"
    ]


def test_no_instance_types_at_all_is_refused() -> None:
    assert problems({"compute:instanceTypes": []}) == [
        "compute:instanceTypes is empty: name at least one instance family or type"
    ]


# --- PostgreSQL support dates and metadata images ------------------------------------------------------------------


def test_a_postgres_version_is_in_standard_support_through_its_last_day() -> None:
    end = postgres_end_of_standard_support()[13]
    assert load("dev", {"db:engineVersion": 13}, today=end).db.engine_version == 13
    [problem] = problems({"db:engineVersion": 13}, preset="dev", today=end + datetime.timedelta(days=1))
    assert "left RDS standard support on 2026-02-28" in problem


def test_a_version_whose_last_day_of_support_is_today_is_still_offered() -> None:
    end_of_14 = postgres_end_of_standard_support()[14]
    [problem] = problems({"db:engineVersion": 13}, preset="dev", today=end_of_14)
    assert "Choose one of 14, 15, 16, 17, 18" in problem


def test_the_first_metadata_release_that_speaks_tls_is_accepted() -> None:
    image = "netflixoss/metaflow_metadata_service:v2.4.6"
    assert load("dev", {"metadata:image": image}).metadata.image == image


# --- Keys the compute type would ignore ------------------------------------------------------------------------


def test_fargate_accepts_min_vcpus_set_to_zero_and_refuses_any_more() -> None:
    assert load("minimal", {"compute:type": "fargate", "compute:minVcpus": 0}).compute.min_vcpus == 0
    [problem] = problems({"compute:type": "fargate", "compute:minVcpus": 1})
    assert problem.startswith("compute:minVcpus = 1: Fargate keeps nothing running")


# --- UI keys and the access mode ------------------------------------------------------------------------------


def test_ui_enabled_set_to_false_is_not_a_key_without_effect() -> None:
    assert load("dev", {"ui:enabled": False}).ui.enabled is False


@pytest.mark.parametrize(
    "key, value, access",
    [
        ("ui:oidc", WRONG_FORMAT["ui:oidc"] | {"issuer": "https://idp.example.com"}, "private"),
        ("ui:oidc", WRONG_FORMAT["ui:oidc"] | {"issuer": "https://idp.example.com"}, "allowList"),
        ("ui:domain", "mf.example.com", "private"),
        ("ui:hostedZoneId", "Z0123456789ABC", "private"),
    ],
)
def test_a_ui_key_outside_the_modes_it_applies_to_is_refused(key: str, value: Any, access: str) -> None:
    overrides = {"ui:enabled": True, "ui:access": access, key: value}
    if access == "allowList":
        overrides["ui:allowedCidrs"] = [OFFICE]
    assert any(p.startswith(f"{key} does not apply to ui:access {access}") for p in problems(overrides, preset="dev"))


def test_an_allow_listed_ui_may_have_its_own_domain_and_zone() -> None:
    overrides = {
        "ui:enabled": True,
        "ui:access": "allowList",
        "ui:allowedCidrs": [OFFICE],
        "ui:certificateArn": CERT,
        "ui:domain": "mf.example.com",
        "ui:hostedZoneId": "Z0123456789ABC",
    }
    assert load("dev", overrides).ui.hosted_zone_id == "Z0123456789ABC"


# --- Tags, the VPC block and Pulumi's config ---------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["metaflow:stack", "Name"])
def test_a_user_tag_may_not_reuse_a_tag_the_program_sets_itself(tag: str) -> None:
    [problem] = problems({"metaflow:tags": {tag: "mine"}})
    assert f"this program sets the tag {tag!r} itself" in problem


def test_a_vpc_block_aws_refuses_is_reported_under_its_key() -> None:
    [problem] = problems({"network:vpcCidr": "8.8.0.0/16"})
    assert problem.startswith("network:vpcCidr = '8.8.0.0/16': ")


def test_config_comes_from_pulumis_environment_overridden_by_its_runtime_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"aws:region": "eu-west-1", "metaflow:preset": "dev"}))
    token = pulumi.runtime.config.CONFIG.set({"aws:region": "us-east-1"})
    try:
        assert raw_config_from_pulumi() == {"aws:region": "us-east-1", "metaflow:preset": "dev"}
    finally:
        pulumi.runtime.config.CONFIG.reset(token)


# --- The production keys, across each other ----------------------------------------------------------------------

EXISTING = {
    "network:vpcId": "vpc-0123456789abcdef0",
    "network:subnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}
KEY_IN = "arn:aws:kms:{}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab".format


@pytest.mark.parametrize(
    "preset, overrides, problem",
    [
        (
            "production",
            {"network:natGateways": 0},
            "network:privateSubnets = true needs network:natGateways of 1 or more: without NAT, Batch instances "
            "cannot reach ECS, ECR or PyPI (jobs would stay RUNNABLE) and the metadata service cannot pull its image",
        ),
        (
            "dev",
            {"network:natGateways": 1},
            "network:natGateways has no effect while network:privateSubnets is false; set network:privateSubnets "
            "true or unset it",
        ),
        (
            "dev",
            {"network:interfaceEndpoints": ["ecr"]},
            "network:interfaceEndpoints has no effect while network:privateSubnets is false; set "
            "network:privateSubnets true or unset it",
        ),
        (
            "production",
            {**EXISTING, "network:interfaceEndpoints": ["logs"]},
            "network:interfaceEndpoints applies to the VPC this program creates; with network:vpcId your VPC's own "
            "routes and endpoints are used: unset it",
        ),
        (
            "production",
            {**EXISTING, "ui:enabled": True, "ui:access": "allowList", "ui:allowedCidrs": [OFFICE]},
            "ui:access allowList puts an internet-facing load balancer in network:subnetIds, which "
            "network:privateSubnets says are private: use ui:access private (a tunnel, no load balancer)",
        ),
        (
            "production",
            {"datastore:kmsKey": KEY_IN("eu-west-1")},
            "datastore:kmsKey is in eu-west-1: S3 encrypts a bucket in us-east-1 only with a KMS key in us-east-1; "
            "give one there, or `create`",
        ),
        (
            "dev",
            {"budget:email": "ops@example.com"},
            "budget:email has no effect without budget:monthlyUsd; set one or unset it",
        ),
        ("dev", {"budget:monthlyUsd": 50}, "budget:monthlyUsd = 50 needs someone to tell: set budget:email"),
        (
            "production",
            {"budget:monthlyUsd": 50},
            "budget:monthlyUsd = 50 needs someone to tell: set budget:email (or alerts:email)",
        ),
        (
            "dev",
            {"alerts:email": "ops@example.com"},
            "alerts:email has no effect while alerts:enabled is false; set alerts:enabled true or unset it",
        ),
    ],
)
def test_production_keys_that_contradict_each_other_are_refused(
    preset: str, overrides: dict[str, Any], problem: str
) -> None:
    assert problems(overrides, preset) == [problem]


def test_an_existing_vpc_takes_the_production_preset_without_its_nat_and_a_key_in_the_region() -> None:
    settings = load("production", {**EXISTING, "datastore:kmsKey": KEY_IN("us-east-1")})
    assert settings.network.private_subnets and settings.datastore.kms_key == KEY_IN("us-east-1")


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"network:natGateways": 4}, "network:natGateways = '4'"),
        ({"metadata:tasks": 0}, "metadata:tasks = '0'"),
        ({"datastore:noncurrentVersionDays": 0}, "datastore:noncurrentVersionDays = '0'"),
        ({"network:interfaceEndpoints": ["s3"]}, "network:interfaceEndpoints[0] = 's3'"),
        ({"budget:monthlyUsd": 0, "budget:email": "ops@example.com"}, "budget:monthlyUsd = '0'"),
    ],
)
def test_production_numbers_and_choices_outside_their_range_are_refused_by_name(
    overrides: dict[str, Any], key: str
) -> None:
    assert any(problem.startswith(key) for problem in problems(overrides, "production")), problems(
        overrides, "production"
    )


# --- Backup and maintenance windows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "windows, problem",
    [
        (
            {"db:maintenanceWindow": "sun:04:00-sun:04:30"},
            "db:maintenanceWindow needs db:backupWindow as well: RDS refuses windows that overlap, and would pick "
            "the other one",
        ),
        (
            {"db:backupWindow": "03:00-03:30"},
            "db:backupWindow needs db:maintenanceWindow as well: RDS refuses windows that overlap, and would pick "
            "the other one",
        ),
        (
            {"db:backupWindow": "03:00-03:29", "db:maintenanceWindow": "sun:04:00-sun:04:30"},
            "db:backupWindow = '03:00-03:29' lasts 29 minutes: RDS needs 30 or more",
        ),
        (
            {"db:backupWindow": "03:00-03:30", "db:maintenanceWindow": "sun:04:00-sun:04:00"},
            "db:maintenanceWindow = 'sun:04:00-sun:04:00' lasts 0 minutes: RDS needs 30 or more",
        ),
        (
            {"db:backupWindow": "04:15-04:45", "db:maintenanceWindow": "sun:04:00-sun:04:30"},
            "db:maintenanceWindow sun:04:00-sun:04:30 overlaps db:backupWindow 04:15-04:45: RDS refuses that",
        ),
        (
            # Around midnight and the week's end: Sunday night's window meets Monday's first backup.
            {"db:backupWindow": "00:10-00:40", "db:maintenanceWindow": "sun:23:50-mon:00:20"},
            "db:maintenanceWindow sun:23:50-mon:00:20 overlaps db:backupWindow 00:10-00:40: RDS refuses that",
        ),
    ],
)
def test_database_windows_rds_would_refuse_are_refused(windows: dict[str, str], problem: str) -> None:
    assert problems(windows, "production") == [problem]


@pytest.mark.parametrize(
    "backup, maintenance",
    [
        ("03:00-03:30", "sun:04:00-sun:04:30"),
        ("03:30-04:00", "sun:04:00-sun:04:30"),
        ("23:45-00:15", "wed:12:00-wed:13:00"),
    ],
)
def test_database_windows_apart_are_accepted(backup: str, maintenance: str) -> None:
    db = load("production", {"db:backupWindow": backup, "db:maintenanceWindow": maintenance}).db
    assert (db.backup_window, db.maintenance_window) == (backup, maintenance)


@pytest.mark.parametrize("value", ["team", '["team"]', "42"])
def test_tags_that_are_no_map_are_explained_with_the_value_given_and_both_ways_to_set_them(value: str) -> None:
    (problem,) = problems({"metaflow:tags": value})
    assert problem.startswith(f"metaflow:tags = {value!r}: accepted: a map of strings")
    assert 'pulumi config set --path "metaflow:tags.team" ds' in problem and '{"team": "ds"}' in problem
