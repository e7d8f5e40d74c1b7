"""The metadata service's HTTPS endpoint: API Gateway HTTP API → VPC link → Cloud Map → the task,
with every route behind a Lambda authorizer that checks the `x-api-key` header.

No always-on load balancer: the HTTP API and its VPC link bill per request only. The integration
maps no headers, so the service's `METADATA_SERVICE_VERSION` response header (which
`step-functions create` checks) reaches the client untouched. With scale to zero, a second API on the same
VPC link carries only the waker's requests: its IAM-signed readiness probe, and the clients' requests it
forwards, behind the same API-key authorizer, while the route's switch to the task deploys
(docs/scale-to-zero.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import pulumi
import pulumi_aws as aws

from .base import Component
from .lambdas.waker import READY_PROBE_PATH
from .policies import read_secret_and_write_logs

API_KEY_HEADER = "x-api-key"
AUTHORIZER_CACHE_SECONDS = 300
API_KEY_GRACE_SECONDS = 3600
"""How long the previous key still works after a rotation: time to hand out the new profile."""
LOG_RETENTION_DAYS = 14


@dataclass(frozen=True)
class EndpointArgs:
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    discovery_service_arn: pulumi.Input[str]
    """The Cloud Map service the tasks register in (SRV records)."""
    api_key_secret_arn: pulumi.Output[str]
    authorizer_concurrency: int
    """Reserved (and most) concurrent authorizer runs; 0: no reservation."""
    waker_function_arn: str | None = None
    """With scale to zero: the waker, which the route targets until a task is ready (then the waker moves it)."""


@dataclass(frozen=True)
class ReadyProbe:
    """With scale to zero: the waker's way to ask the task for `/ping` exactly as clients reach it, and to
    forward a request to it while the main route's switch deploys."""

    url: pulumi.Output[str]
    route_arn: pulumi.Output[str]
    """What `execute-api:Invoke` names to allow the probe's one route."""


@dataclass(frozen=True)
class Endpoint:
    url: pulumi.Output[str]
    api: aws.apigatewayv2.Api
    route: aws.apigatewayv2.Route
    service_integration: aws.apigatewayv2.Integration
    waker_integration: aws.apigatewayv2.Integration | None
    probe: ReadyProbe | None


def log_group(owner: Component, purpose: str) -> aws.cloudwatch.LogGroup:
    return aws.cloudwatch.LogGroup(owner.named(purpose), retention_in_days=LOG_RETENTION_DAYS, opts=owner.child())


def secret_reading_role(
    owner: Component,
    purpose: str,
    service: str,
    secret_arn: pulumi.Input[str],
    logs: aws.cloudwatch.LogGroup,
    pull_repository_arn: pulumi.Input[str] | None = None,
) -> aws.iam.Role:
    """A role that may read one secret and write one log group (and, given one, pull from one ECR
    repository), nothing else."""
    return owner.service_role(
        purpose,
        service,
        inline=pulumi.Output.all(secret_arn, logs.arn, pull_repository_arn).apply(
            lambda arns: read_secret_and_write_logs(arns[0], arns[1], arns[2])
        ),
    )


def python_function(
    owner: Component,
    purpose: str,
    module: str,
    role: aws.iam.Role,
    logs: aws.cloudwatch.LogGroup,
    *,
    memory_mb: int,
    timeout_seconds: int,
    **options: Any,
) -> aws.lambda_.Function:
    """One of this program's Lambda functions: `lambdas/<module>.py` alone (the runtime's boto3 is all it
    imports) on arm64 Python, writing to `logs`; `options` are further `aws.lambda_.Function` arguments."""
    source = resources.files("metaflow_infra").joinpath("lambdas", f"{module}.py").read_text()
    return aws.lambda_.Function(
        owner.named(purpose),
        runtime=aws.lambda_.Runtime.PYTHON3D13,
        architectures=["arm64"],
        handler=f"{module}.handler",
        code=pulumi.AssetArchive({f"{module}.py": pulumi.StringAsset(source)}),
        role=role.arn,
        memory_size=memory_mb,
        timeout=timeout_seconds,
        logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
        opts=owner.child(),
        **options,
    )


def _authorizer_function(owner: Component, args: EndpointArgs) -> aws.lambda_.Function:
    logs = log_group(owner, "authorizer")
    role = secret_reading_role(owner, "authorizer", "lambda.amazonaws.com", args.api_key_secret_arn, logs)
    return python_function(
        owner,
        "authorizer",
        "authorizer",
        role,
        logs,
        memory_mb=128,
        timeout_seconds=5,
        environment=aws.lambda_.FunctionEnvironmentArgs(
            variables={
                "API_KEY_SECRET_ARN": args.api_key_secret_arn,
                "API_KEY_GRACE_SECONDS": str(API_KEY_GRACE_SECONDS),
            }
        ),
        # Valid clients rarely reach it (API Gateway caches each answer for 5 minutes); a flood of
        # wrong keys does, and this caps what it can cost: about 100 runs a second.
        reserved_concurrent_executions=args.authorizer_concurrency or None,
    )


def declare_endpoint(owner: Component, args: EndpointArgs) -> Endpoint:
    """Declare the endpoint's resources as children of `owner`."""
    name = owner.named("metadata")
    api = aws.apigatewayv2.Api(name, protocol_type="HTTP", description="Metaflow metadata service", opts=owner.child())
    link = aws.apigatewayv2.VpcLink(
        name, subnet_ids=args.subnet_ids, security_group_ids=[args.security_group_id], opts=owner.child()
    )
    integration = _to_the_service(owner, name, api, link, args.discovery_service_arn, "ANY")
    function = _authorizer_function(owner, args)
    authorizer, _ = _api_key_authorizer(owner, ("api-key", "authorizer"), api, function)
    waker_integration = probe = None
    if args.waker_function_arn is not None:
        probe = _ready_probe(owner, link, args.discovery_service_arn, function)
        # Named by ARN, not by the function resource: the function's settings name the route, which needs this.
        waker_integration = aws.apigatewayv2.Integration(
            owner.named("waker"),
            api_id=api.id,
            integration_type="AWS_PROXY",
            integration_method="POST",
            integration_uri=args.waker_function_arn,
            payload_format_version="2.0",
            opts=owner.child(),
        )
    # `$default` catches every path, `/` included, and forwards it unchanged. With scale to zero it starts at
    # the waker (no task yet) and the waker moves it from then on: Pulumi leaves the target alone.
    route = aws.apigatewayv2.Route(
        name,
        api_id=api.id,
        route_key="$default",
        target=pulumi.Output.concat("integrations/", (waker_integration or integration).id),
        authorization_type="CUSTOM",
        authorizer_id=authorizer.id,
        opts=owner.child(ignore_changes=["target"] if waker_integration else None),
    )
    # No stage throttling: Metaflow does not retry a 429, so a wide foreach would fail; the
    # account's API Gateway limits still apply, and requests without the key never pass.
    stage = aws.apigatewayv2.Stage(name, api_id=api.id, name="$default", auto_deploy=True, opts=owner.child())
    url = pulumi.Output.all(api.api_endpoint, stage.id).apply(lambda values: values[0])
    return Endpoint(url, api, route, integration, waker_integration, probe)


def _api_key_authorizer(
    owner: Component, purposes: tuple[str, str], api: aws.apigatewayv2.Api, function: aws.lambda_.Function
) -> tuple[aws.apigatewayv2.Authorizer, aws.lambda_.Permission]:
    """The `x-api-key` check on one of the stack's APIs, and the permission for that API to run it (without
    it, API Gateway answers 500 and never calls the function). `purposes`: the authorizer's name, then the
    permission's."""
    authorizer = aws.apigatewayv2.Authorizer(
        owner.named(purposes[0]),
        api_id=api.id,
        authorizer_type="REQUEST",
        authorizer_uri=function.invoke_arn,
        identity_sources=[f"$request.header.{API_KEY_HEADER}"],
        authorizer_payload_format_version="2.0",
        enable_simple_responses=True,
        authorizer_result_ttl_in_seconds=AUTHORIZER_CACHE_SECONDS,
        opts=owner.child(),
    )
    permission = allow_api_to_invoke(
        owner, purposes[1], function, pulumi.Output.concat(api.execution_arn, "/authorizers/", authorizer.id)
    )
    return authorizer, permission


def _to_the_service(
    owner: Component,
    name: str,
    api: aws.apigatewayv2.Api,
    link: aws.apigatewayv2.VpcLink,
    discovery_service_arn: pulumi.Input[str],
    method: str,
    request_parameters: dict[str, str] | None = None,
) -> aws.apigatewayv2.Integration:
    """An integration through the VPC link to the tasks Cloud Map lists."""
    return aws.apigatewayv2.Integration(
        name,
        api_id=api.id,
        integration_type="HTTP_PROXY",
        integration_method=method,
        connection_type="VPC_LINK",
        connection_id=link.id,
        integration_uri=discovery_service_arn,
        payload_format_version="1.0",
        request_parameters=request_parameters,
        opts=owner.child(),
    )


def _ready_probe(
    owner: Component,
    link: aws.apigatewayv2.VpcLink,
    discovery_service_arn: pulumi.Input[str],
    authorizer_function: aws.lambda_.Function,
) -> ReadyProbe:
    """An API of its own on the same VPC link and Cloud Map service, with two routes: `GET /ready`, sent to
    `/ping` and IAM-authorized (only the waker may call it), and `$default`, behind the main API's API-key
    authorizer, for the clients' requests the waker forwards. The waker's probe and forwards travel the clients'
    way to the task without counting among the main API's requests (which decide when the service is idle); the
    probe's path is one the metadata service does not serve."""
    name = owner.named("ready-probe")
    api = aws.apigatewayv2.Api(
        name,
        protocol_type="HTTP",
        description="Metaflow metadata service: the waker's readiness probe",
        opts=owner.child(),
    )
    integration = _to_the_service(
        owner, name, api, link, discovery_service_arn, "GET", request_parameters={"overwrite:path": "/ping"}
    )
    ready = aws.apigatewayv2.Route(
        name,
        api_id=api.id,
        route_key=f"GET {READY_PROBE_PATH}",
        target=pulumi.Output.concat("integrations/", integration.id),
        authorization_type="AWS_IAM",
        opts=owner.child(),
    )
    # Every other path, unchanged, as the main API's route takes it, and with the same key: a forwarded request
    # passes on its client's `x-api-key`, and nobody reaches the service here without one.
    forwarding = owner.named("ready-probe-forward")
    authorizer, permission = _api_key_authorizer(
        owner, ("ready-probe-forward", "ready-probe-authorizer"), api, authorizer_function
    )
    forward = aws.apigatewayv2.Route(
        forwarding,
        api_id=api.id,
        route_key="$default",
        target=pulumi.Output.concat(
            "integrations/", _to_the_service(owner, forwarding, api, link, discovery_service_arn, "ANY").id
        ),
        authorization_type="CUSTOM",
        authorizer_id=authorizer.id,
        opts=owner.child(),
    )
    # The waker's settings name the stage: its code that forwards runs only once the route and the authorizer's
    # permission exist (a forward before either gets API Gateway's own 404 or 500).
    stage = aws.apigatewayv2.Stage(
        name, api_id=api.id, name="$default", auto_deploy=True, opts=owner.child(ready, forward, permission)
    )
    return ReadyProbe(
        url=pulumi.Output.all(api.api_endpoint, stage.id).apply(lambda values: values[0] + READY_PROBE_PATH),
        route_arn=pulumi.Output.concat(api.execution_arn, "/$default/GET", READY_PROBE_PATH),
    )


def allow_api_to_invoke(
    owner: Component, purpose: str, function: aws.lambda_.Function, source_arn: pulumi.Input[str]
) -> aws.lambda_.Permission:
    """Let API Gateway run `function`, from `source_arn` (one authorizer or one route) only."""
    return aws.lambda_.Permission(
        owner.named(purpose),
        action="lambda:InvokeFunction",
        function=function.name,
        principal="apigateway.amazonaws.com",
        source_arn=source_arn,
        opts=owner.child(),
    )
