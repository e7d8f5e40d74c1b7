"""MetadataService: the Metaflow metadata service on ECS Fargate, its schema migration, and an
HTTPS endpoint with API-key auth — API Gateway HTTP API → VPC link → Cloud Map, no load balancer.

Why this shape:
- No always-on load balancer: an HTTP API and its VPC link bill per request only; Cloud Map's
  private DNS namespace is one Route 53 zone ($0.50/month) instead of an NLB (~$16/month).
- The API key is generated, kept in Secrets Manager, checked by a small Lambda authorizer (cached
  for 5 minutes per key), and written into the profile: no console step to fetch it.
- The schema is migrated by an init container (`run_goose.py`, `goose up`: idempotent) that runs
  before the API starts in every task. Every deploy and every image upgrade starts a new task, so
  the schema is always current, and the migration server (unauthenticated `PATCH /upgrade` on
  8082) never runs. Deployments stop the old task first, so only one migrator ever runs.
- The integration maps no headers: the service's `METADATA_SERVICE_VERSION` response header, which
  `step-functions create` checks, reaches the client untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from .datastore import DatabaseEndpoint, stored_secret
from .network import METADATA_PORT
from .policies import assume_role_policy, read_secret_and_write_logs
from .settings import MetadataSettings

LOG_RETENTION_DAYS = 14
API_KEY_HEADER = "x-api-key"
AUTHORIZER_CACHE_SECONDS = 300
SERVICE_CONTAINER = "metadata"
MIGRATION_CONTAINER = "migrate"
PYTHON = "/opt/latest/bin/python3"
"""The image's virtualenv that holds the service package (the system python does not)."""
DB_WAIT_SECONDS = 120


@dataclass(frozen=True)
class ServicePlacement:
    subnet_ids: pulumi.Input[list[str]]
    vpc_id: pulumi.Input[str]
    service_security_group_id: pulumi.Input[str]
    endpoint_security_group_id: pulumi.Input[str]
    assign_public_ip: bool
    """Public subnets without NAT: the task needs a public IP to pull its image from Docker Hub."""


def stack_scoped_name(prefix: str, stack: str) -> str:
    """`<prefix>-<stack>` as a DNS label: for names AWS does not auto-suffix (task family, Cloud Map
    namespace), so two stacks in one account never share one."""
    label = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-") or "stack"
    return f"{prefix}-{label}"


def container_definitions(
    image: str,
    region: str,
    log_group: str,
    db_host: str,
    db_port: int,
    db_name: str,
    db_user: str,
    db_password_secret_arn: str,
) -> list[dict[str, Any]]:
    """The migration init container and the API container; the password only as an ECS secret."""
    environment = [
        {"name": "MF_METADATA_DB_HOST", "value": db_host},
        {"name": "MF_METADATA_DB_PORT", "value": str(db_port)},
        {"name": "MF_METADATA_DB_NAME", "value": db_name},
        {"name": "MF_METADATA_DB_USER", "value": db_user},
        # PostgreSQL 15+ on RDS forces TLS (rds.force_ssl=1); images from v2.4.6 honour this.
        {"name": "MF_METADATA_DB_SSL_MODE", "value": "require"},
    ]
    secrets = [{"name": "MF_METADATA_DB_PSWD", "valueFrom": db_password_secret_arn}]

    def logs(stream_prefix: str) -> dict[str, Any]:
        return {"logDriver": "awslogs", "options": {
            "awslogs-group": log_group, "awslogs-region": region, "awslogs-stream-prefix": stream_prefix}}

    return [
        {
            "name": MIGRATION_CONTAINER,
            "image": image,
            "essential": False,
            "command": [PYTHON, "/root/run_goose.py", "--wait", str(DB_WAIT_SECONDS)],
            "environment": environment,
            "secrets": secrets,
            "logConfiguration": logs(MIGRATION_CONTAINER),
        },
        {
            "name": SERVICE_CONTAINER,
            "image": image,
            "essential": True,
            "command": [PYTHON, "-m", "services.metadata_service.server"],
            "portMappings": [{"containerPort": METADATA_PORT, "protocol": "tcp"}],
            "environment": environment + [
                {"name": "MF_METADATA_PORT", "value": str(METADATA_PORT)},
                {"name": "MF_METADATA_HOST", "value": "0.0.0.0"},
            ],
            "secrets": secrets,
            "dependsOn": [{"containerName": MIGRATION_CONTAINER, "condition": "SUCCESS"}],
            "healthCheck": {
                "command": ["CMD-SHELL", f"curl -fsS http://localhost:{METADATA_PORT}/ping || exit 1"],
                "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 30,
            },
            "logConfiguration": logs(SERVICE_CONTAINER),
        },
    ]


class MetadataService(pulumi.ComponentResource):
    url: pulumi.Output[str]
    api_key: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: MetadataSettings,
        placement: ServicePlacement,
        database: DatabaseEndpoint,
        region: str,
        stack: str,
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        super().__init__("metaflow:infra:MetadataService", name, None, opts)
        self._name = name
        self._account = aws.get_caller_identity(opts=pulumi.InvokeOptions(parent=self)).account_id
        discovery = self._run_service(settings, placement, database, region, stack_scoped_name(name, stack))
        key = random.RandomPassword(f"{name}-api-key", length=40, special=False, opts=self._child())
        self.api_key = pulumi.Output.secret(key.result)
        key_secret = stored_secret(f"{name}-api-key", "Metaflow metadata service API key (x-api-key)",
                                   key.result, self)
        self.url = self._endpoint(placement, discovery, key_secret)
        self.register_outputs({"url": self.url})

    def _child(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=list(depends_on))

    def _log_group(self, purpose: str) -> aws.cloudwatch.LogGroup:
        return aws.cloudwatch.LogGroup(f"{self._name}-{purpose}", retention_in_days=LOG_RETENTION_DAYS,
                                       opts=self._child())

    def _role(self, purpose: str, service: str, secret_arn: pulumi.Input[str],
              log_group: aws.cloudwatch.LogGroup) -> aws.iam.Role:
        role = aws.iam.Role(f"{self._name}-{purpose}",
                            assume_role_policy=json.dumps(assume_role_policy(service, self._account)),
                            opts=self._child())
        aws.iam.RolePolicy(
            f"{self._name}-{purpose}", role=role.id,
            policy=pulumi.Output.all(secret_arn, log_group.arn).apply(
                lambda arns: json.dumps(read_secret_and_write_logs(arns[0], arns[1]))),
            opts=self._child())
        return role

    def _run_service(self, settings: MetadataSettings, placement: ServicePlacement, database: DatabaseEndpoint,
                     region: str, scoped_name: str) -> aws.servicediscovery.Service:
        name = self._name
        log_group = self._log_group("metadata")
        # No task role: the service itself calls no AWS API. The execution role only pulls the
        # password into the container and ships its logs.
        execution_role = self._role("metadata-execution", "ecs-tasks.amazonaws.com",
                                    database.password_secret_arn, log_group)
        cluster = aws.ecs.Cluster(
            f"{name}-metadata",
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="disabled")],
            opts=self._child())
        capacity = aws.ecs.ClusterCapacityProviders(
            f"{name}-metadata", cluster_name=cluster.name, capacity_providers=["FARGATE", "FARGATE_SPOT"],
            opts=self._child())
        task = aws.ecs.TaskDefinition(
            f"{name}-metadata",
            family=f"{scoped_name}-metadata",
            cpu=str(settings.cpu),
            memory=str(settings.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            # The published image is built for x86-64 only.
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                cpu_architecture="X86_64", operating_system_family="LINUX"),
            execution_role_arn=execution_role.arn,
            container_definitions=pulumi.Output.all(
                log_group.name, database.address, database.port, database.password_secret_arn,
            ).apply(lambda values: json.dumps(container_definitions(
                image=settings.image, region=region, log_group=values[0], db_host=values[1],
                db_port=values[2], db_name=database.name, db_user=database.user,
                db_password_secret_arn=values[3]))),
            opts=self._child())
        dns = aws.servicediscovery.PrivateDnsNamespace(
            f"{name}-metadata", name=f"{scoped_name}.metaflow.internal", vpc=placement.vpc_id,
            description="Metaflow metadata service discovery for the API's VPC link", opts=self._child())
        discovery = aws.servicediscovery.Service(
            f"{name}-metadata",
            name=SERVICE_CONTAINER,
            dns_config=aws.servicediscovery.ServiceDnsConfigArgs(
                namespace_id=dns.id, routing_policy="MULTIVALUE",
                # API Gateway needs SRV records (address and port) for ECS-registered tasks.
                dns_records=[aws.servicediscovery.ServiceDnsConfigDnsRecordArgs(ttl=10, type="SRV")]),
            health_check_custom_config=aws.servicediscovery.ServiceHealthCheckCustomConfigArgs(),
            force_destroy=True,
            opts=self._child())
        aws.ecs.Service(
            f"{name}-metadata",
            cluster=cluster.arn,
            task_definition=task.arn,
            desired_count=1,
            capacity_provider_strategies=[aws.ecs.ServiceCapacityProviderStrategyArgs(
                capacity_provider="FARGATE_SPOT" if settings.spot else "FARGATE", weight=1)],
            # Stop the old task before starting the new one: one migrator at a time.
            deployment_minimum_healthy_percent=0,
            deployment_maximum_percent=100,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=placement.subnet_ids, security_groups=[placement.service_security_group_id],
                assign_public_ip=placement.assign_public_ip),
            service_registries=aws.ecs.ServiceServiceRegistriesArgs(
                registry_arn=discovery.arn, container_name=SERVICE_CONTAINER, container_port=METADATA_PORT),
            # Needed to move between FARGATE and FARGATE_SPOT (metadata:spot) on an existing service.
            force_new_deployment=True,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            # The capacity provider must be attached to the cluster before the service asks for it.
            opts=self._child(capacity))
        return discovery

    def _authorizer_function(self, api_key_secret: aws.secretsmanager.Secret) -> aws.lambda_.Function:
        log_group = self._log_group("authorizer")
        role = self._role("authorizer", "lambda.amazonaws.com", api_key_secret.arn, log_group)
        source = resources.files("metaflow_infra").joinpath("lambdas", "authorizer.py").read_text()
        return aws.lambda_.Function(
            f"{self._name}-authorizer",
            runtime=aws.lambda_.Runtime.PYTHON3D13,
            architectures=["arm64"],
            handler="authorizer.handler",
            code=pulumi.AssetArchive({"authorizer.py": pulumi.StringAsset(source)}),
            role=role.arn,
            memory_size=128,
            timeout=5,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={"API_KEY_SECRET_ARN": api_key_secret.arn}),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=log_group.name),
            opts=self._child())

    def _endpoint(self, placement: ServicePlacement, discovery: aws.servicediscovery.Service,
                  api_key_secret: aws.secretsmanager.Secret) -> pulumi.Output[str]:
        name = self._name
        api = aws.apigatewayv2.Api(f"{name}-metadata", protocol_type="HTTP",
                                   description="Metaflow metadata service", opts=self._child())
        link = aws.apigatewayv2.VpcLink(
            f"{name}-metadata", subnet_ids=placement.subnet_ids,
            security_group_ids=[placement.endpoint_security_group_id], opts=self._child())
        integration = aws.apigatewayv2.Integration(
            f"{name}-metadata", api_id=api.id, integration_type="HTTP_PROXY", integration_method="ANY",
            connection_type="VPC_LINK", connection_id=link.id, integration_uri=discovery.arn,
            payload_format_version="1.0", opts=self._child())
        function = self._authorizer_function(api_key_secret)
        authorizer = aws.apigatewayv2.Authorizer(
            f"{name}-api-key", api_id=api.id, authorizer_type="REQUEST", authorizer_uri=function.invoke_arn,
            identity_sources=[f"$request.header.{API_KEY_HEADER}"], authorizer_payload_format_version="2.0",
            enable_simple_responses=True, authorizer_result_ttl_in_seconds=AUTHORIZER_CACHE_SECONDS,
            opts=self._child())
        aws.lambda_.Permission(
            f"{name}-authorizer", action="lambda:InvokeFunction", function=function.name,
            principal="apigateway.amazonaws.com",
            source_arn=pulumi.Output.concat(api.execution_arn, "/authorizers/", authorizer.id),
            opts=self._child())
        # `$default` catches every path, `/` included, and forwards it unchanged.
        aws.apigatewayv2.Route(
            f"{name}-metadata", api_id=api.id, route_key="$default",
            target=pulumi.Output.concat("integrations/", integration.id),
            authorization_type="CUSTOM", authorizer_id=authorizer.id, opts=self._child())
        # No stage throttling: Metaflow does not retry a 429, so a wide foreach would fail; the
        # account's API Gateway limits still apply, and requests without the key never pass.
        stage = aws.apigatewayv2.Stage(f"{name}-metadata", api_id=api.id, name="$default", auto_deploy=True,
                                       opts=self._child())
        return pulumi.Output.all(api.api_endpoint, stage.id).apply(lambda values: values[0])
