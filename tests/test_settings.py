"""Settings: presets as data, single-key overrides, structured config, and one clear error per mistake."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from conftest import TODAY, stack_config

from metaflow_infra.settings import (
    NAMESPACES,
    ComputeType,
    ConfigError,
    Settings,
    available_presets,
    default_preset,
    is_available,
    key_fields,
    known_keys,
    load_settings,
    presets,
)
from metaflow_infra.settings.catalog import preset_catalog


def load(preset: str = "minimal", overrides: dict[str, Any] | None = None, **kwargs: Any) -> Settings:
    return load_settings(stack_config(preset, overrides, **kwargs), stack="dev", today=TODAY)


def error_for(overrides: dict[str, Any], preset: str = "minimal", **kwargs: Any) -> str:
    with pytest.raises(pulumi.RunError) as raised:
        load(preset, overrides, **kwargs)
    assert isinstance(raised.value, ConfigError)
    return str(raised.value)


def test_dev_is_the_default_preset() -> None:
    raw = stack_config()
    del raw["metaflow:preset"]
    settings = load_settings(raw, stack="dev", today=TODAY)
    assert settings.metaflow.preset == "dev" and settings.metadata.enabled is True


def test_preset_values_come_from_the_preset_data_over_the_key_defaults() -> None:
    settings = load("minimal")
    assert settings.compute.type is ComputeType.SPOT
    assert settings.compute.min_vcpus == 0
    assert settings.compute.max_vcpus == key_fields()["compute:maxVcpus"].default == 32
    assert load("dev").compute.max_vcpus == presets()["dev"]["compute:maxVcpus"] == 64
    assert settings.datastore.force_destroy is False
    assert settings.datastore.versioning is False
    assert settings.metadata.enabled is False


def test_single_key_overrides_its_preset_and_nothing_else() -> None:
    settings = load("minimal", {"compute:maxVcpus": 8})
    assert settings.compute.max_vcpus == 8
    assert settings.compute.type is ComputeType.SPOT
    assert settings.datastore.force_destroy is False


def test_a_preset_sets_only_what_differs_from_the_key_default() -> None:
    """Defaults live in one place: a preset repeating one would drift from it unnoticed."""
    fields = key_fields()
    for preset, values in presets().items():
        repeated = [key for key, value in values.items() if key in fields and value == fields[key].default]
        assert not repeated, f"preset {preset} repeats the defaults of {repeated}"


def test_the_default_preset_is_available_and_listed_once() -> None:
    assert default_preset() in available_presets()
    assert list(presets()) == ["minimal", "dev", "production"]


def test_every_preset_key_is_a_known_config_key() -> None:
    every_key = {key for namespace in NAMESPACES for key in known_keys(namespace)}
    for preset, values in presets().items():
        unknown = set(values) - every_key
        assert not unknown, f"preset {preset} sets unknown keys {unknown}"


def test_structured_tags_and_list_config_are_read() -> None:
    settings = load(
        "minimal",
        {"metaflow:tags": {"team": "ds", "cost-center": "42"}, "compute:instanceTypes": ["c6i.xlarge", "m6i"]},
    )
    assert settings.metaflow.tags == {"team": "ds", "cost-center": "42"}
    assert settings.tags == {"team": "ds", "cost-center": "42", "metaflow:stack": "dev"}
    assert settings.compute.instance_types == ["c6i.xlarge", "m6i"]


def test_instance_types_accept_a_comma_separated_string() -> None:
    assert load("minimal", {"compute:instanceTypes": "c5, m5.large"}).compute.instance_types == ["c5", "m5.large"]


def test_booleans_accept_pulumi_true_and_false_in_any_case() -> None:
    assert load("minimal", {"datastore:versioning": "TRUE"}).datastore.versioning is True
    assert load("minimal", {"datastore:forceDestroy": "false"}).datastore.force_destroy is False


def test_default_instance_families_are_limited_to_those_offered_in_the_region() -> None:
    families = load("minimal", region="sa-east-1").compute.instance_types
    assert families == ["c5", "m5", "r5"]


def test_unknown_preset_names_the_accepted_ones() -> None:
    message = error_for({}, preset="tiny")
    assert "metaflow:preset = 'tiny'" in message
    assert "minimal, dev, production" in message


def test_a_preset_not_marked_available_is_refused_with_the_available_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = preset_catalog()
    unfinished = {**catalog, "presets": {**catalog["presets"], "production": {**catalog["presets"]["production"]}}}
    unfinished["presets"]["production"]["available"] = False
    monkeypatch.setattr("metaflow_infra.settings.catalog.preset_catalog", lambda: unfinished)
    message = error_for({}, preset="production")
    assert "not available yet" in message and "Available presets: minimal, dev" in message


def test_production_preset_is_available() -> None:
    assert available_presets() == ("minimal", "dev", "production")
    assert load("production").metaflow.preset == "production"


def test_non_boolean_for_a_boolean_key() -> None:
    message = error_for({"datastore:versioning": "yes"})
    assert "datastore:versioning = 'yes'" in message and "expected true or false" in message


@pytest.mark.parametrize("value", ["-4", "4.5", "lots"])
def test_negative_or_non_integer_vcpus(value: str) -> None:
    message = error_for({"compute:maxVcpus": value})
    assert f"compute:maxVcpus = '{value}'" in message
    assert "whole number" in message or "greater than or equal to 1" in message


def test_negative_min_vcpus() -> None:
    assert "compute:minVcpus = '-1'" in error_for({"compute:minVcpus": "-1"})


def test_min_vcpus_above_max_vcpus() -> None:
    message = error_for({"compute:minVcpus": 16, "compute:maxVcpus": 8})
    assert "compute:minVcpus (16) is greater than compute:maxVcpus (8)" in message


def test_unknown_compute_type_lists_the_accepted_types() -> None:
    message = error_for({"compute:type": "gpu"})
    assert "compute:type = 'gpu'" in message
    for accepted in ("'ec2'", "'spot'", "'fargate'", "'fargate_spot'"):
        assert accepted in message


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "10.0.0.1/16", "not-a-cidr"])
def test_malformed_vpc_cidr(cidr: str) -> None:
    message = error_for({"network:vpcCidr": cidr})
    assert f"network:vpcCidr = '{cidr}'" in message and "CIDR" in message


def test_malformed_cidr_in_a_list() -> None:
    message = error_for({"ui:allowedCidrs": ["192.168.0.0/24", "300.1.1.1/32"]})
    assert "ui:allowedCidrs[1] = '300.1.1.1/32'" in message


def test_subnet_ids_without_vpc_id() -> None:
    message = error_for({"network:subnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]})
    assert "network:subnetIds is set but network:vpcId is not" in message


def test_vpc_id_without_subnet_ids() -> None:
    assert "network:vpcId is set but network:subnetIds is not" in error_for({"network:vpcId": "vpc-0123456789abcdef0"})


def test_fewer_than_two_subnets() -> None:
    message = error_for({"network:vpcId": "vpc-0123456789abcdef0", "network:subnetIds": ["subnet-0123456789abcdef0"]})
    assert "network:subnetIds has 1 subnet(s): give at least two" in message


def test_unknown_instance_type_lists_the_known_families() -> None:
    message = error_for({"compute:instanceTypes": ["c5", "x9z.large"]})
    assert "'x9z.large' is not a known instance type" in message and "c6i" in message


def test_unknown_size_of_a_known_family() -> None:
    assert "'c5.8xlarge' is not a known instance type" in error_for({"compute:instanceTypes": ["c5.8xlarge"]})


def test_family_not_offered_in_the_region() -> None:
    message = error_for({"compute:instanceTypes": ["c7i"]}, region="sa-east-1")
    assert "c7i is not offered in sa-east-1" in message and "c5" in message


def test_unknown_key_in_a_known_namespace_suggests_the_right_one() -> None:
    message = error_for({"compute:instanceType": "c5"})
    assert "compute:instanceType is not a known key" in message
    assert "Did you mean compute:instanceTypes?" in message
    assert "compute:maxVcpus" in message


def test_keys_of_other_namespaces_are_left_alone() -> None:
    assert load("minimal", {"pulumi:template": "x", "aws:profile": "me"}).region == "us-east-1"


def test_tag_value_that_is_not_a_string() -> None:
    message = error_for({"metaflow:tags": {"team": "ds", "budget": 5}})
    assert "metaflow:tags.budget = 5" in message and "string" in message


@pytest.mark.parametrize(
    "tags, expected",
    [
        ({"aws:owner": "me"}, "keys starting with 'aws:' (any case) are reserved"),
        ({"AWS:x": "me"}, "reserved"),
        ({"": "v"}, "metaflow:tags"),
        ({"k" * 129: "v"}, "metaflow:tags"),
        ({"team": "v" * 257}, "metaflow:tags"),
        ({"team": "a;b"}, "metaflow:tags"),
        ({f"k{i}": "v" for i in range(49)}, "50"),
    ],
)
def test_tags_aws_would_refuse_are_refused(tags: dict[str, str], expected: str) -> None:
    assert expected in error_for({"metaflow:tags": tags})


def test_forty_eight_user_tags_fit_beside_the_programs_own() -> None:
    assert len(load("minimal", {"metaflow:tags": {f"k{i}": "v" for i in range(48)}}).tags) == 49


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"compute:type": "fargate", "compute:minVcpus": 2}, "Fargate keeps nothing running"),
        ({"compute:type": "ec2", "compute:onDemandFallback": True}, "nothing to fall back from"),
        ({"compute:type": "fargate", "compute:onDemandFallback": True}, "nothing to fall back from"),
        ({"compute:type": "fargate", "compute:instanceTypes": ["c5"]}, "does not apply to Fargate"),
    ],
)
def test_keys_the_compute_type_would_ignore_are_refused(overrides: dict[str, Any], expected: str) -> None:
    assert expected in error_for(overrides)


def test_a_preset_value_that_does_not_apply_to_the_chosen_type_is_left_alone() -> None:
    assert load("dev", {"compute:type": "fargate"}).compute.on_demand_fallback is True


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"aws:region": "us-east-9"}, "aws:region = 'us-east-9': not an AWS region"),
        ({"network:vpcCidr": "8.8.0.0/16"}, "network:vpcCidr"),
        ({"network:vpcCidr": "169.254.0.0/16"}, "network:vpcCidr"),
        ({"network:vpcCidr": "172.17.0.0/16"}, "network:vpcCidr"),
        ({"network:vpcCidr": "10.0.0.0/21"}, "a /16 to /20"),
        ({"aws:allowedAccountIds": ["123456789012"], "aws:forbiddenAccountIds": ["123456789012"]}, "both list"),
        ({"db:instanceClass": "db.x9.huge"}, "db:instanceClass = 'db.x9.huge'"),
        ({"db:instanceClass": "db.t2.micro"}, "previous-generation"),
        ({"metadata:image": "Netflixoss/metaflow_metadata_service:v2.5.1"}, "uppercase"),
        ({"metadata:image": "netflixoss/metaflow_metadata_service"}, "is not pinned"),
        ({"metadata:image": "netflixoss/metaflow_metadata_service:latest"}, "is not pinned"),
        ({"metadata:image": "netflixoss/metaflow_metadata_service:v2.4.5"}, "older than v2.4.6"),
    ],
)
def test_values_aws_would_refuse_are_refused_before_anything_is_declared(
    overrides: dict[str, Any], expected: str
) -> None:
    assert expected in error_for(overrides, preset="dev")


@pytest.mark.parametrize(
    "overrides",
    [
        {"db:engineVersion": 18},
        {"metadata:image": "registry.example.com:5000/team/metaflow_metadata_service:v2.5.1"},
        {"metadata:image": "netflixoss/metaflow_metadata_service@sha256:" + "a" * 64},
        {"metadata:image": "netflixoss/metaflow_metadata_service:v2.5.1@sha256:" + "b" * 64},
        {"compute:instanceTypes": ["optimal"]},
        {"compute:instanceTypes": ["default_x86_64", "c6i"]},
        {"network:vpcCidr": "100.64.0.0/16"},
    ],
)
def test_valid_values_aws_accepts_are_accepted(overrides: dict[str, Any]) -> None:
    load("dev", overrides)


def test_invalid_prefix() -> None:
    assert "metaflow:prefix = 'Metaflow_Prod'" in error_for({"metaflow:prefix": "Metaflow_Prod"})


def test_missing_region() -> None:
    raw = stack_config()
    del raw["aws:region"]
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AWS_REGION", raising=False)
        env.delenv("AWS_DEFAULT_REGION", raising=False)
        with pytest.raises(ConfigError, match="aws:region is not set"):
            load_settings(raw, stack="dev", today=TODAY)


def test_every_key_of_this_release_is_available() -> None:
    assert [key for key, info in key_fields().items() if not is_available(info)] == []


@pytest.fixture
def unfinished_nat_gateways(monkeypatch: pytest.MonkeyPatch) -> None:
    """network:natGateways as a key whose feature has not landed (none is, in this release)."""
    info = key_fields()["network:natGateways"]
    monkeypatch.setattr(info, "json_schema_extra", {"available": False})


@pytest.mark.usefixtures("unfinished_nat_gateways")
def test_a_key_whose_feature_has_not_landed_is_refused_not_ignored() -> None:
    message = error_for({"network:privateSubnets": True, "network:natGateways": 1})
    assert "network:natGateways is not available yet in this release; leave it unset for now" in message


@pytest.mark.usefixtures("unfinished_nat_gateways")
def test_a_key_whose_feature_has_not_landed_may_be_set_to_its_default() -> None:
    assert load("minimal", {"network:natGateways": 0}).network.nat_gateways == 0


def test_every_problem_is_reported_in_one_message() -> None:
    message = error_for({"compute:maxVcpus": "x", "datastore:versioning": "maybe"})
    assert message.count("\n  - ") == 2


def test_a_key_in_an_unknown_namespace_is_refused_with_a_hint() -> None:
    message = error_for({"metadta:enabled": False})
    assert "metadta:enabled: 'metadta' is not a config namespace" in message
    assert "did you mean metadata:enabled?" in message


def test_a_key_set_without_namespace_lands_in_the_project_namespace_and_is_refused() -> None:
    # `pulumi config set preset minimal` stores metaflow-infra:preset.
    assert "did you mean metaflow:preset?" in error_for({"metaflow-infra:preset": "minimal"})


def test_aws_keys_are_validated_too() -> None:
    assert "aws:allowedAccountIds[0] = '12345'" in error_for({"aws:allowedAccountIds": ["12345"]})
    message = error_for({"aws:defaultTags": {"a": "b"}})
    assert "aws:defaultTags is not a known key" in message and "aws:profile" in message


@pytest.mark.parametrize(
    "image", ["netflixoss/metaflow_metadata_service:v2.3.0", "netflixoss/metaflow_metadata_service:v2.4.5"]
)
def test_metadata_images_that_cannot_speak_tls_are_refused(image: str) -> None:
    assert "earlier releases cannot speak TLS" in error_for({"metadata:image": image}, preset="dev")


def test_a_newer_or_mirrored_metadata_image_is_accepted() -> None:
    image = "public.ecr.aws/outerbounds/metaflow_metadata_service:2.5.0"
    assert load("dev", {"metadata:image": image}).metadata.image == image
