"""The metadata service: pinned TLS-capable image, migrated schema, key-protected endpoint, least privilege."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from conftest import offline, policy_of

from metaflow_infra.metadata import api_key_slots
from metaflow_infra.offline import DeclaredResource, OfflineRun
from metaflow_infra.settings import FARGATE_MEMORY_BY_CPU


@pytest.fixture(scope="module")
def dev() -> OfflineRun:
    return offline("dev")


def containers(run: OfflineRun) -> dict[str, dict[str, Any]]:
    task = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    return {c["name"]: c for c in json.loads(task["containerDefinitions"])}


def named(run: OfflineRun, type_: str, suffix: str) -> DeclaredResource:
    [found] = [r for r in run.of_type(type_) if r.name.endswith(suffix)]
    return found


def test_image_is_a_pinned_release_that_speaks_tls(dev: OfflineRun) -> None:
    for container in containers(dev).values():
        image, _, tag = container["image"].rpartition(":")
        assert image == "netflixoss/metaflow_metadata_service"
        assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{tag} is not a pinned release"
        assert tuple(map(int, tag[1:].split("."))) >= (2, 4, 6)  # TLS to PostgreSQL in service and migrations
        environment = {e["name"]: e["value"] for e in container["environment"]}
        assert environment["MF_METADATA_DB_SSL_MODE"] == "require"


def test_database_connection_is_plain_env_and_the_password_only_an_ecs_secret(dev: OfflineRun) -> None:
    db = dev.one("aws:rds/instance:Instance")
    [password] = [p for p in dev.of_type("random:index/randomPassword:RandomPassword") if "db" in p.name]
    secret_arn = named(dev, "aws:secretsmanager/secret:Secret", "db-password").state["arn"]
    for container in containers(dev).values():
        environment = {e["name"]: e["value"] for e in container["environment"]}
        assert environment["MF_METADATA_DB_HOST"] == db.state["address"]
        assert environment["MF_METADATA_DB_PORT"] == "5432"
        assert environment["MF_METADATA_DB_NAME"] == "metaflow" and environment["MF_METADATA_DB_USER"] == "metaflow"
        assert "MF_METADATA_DB_PSWD" not in environment
        assert password.state["result"] not in json.dumps(container)
        assert container["secrets"] == [{"name": "MF_METADATA_DB_PSWD", "valueFrom": secret_arn}]


@pytest.mark.parametrize("overrides", [{}, {"metadata:scaleToZero": True}], ids=["dev", "scale-to-zero"])
def test_what_reads_a_secret_waits_for_its_value_to_be_stored(overrides: dict[str, Any]) -> None:
    """A task started from a replaced task definition, or a function, must never read a secret before a
    changed value is in place (the scale-to-zero password secret changes format, for instance)."""
    run = offline("dev", overrides)
    version = {v.name: v.urn for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    for definition in run.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        if "MF_METADATA_DB_PSWD" in definition.inputs["containerDefinitions"]:
            assert version["metaflow-db-password"] in definition.dependencies, definition.name
    authorizer = named(run, "aws:lambda/function:Function", "authorizer")
    assert version["metaflow-api-key"] in authorizer.dependencies


def test_schema_is_migrated_by_an_init_container_before_the_api_starts(dev: OfflineRun) -> None:
    migrate, service = containers(dev)["migrate"], containers(dev)["metadata"]
    assert migrate["essential"] is False
    assert migrate["command"][:2] == ["/opt/latest/bin/python3", "/root/run_goose.py"]
    assert "--only-if-empty-db" not in migrate["command"]  # upgrades an existing schema too
    assert service["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
    assert service["command"] == ["/opt/latest/bin/python3", "-m", "services.metadata_service.server"]
    # Only the API port: the migration server and its unauthenticated PATCH /upgrade never run.
    assert service["portMappings"] == [{"containerPort": 8080, "protocol": "tcp"}]
    assert "ping" in " ".join(service["healthCheck"]["command"])


def test_logs_go_to_a_group_with_retention(dev: OfflineRun) -> None:
    group = named(dev, "aws:cloudwatch/logGroup:LogGroup", "metadata")
    assert group.inputs["retentionInDays"] == 14
    for container in containers(dev).values():
        options = container["logConfiguration"]["options"]
        assert container["logConfiguration"]["logDriver"] == "awslogs"
        assert options["awslogs-group"] == group.state["name"] and options["awslogs-region"] == "us-east-1"
    assert named(dev, "aws:cloudwatch/logGroup:LogGroup", "authorizer").inputs["retentionInDays"] == 14


@pytest.mark.parametrize("overrides", [{}, {"metadata:cpu": 512, "metadata:memory": 2048}])
def test_task_size_is_a_valid_fargate_combination(overrides: dict[str, Any]) -> None:
    task = offline("dev", overrides).one("aws:ecs/taskDefinition:TaskDefinition").inputs
    cpu, memory = int(task["cpu"]), int(task["memory"])
    assert memory in FARGATE_MEMORY_BY_CPU[cpu]
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
    assert task["runtimePlatform"] == {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"}


def test_task_has_no_role_and_its_execution_role_reads_one_secret_and_writes_one_log_group(dev: OfflineRun) -> None:
    task = dev.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert "taskRoleArn" not in task
    execution = named(dev, "aws:iam/role:Role", "metadata-execution")
    assert task["executionRoleArn"] == execution.state["arn"]
    [inline] = [
        p for p in dev.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == f"{execution.state['name']}-id"
    ]
    secret_arn = named(dev, "aws:secretsmanager/secret:Secret", "db-password").state["arn"]
    log_arn = named(dev, "aws:cloudwatch/logGroup:LogGroup", "metadata").state["arn"]
    statements = policy_of(inline.inputs)["Statement"]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        (["secretsmanager:GetSecretValue"], [secret_arn]),
        (["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_arn}:log-stream:*"]),
    ]
    assert not [
        a
        for a in dev.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == execution.state["name"]
    ]


def test_dev_service_runs_one_spot_task_with_a_public_ip_and_registers_in_cloud_map(dev: OfflineRun) -> None:
    service = dev.one("aws:ecs/service:Service").inputs
    assert service["desiredCount"] == 1
    assert service["capacityProviderStrategies"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    network = service["networkConfiguration"]
    assert network["assignPublicIp"] is True  # public subnets, no NAT: needed to pull the image
    metadata_group = named(dev, "aws:ec2/securityGroup:SecurityGroup", "metadata")
    assert network["securityGroups"] == [f"{metadata_group.state['name']}-id"]
    discovery = dev.one("aws:servicediscovery/service:Service")
    assert service["serviceRegistries"] == {
        "registryArn": discovery.state["arn"],
        "containerName": "metadata",
        "containerPort": 8080,
    }
    assert discovery.inputs["dnsConfig"]["dnsRecords"] == [{"ttl": 10, "type": "SRV"}]
    assert service["forceNewDeployment"] is True  # lets metadata:spot move between FARGATE and FARGATE_SPOT


def test_a_deploy_keeps_the_running_task_until_its_successor_is_healthy(dev: OfflineRun) -> None:
    service = dev.one("aws:ecs/service:Service").inputs
    minimum, maximum = service["deploymentMinimumHealthyPercent"], service["deploymentMaximumPercent"]
    # ECS rounds the minimum up and the maximum down: with one task, the old one stays (>= 1 healthy)
    # while exactly one new task (and so one migrator) starts.
    desired = service["desiredCount"]
    assert -(-desired * minimum // 100) == desired and desired * maximum // 100 == desired + 1
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_service_waits_for_the_capacity_providers_of_its_cluster(dev: OfflineRun) -> None:
    service = dev.one("aws:ecs/service:Service")
    capacity = dev.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders")
    assert set(capacity.inputs["capacityProviders"]) == {"FARGATE", "FARGATE_SPOT"}
    assert capacity.urn in service.dependencies


def test_on_demand_fargate_when_spot_is_off() -> None:
    service = offline("dev", {"metadata:spot": False}).one("aws:ecs/service:Service").inputs
    assert service["capacityProviderStrategies"] == [{"capacityProvider": "FARGATE", "weight": 1}]


def test_endpoint_proxies_to_the_service_through_the_vpc_link_without_touching_headers(dev: OfflineRun) -> None:
    api = dev.one("aws:apigatewayv2/api:Api")
    assert api.inputs["protocolType"] == "HTTP"
    integration = dev.one("aws:apigatewayv2/integration:Integration").inputs
    link = dev.one("aws:apigatewayv2/vpcLink:VpcLink")
    assert integration["integrationType"] == "HTTP_PROXY" and integration["connectionType"] == "VPC_LINK"
    assert integration["connectionId"] == f"{link.state['name']}-id"
    assert integration["integrationUri"] == dev.one("aws:servicediscovery/service:Service").state["arn"]
    # METADATA_SERVICE_VERSION must reach the client: no header mapping of any kind.
    assert "responseParameters" not in integration and "requestParameters" not in integration
    endpoint_group = named(dev, "aws:ec2/securityGroup:SecurityGroup", "endpoint")
    assert link.inputs["securityGroupIds"] == [f"{endpoint_group.state['name']}-id"]
    stage = dev.one("aws:apigatewayv2/stage:Stage").inputs
    assert stage["name"] == "$default" and stage["autoDeploy"] is True
    # No stage throttle: Metaflow does not retry HTTP 429, so throttling would fail wide foreach runs.
    assert "defaultRouteSettings" not in stage and "routeSettings" not in stage


def test_every_route_requires_the_api_key_authorizer(dev: OfflineRun) -> None:
    authorizer_resource = dev.one("aws:apigatewayv2/authorizer:Authorizer")
    assert authorizer_resource.inputs["authorizerType"] == "REQUEST"
    assert authorizer_resource.inputs["identitySources"] == ["$request.header.x-api-key"]
    assert authorizer_resource.inputs["enableSimpleResponses"] is True
    assert authorizer_resource.inputs["authorizerPayloadFormatVersion"] == "2.0"
    for route in dev.of_type("aws:apigatewayv2/route:Route"):
        assert route.inputs["authorizationType"] == "CUSTOM"
        assert route.inputs["authorizerId"] == f"{authorizer_resource.state['name']}-id"
    assert [r.inputs["routeKey"] for r in dev.of_type("aws:apigatewayv2/route:Route")] == ["$default"]


def test_authorizer_may_be_invoked_only_by_this_api(dev: OfflineRun) -> None:
    permission = dev.one("aws:lambda/permission:Permission").inputs
    api = dev.one("aws:apigatewayv2/api:Api").state
    authorizer_id = f"{dev.one('aws:apigatewayv2/authorizer:Authorizer').state['name']}-id"
    assert permission["principal"] == "apigateway.amazonaws.com"
    assert permission["sourceArn"] == f"{api['executionArn']}/authorizers/{authorizer_id}"


def test_authorizer_function_reads_only_the_api_key_secret(dev: OfflineRun) -> None:
    function = dev.one("aws:lambda/function:Function").inputs
    key_secret = named(dev, "aws:secretsmanager/secret:Secret", "api-key").state["arn"]
    assert function["environment"]["variables"] == {"API_KEY_SECRET_ARN": key_secret, "API_KEY_GRACE_SECONDS": "3600"}
    role = named(dev, "aws:iam/role:Role", "authorizer")
    assert function["role"] == role.state["arn"]
    [inline] = [
        p for p in dev.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == f"{role.state['name']}-id"
    ]
    assert policy_of(inline.inputs)["Statement"][0]["Resource"] == [key_secret]


def test_a_flood_of_wrong_keys_meets_a_bounded_authorizer(dev: OfflineRun) -> None:
    assert dev.one("aws:lambda/function:Function").inputs["reservedConcurrentExecutions"] == 5
    unbounded = offline("dev", {"metadata:authorizerConcurrency": 0}).one("aws:lambda/function:Function")
    assert "reservedConcurrentExecutions" not in unbounded.inputs


@pytest.mark.parametrize(
    "rotation, slots",
    [
        (1, {"api-key": 1}),
        (2, {"api-key": 1, "api-key-b": 2}),
        (3, {"api-key": 3, "api-key-b": 2}),
        (4, {"api-key": 3, "api-key-b": 4}),
        (11, {"api-key": 11, "api-key-b": 10}),
    ],
)
def test_two_key_slots_take_turns(rotation: int, slots: dict[str, int]) -> None:
    assert api_key_slots(rotation) == slots


def admitted_keys(run: OfflineRun) -> dict[str, Any]:
    version = named(run, "aws:secretsmanager/secretVersion:SecretVersion", "api-key")
    return json.loads(version.inputs["secretString"])


def key_of(run: OfflineRun, slot: str) -> str:
    [key] = [p for p in run.of_type("random:index/randomPassword:RandomPassword") if p.name == f"metaflow-{slot}"]
    return key.state["result"]


def test_before_any_rotation_the_one_key_is_current_and_keeps_its_identity(dev: OfflineRun) -> None:
    [key] = [p for p in dev.of_type("random:index/randomPassword:RandomPassword") if "api-key" in p.name]
    assert key.name == "metaflow-api-key" and "keepers" not in key.inputs  # as deployed before rotation existed
    assert admitted_keys(dev) == {"current": key.state["result"], "previous": None}


@pytest.mark.parametrize("rotation, current, previous", [(2, "api-key-b", "api-key"), (3, "api-key", "api-key-b")])
def test_a_rotation_makes_a_new_current_key_and_keeps_the_last_one_as_previous(
    rotation: int, current: str, previous: str
) -> None:
    run = offline("dev", {"metadata:apiKeyRotation": rotation})
    assert admitted_keys(run) == {"current": key_of(run, current), "previous": key_of(run, previous)}
    assert run.outputs["metaflowProfile"]["METAFLOW_SERVICE_AUTH_KEY"] == key_of(run, current)
    keepers = {
        p.name: p.inputs.get("keepers")
        for p in run.of_type("random:index/randomPassword:RandomPassword")
        if "api-key" in p.name
    }
    assert keepers[f"metaflow-{current}"] == {"rotation": str(rotation)}


def test_profile_carries_the_real_key_and_is_secret(dev: OfflineRun) -> None:
    [key] = [p for p in dev.of_type("random:index/randomPassword:RandomPassword") if "api-key" in p.name]
    profile = dev.outputs["metaflowProfile"]
    assert profile["METAFLOW_SERVICE_AUTH_KEY"] == key.state["result"]
    assert "metaflowProfile" in dev.secret_outputs
    url = dev.one("aws:apigatewayv2/api:Api").state["apiEndpoint"]
    assert profile["METAFLOW_DEFAULT_METADATA"] == "service"
    assert profile["METAFLOW_SERVICE_URL"] == url == dev.outputs["serviceUrl"]
    assert profile["METAFLOW_SERVICE_INTERNAL_URL"] == url
    assert key.state["result"] not in json.dumps({k: v for k, v in dev.outputs.items() if k != "metaflowProfile"})


def test_security_groups_admit_only_the_hops_that_exist(dev: OfflineRun) -> None:
    ids = {
        g.name.removeprefix("metaflow-"): f"{g.state['name']}-id"
        for g in dev.of_type("aws:ec2/securityGroup:SecurityGroup")
    }
    ingress = {
        (r.inputs["securityGroupId"], r.inputs.get("referencedSecurityGroupId"), r.inputs["fromPort"])
        for r in dev.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    }
    assert ingress == {(ids["metadata"], ids["endpoint"], 8080), (ids["database"], ids["metadata"], 5432)}
    egress = {
        (
            r.inputs["securityGroupId"],
            r.inputs.get("referencedSecurityGroupId") or r.inputs["cidrIpv4"],
            r.inputs["ipProtocol"],
            r.inputs.get("fromPort"),
        )
        for r in dev.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    }
    assert egress == {
        (ids["batch"], "0.0.0.0/0", "-1", None),  # ECS, ECR, S3, PyPI, the API endpoint
        (ids["endpoint"], ids["metadata"], "tcp", 8080),  # VPC link -> service
        (ids["metadata"], "0.0.0.0/0", "tcp", 443),  # image pull, Secrets Manager, logs
        (ids["metadata"], ids["database"], "tcp", 5432),  # service -> database
    }
