"""Values AWS refuses only at `pulumi up`, refused here by name: names S3, ECR, Budgets and DNS would
refuse, lists AWS will not take twice, ARNs and services of another partition, reservations Lambda
cannot grant, and the network the program builds where the region has fewer zones."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from conftest import TODAY, offline, stack_config

from metaflow_infra.offline import RecordingMocks, SubnetFixture, run_offline
from metaflow_infra.settings import ConfigError, config_warnings, load_settings

CERT = "arn:aws:acm:{region}:123456789012:certificate/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY = "arn:{partition}:kms:{region}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
VPC = "vpc-0123456789abcdef0"


def problems(overrides: dict[str, Any], preset: str = "minimal", stack: str = "dev", region: str = "us-east-1") -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(stack_config(preset, overrides, region), stack=stack, today=TODAY)
    return str(raised.value)


def loads(overrides: dict[str, Any], preset: str = "minimal", stack: str = "dev", region: str = "us-east-1") -> None:
    load_settings(stack_config(preset, overrides, region), stack=stack, today=TODAY)


@pytest.mark.parametrize("prefix", ["sthree", "amzn-s3-demo", "sthree-x"])
def test_a_prefix_that_makes_a_bucket_name_s3_reserves_is_refused(prefix: str) -> None:
    assert f"metaflow:prefix = {prefix!r} would name the bucket" in problems({"metaflow:prefix": prefix})


@pytest.mark.parametrize("prefix", ["sthreex", "amzn-s3", "three"])
def test_prefixes_near_the_reserved_ones_pass(prefix: str) -> None:
    loads({"metaflow:prefix": prefix})


def test_a_ui_network_listed_twice_is_refused() -> None:
    ui = {"ui:enabled": True, "ui:access": "allowList", "ui:allowedCidrs": ["203.0.113.0/24", "203.0.113.0/24"]}
    assert "ui:allowedCidrs lists 203.0.113.0/24 more than once" in problems(ui, "dev")


def test_an_ipv6_ui_network_is_refused_since_the_load_balancer_is_ipv4_only() -> None:
    ui = {"ui:enabled": True, "ui:access": "allowList", "ui:allowedCidrs": ["203.0.113.0/24", "2001:db8::/32"]}
    assert "ui:allowedCidrs 2001:db8::/32: the load balancer has IPv4 addresses only" in problems(ui, "dev")


def test_an_interface_endpoint_listed_twice_is_refused() -> None:
    network = {"network:privateSubnets": True, "network:natGateways": 1, "network:interfaceEndpoints": ["ecr", "ecr"]}
    assert "network:interfaceEndpoints lists ecr more than once" in problems(network)


@pytest.mark.parametrize(
    "key, value",
    [
        ("datastore:kmsKey", KEY.format(partition="aws-cn", region="us-east-1")),
        ("ui:certificateArn", "arn:aws-cn:acm:us-east-1:123456789012:certificate/1234abcd-12ab"),
    ],
)
def test_an_arn_of_another_partition_is_refused(key: str, value: str) -> None:
    overrides: dict[str, Any] = {key: value}
    if key.startswith("ui:"):
        overrides |= {"ui:enabled": True, "ui:access": "allowList", "ui:allowedCidrs": ["203.0.113.0/24"]}
    assert f"{key} is an ARN of the aws-cn partition; a stack in us-east-1 (aws) needs arn:aws:" in problems(
        overrides, "dev"
    )


def test_a_govcloud_stack_needs_govcloud_arns() -> None:
    commercial = KEY.format(partition="aws", region="us-gov-west-1")
    assert "needs arn:aws-us-gov:" in problems({"datastore:kmsKey": commercial}, region="us-gov-west-1")
    loads({"datastore:kmsKey": KEY.format(partition="aws-us-gov", region="us-gov-west-1")}, region="us-gov-west-1")


def test_a_role_to_assume_of_another_partition_is_refused() -> None:
    roles = [{"roleArn": "arn:aws-cn:iam::123456789012:role/deployer"}]
    assert "aws:assumeRoles[0].roleArn is an ARN of the aws-cn partition" in problems({"aws:assumeRoles": roles})


def test_cognito_sign_in_is_refused_in_china_and_oidc_is_the_way() -> None:
    ui = {
        "ui:enabled": True,
        "ui:access": "public",
        "ui:certificateArn": "arn:aws-cn:acm:cn-north-1:123456789012:certificate/1234abcd-12ab",
        "ui:domain": "mf.example.com",
    }
    assert "Amazon Cognito is not offered in the aws-cn partition" in problems(ui, "dev", region="cn-north-1")
    oidc = {
        "issuer": "https://idp.example.com",
        "authorizationEndpoint": "https://idp.example.com/authorize",
        "tokenEndpoint": "https://idp.example.com/token",
        "userInfoEndpoint": "https://idp.example.com/userinfo",
        "clientId": "metaflow",
        "clientSecret": "s3cr3t",
    }
    loads({**ui, "ui:auth": "oidc", "ui:oidc": oidc}, "dev", region="cn-north-1")


def test_a_budget_is_refused_in_govcloud_where_aws_budgets_is_not_offered() -> None:
    budget = {"budget:monthlyUsd": 100, "budget:email": "finance@example.com"}
    assert "AWS Budgets is not offered in the aws-us-gov partition" in problems(budget, region="us-gov-west-1")
    loads(budget, region="cn-north-1")


@pytest.mark.parametrize("stack", ["dev_", "dev.", "a..b", "_dev"])
def test_a_stack_name_ecr_cannot_take_in_the_repository_name_is_refused_with_ecr(stack: str) -> None:
    assert "which ECR refuses" in problems({"ecr:enabled": True}, "dev", stack=stack)
    loads({}, "dev", stack=stack)  # without a repository, the name is fine


@pytest.mark.parametrize("stack", ["dev_", "a..b"])
def test_a_stack_name_ecr_cannot_take_is_refused_for_the_scale_to_zero_image_copy(stack: str) -> None:
    message = problems({"metadata:scaleToZero": True}, "dev", stack=stack)
    assert f"ECR repository name 'metaflow-{stack}/metadata-service' (metadata:scaleToZero)" in message


@pytest.mark.parametrize("stack", ["dev", "team-a", "team.a", "team_a", "Prod"])
def test_ordinary_stack_names_make_an_ecr_repository(stack: str) -> None:
    loads({"ecr:enabled": True, "metadata:scaleToZero": True}, "dev", stack=stack)


def test_a_stack_name_too_long_for_the_service_namespace_label_is_refused() -> None:
    longest = "s" * (63 - len("metaflow-"))
    loads({}, "dev", stack=longest)
    assert "DNS namespace label" in problems({}, "dev", stack=longest + "s")
    loads({}, "minimal", stack=longest + "s")  # no metadata service, no namespace


def test_a_stack_name_too_long_for_a_budget_name_is_refused() -> None:
    budget = {"budget:monthlyUsd": 100, "budget:email": "finance@example.com"}
    longest = "s" * (100 - len("metaflow--monthly"))
    loads(budget, stack=longest)
    assert "AWS Budgets takes at most 100" in problems(budget, stack=longest + "s")


def test_an_authorizer_reservation_lambda_grants_only_with_a_raised_limit_is_warned_of() -> None:
    def warnings(concurrency: int) -> list[str]:
        raw = stack_config("dev", {"metadata:authorizerConcurrency": concurrency})
        return config_warnings(load_settings(raw, stack="dev", today=TODAY), raw)

    assert warnings(900) == []
    assert any("at most 900 can be reserved" in warning for warning in warnings(901))


def test_a_provider_integer_beyond_64_bits_is_refused() -> None:
    loads({"aws:maxRetries": str(2**63 - 1)})
    assert "aws:maxRetries" in problems({"aws:maxRetries": "99999999999999999999"})
    assert "from -9223372036854775808 to 9223372036854775807" in problems({"aws:maxRetries": str(2**63)})


def test_more_nat_gateways_than_the_account_has_zones_stops_by_name() -> None:
    network = {"network:privateSubnets": True, "network:natGateways": 3}
    with pytest.raises(pulumi.RunError, match=r"network:natGateways = 3, but this account has 2 availability zones"):
        offline("minimal", network, region="us-west-1")
    two = offline("minimal", {**network, "network:natGateways": 2}, region="us-west-1")
    assert len(two.of_type("aws:ec2/natGateway:NatGateway")) == 2


def test_the_load_balancer_of_an_existing_network_gets_one_subnet_per_zone() -> None:
    subnets = {
        "subnet-0000000000000000a": SubnetFixture(VPC, "us-east-1b", "use1-az1"),
        "subnet-0000000000000000b": SubnetFixture(VPC, "us-east-1b", "use1-az1"),
        "subnet-0000000000000000c": SubnetFixture(VPC, "us-east-1c", "use1-az2"),
    }
    overrides = {
        "network:vpcId": VPC,
        "network:subnetIds": list(subnets),
        "ui:enabled": True,
        "ui:access": "allowList",
        "ui:allowedCidrs": ["203.0.113.0/24"],
    }
    run = offline("dev", overrides, subnets=subnets)
    (balancer,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert balancer.inputs["subnets"] == ["subnet-0000000000000000a", "subnet-0000000000000000c"]


def test_endpoint_service_names_are_the_ones_ec2_lists_for_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """China names most interface endpoint services `cn.com.amazonaws.…` (its S3 gateway keeps
    `com.amazonaws.…`): the program asks EC2 for either name, never assumes one."""
    answer = RecordingMocks.call

    def china(self: RecordingMocks, args: pulumi.runtime.MockCallArgs) -> Any:
        if args.token != "aws:ec2/getVpcEndpointService:getVpcEndpointService":
            return answer(self, args)
        (names,) = [f["values"] for f in args.args["filters"] if f["name"] == "service-name"]
        listed = "com.amazonaws" if args.args["serviceType"] == "Gateway" else "cn.com.amazonaws"
        (name,) = [n for n in names if n.startswith(f"{listed}.")]
        return {"serviceName": name, "id": name}, []

    monkeypatch.setattr(RecordingMocks, "call", china)
    network = {"network:privateSubnets": True, "network:natGateways": 1, "network:interfaceEndpoints": ["ecr"]}
    run = run_offline(stack_config("minimal", network, "cn-north-1"), today=TODAY)
    names = {r.inputs["serviceName"] for r in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert names == {
        "cn.com.amazonaws.cn-north-1.ecr.api",
        "cn.com.amazonaws.cn-north-1.ecr.dkr",
        "com.amazonaws.cn-north-1.s3",
    }
