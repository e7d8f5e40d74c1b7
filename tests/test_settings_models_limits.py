"""Each namespace model on its own: the default of every key, the limits and formats AWS imposes,
the AWS provider's pass-through settings parsed by kind, and models that cannot be changed once made."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TODAY, stack_config
from pydantic import BaseModel, ValidationError

from metaflow_infra.settings import (
    NAMESPACES,
    AwsSettings,
    ComputeSettings,
    DbSettings,
    EcrSettings,
    NetworkSettings,
    UiSettings,
    load_settings,
)
from metaflow_infra.settings.models import AssumeRole, OidcSettings


def accepts(model: type[BaseModel], **values: Any) -> bool:
    try:
        model.model_validate(values)
    except ValidationError:
        return False
    return True


# --- Defaults --------------------------------------------------------------------------------------------------

DEFAULTS = {
    "network": {
        "vpcId": None,
        "subnetIds": None,
        "vpcCidr": "10.0.0.0/16",
        "privateSubnets": False,
        "natGateways": 0,
        "interfaceEndpoints": [],
    },
    "datastore": {"forceDestroy": False, "versioning": False, "noncurrentVersionDays": 30, "kmsKey": None},
    "db": {
        "engineVersion": 17,
        "instanceClass": "db.t4g.micro",
        "multiAz": False,
        "deletionProtection": True,
        "skipFinalSnapshot": False,
        "backupRetentionDays": 1,
        "allowExtendedSupport": False,
        "allocatedStorageGb": 20,
        "backupWindow": None,
        "maintenanceWindow": None,
        "performanceInsights": False,
    },
    "metadata": {
        "enabled": False,
        "image": "netflixoss/metaflow_metadata_service:v2.5.1",
        "cpu": 256,
        "memory": 1024,
        "tasks": 1,
        "spot": False,
        "apiKeyRotation": 1,
        "authorizerConcurrency": 5,
        "scaleToZero": False,
        "idleMinutes": 15,
    },
    "compute": {
        "type": "spot",
        "minVcpus": 0,
        "maxVcpus": 32,
        "instanceTypes": ["c6i", "m6i", "r6i", "c5", "m5", "r5"],
        "onDemandFallback": False,
        "gpu": False,
        "gpuInstanceTypes": ["g4dn", "g5"],
        "gpuMaxVcpus": 16,
        "neuronInstanceTypes": [],
        "neuronMaxVcpus": 16,
        "multiNode": False,
        "multiNodeInstanceTypes": ["c6i", "m6i", "r6i", "c5", "m5", "r5"],
        "multiNodeMaxVcpus": 64,
    },
    "stepFunctions": {"enabled": False, "logRetentionDays": 14},
    "ui": {
        "enabled": False,
        "access": "private",
        "certificateArn": None,
        "allowedCidrs": None,
        "auth": "cognito",
        "oidc": None,
        "domain": None,
        "hostedZoneId": None,
        "cpu": 512,
        "memory": 2048,
    },
    "ecr": {"enabled": False, "keepImages": 30, "immutableTags": False, "imageTag": None},
    "secrets": {"enabled": False},
    "alerts": {"enabled": False, "email": None},
    "budget": {"monthlyUsd": None, "email": None},
}
"""What a key is when neither the stack nor its preset sets it: small, private, nothing billing while idle,
nothing deleted without asking (the README's configuration table documents each)."""


@pytest.mark.parametrize("namespace", DEFAULTS)
def test_every_key_has_its_documented_default(namespace: str) -> None:
    assert NAMESPACES[namespace]().model_dump(by_alias=True, mode="json") == DEFAULTS[namespace]


def test_the_metaflow_namespace_defaults_to_the_metaflow_prefix_and_no_extra_tags() -> None:
    settings = load_settings(stack_config("minimal"), stack="dev", today=TODAY)
    assert (settings.metaflow.prefix, settings.metaflow.tags) == ("metaflow", {})


def test_the_stack_region_is_read_from_aws_region() -> None:
    assert load_settings(stack_config("minimal", region="eu-west-1"), stack="dev", today=TODAY).region == "eu-west-1"


# --- Limits and formats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, key, accepted, refused",
    [
        (DbSettings, "allocatedStorageGb", [20, 65536], [19, 65537]),
        (EcrSettings, "keepImages", [1, 10000], [0, 10001]),
        (NetworkSettings, "natGateways", [0], [-1]),
        (ComputeSettings, "minVcpus", [0], [-1]),
    ],
)
def test_whole_numbers_are_held_to_what_aws_accepts(
    model: type[BaseModel], key: str, accepted: list[int], refused: list[int]
) -> None:
    for value in accepted:
        assert accepts(model, **{key: value}), value
    for value in refused:
        assert not accepts(model, **{key: value}), value


def label(length: int) -> str:
    return "a" * length


@pytest.mark.parametrize(
    "domain, accepted",
    [
        ("mf.example.com", True),
        ("a-b.c.io", True),
        (".".join([label(63)] * 3) + "." + label(61), True),  # 253 characters
        (".".join([label(63)] * 3) + "." + label(62), False),  # 254
        ("Mf.example.com", False),
        ("-mf.example.com", False),
        ("mf.example.com-", False),
        ("mf-.example.com", False),
        ("localhost", False),
    ],
)
def test_the_ui_domain_is_a_lowercase_dns_name_of_at_most_253_characters(domain: str, accepted: bool) -> None:
    assert accepts(UiSettings, domain=domain) is accepted


@pytest.mark.parametrize(
    "zone, accepted",
    [("Z0123456789ABC", True), ("Z" + "A" * 31, True), ("Z" + "A" * 32, False), ("z0123", False),
     ("XZ0123", False), ("Z0123x", False)],
)  # fmt: skip
def test_a_hosted_zone_id_is_route_53s(zone: str, accepted: bool) -> None:
    assert accepts(UiSettings, hostedZoneId=zone) is accepted


CERT = "arn:aws:acm:us-east-1:123456789012:certificate/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize(
    "arn, accepted",
    [(CERT, True), (CERT.replace("aws:", "aws-cn:", 1), True), ("x" + CERT, False), (CERT + "/x", False),
     (CERT.replace("acm", "iam"), False), (CERT.upper(), False)],
)  # fmt: skip
def test_a_certificate_is_an_acm_certificate_arn(arn: str, accepted: bool) -> None:
    assert accepts(UiSettings, certificateArn=arn) is accepted


@pytest.mark.parametrize(
    "tag, accepted",
    [("py311", True), ("_x.y-z", True), ("a" * 128, True), ("a" * 129, False), ("-x", False), (".x", False),
     ("x!", False), ("", False)],
)  # fmt: skip
def test_an_image_tag_is_what_docker_accepts(tag: str, accepted: bool) -> None:
    assert accepts(EcrSettings, imageTag=tag) is accepted


@pytest.mark.parametrize(
    "vpc, accepted",
    [("vpc-0123abcd", True), ("vpc-0123456789abcdef0", True), ("vpc-0123abc", False), ("vpc-0123456789abcdef01", False),
     ("xvpc-0123abcd", False), ("vpc-0123abcd!", False), ("vpc-0123ABCD", False)],
)  # fmt: skip
def test_a_vpc_id_is_an_ec2_vpc_id(vpc: str, accepted: bool) -> None:
    assert accepts(NetworkSettings, vpcId=vpc, subnetIds=["subnet-0123abcd", "subnet-0123abce"]) is accepted


@pytest.mark.parametrize(
    "region, accepted",
    [("us-east-1", True), ("us-gov-west-1", True), ("us-isob-east-1", True), ("xus-east-1", False),
     ("us-east-1x", False), ("US-EAST-1", False)],
)  # fmt: skip
def test_a_region_has_the_shape_of_an_aws_region_name(region: str, accepted: bool) -> None:
    assert accepts(AwsSettings, region=region) is accepted


@pytest.mark.parametrize(
    "arn, accepted",
    [("arn:aws:iam::123456789012:role/deployer", True), ("arn:aws:iam::123456789012:user/deployer", False),
     ("xarn:aws:iam::123456789012:role/deployer", False), ("arn:aws:iam::123456789012:role/deployer\n", False)],
)  # fmt: skip
def test_an_assumed_role_is_an_iam_role_arn(arn: str, accepted: bool) -> None:
    assert accepts(AssumeRole, roleArn=arn) is accepted


OIDC = {
    "issuer": "https://idp.example.com",
    "authorizationEndpoint": "https://idp.example.com/authorize",
    "tokenEndpoint": "https://idp.example.com/token",
    "userInfoEndpoint": "https://idp.example.com/userinfo",
    "clientId": "c",
    "clientSecret": "s",
}


@pytest.mark.parametrize("key", ["issuer", "authorizationEndpoint", "tokenEndpoint", "userInfoEndpoint"])
def test_every_oidc_endpoint_is_an_https_url(key: str) -> None:
    assert accepts(OidcSettings, **OIDC)
    for url in ("http://idp.example.com", "xhttps://idp.example.com", "https://idp.example.com/a b", "https://"):
        assert not accepts(OidcSettings, **{**OIDC, key: url}), url


@pytest.mark.parametrize("key", ["clientId", "clientSecret"])
def test_the_oidc_client_id_and_secret_may_not_be_empty(key: str) -> None:
    assert not accepts(OidcSettings, **{**OIDC, key: ""})


# --- The AWS provider's own settings ---------------------------------------------------------------------------


def aws(**values: Any) -> AwsSettings:
    return AwsSettings.model_validate({"region": "us-east-1", **values})


def test_provider_settings_are_parsed_by_the_kind_pulumi_aws_declares() -> None:
    settings = aws(
        maxRetries="3",
        insecure="TRUE",
        stsRegion="us-west-2",
        sharedConfigFiles="a, b",
        endpoints='[{"s3": "http://localhost:4566"}]',
        ignoreTags='{"keys": ["owner"]}',
    )
    assert settings.model_extra == {
        "maxRetries": 3,
        "insecure": True,
        "stsRegion": "us-west-2",
        "sharedConfigFiles": ["a", "b"],
        "endpoints": [{"s3": "http://localhost:4566"}],
        "ignoreTags": {"keys": ["owner"]},
    }


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("stsRegion", 5, "expected a string"),
        ("maxRetries", "3.5", "expected a whole number"),
        ("insecure", "yes", "expected true or false"),
        ("sharedConfigFiles", "[1]", "expected a list of strings"),
        ("sharedConfigFiles", '{"a": "b"}', "expected a list of strings"),
        ("endpoints", '["s3"]', "expected a JSON list of objects"),
        ("endpoints", '{"s3": "x"}', "expected a JSON list of objects"),
        ("ignoreTags", '["owner"]', "expected a JSON object"),
    ],
)
def test_a_provider_setting_of_the_wrong_shape_is_refused_naming_key_and_kind(
    key: str, value: Any, expected: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        aws(**{key: value})
    assert f"aws:{key} = {value!r}: {expected}" in str(raised.value)


def test_declared_aws_keys_are_validated_by_their_own_types() -> None:
    assert aws(profile="me").profile == "me"
    assert aws(allowedAccountIds='["123456789012"]').allowed_account_ids == ["123456789012"]
    with pytest.raises(ValidationError):
        aws(profile=5)


def test_the_aws_namespace_must_be_a_mapping() -> None:
    with pytest.raises(ValidationError):
        AwsSettings.model_validate(["us-east-1"])


# --- Models that cannot change ---------------------------------------------------------------------------------


def test_a_namespace_refuses_keys_it_does_not_declare() -> None:
    assert not accepts(NetworkSettings, vpcCIDR="10.0.0.0/16")


@pytest.mark.parametrize("namespace", ["aws", "compute", "settings"])
def test_validated_settings_cannot_be_changed(namespace: str) -> None:
    settings = load_settings(stack_config("minimal"), stack="dev", today=TODAY)
    target, field = {"aws": (settings.aws, "profile"), "compute": (settings.compute, "max_vcpus")}.get(
        namespace, (settings, "stack")
    )
    with pytest.raises(ValidationError, match="frozen"):
        setattr(target, field, "other")
