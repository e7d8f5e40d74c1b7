"""MetadataService: the Metaflow metadata service on ECS Fargate, its schema migration, its API key,
and its HTTPS endpoint (`endpoint.py`).

- No always-on load balancer: Cloud Map's private DNS namespace is one Route 53 zone ($0.50/month)
  instead of an NLB (~$16/month); see `endpoint.py` for the API in front.
- The API key is generated, kept in Secrets Manager, checked by a small Lambda authorizer, and
  written into the profile: no console step to fetch it.
- The schema is migrated by an init container (`run_goose.py`, `goose up`: idempotent) that runs
  before the API starts in every task. Every deploy and every image upgrade starts a new task, so
  the schema is always current, and the migration server (unauthenticated `PATCH /upgrade` on
  8082) never runs. Deployments start one new task at a time while the old ones keep serving, so
  one migrator runs at a time and the endpoint never goes without a task. (When a service of several
  tasks is first created they start together: a migrator that loses the race fails, and ECS starts
  its task again, which then finds the schema current.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from .base import Component
from .database import DatabaseEndpoint, connection_environment
from .endpoint import EndpointArgs, declare_endpoint, log_group, secret_reading_role
from .image_mirror import ServiceImage
from .network import METADATA_PORT
from .scale_to_zero import WakerArgs, WakerDatabase, declare_waker, waker_function_arn, waker_function_name
from .secrets import stored_secret
from .settings import MetadataSettings, stack_scoped_name

SERVICE_CONTAINER = "metadata"
MIGRATION_CONTAINER = "migrate"
PYTHON = "/opt/latest/bin/python3"
"""The image's virtualenv that holds the service package (the system python does not)."""
DB_WAIT_SECONDS = 120


@dataclass(frozen=True)
class HealthCheck:
    interval_seconds: int
    retries: int
    connect_retries: int = 0
    """Within one check, try a refused connection again each second this many times: a server that starts
    listening just after a check began passes that check, not the next one an interval later."""

    def command(self) -> list[str]:
        retry = f"--retry {self.connect_retries} --retry-delay 1 --retry-connrefused " if self.connect_retries else ""
        return ["CMD-SHELL", f"curl -fsS {retry}http://localhost:{METADATA_PORT}/ping || exit 1"]


HEALTH_CHECK = HealthCheck(interval_seconds=30, retries=3)
WAKING_HEALTH_CHECK = HealthCheck(interval_seconds=5, retries=6, connect_retries=3)
"""With scale to zero every wake waits for the first passing check: check as often as ECS allows (5 s), and
wait up to 3 s within it for the server to listen (it takes ~2-2.5 s at a quarter vCPU:
docs/scale-to-zero.md), so the first check passes; fail a serving task only after 30 s of failed checks, as
when checks ran every 10 s (a stall as short as 15 s would otherwise replace the task, and the next request
would wait for a whole wake). The retries stay within ECS's 5 s check timeout."""


@dataclass(frozen=True)
class ServicePlacement:
    subnet_ids: pulumi.Input[list[str]]
    vpc_id: pulumi.Input[str]
    service_security_group_id: pulumi.Input[str]
    endpoint_security_group_id: pulumi.Input[str]
    assign_public_ip: bool
    """Public subnets without NAT: the task needs a public IP to pull its image (from Docker Hub, or ECR)."""


@dataclass(frozen=True)
class MetadataServiceArgs:
    settings: MetadataSettings
    placement: ServicePlacement
    database: DatabaseEndpoint
    region: str
    stack: str
    image: ServiceImage
    job_queue_arns: tuple[pulumi.Input[str], ...] = ()
    """The stack's Batch queues: with scale to zero, a run's start step queued on one wakes the service."""


API_KEY_SLOTS = ("api-key", "api-key-b")
"""Two generated keys take turns: rotation n regenerates slot n % 2 and keeps the other (n - 1)."""


def api_key_slots(rotation: int) -> dict[str, int]:
    """Each declared key slot and the rotation whose key it holds: the latest one it took."""
    slots = {}
    for index, slot in enumerate(API_KEY_SLOTS):
        latest = rotation if rotation % 2 == (index + 1) % 2 else rotation - 1
        if latest >= 1:  # slot "b" only exists from the first rotation on
            slots[slot] = latest
    return slots


def container_definitions(
    image: str,
    region: str,
    log_group: str,
    db_host: str,
    db_port: int,
    db_name: str,
    db_user: str,
    db_password_secret_arn: str,
    health_check: HealthCheck = HEALTH_CHECK,
    db_password_key: str | None = None,
) -> list[dict[str, Any]]:
    """The migration init container and the API container; the password only as an ECS secret."""
    environment, secrets = connection_environment(
        db_host, db_port, db_name, db_user, db_password_secret_arn, db_password_key
    )

    def logs(stream_prefix: str) -> dict[str, Any]:
        return {
            "logDriver": "awslogs",
            "options": {"awslogs-group": log_group, "awslogs-region": region, "awslogs-stream-prefix": stream_prefix},
        }

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
            "environment": [
                *environment,
                {"name": "MF_METADATA_PORT", "value": str(METADATA_PORT)},
                {"name": "MF_METADATA_HOST", "value": "0.0.0.0"},
            ],
            "secrets": secrets,
            "dependsOn": [{"containerName": MIGRATION_CONTAINER, "condition": "SUCCESS"}],
            "healthCheck": {
                "command": health_check.command(),
                "interval": health_check.interval_seconds,
                "timeout": 5,
                "retries": health_check.retries,
                "startPeriod": 30,
            },
            "logConfiguration": logs(SERVICE_CONTAINER),
        },
    ]


def one_extra_task_percent(tasks: int) -> int:
    """ECS's deployment maximum that lets exactly one task more than `tasks` run: ECS rounds
    tasks * percent / 100 down."""
    return 100 + math.ceil(100 / tasks)


class MetadataService(Component):
    url: pulumi.Output[str]
    api_key: pulumi.Output[str]
    cluster: aws.ecs.Cluster
    """The ECS cluster the service runs in (the UI runs there too)."""
    service: aws.ecs.Service
    api_id: pulumi.Output[str]

    def __init__(self, name: str, args: MetadataServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("MetadataService", name, opts)
        settings = args.settings
        discovery = self._run_service(args)
        current, previous = self._api_keys(settings.api_key_rotation)
        self.api_key = pulumi.Output.secret(current)
        # What the authorizer admits: the current key, and the previous one for a grace period.
        admitted = pulumi.Output.all(current, previous).apply(
            lambda keys: json.dumps({"current": keys[0], "previous": keys[1]})
        )
        key_secret_arn = stored_secret(
            self.named("api-key"), "Metaflow metadata service API key (x-api-key)", admitted, self.child()
        )
        waker = (
            WakerArgs(
                function_name=waker_function_name(stack_scoped_name(self.prefix, args.stack)),
                region=args.region,
                cluster_name=self.cluster.name,
                cluster_arn=self.cluster.arn,
                service_name=self.service.name,
                discovery_service_id=discovery.id,
                discovery_service_arn=discovery.arn,
                idle_minutes=settings.idle_minutes,
                job_queue_arns=args.job_queue_arns,
                database=WakerDatabase(
                    cluster_arn=args.database.data_api_cluster_arn,
                    secret_arn=args.database.password_secret_arn,
                    name=args.database.name,
                )
                if args.database.data_api_cluster_arn is not None
                else None,
            )
            if settings.scale_to_zero
            else None
        )
        endpoint = declare_endpoint(
            self,
            EndpointArgs(
                subnet_ids=args.placement.subnet_ids,
                security_group_id=args.placement.endpoint_security_group_id,
                discovery_service_arn=discovery.arn,
                api_key_secret_arn=key_secret_arn,
                authorizer_concurrency=settings.authorizer_concurrency,
                waker_function_arn=waker_function_arn(self, waker) if waker else None,
            ),
        )
        self.url, self.api_id = endpoint.url, endpoint.api.id
        self.waker: WakerArgs | None = waker
        """With scale to zero: the waker (the private UI's command calls it too)."""
        if waker is not None:
            declare_waker(self, waker, endpoint)
        self.register_outputs({"url": self.url})

    def _api_keys(self, rotation: int) -> tuple[pulumi.Output[str], pulumi.Input[str | None]]:
        """The current and previous API keys, from two alternating generated passwords."""
        keys = {}
        for slot, generation in api_key_slots(rotation).items():
            keepers = None if generation == 1 else {"rotation": str(generation)}
            keys[generation] = random.RandomPassword(
                self.named(slot), length=40, special=False, keepers=keepers, opts=self.child()
            ).result
        return keys[rotation], keys.get(rotation - 1)

    def _run_service(self, args: MetadataServiceArgs) -> aws.servicediscovery.Service:
        settings, placement, database = args.settings, args.placement, args.database
        name = self.named("metadata")
        scoped_name = stack_scoped_name(self.prefix, args.stack)
        logs = log_group(self, "metadata")
        # No task role: the service itself calls no AWS API. The execution role only pulls the
        # password into the container and ships its logs.
        execution_role = secret_reading_role(
            self,
            "metadata-execution",
            "ecs-tasks.amazonaws.com",
            database.password_secret_arn,
            logs,
            args.image.repository_arn,
        )
        cluster = aws.ecs.Cluster(
            name, settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="disabled")], opts=self.child()
        )
        self.cluster = cluster
        self.capacity = capacity = aws.ecs.ClusterCapacityProviders(
            name, cluster_name=cluster.name, capacity_providers=["FARGATE", "FARGATE_SPOT"], opts=self.child()
        )
        task = aws.ecs.TaskDefinition(
            name,
            family=f"{scoped_name}-metadata",
            cpu=str(settings.cpu),
            memory=str(settings.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            # The published image is built for x86-64 only.
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                cpu_architecture="X86_64", operating_system_family="LINUX"
            ),
            execution_role_arn=execution_role.arn,
            container_definitions=pulumi.Output.all(
                logs.name,
                database.address,
                database.port,
                database.password_secret_arn,
                args.image.reference,
            ).apply(
                lambda values: json.dumps(
                    container_definitions(
                        image=values[4],
                        region=args.region,
                        log_group=values[0],
                        db_host=values[1],
                        db_port=values[2],
                        db_name=database.name,
                        db_user=database.user,
                        db_password_secret_arn=values[3],
                        health_check=WAKING_HEALTH_CHECK if settings.scale_to_zero else HEALTH_CHECK,
                        db_password_key=database.password_key,
                    )
                )
            ),
            opts=self.child(),
        )
        dns = aws.servicediscovery.PrivateDnsNamespace(
            name,
            name=f"{scoped_name}.metaflow.internal",
            vpc=placement.vpc_id,
            description="Metaflow metadata service discovery for the API's VPC link",
            # Named at creation: renaming would replace it and the service registered in it.
            opts=self.child(ignore_changes=["name"]),
        )
        discovery = aws.servicediscovery.Service(
            name,
            name=SERVICE_CONTAINER,
            dns_config=aws.servicediscovery.ServiceDnsConfigArgs(
                namespace_id=dns.id,
                routing_policy="MULTIVALUE",
                # API Gateway needs SRV records (address and port) for ECS-registered tasks.
                dns_records=[aws.servicediscovery.ServiceDnsConfigDnsRecordArgs(ttl=10, type="SRV")],
            ),
            health_check_custom_config=aws.servicediscovery.ServiceHealthCheckCustomConfigArgs(),
            force_destroy=True,
            opts=self.child(),
        )
        self.service = aws.ecs.Service(
            name,
            cluster=cluster.arn,
            task_definition=task.arn,
            # ECS spreads a service's Fargate tasks over the AZs of its subnets: with two or more, an AZ
            # outage or a task replacement leaves one answering. With scale to zero it starts at none and the
            # waker sets the count from then on.
            desired_count=0 if settings.scale_to_zero else settings.tasks,
            capacity_provider_strategies=[
                aws.ecs.ServiceCapacityProviderStrategyArgs(
                    capacity_provider="FARGATE_SPOT" if settings.spot else "FARGATE", weight=1
                )
            ],
            # Start a new task (its migrator first) and keep the old ones serving until it is healthy: a
            # deploy never drops below metadata:tasks healthy tasks, and one migrator runs at a time.
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=one_extra_task_percent(settings.tasks),
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=placement.subnet_ids,
                security_groups=[placement.service_security_group_id],
                assign_public_ip=placement.assign_public_ip,
            ),
            service_registries=aws.ecs.ServiceServiceRegistriesArgs(
                registry_arn=discovery.arn, container_name=SERVICE_CONTAINER, container_port=METADATA_PORT
            ),
            # Needed to move between FARGATE and FARGATE_SPOT (metadata:spot) on an existing service.
            force_new_deployment=True,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            # The capacity provider must be attached to the cluster before the service asks for it.
            opts=self.child(capacity, ignore_changes=["desiredCount"] if settings.scale_to_zero else None),
        )
        return discovery
