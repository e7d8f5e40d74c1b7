"""UI: the Metaflow UI as one Fargate task — the metadata-service image started as the UI backend,
which serves the API, the static UI bundle it ships with, and websockets at `/ws` — and the way in.

- `private` (the default): no ingress at all and no task at rest (desired count 0). ECS Exec is on, so
  `python -m metaflow_infra ui` scales the service up, forwards the task's port to localhost through
  Session Manager, and scales it down when the last session ends. Idle cost: nothing.
- `allowList`: an application load balancer only `ui:allowedCidrs` reach; HTTPS with
  `ui:certificateArn` (HTTP redirected), plain HTTP without one (for trials).
- `public`: HTTPS only, behind the load balancer's own sign-in (a Cognito user pool of this stack, or
  an OIDC provider). There is no way to configure a public UI without sign-in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from .base import Component
from .database import DatabaseEndpoint, connection_environment
from .endpoint import log_group, secret_reading_role
from .image_mirror import ServiceImage
from .metadata import PYTHON
from .network import UI_PORT, UiGroups
from .policies import ui_task_policy
from .settings import UiAccess, UiAuth, UiSettings

CONTAINER = "ui"
HTTPS_PORT = 443
HTTP_PORT = 80
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
"""TLS 1.3 and 1.2 only (the load balancer's recommended policy)."""
LOAD_BALANCER_SUBNETS = 2
"""An application load balancer needs two AZs; each more is another public IPv4 address billed."""
DATABASE_POOL_MAX = 3
"""Connections per pool: the backend opens several pools (API, cache, notify, heartbeats, websockets);
small pools keep a db.t4g.micro's connection slots for the metadata service."""
LOCAL_URL = f"http://localhost:{UI_PORT}"


def listener_ports(settings: UiSettings) -> list[int]:
    """The load balancer's listeners: none (private), HTTP only (allowList without a certificate), or
    HTTPS with HTTP redirected to it."""
    if settings.access is UiAccess.PRIVATE:
        return []
    return [HTTP_PORT] if settings.certificate_arn is None else [HTTPS_PORT, HTTP_PORT]


def ingress_cidrs(settings: UiSettings) -> list[str]:
    if settings.access is UiAccess.PUBLIC:
        return ["0.0.0.0/0"]
    return list(settings.allowed_cidrs or []) if settings.access is UiAccess.ALLOW_LIST else []


def backend_environment(region: str, bucket_name: str) -> list[dict[str, str]]:
    """The UI backend's settings besides the database's (see the image's ui_backend_service docs)."""
    return [
        {"name": "UI_ENABLED", "value": "1"},  # serve the static bundle the image ships with
        {"name": "METAFLOW_SERVICE", "value": "/"},  # the page finds the API on its own origin
        {"name": "MF_UI_METADATA_PORT", "value": str(UI_PORT)},
        {"name": "MF_UI_METADATA_HOST", "value": "0.0.0.0"},
        {"name": "MF_METADATA_DB_POOL_MIN", "value": "1"},
        {"name": "MF_METADATA_DB_POOL_MAX", "value": str(DATABASE_POOL_MAX)},
        # Bounded caches and preloading: the defaults (50 runs of the last 2 days, 600 kB artifact
        # cache, 4 kB artifacts) fit the task's memory; raise them here if runs are large.
        {"name": "PREFETCH_RUNS_LIMIT", "value": "50"},
        {"name": "AWS_DEFAULT_REGION", "value": region},
        {"name": "METAFLOW_DEFAULT_DATASTORE", "value": "s3"},
        {"name": "METAFLOW_DATASTORE_SYSROOT_S3", "value": f"s3://{bucket_name}/metaflow"},
    ]


@dataclass(frozen=True)
class UiArgs:
    settings: UiSettings
    image: ServiceImage
    spot: bool
    region: str
    cluster: aws.ecs.Cluster
    capacity: pulumi.Resource
    database: DatabaseEndpoint
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    assign_public_ip: bool
    groups: UiGroups
    load_balancer_subnet_ids: pulumi.Input[list[str]] | None = None
    """Public subnets for the load balancer when the task runs in private ones."""
    datastore_key_arn: pulumi.Input[str] | None = None
    """The datastore's SSE-KMS key: the backend decrypts what it reads."""
    wake_function: str | None = None
    """With metadata:scaleToZero: the metadata service's waker, which the `ui` command calls first."""


class UI(Component):
    url: pulumi.Output[str]
    description: pulumi.Output[dict[str, Any]]
    """What `python -m metaflow_infra ui` needs: access mode, URL, cluster, service, container, port."""
    tunnel_target: tuple[pulumi.Output[str], pulumi.Output[str]] | None = None
    """(cluster name, service name) people start and tunnel to: the private UI only."""

    def __init__(self, name: str, args: UiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("UI", name, opts)
        settings = args.settings
        private = settings.access is UiAccess.PRIVATE
        target_group = None if private else self._target_group(args)
        service = self._service(args, target_group)
        if target_group is None:
            self.url = pulumi.Output.from_input(LOCAL_URL)
        else:
            self.url = self._load_balancer(args, target_group)
        self.description = pulumi.Output.all(args.cluster.name, service.name, self.url).apply(
            lambda values: {
                "access": settings.access.value,
                "url": values[2],
                "cluster": values[0],
                "service": values[1],
                "container": CONTAINER,
                "port": UI_PORT,
                "region": args.region,
                **({"wakeFunction": args.wake_function} if args.wake_function else {}),
            }
        )
        if private:
            self.tunnel_target = (args.cluster.name, service.name)
        self.register_outputs({"url": self.url})

    def _service(self, args: UiArgs, target_group: aws.lb.TargetGroup | None) -> aws.ecs.Service:
        settings, database = args.settings, args.database
        private = settings.access is UiAccess.PRIVATE
        logs = log_group(self, "ui")
        execution_role = secret_reading_role(
            self,
            "ui-execution",
            "ecs-tasks.amazonaws.com",
            database.password_secret_arn,
            logs,
            args.image.repository_arn,
        )
        task_role = self.service_role(
            "ui-task",
            "ecs-tasks.amazonaws.com",
            inline=pulumi.Output.all(args.bucket_arn, args.datastore_key_arn).apply(
                lambda arns: ui_task_policy(arns[0], private, arns[1])
            ),
        )
        task = aws.ecs.TaskDefinition(
            self.named("ui"),
            family=self.labelled("ui"),
            cpu=str(settings.cpu),
            memory=str(settings.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                cpu_architecture="X86_64", operating_system_family="LINUX"
            ),
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            container_definitions=pulumi.Output.all(
                logs.name,
                database.address,
                database.port,
                database.password_secret_arn,
                args.bucket_name,
                args.image.reference,
            ).apply(lambda values: json.dumps([self._container(args, *values)])),
            opts=self.child(),
        )
        load_balancers = []
        if target_group is not None:
            load_balancers = [
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=target_group.arn, container_name=CONTAINER, container_port=UI_PORT
                )
            ]
        return aws.ecs.Service(
            self.named("ui"),
            cluster=args.cluster.arn,
            task_definition=task.arn,
            # Private: no task at rest; `python -m metaflow_infra ui` starts one while someone has it open.
            desired_count=0 if private else 1,
            enable_execute_command=private,
            capacity_provider_strategies=[
                aws.ecs.ServiceCapacityProviderStrategyArgs(
                    capacity_provider="FARGATE_SPOT" if args.spot else "FARGATE", weight=1
                )
            ],
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.subnet_ids, security_groups=[args.groups.task], assign_public_ip=args.assign_public_ip
            ),
            load_balancers=load_balancers,
            health_check_grace_period_seconds=None if private else 120,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            # The `ui` command moves the desired count; `pulumi up` must not stop a session under way.
            opts=self.child(args.capacity, ignore_changes=["desiredCount"] if private else []),
        )

    @staticmethod
    def _container(
        args: UiArgs, log_group_name: str, host: str, port: int, secret_arn: str, bucket_name: str, image: str
    ) -> dict[str, Any]:
        environment, secrets = connection_environment(
            host, port, args.database.name, args.database.user, secret_arn, args.database.password_key
        )
        return {
            "name": CONTAINER,
            "image": image,
            "essential": True,
            "command": [PYTHON, "-m", "services.ui_backend_service.ui_server"],
            "portMappings": [{"containerPort": UI_PORT, "protocol": "tcp"}],
            "environment": [*environment, *backend_environment(args.region, bucket_name)],
            "secrets": secrets,
            "healthCheck": {
                "command": ["CMD-SHELL", f"curl -fsS http://localhost:{UI_PORT}/ping || exit 1"],
                # Checked often, so `python -m metaflow_infra ui` sees a new task healthy soon.
                "interval": 10,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 60,
            },
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group_name,
                    "awslogs-region": args.region,
                    "awslogs-stream-prefix": CONTAINER,
                },
            },
        }

    def _target_group(self, args: UiArgs) -> aws.lb.TargetGroup:
        return aws.lb.TargetGroup(
            self.named("ui"),
            port=UI_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.groups.vpc_id,
            deregistration_delay=30,
            health_check=aws.lb.TargetGroupHealthCheckArgs(path="/ping", matcher="200", interval=15),
            opts=self.child(),
        )

    def _load_balancer(self, args: UiArgs, target_group: aws.lb.TargetGroup) -> pulumi.Output[str]:
        settings = args.settings
        assert args.groups.load_balancer is not None
        balancer = aws.lb.LoadBalancer(
            self.named("ui"),
            load_balancer_type="application",
            internal=False,
            subnets=pulumi.Output.from_input(
                args.subnet_ids if args.load_balancer_subnet_ids is None else args.load_balancer_subnet_ids
            ).apply(lambda ids: ids[:LOAD_BALANCER_SUBNETS]),
            security_groups=[args.groups.load_balancer],
            drop_invalid_header_fields=True,
            # Websockets (/ws) stay open between the UI's heartbeats.
            idle_timeout=300,
            opts=self.child(),
        )
        forward = aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn)
        if settings.certificate_arn is None:
            aws.lb.Listener(
                self.named("ui-http"),
                load_balancer_arn=balancer.arn,
                port=HTTP_PORT,
                protocol="HTTP",
                default_actions=[forward],
                opts=self.child(),
            )
        else:
            actions = [forward]
            if settings.access is UiAccess.PUBLIC:
                actions = [
                    self._sign_in(args),
                    aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn, order=2),
                ]
            aws.lb.Listener(
                self.named("ui-https"),
                load_balancer_arn=balancer.arn,
                port=HTTPS_PORT,
                protocol="HTTPS",
                ssl_policy=TLS_POLICY,
                certificate_arn=settings.certificate_arn,
                default_actions=actions,
                opts=self.child(),
            )
            aws.lb.Listener(
                self.named("ui-redirect"),
                load_balancer_arn=balancer.arn,
                port=HTTP_PORT,
                protocol="HTTP",
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(
                        type="redirect",
                        redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                            protocol="HTTPS", port=str(HTTPS_PORT), status_code="HTTP_301"
                        ),
                    )
                ],
                opts=self.child(),
            )
        if settings.domain is not None and settings.hosted_zone_id is not None:
            aws.route53.Record(
                self.named("ui"),
                zone_id=settings.hosted_zone_id,
                name=settings.domain,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=balancer.dns_name, zone_id=balancer.zone_id, evaluate_target_health=True
                    )
                ],
                opts=self.child(),
            )
        scheme = "http" if settings.certificate_arn is None else "https"
        host = pulumi.Output.from_input(settings.domain) if settings.domain else balancer.dns_name
        return pulumi.Output.concat(scheme, "://", host)

    def _sign_in(self, args: UiArgs) -> aws.lb.ListenerDefaultActionArgs:
        """The load balancer's own sign-in, before anything reaches the UI."""
        settings = args.settings
        if settings.auth is UiAuth.OIDC:
            oidc = settings.oidc
            assert oidc is not None
            return aws.lb.ListenerDefaultActionArgs(
                type="authenticate-oidc",
                order=1,
                authenticate_oidc=aws.lb.ListenerDefaultActionAuthenticateOidcArgs(
                    issuer=oidc.issuer,
                    authorization_endpoint=oidc.authorization_endpoint,
                    token_endpoint=oidc.token_endpoint,
                    user_info_endpoint=oidc.user_info_endpoint,
                    client_id=oidc.client_id,
                    client_secret=pulumi.Output.secret(oidc.client_secret),
                ),
            )
        pool = aws.cognito.UserPool(
            self.named("ui"),
            # Only the admin adds users: nobody signs themselves up to a team's UI.
            admin_create_user_config=aws.cognito.UserPoolAdminCreateUserConfigArgs(allow_admin_create_user_only=True),
            opts=self.child(),
        )
        client = aws.cognito.UserPoolClient(
            self.named("ui"),
            user_pool_id=pool.id,
            generate_secret=True,
            allowed_oauth_flows=["code"],
            allowed_oauth_flows_user_pool_client=True,
            allowed_oauth_scopes=["openid", "email"],
            supported_identity_providers=["COGNITO"],
            callback_urls=[f"https://{settings.domain}/oauth2/idpresponse"],
            opts=self.child(),
        )
        suffix = random.RandomId(self.named("ui-sign-in"), byte_length=4, opts=self.child())
        domain = aws.cognito.UserPoolDomain(
            self.named("ui"),
            # A prefix unique in the region; Cognito refuses ones containing "aws" or "cognito".
            domain=suffix.hex.apply(lambda hex_suffix: f"metaflow-ui-{hex_suffix}"),
            user_pool_id=pool.id,
            opts=self.child(),
        )
        return aws.lb.ListenerDefaultActionArgs(
            type="authenticate-cognito",
            order=1,
            authenticate_cognito=aws.lb.ListenerDefaultActionAuthenticateCognitoArgs(
                user_pool_arn=pool.arn, user_pool_client_id=client.id, user_pool_domain=domain.domain
            ),
        )
