"""The waker's resources (`metadata:scaleToZero`; docs/scale-to-zero.md, path D), declared as children of
the MetadataService: the waker Lambda (`lambdas/waker.py`) and its role (the API's integrations, the one
that answers through it while the service sleeps and the readiness probe, are the endpoint's), the
once-a-minute schedule that stops an idle service, the EventBridge rule that puts the waker in front of a task
being stopped, and the one that starts the service for a scheduled run queued on Batch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .base import Component
from .endpoint import Endpoint, allow_api_to_invoke, log_group, python_function
from .policies import invoke_function_policy, waker_policy

TICK_SCHEDULE = "rate(1 minute)"
WATCH_SECONDS = 600
"""How long a watcher waits for a ready task: well past the documented worst-case wake."""
WAKER_TIMEOUT_SECONDS = WATCH_SECONDS + 60


@dataclass(frozen=True)
class WakerArgs:
    function_name: str
    """Fixed, so the API integration can name the function before it exists (the function's settings name the
    route, which needs the integration)."""
    region: str
    cluster_name: pulumi.Input[str]
    cluster_arn: pulumi.Input[str]
    service_name: pulumi.Input[str]
    discovery_service_id: pulumi.Input[str]
    discovery_service_arn: pulumi.Input[str]
    idle_minutes: int
    job_queue_arns: tuple[pulumi.Input[str], ...] = ()
    """Batch queues whose runs' start steps wake the service (scheduled runs' steps do not read the profile)."""
    database: WakerDatabase | None = None
    """The database the watcher resumes through the RDS Data API; None where the Data API is off."""


@dataclass(frozen=True)
class WakerDatabase:
    cluster_arn: pulumi.Input[str]
    secret_arn: pulumi.Input[str]
    """Holds `username` and `password` as JSON, as the Data API requires."""
    name: str


def waker_function_name(scoped_name: str) -> str:
    """`<prefix>-<stack>-waker`, within Lambda's 64 characters."""
    return re.sub(r"-+$", "", scoped_name[: 64 - len("-waker")]) + "-waker"


def waker_function_arn(owner: Component, args: WakerArgs) -> str:
    return f"arn:{owner.partition}:lambda:{args.region}:{owner.account}:function:{args.function_name}"


def declare_waker(owner: Component, args: WakerArgs, endpoint: Endpoint) -> aws.lambda_.Function:
    """The waker function, allowed to be run by the API (on its route), the schedule and the two rules."""
    api, route, waker_integration, probe = endpoint.api, endpoint.route, endpoint.waker_integration, endpoint.probe
    if waker_integration is None or probe is None:
        raise ValueError("the endpoint was declared without the waker's integration and probe")
    logs = log_group(owner, "waker")
    function_arn = waker_function_arn(owner, args)
    database = args.database
    policy = pulumi.Output.all(
        args.cluster_name,
        args.service_name,
        api.id,
        route.id,
        args.discovery_service_arn,
        logs.arn,
        database.cluster_arn if database else None,
        database.secret_arn if database else None,
        probe.route_arn,
    ).apply(
        lambda values: waker_policy(
            partition=owner.partition,
            region=args.region,
            account=owner.account,
            cluster=values[0],
            service=values[1],
            api_id=values[2],
            route_id=values[3],
            discovery_service_arn=values[4],
            function_arn=function_arn,
            log_group_arn=values[5],
            database_cluster_arn=values[6],
            database_secret_arn=values[7],
            probe_route_arn=values[8],
        )
    )
    role = owner.service_role("waker", "lambda.amazonaws.com", inline=policy)
    function = python_function(
        owner,
        "waker",
        "waker",
        role,
        logs,
        memory_mb=128,
        timeout_seconds=WAKER_TIMEOUT_SECONDS,
        name=args.function_name,
        environment=aws.lambda_.FunctionEnvironmentArgs(
            variables={
                "CLUSTER": args.cluster_name,
                "SERVICE": args.service_name,
                "API_ID": api.id,
                "ROUTE_ID": route.id,
                "WAKER_INTEGRATION_ID": waker_integration.id,
                "SERVICE_INTEGRATION_ID": endpoint.service_integration.id,
                "PROBE_URL": probe.url,
                "DISCOVERY_SERVICE_ID": args.discovery_service_id,
                "IDLE_MINUTES": str(args.idle_minutes),
                "WATCH_SECONDS": str(WATCH_SECONDS),
                # ARNs only: the Data API reads the credentials from the secret itself.
                **(
                    {
                        "DB_CLUSTER_ARN": database.cluster_arn,
                        "DB_SECRET_ARN": database.secret_arn,
                        "DB_NAME": database.name,
                    }
                    if database
                    else {}
                ),
            }
        ),
    )
    allow_api_to_invoke(owner, "waker-api", function, pulumi.Output.concat(api.execution_arn, "/*/$default"))
    _schedule_ticks(owner, function)
    _watch_stopping_tasks(owner, args, function)
    if args.job_queue_arns:
        _wake_for_queued_runs(owner, args, function)
    return function


def _schedule_ticks(owner: Component, function: aws.lambda_.Function) -> None:
    """Every minute: stop the service once idle. EventBridge Scheduler's first 14 million runs a month cost nothing."""
    role = owner.service_role(
        "waker-scheduler", "scheduler.amazonaws.com", inline=function.arn.apply(invoke_function_policy)
    )
    aws.scheduler.Schedule(
        owner.named("waker-tick"),
        schedule_expression=TICK_SCHEDULE,
        flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
        target=aws.scheduler.ScheduleTargetArgs(
            arn=function.arn,
            role_arn=role.arn,
            input=json.dumps({"action": "tick"}),
            # A missed tick is repeated a minute later anyway.
            retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(maximum_retry_attempts=0),
        ),
        opts=owner.child(),
    )


START_STEP_JOB_NAMES = "SFN-*--start--"
"""Metaflow names a step's Batch job `<user>-<flow>-<run>-<step>-<task>-<retry>`; when Step Functions runs it,
`SFN` is the user and run, task and retry are empty. Every run begins with the step named `start`. Runs started
from a laptop (`run --with batch`) need no nudge: their client wakes the service before it submits a step."""


def _wake_for_queued_runs(owner: Component, args: WakerArgs, function: aws.lambda_.Function) -> None:
    """A Step Functions run's start step becoming RUNNABLE on one of the stack's queues starts a sleeping
    service. Steps on Batch do not read the profile (Metaflow's 5 retries, 31 s, on their first call), and a
    scheduled run has no client that calls first; Batch's own start of an instance (minutes, from none) then
    runs beside the wake. One event per attempt of the start step (Batch sends none for the submission itself;
    RUNNABLE comes first)."""
    pattern = pulumi.Output.all(*args.job_queue_arns).apply(
        lambda queues: json.dumps(
            {
                "source": ["aws.batch"],
                "detail-type": ["Batch Job State Change"],
                "detail": {
                    "jobQueue": sorted(queues),
                    "status": ["RUNNABLE"],
                    "jobName": [{"wildcard": START_STEP_JOB_NAMES}],
                },
            }
        )
    )
    _events_to_waker(
        owner,
        ("run-queued", "waker-runs"),
        "Metaflow: a Step Functions run's start step is queued on Batch; the waker starts the metadata service",
        pattern,
        function,
        # Only a prompt wake helps: a late one is dropped (the step's own call wakes the service anyway).
        aws.cloudwatch.EventTargetRetryPolicyArgs(maximum_retry_attempts=0, maximum_event_age_in_seconds=60),
    )


def _events_to_waker(
    owner: Component,
    names: tuple[str, str],
    description: str,
    pattern: pulumi.Input[str],
    function: aws.lambda_.Function,
    retry_policy: aws.cloudwatch.EventTargetRetryPolicyArgs | None = None,
) -> None:
    """An EventBridge rule whose events run the waker, and the permission that lets that one rule run it.
    `names`: the rule's and target's, then the permission's."""
    rule_name, permission_name = names
    rule = aws.cloudwatch.EventRule(
        owner.named(rule_name), description=description, event_pattern=pattern, opts=owner.child()
    )
    aws.cloudwatch.EventTarget(
        owner.named(rule_name), rule=rule.name, arn=function.arn, retry_policy=retry_policy, opts=owner.child()
    )
    aws.lambda_.Permission(
        owner.named(permission_name),
        action="lambda:InvokeFunction",
        function=function.name,
        principal="events.amazonaws.com",
        source_arn=rule.arn,
        opts=owner.child(),
    )


def _watch_stopping_tasks(owner: Component, args: WakerArgs, function: aws.lambda_.Function) -> None:
    """ECS reports a task being stopped (Spot, a crash, a deploy, the idle stop) before it leaves Cloud Map."""
    pattern = pulumi.Output.all(args.cluster_arn, args.service_name).apply(
        lambda values: json.dumps(
            {
                "source": ["aws.ecs"],
                "detail-type": ["ECS Task State Change"],
                "detail": {
                    "clusterArn": [values[0]],
                    "group": [f"service:{values[1]}"],
                    "desiredStatus": ["STOPPED"],
                },
            }
        )
    )
    _events_to_waker(
        owner,
        ("task-stopping", "waker-events"),
        "Metaflow metadata service: a task is being stopped; the waker decides where requests go",
        pattern,
        function,
    )
