"""The scale-to-zero waker against fake AWS APIs: ECS services, CloudWatch metrics and Cloud Map from moto;
the HTTP API's route, Lambda's async invoke and ECS's task listing from fakes whose every request and
answer is checked against botocore's model of the service. A fake clock; no network."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import functools
import http.client
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.validate import ParamValidator, validate_parameters
from moto import mock_aws

from metaflow_infra.lambdas import waker
from metaflow_infra.lambdas.waker import Clients, Config

REGION = "us-east-1"
ACCOUNT = "123456789012"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:metaflow-waker"
CLUSTER_ARN = f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:metaflow-db-1"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:metaflow-db-password-AbCdEf"
START = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)


@functools.cache
def model_client(service: str) -> Any:
    """A client used only for its model of the service (built once: clients are slow to build)."""
    return boto3.client(service, region_name=REGION)


class ModelChecked:
    """Answers some operations of a boto3 client from `answers` (python name -> function of the request),
    after checking the request, and then the answer, against botocore's model of the operation; other
    operations go to `delegate` (a moto client) or fail. Records every call in order."""

    def __init__(
        self, service: str, answers: dict[str, Callable[..., dict[str, Any]]], calls: list[str], delegate: Any = None
    ):
        self._model_client = model_client(service) if delegate is None else delegate  # a moto client has the model too
        self._answers, self._calls, self._delegate = answers, calls, delegate

    def __getattr__(self, name: str) -> Any:
        if name not in self._answers:
            if self._delegate is None:
                raise AssertionError(f"unexpected call {name}")

            def delegated(**request: Any) -> Any:
                self._calls.append(name)
                return getattr(self._delegate, name)(**request)

            return delegated
        operation = self._model_client.meta.service_model.operation_model(
            self._model_client.meta.method_to_api_mapping[name]
        )

        def answer(**request: Any) -> dict[str, Any]:
            validate_parameters(request, operation.input_shape)  # raises on a request AWS would refuse
            self._calls.append(name)
            response = self._answers[name](**request)
            report = ParamValidator().validate(response, operation.output_shape)
            assert not report.has_errors(), report.generate_report()
            return response

        return answer


@dataclass
class Task:
    arn: str
    last_status: str = "PROVISIONING"
    health: str = "UNKNOWN"
    desired_status: str = "RUNNING"
    started_at: datetime.datetime | None = None
    created_at: datetime.datetime | None = None
    pull_started_at: datetime.datetime | None = None
    pull_stopped_at: datetime.datetime | None = None


SERVICE_REPLY = waker.Reply(
    200,
    (("Content-Type", "application/json"), ("METADATA_SERVICE_VERSION", "2.5.1"), ("Content-Length", "9")),
    b'{"id": 1}',
)


@dataclass
class World:
    """The fake account: moto services plus the route, the tasks and the async invocations."""

    config: Config
    aws: Clients
    ecs: Any
    cloudwatch: Any
    servicediscovery: Any
    route_target: str
    calls: list[str] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    now: datetime.datetime = START
    slept: list[float] = field(default_factory=list)
    database: str = "paused"
    """The Aurora database as the Data API finds it: paused, resuming, available, or an error code it answers."""
    forwarded: list[tuple[waker.Outgoing, float]] = field(default_factory=list)
    """Each forwarded request and the deadline (epoch seconds) it was sent with."""
    forward_failures: list[waker.Reply | Exception] = field(default_factory=list)
    """What forwarding gets instead of the service's answer, one per forwarded request."""
    probe_seconds: float = 0.0
    """How long each probe takes, on the fake clock."""
    link_failures: list[int | None] = field(default_factory=list)
    """What the probe gets instead of the task's answer, one per probe, while AWS rebuilds an inactive VPC link
    (None: no answer at all)."""

    def probe(self, url: str) -> int | None:
        """API Gateway's way to the task, once the link carries: 200 from any running task, healthy or not yet
        (whether API Gateway reaches a task before ECS reports it healthy is not documented: the waker must not
        take a 200 for readiness on its own)."""
        assert url == self.config.probe_url
        self.calls.append("probe")
        self.now += datetime.timedelta(seconds=self.probe_seconds)
        if self.link_failures:
            return self.link_failures.pop(0)
        return 200 if any(t.last_status == "RUNNING" for t in self.tasks) else 503

    def forward(self, request: waker.Outgoing, deadline: float) -> waker.Reply:
        """The probe API's `$default` route to the task: the service answers what it would on the main route."""
        assert request.url.startswith(self.config.forward_url + "/")
        self.calls.append("forward")
        self.forwarded.append((request, deadline))
        if self.forward_failures:
            failure = self.forward_failures.pop(0)
            if isinstance(failure, waker.Reply):
                return failure
            raise failure
        if not any(t.last_status == "RUNNING" for t in self.tasks):
            return waker.Reply(503, (("Content-Type", "application/json"),), b'{"message":"Service Unavailable"}')
        return SERVICE_REPLY

    def desired(self) -> int:
        return self.ecs.describe_services(cluster=self.config.cluster, services=[self.config.service])["services"][0][
            "desiredCount"
        ]

    def set_desired(self, count: int) -> None:
        """As someone outside the waker would (the console, a deploy)."""
        self.ecs.update_service(cluster=self.config.cluster, service=self.config.service, desiredCount=count)

    def on_service(self) -> bool:
        return self.route_target == self.config.target(True)

    def add_task(self, task_id: str, last_status: str = "RUNNING", health: str = "HEALTHY") -> Task:
        """A task ECS created; registered in Cloud Map (under its id, as ECS does) if it already runs."""
        task = Task(f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/metaflow/{task_id}", last_status, health, started_at=self.now)
        self.tasks.append(task)
        if last_status == "RUNNING":
            self.register(task)
        return task

    def start(self, task: Task) -> None:
        """The task runs: ECS registers it in Cloud Map (after ACTIVATING, before its health is known)."""
        task.last_status, task.started_at = "RUNNING", self.now
        self.register(task)

    def register(self, task: Task) -> None:
        self.servicediscovery.register_instance(
            ServiceId=self.config.discovery_service_id,
            InstanceId=task.arn.rsplit("/", 1)[-1],
            Attributes={"AWS_INSTANCE_IPV4": "10.0.0.5", "AWS_INSTANCE_PORT": "8080"},
        )

    def task_ready(self, task_id: str = "1") -> Task:
        return self.add_task(task_id)

    def serving(self) -> Task:
        """A request woke the service, its task became ready and the watcher routed to it."""
        self.run(HTTP_REQUEST)
        task = self.task_ready()
        assert self.run({"action": "watch"}) == "switched"
        return task

    def request(self, method: str = "GET", path: str = "/flows/HelloFlow", **fields: Any) -> dict[str, Any]:
        """An API request (payload 2.0) that API Gateway received at this moment of the fake clock."""
        return {
            **HTTP_REQUEST,
            "rawPath": path,
            "requestContext": {"http": {"method": method, "path": path}, "timeEpoch": int(self.clock() * 1000)},
            **fields,
        }

    def waking_with_a_ready_task(self) -> Task:
        """A request woke the service and its task became ready; the watcher has not switched the route yet."""
        self.run(HTTP_REQUEST)
        task = self.task_ready()
        assert not self.on_service()
        return task

    def refuse_route_switches(self, code: str) -> None:
        """From now on every UpdateRoute fails with `code` (GetRoute still answers)."""

        def refused(**request: Any) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": code, "Message": code}}, "UpdateRoute")

        answers = {"get_route": self.aws.apigatewayv2.get_route, "update_route": refused}
        self.aws = dataclasses.replace(self.aws, apigatewayv2=ModelChecked("apigatewayv2", answers, self.calls))

    def requests_at(self, minutes_ago: float, count: int = 1) -> None:
        self.cloudwatch.put_metric_data(
            Namespace="AWS/ApiGateway",
            MetricData=[
                {
                    "MetricName": "Count",
                    "Dimensions": [{"Name": "ApiId", "Value": self.config.api_id}],
                    "Value": count,
                    "Timestamp": self.now - datetime.timedelta(minutes=minutes_ago),
                }
            ],
        )

    def clock(self) -> float:
        return self.now.timestamp()

    def sleep(self, seconds: float) -> None:
        self.calls.append(f"sleep {seconds:g}")
        self.slept.append(seconds)
        self.now += datetime.timedelta(seconds=seconds)

    def run(self, event: dict[str, Any]) -> Any:
        return waker.dispatch(event, FUNCTION_ARN, self.aws, self.config, self.clock, self.sleep)


@dataclass
class Account:
    """What the module's tests share in one moto account: the network, cluster, task definition and Cloud Map
    namespace. Each test adds its own ECS service, Cloud Map service and API id (see `world`)."""

    ecs: Any
    cloudwatch: Any
    servicediscovery: Any
    definition: str
    network: dict[str, Any]
    namespace: str


@pytest.fixture(scope="module")
def account() -> Iterator[Account]:
    # One moto account per module: starting moto, building clients and EC2's network per test cost most of the
    # file's time. Tests stay independent through names of their own.
    with pytest.MonkeyPatch.context() as env:
        # Not loading moto's ~1,300 default AMIs (the bulk of EC2's start and reset time): nothing here runs one.
        env.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        # One boto3 session for every test: a new one reloads botocore's service models (most of the time).
        with mock_aws(config={"core": {"reset_boto3_session": False}}):
            ec2 = boto3.client("ec2", region_name=REGION)
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
            group = ec2.create_security_group(GroupName="service", Description="service", VpcId=vpc)["GroupId"]
            ecs = boto3.client("ecs", region_name=REGION)
            ecs.create_cluster(clusterName="metaflow")
            definition = ecs.register_task_definition(
                family="metaflow-dev-metadata",
                containerDefinitions=[{"name": "metadata", "image": "netflixoss/metaflow_metadata_service:v2.5.1"}],
                requiresCompatibilities=["FARGATE"],
                networkMode="awsvpc",
                cpu="256",
                memory="1024",
            )["taskDefinition"]["taskDefinitionArn"]
            discovery = boto3.client("servicediscovery", region_name=REGION)
            discovery.create_private_dns_namespace(Name="metaflow-dev.metaflow.internal", Vpc=vpc)
            namespace = discovery.list_namespaces()["Namespaces"][0]["Id"]
            yield Account(
                ecs,
                boto3.client("cloudwatch", region_name=REGION),
                discovery,
                definition,
                {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}},
                namespace,
            )


_serial = itertools.count()  # names of each test's own service, Cloud Map service and API


@pytest.fixture
def world(account: Account) -> World:
    n = next(_serial)
    service = f"metaflow-metadata-{n}"
    account.ecs.create_service(
        cluster="metaflow",
        serviceName=service,
        taskDefinition=account.definition,
        desiredCount=0,
        launchType="FARGATE",
        networkConfiguration=account.network,
    )
    discovery_id = account.servicediscovery.create_service(
        Name=f"metadata-{n}", NamespaceId=account.namespace, DnsConfig={"DnsRecords": [{"Type": "SRV", "TTL": 10}]}
    )["Service"]["Id"]
    config = Config(
        cluster="metaflow",
        service=service,
        api_id=f"a1b2c{n:05d}",  # its own request metrics
        route_id="r0ute1d",
        waker_integration_id="wakerint",
        service_integration_id="vpclink1",
        discovery_service_id=discovery_id,
        idle_minutes=15,
        database_cluster_arn=CLUSTER_ARN,
        database_secret_arn=SECRET_ARN,
        database_name="metaflow",
        probe_url="https://pr0be1d.execute-api.us-east-1.amazonaws.com/ready",
        hold_seconds=0,  # requests answer at once, unless a test holds them (`holding`)
    )
    calls: list[str] = []
    state: dict[str, World] = {}

    def get_route(ApiId: str, RouteId: str) -> dict[str, Any]:
        return {"RouteId": RouteId, "RouteKey": "$default", "Target": state["world"].route_target}

    def update_route(ApiId: str, RouteId: str, Target: str) -> dict[str, Any]:
        state["world"].route_target = Target
        return {"RouteId": RouteId, "RouteKey": "$default", "Target": Target}

    def invoke(FunctionName: str, InvocationType: str, Payload: str) -> dict[str, Any]:
        state["world"].invocations.append(
            {"function": FunctionName, "type": InvocationType, "payload": json.loads(Payload)}
        )
        return {"StatusCode": 202}

    def describe_tasks(cluster: str, tasks: list[str]) -> dict[str, Any]:
        known = {t.arn.rsplit("/", 1)[-1]: t for t in state["world"].tasks}
        described = []
        for task_id in tasks:
            task = known[task_id]
            entry: dict[str, Any] = {
                "taskArn": task.arn,
                "lastStatus": task.last_status,
                "desiredStatus": task.desired_status,
                "healthStatus": task.health,
            }
            for key, value in (
                ("startedAt", task.started_at),
                ("createdAt", task.created_at),
                ("pullStartedAt", task.pull_started_at),
                ("pullStoppedAt", task.pull_stopped_at),
            ):
                if value:
                    entry[key] = value
            described.append(entry)
        return {"tasks": described, "failures": []}

    def execute_statement(resourceArn: str, secretArn: str, database: str, sql: str) -> dict[str, Any]:
        world = state["world"]
        assert (resourceArn, secretArn, database, sql) == (CLUSTER_ARN, SECRET_ARN, "metaflow", "SELECT 1")
        if world.database == "available":
            return {"records": [[{"longValue": 1}]], "numberOfRecordsUpdated": 0}
        code = "DatabaseResumingException" if world.database in ("paused", "resuming") else world.database
        if world.database == "paused":
            world.database = "resuming"  # the request itself resumes it
        raise ClientError({"Error": {"Code": code, "Message": code}}, "ExecuteStatement")

    aws = Clients(
        ecs=ModelChecked("ecs", {"describe_tasks": describe_tasks}, calls, account.ecs),
        apigatewayv2=ModelChecked("apigatewayv2", {"get_route": get_route, "update_route": update_route}, calls),
        cloudwatch=ModelChecked("cloudwatch", {}, calls, account.cloudwatch),
        servicediscovery=ModelChecked("servicediscovery", {}, calls, account.servicediscovery),
        lambda_=ModelChecked("lambda", {"invoke": invoke}, calls),
        rds_data=ModelChecked("rds-data", {"execute_statement": execute_statement}, calls),
        probe=lambda url: state["world"].probe(url),
        forward=lambda request, deadline: state["world"].forward(request, deadline),
    )
    world = World(config, aws, account.ecs, account.cloudwatch, account.servicediscovery, config.target(False), calls)
    state["world"] = world
    return world


HTTP_REQUEST = {
    "version": "2.0",
    "routeKey": "$default",
    "rawPath": "/flows/HelloFlow",
    "requestContext": {
        "http": {"method": "GET", "path": "/flows/HelloFlow"},
        "timeEpoch": int(START.timestamp() * 1000) - 2000,  # API Gateway received it 2 s before the fake clock
    },
}
WOKEN_AT = START.timestamp() - 2


def test_a_request_while_asleep_starts_one_task_and_gets_a_503_to_retry(world: World) -> None:
    response = world.run(HTTP_REQUEST)
    assert response["statusCode"] == 503
    assert response["headers"] == {"Content-Type": "application/json", "Retry-After": "5"}
    assert "starting" in json.loads(response["body"])["message"]
    assert world.desired() == 1
    assert world.invocations == [
        {"function": FUNCTION_ARN, "type": "Event", "payload": {"action": "watch", "wokenAt": WOKEN_AT}}
    ]
    assert not world.on_service()


def holding(world: World, progress: dict[int, Callable[[], Any]] | None = None) -> World:
    """The world's waker holding requests as deployed (HOLD_SECONDS); `progress`: what happens during the n-th
    of the request's sleeps (its polls), on the fake clock."""
    world.config = dataclasses.replace(world.config, hold_seconds=waker.HOLD_SECONDS)
    original_sleep, steps = world.sleep, dict(progress or {})

    def sleep(seconds: float) -> None:
        original_sleep(seconds)
        steps.pop(len(world.slept), lambda: None)()

    world.sleep = sleep  # type: ignore[method-assign]
    return world


def test_a_request_while_asleep_is_held_and_forwarded_once_a_task_is_ready(world: World) -> None:
    """Its client gets the service's answer seconds after the task is ready, not at its next retry (up to a
    minute later); while nothing answers the probe, each poll is one request through the probe API and no ECS
    call. The forward keeps what the hold left of API Gateway's 30 s."""
    holding(world, {3: lambda: world.add_task("1", health="UNKNOWN"), 5: lambda: world.task_ready("2")})
    response = world.run(world.request())
    assert response["statusCode"] == 200 and world.on_service()
    assert world.slept == [waker.HOLD_POLL_SECONDS] * 5
    polls = "".join(f"|{c}" for c in world.calls).split("|sleep 2")
    assert polls[1] == polls[2] == "|probe", "no ECS call while nothing answers"
    assert "describe_tasks" in polls[4], "a task answering the probe is looked up in ECS: not healthy yet"
    [(_, deadline)] = world.forwarded
    assert deadline == START.timestamp() + waker.FORWARD_BUDGET_SECONDS
    assert deadline - world.clock() >= waker.FORWARD_BUDGET_SECONDS - waker.HOLD_SECONDS >= 7


def test_a_request_held_without_a_ready_task_gets_its_503_within_the_hold(world: World) -> None:
    """The hold counts from the request's arrival at API Gateway (2 s before the waker saw it here)."""
    holding(world)
    arrived = world.clock()
    request = world.request()
    world.now += datetime.timedelta(seconds=2)
    assert world.run(request)["statusCode"] == 503
    assert world.clock() - arrived <= waker.HOLD_SECONDS
    assert world.slept == [waker.HOLD_POLL_SECONDS] * 9  # 2 + 9 * 2 = 20 s
    assert world.desired() == 1 and len(world.invocations) == 1, "it woke the service once"


@pytest.mark.parametrize("late_by", [0.0, 0.3, 1.0, 1.7, 3.1])
@pytest.mark.parametrize("probe_seconds", [0.0, 0.4, waker.PROBE_TIMEOUT_SECONDS])
def test_a_held_request_gets_its_503_at_the_end_of_the_hold_whatever_the_polls_phase(
    world: World, late_by: float, probe_seconds: float
) -> None:
    """The model of the client's wait rests on it (wake.worst_first_answer_seconds): no earlier than HOLD_SECONDS
    after the request's arrival, whenever the waker saw it and however long its probes take, and no later than
    its last probe and a second of calls after that."""
    holding(world)
    world.probe_seconds = probe_seconds
    arrived = world.clock()
    request = world.request()
    world.now += datetime.timedelta(seconds=late_by)  # the waker's cold start, the authorizer
    assert world.run(request)["statusCode"] == 503
    assert waker.HOLD_SECONDS <= world.clock() - arrived <= waker.HOLD_SECONDS + waker.HOLD_OVERRUN_SECONDS
    assert all(0 < seconds <= waker.HOLD_POLL_SECONDS for seconds in world.slept)


def test_slow_aws_calls_late_in_the_hold_cannot_keep_api_gateway_waiting(world: World) -> None:
    """A throttled ECS at the moment the task answers the probe: each call that could end past ANSWER_BY_SECONDS
    is not made, and the request gets the waker's 503 in time, not API Gateway's timeout; nothing was sent."""
    holding(world, {9: lambda: world.task_ready()})
    arrived = world.clock()

    class Slow:
        def __getattr__(self, name: str) -> Any:
            method = getattr(ecs, name)

            def call(**request: Any) -> Any:
                world.now += datetime.timedelta(seconds=4)
                return method(**request)

            return call

    ecs = world.aws.ecs
    world.aws = dataclasses.replace(world.aws, ecs=Slow())
    request = world.request()
    assert world.run(request)["statusCode"] == 503
    assert world.clock() - arrived <= waker.ANSWER_BY_SECONDS
    assert "forward" not in world.calls and world.desired() == 1


def test_a_look_that_fails_mid_hold_does_not_end_the_hold(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A throttled ECS while the task answers the probe but is not healthy yet: the request is still held, and
    forwarded once the task is; never an early 503 (the bound on the client's wait assumes full holds)."""
    holding(world, {2: lambda: world.add_task("1", health="UNKNOWN"), 6: lambda: world.task_ready("2")})
    describe_tasks, throttled = world.aws.ecs.describe_tasks, iter(range(2))

    class Throttled:
        def __getattr__(self, name: str) -> Any:
            if name == "describe_tasks" and next(throttled, None) is not None:
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "DescribeTasks")
            return describe_tasks if name == "describe_tasks" else getattr(ecs, name)

    ecs = world.aws.ecs
    world.aws = dataclasses.replace(world.aws, ecs=Throttled())
    assert world.run(world.request())["statusCode"] == 200
    assert "a look at the service failed; the request is still held" in caplog.text


@pytest.mark.parametrize(
    "failure",
    [
        waker.NotDelivered("connection reset"),
        waker.Reply(404, (), b'{"message":"Not Found"}'),  # the forwarding route not deployed yet
        waker.NoAnswer(timed_out=False),  # a GET: sent again harmlessly
    ],
)
def test_a_forward_that_reached_nothing_is_tried_again_within_the_hold(
    world: World, failure: Exception | waker.Reply
) -> None:
    holding(world, {1: lambda: world.task_ready()})
    world.forward_failures.append(failure)
    assert world.run(world.request())["statusCode"] == 200
    assert len(world.forwarded) == 2 and world.slept == [waker.HOLD_POLL_SECONDS] * 2


def test_a_failed_first_look_at_a_sleeping_service_is_made_again_at_the_next_poll(world: World) -> None:
    """The probe cannot answer for a service with no task: a look that failed must be made again regardless, or
    the service would not even be started during this hold."""
    holding(world)
    calls = iter(range(1))

    class ThrottledOnce:
        def __getattr__(self, name: str) -> Any:
            if name == "describe_services" and next(calls, None) is not None:
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "DescribeServices")
            return getattr(ecs, name)

    ecs = world.aws.ecs
    world.aws = dataclasses.replace(world.aws, ecs=ThrottledOnce())
    assert world.run(world.request())["statusCode"] == 503
    assert world.desired() == 1 and len(world.invocations) == 1, "started, with its watcher, during the hold"
    assert world.calls.index("update_service") < world.calls.index("sleep 2", world.calls.index("sleep 2") + 1)


def test_a_hold_with_no_ready_task_is_answered_no_earlier_than_its_end_even_if_every_look_fails(
    world: World,
) -> None:
    holding(world)
    world.aws = dataclasses.replace(world.aws, ecs=None)  # every ECS call raises
    world.link_failures = [200] * 20  # the probe answers: every poll looks at ECS
    arrived = world.clock()
    assert world.run(world.request())["statusCode"] == 503
    assert world.clock() - arrived == waker.HOLD_SECONDS


def test_the_ui_command_and_the_queued_run_nudge_are_never_held(world: World) -> None:
    holding(world)
    assert world.run({"action": "wake"}) == "starting"
    assert world.run(queued()) == "awake"
    assert world.slept == []


def test_a_request_held_while_the_probe_is_refused_gets_its_503_once_ecs_says_ready(world: World) -> None:
    """A refused probe says nothing about the task: ECS's health decides the route, and nothing is forwarded."""
    holding(world, {1: lambda: world.task_ready()})
    world.link_failures = [403] * 3
    assert world.run(world.request())["statusCode"] == 503
    assert world.on_service() and "forward" not in world.calls and world.slept == [waker.HOLD_POLL_SECONDS]


def test_concurrent_wakes_ask_for_one_task_and_start_one_watcher(world: World) -> None:
    for _ in range(5):
        assert world.run(HTTP_REQUEST)["statusCode"] == 503
    assert world.desired() == 1
    assert len(world.invocations) == 1
    assert world.calls.count("update_service") == 1


def test_a_failing_wake_still_answers_503(world: World) -> None:
    broken = Clients(**{**world.aws.__dict__, "ecs": None})  # every ECS call raises
    response = waker.dispatch(HTTP_REQUEST, FUNCTION_ARN, broken, world.config)
    assert response == waker.waking_response()


def test_the_handler_wakes_with_the_functions_settings_and_clients(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda's entry point: settings from the environment, the clients `_aws` builds, the function's own ARN."""
    variables = {
        "CLUSTER": world.config.cluster,
        "SERVICE": world.config.service,
        "API_ID": world.config.api_id,
        "ROUTE_ID": world.config.route_id,
        "WAKER_INTEGRATION_ID": world.config.waker_integration_id,
        "SERVICE_INTEGRATION_ID": world.config.service_integration_id,
        "DISCOVERY_SERVICE_ID": world.config.discovery_service_id,
        "IDLE_MINUTES": "15",
        "PROBE_URL": world.config.probe_url,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    chosen: list[bool] = []
    monkeypatch.setattr(waker, "_aws", lambda for_request: chosen.append(for_request) or world.aws)
    context = type("Context", (), {"invoked_function_arn": FUNCTION_ARN})()
    # Arrived a hold ago (the handler's clock is the real one): woken, not held.
    request = {**HTTP_REQUEST, "requestContext": {**HTTP_REQUEST["requestContext"]}}
    request["requestContext"]["timeEpoch"] = int((time.time() - waker.HOLD_SECONDS) * 1000)
    assert waker.handler(request, context)["statusCode"] == 503
    assert world.desired() == 1
    assert world.invocations[0]["function"] == FUNCTION_ARN
    waker.handler({"action": "tick"}, context)
    assert chosen == [True, False], "a request's calls bounded, the tick's patient"


def test_a_stop_event_without_a_time_is_timed_from_when_it_arrived(world: World) -> None:
    world.serving()
    world.invocations.clear()
    world.tasks[0].desired_status = "STOPPED"
    event = {k: v for k, v in stopping(world.tasks[0].arn).items() if k != "time"}
    assert world.run(event) == "replacing"
    assert world.invocations[0]["payload"]["wokenAt"] == world.clock()


def queued(job_name: str = "SFN-HelloFlow--start--") -> dict[str, Any]:
    """EventBridge's event for a Batch job turned RUNNABLE (the first Batch reports: none for the submission)."""
    detail = {"jobName": job_name, "status": "RUNNABLE", "jobQueue": "arn:aws:batch:us-east-1:1:job-queue/q"}
    return eventbridge("aws.batch", "Batch Job State Change", "2026-12-01T08:59:30Z", detail)


def test_a_scheduled_runs_start_step_queued_on_batch_starts_a_sleeping_service(world: World) -> None:
    """The count and the database's head start, nothing more: the step's first request or the next tick routes."""
    assert world.run(queued()) == "starting"
    assert world.desired() == 1 and world.database == "resuming"
    assert world.invocations == [] and "probe" not in world.calls


def test_runs_scheduled_for_the_same_minute_start_one_task_and_no_watchers(world: World) -> None:
    """Each watcher polls the account's shared ECS and API Gateway rates: a burst of queued runs starts none."""
    assert [world.run(queued(f"SFN-Flow{n}--start--")) for n in range(5)] == ["starting"] + ["awake"] * 4
    assert world.calls.count("update_service") == 1 and world.invocations == []


def test_a_run_queued_while_the_service_serves_or_wakes_costs_one_call(world: World) -> None:
    world.run(HTTP_REQUEST)
    world.calls.clear()
    assert world.run(queued()) == "awake"  # waking
    world.task_ready()
    world.run({"action": "watch"})
    world.calls.clear()
    assert world.run(queued()) == "awake"  # serving
    assert world.calls == ["describe_services"]


def test_the_next_tick_routes_to_the_task_a_queued_run_started(world: World) -> None:
    world.run(queued())
    world.task_ready()
    assert world.run({"action": "tick"}) == "switched"
    assert world.on_service()


def test_a_misconfigured_waker_still_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waker, "_aws", lambda for_request: None)
    for name in ("CLUSTER", "SERVICE", "API_ID"):
        monkeypatch.delenv(name, raising=False)
    context = type("Context", (), {"invoked_function_arn": FUNCTION_ARN})()
    assert waker.handler(HTTP_REQUEST, context)["statusCode"] == 503
    with pytest.raises(KeyError):
        waker.handler({"action": "tick"}, context)


def test_the_watcher_routes_to_the_task_only_once_it_is_registered_and_healthy(world: World) -> None:
    world.run(HTTP_REQUEST)
    original_sleep = world.sleep
    steps = iter(
        [
            lambda: world.add_task("0", "PENDING", "UNKNOWN"),  # created, pulling: not in Cloud Map yet
            lambda: world.start(world.tasks[0]),  # running and registered, first health check pending
            lambda: setattr(world.tasks[0], "health", "HEALTHY"),
        ]
    )

    def sleep_and_progress(seconds: float) -> None:
        assert not world.on_service(), "routed to a task that was not ready"
        original_sleep(seconds)
        next(steps)()

    world.sleep = sleep_and_progress  # type: ignore[method-assign]
    assert world.run({"action": "watch"}) == "switched"
    assert world.on_service()
    assert world.slept == [1.0, 1.0, 1.0]


def test_the_watcher_resumes_the_paused_database_before_the_task_is_up(world: World) -> None:
    """The Data API call answers at once (DatabaseResumingException) and the database resumes while Fargate
    places the task and pulls its image: the migrator later finds it available."""
    assert waker.resume_database(world.aws, world.config) == "resuming"  # the request itself resumes it
    world.database = "paused"
    world.calls.clear()
    world.run(HTTP_REQUEST)
    world.task_ready()
    assert world.run({"action": "watch"}) == "switched"
    assert world.database == "resuming"
    assert world.calls.index("execute_statement") < world.calls.index("update_route")
    assert world.calls.count("execute_statement") == 1


@pytest.mark.parametrize("answer", ["available", "AccessDeniedException", "HttpEndpointNotEnabledException"])
def test_the_watcher_routes_whatever_the_data_api_answers(world: World, answer: str) -> None:
    """An awake database, a missing permission or a Data API turned off only lose the early resume."""
    world.database = answer
    world.run(HTTP_REQUEST)
    world.task_ready()
    assert world.run({"action": "watch"}) == "switched"
    assert waker.resume_database(world.aws, world.config) == ("awake" if answer == "available" else "not resumed")


def test_an_unreachable_data_api_only_loses_the_head_start(world: World) -> None:
    """A connection error carries no AWS error code; the wake goes on as for any other failed call."""

    class Unreachable:
        def execute_statement(self, **request: Any) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://rds-data.us-east-1.amazonaws.com")

    assert waker.resume_database(dataclasses.replace(world.aws, rds_data=Unreachable()), world.config) == "not resumed"


def test_the_data_api_is_asked_once_and_the_services_apis_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries of a call that only gives the database a head start would delay the watcher's first look; the
    watcher's, the tick's and the events' own calls are retried; a request's are not (its hold looks again)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setattr(waker, "_clients", {})
    background, request = waker._aws(for_request=False), waker._aws(for_request=True)
    assert waker._aws(for_request=False) is background, "built once per execution environment"
    for clients in (background, request):
        config = clients.rds_data.meta.config
        assert config.retries["total_max_attempts"] == 1 and (config.read_timeout, config.connect_timeout) == (5, 2)
        assert clients.probe is waker.signed_get and clients.forward is waker.send
    for name in ("ecs", "apigatewayv2", "cloudwatch", "servicediscovery", "lambda_"):
        patient, bounded = getattr(background, name).meta.config, getattr(request, name).meta.config
        assert patient.retries == {"total_max_attempts": 4, "mode": "standard"}  # botocore counts the first one
        assert (patient.read_timeout, patient.connect_timeout) == (5, 2)
        assert bounded.retries == {"total_max_attempts": 1, "mode": "standard"}


class Throttling(BaseHTTPRequestHandler):
    """An AWS JSON API that throttles every call and asks for a retry 20 s later (`x-amz-retry-after`, which
    botocore's standard mode honours, up to 5 s more per backoff)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: Any = self.server
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.calls += 1
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amz-retry-after", "20000")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_requests_aws_call_ends_within_call_seconds_whatever_aws_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard that keeps API Gateway from timing out rests on it: a throttled call is not retried, whatever
    wait AWS asks for (botocore's standard mode would add up to 6 s), and a call nobody answers ends at its read
    timeout."""
    lambda_credentials(monkeypatch)
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    server.calls = 0
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        client = boto3.client("ecs", endpoint_url=endpoint, config=BotoConfig(**waker.REQUEST_CALLS))
        began = time.monotonic()
        with pytest.raises(ClientError, match="ThrottlingException"):
            client.describe_services(cluster="c", services=["s"])
        assert server.calls == 1 and time.monotonic() - began < waker.CALL_SECONDS
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as silent:  # accepts (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = boto3.client("ecs", endpoint_url=endpoint, config=BotoConfig(**waker.REQUEST_CALLS))
        began = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            client.describe_services(cluster="c", services=["s"])
        assert time.monotonic() - began < waker.CALL_SECONDS


def test_without_the_data_api_the_watcher_leaves_the_database_to_the_migrator(world: World) -> None:
    config = Config(**{**world.config.__dict__, "database_cluster_arn": None, "database_secret_arn": None})
    world.run(HTTP_REQUEST)
    world.task_ready()
    assert waker.dispatch({"action": "watch"}, FUNCTION_ARN, world.aws, config, world.clock, world.sleep) == "switched"
    assert "execute_statement" not in world.calls and world.database == "paused"
    assert waker.resume_database(world.aws, config) == "no data api"


def test_the_watcher_gives_up_after_its_deadline_and_stops_if_the_service_is_stopped(world: World) -> None:
    # A 10 s deadline: the same loop as the default 600 s, in 10 polls instead of 600 (two moto calls each).
    world.config = dataclasses.replace(world.config, watch_seconds=10.0)
    world.run(HTTP_REQUEST)
    assert world.run({"action": "watch"}) == "gave up"
    assert sum(world.slept) == world.config.watch_seconds
    world.set_desired(0)
    assert world.run({"action": "watch"}) == "stopped"
    assert not world.on_service()


def test_a_tick_while_asleep_reads_no_metrics_and_changes_nothing(world: World) -> None:
    assert world.run({"action": "tick"}) == "asleep"
    assert "get_metric_statistics" not in world.calls and "update_route" not in world.calls
    assert world.calls == ["describe_services", "get_route"]


def test_a_tick_puts_the_waker_back_in_front_of_a_service_stopped_from_outside(world: World) -> None:
    world.serving()
    world.set_desired(0)  # the console, or a deploy that set the count
    assert world.run({"action": "tick"}) == "asleep"
    assert not world.on_service()


def test_requests_to_another_api_do_not_keep_this_service_awake(world: World) -> None:
    world.now = max(START, datetime.datetime.now(datetime.UTC)) + datetime.timedelta(minutes=16)
    world.cloudwatch.put_metric_data(
        Namespace="AWS/ApiGateway",
        MetricData=[
            {
                "MetricName": "Count",
                "Dimensions": [{"Name": "ApiId", "Value": "an0ther"}],
                "Value": 50,
                "Timestamp": world.now - datetime.timedelta(minutes=2),
            }
        ],
    )
    since = world.now - datetime.timedelta(minutes=15)
    assert waker.requests_since(world.aws, world.config, since, world.now) == 0
    other = dataclasses.replace(world.config, api_id="an0ther")
    assert waker.requests_since(world.aws, other, since, world.now) == 50  # they were in the window


def test_a_tick_keeps_a_service_that_had_a_request_within_the_idle_time(world: World) -> None:
    world.serving()
    world.now += datetime.timedelta(minutes=30)
    world.requests_at(minutes_ago=14)
    assert world.run({"action": "tick"}) == "serving"
    assert world.desired() == 1 and world.on_service()


def test_a_tick_never_stops_a_task_younger_than_the_idle_time(world: World) -> None:
    world.serving()
    world.now += datetime.timedelta(minutes=14)
    assert world.run({"action": "tick"}) == "serving"


def test_an_idle_service_is_stopped_after_the_route_leaves_it_and_requests_drain(world: World) -> None:
    world.serving()
    world.requests_at(minutes_ago=0)
    world.now += datetime.timedelta(minutes=16)
    world.calls.clear()
    assert world.run({"action": "tick"}) == "stopped"
    order = [call for call in world.calls if call in ("update_route", "sleep 45", "update_service")]
    assert order == ["update_route", "sleep 45", "update_service"]
    assert world.desired() == 0 and not world.on_service()


def test_a_request_during_the_drain_keeps_the_service(world: World) -> None:
    world.serving()
    world.now += datetime.timedelta(minutes=16)

    def a_request_arrives(seconds: float) -> None:
        world.now += datetime.timedelta(seconds=seconds)
        response = world.run(world.request())
        assert response["statusCode"] == 200  # the waker sees the task ready: routes back, and forwards it

    world.sleep = a_request_arrives  # type: ignore[method-assign]
    assert world.run({"action": "tick"}) == "stop abandoned"
    assert world.desired() == 1 and world.on_service()


def test_a_tick_routes_to_a_ready_task_a_lost_watcher_left_behind(world: World) -> None:
    world.run(HTTP_REQUEST)
    world.task_ready()
    assert world.run({"action": "tick"}) == "switched"
    assert world.on_service()


def test_a_route_that_cannot_be_switched_still_lets_an_idle_service_stop(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """With UpdateRoute refused for good (a lost permission, say), requests are still forwarded, which keeps the
    service up while used; once idle, the tick must still stop it rather than fail on the switch every minute."""
    world.run(HTTP_REQUEST)
    world.task_ready()
    world.refuse_route_switches("AccessDeniedException")
    world.requests_at(minutes_ago=1)
    assert world.run({"action": "tick"}) == "starting"
    assert "could not switch the route to a ready task" in caplog.text
    world.now += datetime.timedelta(minutes=20)
    assert world.run({"action": "tick"}) == "stopped"
    assert world.desired() == 0


def test_a_switch_reported_failed_but_made_is_drained_before_the_idle_stop(world: World) -> None:
    """UpdateRoute may time out after API Gateway applied it: the tick reads the route again, and an idle
    service on it is stopped the drained way (the waker in front first), not with the route still on it."""
    world.run(HTTP_REQUEST)
    world.task_ready()
    world.now += datetime.timedelta(minutes=20)

    lost = iter(range(1))

    def applied_then_lost(ApiId: str, RouteId: str, Target: str) -> dict[str, Any]:
        world.route_target = Target
        if next(lost, None) is not None:  # the first answer is lost
            raise EndpointConnectionError(endpoint_url="https://apigateway.us-east-1.amazonaws.com")
        return {"RouteId": RouteId, "RouteKey": "$default", "Target": Target}

    answers = {"get_route": world.aws.apigatewayv2.get_route, "update_route": applied_then_lost}
    world.aws = dataclasses.replace(world.aws, apigatewayv2=ModelChecked("apigatewayv2", answers, world.calls))
    assert world.run({"action": "tick"}) == "stopped"
    assert world.slept == [world.config.drain_seconds] and not world.on_service()
    assert world.desired() == 0


def test_a_wake_nobody_came_back_for_is_stopped_after_the_idle_time(world: World) -> None:
    world.run(HTTP_REQUEST)
    world.add_task("stuck", "PENDING", "UNKNOWN").started_at = None
    assert world.run({"action": "tick"}) == "starting"
    world.now += datetime.timedelta(minutes=20)
    # The service's deployment changed at the wake (moto stamps real time): the fallback "up since".
    world.now = max(world.now, datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=16))
    assert world.run({"action": "tick"}) == "stopped"
    assert world.desired() == 0


def eventbridge(source: str, detail_type: str, time: str, detail: dict[str, Any]) -> dict[str, Any]:
    """An AWS service's event as EventBridge delivers it (the fields the waker reads)."""
    return {"source": source, "detail-type": detail_type, "time": time, "detail": detail}


def stopping(task_arn: str) -> dict[str, Any]:
    detail = {"taskArn": task_arn, "desiredStatus": "STOPPED", "lastStatus": "RUNNING"}
    return eventbridge("aws.ecs", "ECS Task State Change", "2026-12-01T09:30:00Z", detail)


def test_a_stopping_task_puts_the_waker_in_front_and_watches_its_replacement(world: World) -> None:
    world.serving()
    world.invocations.clear()
    interrupted = world.tasks[0]
    interrupted.desired_status = "STOPPED"  # Spot or a crash: the service still wants one task
    assert world.run(stopping(interrupted.arn)) == "replacing"
    assert not world.on_service()
    stopped_at = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.UTC).timestamp()  # the event's time
    assert world.invocations == [
        {"function": FUNCTION_ARN, "type": "Event", "payload": {"action": "watch", "wokenAt": stopped_at}}
    ]


def test_a_deploy_keeps_the_route_when_the_new_task_is_ready(world: World) -> None:
    world.run(HTTP_REQUEST)
    world.task_ready("old")
    world.run({"action": "watch"})
    world.task_ready("new")
    assert world.run(stopping(world.tasks[0].arn)) == "another task serves"
    assert world.on_service()


def test_the_idle_stop_event_leaves_the_waker_in_front_without_a_watcher(world: World) -> None:
    world.serving()
    world.invocations.clear()
    world.set_desired(0)
    world.tasks[0].desired_status = "STOPPED"
    assert world.run(stopping(world.tasks[0].arn)) == "waker in front"
    assert not world.on_service() and world.invocations == []


def test_the_ui_command_wakes_the_service_the_same_way(world: World) -> None:
    assert world.run({"action": "wake"}) == "starting"
    assert world.desired() == 1
    world.task_ready()
    assert world.run({"action": "wake"}) == "ready"
    assert world.on_service()
    # Once the route is on the service, the command only looks: no probe, no switch.
    world.calls.clear()
    assert world.run({"action": "wake"}) == "ready"
    assert "probe" not in world.calls and "update_route" not in world.calls and "get_route" in world.calls


def test_an_unknown_event_is_an_error_not_a_silent_success(world: World) -> None:
    with pytest.raises(ValueError, match="unknown event"):
        world.run({"something": "else"})


def test_config_comes_from_the_functions_environment() -> None:
    env = {
        "CLUSTER": "c",
        "SERVICE": "s",
        "API_ID": "a",
        "ROUTE_ID": "r",
        "WAKER_INTEGRATION_ID": "w",
        "SERVICE_INTEGRATION_ID": "v",
        "DISCOVERY_SERVICE_ID": "srv-1",
        "IDLE_MINUTES": "30",
        "PROBE_URL": "https://p.execute-api.us-east-1.amazonaws.com/ready",
    }
    config = Config.from_env(env)
    assert config.idle_minutes == 30 and config.drain_seconds == 45 and config.watch_seconds == 600
    assert config.probe_url == env["PROBE_URL"]
    assert config.database_cluster_arn is None, "no Data API unless the stack turned it on"
    with_data_api = Config.from_env({**env, "DB_CLUSTER_ARN": CLUSTER_ARN, "DB_SECRET_ARN": SECRET_ARN, "DB_NAME": "m"})
    assert (with_data_api.database_cluster_arn, with_data_api.database_secret_arn) == (CLUSTER_ARN, SECRET_ARN)
    assert config.target(True) == "integrations/v" and config.target(False) == "integrations/w"
    assert config.drain_seconds > 30, "longer than API Gateway's integration timeout"


def test_on_lambda_the_clients_are_built_at_init_and_elsewhere_only_when_used() -> None:
    """Importing the module in Lambda builds both sets of clients (its init phase); imported by the Pulumi
    program or a test, it builds nothing."""
    import subprocess
    import sys

    check = (
        "from metaflow_infra.lambdas import waker; import sys; print(sorted(waker._clients), 'boto3' in sys.modules)"
    )
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": REGION, "PYTHONPATH": str(Path(__file__).parents[1])}
    for extra, expected in (
        ({"AWS_LAMBDA_FUNCTION_NAME": "metaflow-dev-waker"}, "[False, True] True"),
        ({}, "[] False"),
    ):
        out = subprocess.run([sys.executable, "-c", check], env={**env, **extra}, capture_output=True, text=True)
        assert out.stdout.strip() == expected, out.stderr


def test_the_waker_ships_as_one_file_needing_only_what_the_lambda_runtime_has() -> None:
    """It is deployed alone (scale_to_zero.py zips this one file): nothing from this package, only the standard
    library and the boto3 the Python runtime includes."""
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse(Path(waker.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - sys.stdlib_module_names == {"boto3", "botocore"}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree)), "no relative imports"


def test_the_watcher_logs_how_long_each_stage_of_the_wake_took(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """ECS's own timestamps of the task, so that real wakes can be held against the documented stages."""
    world.run(HTTP_REQUEST)
    second = datetime.timedelta(seconds=1)
    task = world.add_task("0")
    task.created_at, task.pull_started_at, task.pull_stopped_at = (
        START + 5 * second,
        START + 7 * second,
        START + 47 * second,
    )
    task.started_at = START + 57 * second
    # The watcher starts 3 s after the request; it switches at 60 s.
    moments = iter([(START + 3 * second).timestamp(), (START + 60 * second).timestamp()])
    event = {"action": "watch", "wokenAt": START.timestamp()}
    with caplog.at_level("INFO", logger=waker.__name__):
        outcome = waker.dispatch(event, FUNCTION_ARN, world.aws, world.config, lambda: next(moments), world.sleep)
    assert outcome == "switched"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wake timings ")]
    assert json.loads(line.removeprefix("wake timings ")) == {
        "scheduled": 5.0,
        "pull": 40.0,
        "placedAndPulled": 42.0,
        "toRunning": 10.0,
        "toReady": 3.0,
        "wake": 60.0,
        "outcome": "switched",
    }


def test_a_watcher_that_gives_up_logs_how_far_the_furthest_task_got(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The slowest wakes belong in the distribution too: here two tasks run whose health never passes; the
    line times the one ECS has the most timestamps for, and says what the probe last answered."""
    world.config = dataclasses.replace(world.config, watch_seconds=3.0)
    world.run(HTTP_REQUEST)
    second = datetime.timedelta(seconds=1)
    behind = world.add_task("0", "RUNNING", "UNHEALTHY")
    behind.created_at = START + 9 * second
    ahead = world.add_task("1", "RUNNING", "UNKNOWN")
    ahead.created_at, ahead.pull_started_at, ahead.pull_stopped_at = START + 4 * second, START + 5 * second, START
    ahead.started_at = START + 1 * second
    with caplog.at_level("INFO", logger=waker.__name__):
        assert world.run({"action": "watch", "wokenAt": WOKEN_AT}) == "gave up"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wake timings ")]
    timings = json.loads(line.removeprefix("wake timings "))
    assert (timings["outcome"], timings["probe"]) == ("gave up", 200)  # the first probe reached a running task
    assert timings["scheduled"] == 6.0 and timings["pull"] == -5.0 and timings["toReady"] is not None
    assert timings["wake"] == 3.0 + 2.0  # the watch's 3 s, from the request 2 s before it


def test_a_task_stopped_as_the_route_reached_it_puts_the_waker_back_and_the_watch_goes_on(world: World) -> None:
    """Its stop event came while it was probed and found the waker still in front: nothing else would."""
    world.run(HTTP_REQUEST)
    dying = world.task_ready("0")
    probe = world.probe

    def probe_then_stop(url: str) -> int | None:
        answer = probe(url)
        if world.calls.count("probe") == 2:  # the probe that decides, after the watcher's first
            dying.desired_status = "STOPPED"
        return answer

    original_sleep = world.sleep

    def sleep_then_replace(seconds: float) -> None:
        original_sleep(seconds)
        if len(world.tasks) == 1:
            world.task_ready("1")

    world.aws = dataclasses.replace(world.aws, probe=probe_then_stop)
    world.sleep = sleep_then_replace  # type: ignore[method-assign]
    assert world.run({"action": "watch"}) == "switched"
    assert world.calls.count("update_route") == 3  # to the dying task, back to the waker, to its replacement
    assert world.on_service()


def test_a_tick_puts_the_waker_in_front_of_a_route_with_no_ready_task_behind_it(world: World) -> None:
    world.serving()
    world.tasks[0].health = "UNHEALTHY"
    assert world.run({"action": "tick"}) == "waker in front"
    assert not world.on_service()


def test_only_the_stop_event_that_takes_the_route_starts_a_watcher(world: World) -> None:
    """ECS reports each step of a stop (deactivating, stopping, stopped): one replacement, one watcher."""
    world.serving()
    world.invocations.clear()
    world.tasks[0].desired_status = "STOPPED"
    assert [world.run(stopping(world.tasks[0].arn)) for _ in range(3)] == ["replacing"] + ["waker in front"] * 2
    assert len(world.invocations) == 1


def test_a_probe_that_cannot_be_sent_withholds_the_route_and_ends_nothing(world: World) -> None:
    def broken(url: str) -> int | None:
        raise RuntimeError("no credentials")

    world.run(HTTP_REQUEST)
    world.task_ready()
    world.aws = dataclasses.replace(world.aws, probe=broken)
    assert world.run({"action": "tick"}) == "starting"
    assert not world.on_service()


def test_stages_ecs_gave_no_timestamp_for_are_logged_as_unknown() -> None:
    timings = waker.wake_timings({"startedAt": START}, START.timestamp() - 30, START.timestamp() + 10)
    assert timings == {
        "scheduled": None,
        "pull": None,
        "placedAndPulled": None,
        "toRunning": None,
        "toReady": 10.0,
        "wake": 40.0,
    }
    assert waker.wake_timings(None, START.timestamp(), START.timestamp() + 5)["wake"] == 5.0


def test_the_watcher_keeps_the_waker_in_front_until_the_probe_through_the_api_answers(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """ECS and Cloud Map see a ready task, but API Gateway's way to it (a VPC link AWS rebuilds after 60 days
    without traffic) fails: clients keep getting the waker's 503, which they retry, never those failures."""
    world.run(HTTP_REQUEST)
    world.task_ready()
    world.link_failures = [None, 500, 504, None]  # the watcher's first probe, then three polls
    original_sleep = world.sleep

    def sleep_checking(seconds: float) -> None:
        assert not world.on_service(), "routed before a probe through the API answered 200"
        original_sleep(seconds)

    world.sleep = sleep_checking  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger=waker.__name__):
        assert world.run({"action": "watch"}) == "switched"
    assert world.on_service() and world.slept == [1.0, 1.0, 1.0]
    assert world.calls.count("probe") == 5
    said = [r.getMessage() for r in caplog.records if "the probe through the API answered" in r.getMessage()]
    assert [message.split("answered ")[1].split(";")[0] for message in said] == ["500", "504", "None"]
    assert world.calls.index("update_route") > len(world.calls) - 1 - world.calls[::-1].index("probe")


@pytest.mark.parametrize("refusal", [401, 403, 404])
def test_a_probe_refused_by_its_own_route_or_permission_falls_back_to_ecs_health(
    world: World, refusal: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Those answers say the probe is broken (a permission not yet applied after a deploy, a wrong route), not
    the way to the task: routing as before the probe beats keeping a serving task from every client."""
    world.run(HTTP_REQUEST)
    world.task_ready()
    world.link_failures = [refusal, refusal]  # the watcher's first probe, then the one that decides
    with caplog.at_level("ERROR", logger=waker.__name__):
        assert world.run({"action": "watch"}) == "switched"
    assert world.on_service()
    assert [r.levelname for r in caplog.records if "readiness probe was refused" in r.getMessage()] == ["ERROR"]


def test_the_watcher_sends_traffic_through_the_link_before_the_task_has_started(world: World) -> None:
    """An inactive VPC link is rebuilt on traffic: the watcher's first probe starts that beside the task's start
    and the database's resume (its answer, 503 here with no task, is not waited for)."""
    world.run(HTTP_REQUEST)
    world.calls.clear()
    original_sleep = world.sleep

    def sleep_then_start(seconds: float) -> None:
        original_sleep(seconds)
        if not world.tasks:
            world.task_ready()

    world.sleep = sleep_then_start  # type: ignore[method-assign]
    assert world.run({"action": "watch"}) == "switched"
    assert world.calls[:2] == ["execute_statement", "probe"]
    assert world.calls.index("probe") < world.calls.index("list_instances")


def test_neither_a_request_nor_a_tick_routes_to_a_task_the_probe_cannot_reach(world: World) -> None:
    world.set_desired(1)
    world.task_ready()
    world.link_failures = [502, None]
    assert world.run(HTTP_REQUEST)["statusCode"] == 503
    assert world.run({"action": "tick"}) == "starting"
    assert not world.on_service() and "update_route" not in world.calls
    assert world.run({"action": "tick"}) == "switched"
    assert world.on_service()


class Probed(BaseHTTPRequestHandler):
    """API Gateway as the waker's requests meet it: records each, answers `server.status` with `server.headers`
    and `server.body`, after `server.delay` seconds; with `server.hang_up`, no answer at all; with
    `server.trickle`, one body byte per that many seconds; with `server.chunked`, no Content-Length."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Any = self.server
        length = int(self.headers.get("Content-Length") or 0)
        server.seen.append((self.path, dict(self.headers.items())))
        server.bodies.append(self.rfile.read(length))
        time.sleep(server.delay)
        self.close_connection = True
        if server.hang_up:
            return
        with contextlib.suppress(ConnectionError):  # a request that timed out or stopped reading closed its end
            self.send_response(server.status)
            for name, value in server.headers:
                self.send_header(name, value)
            if server.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if server.chunked:
                for start in range(0, len(server.body), 1 << 20):
                    chunk = server.body[start : start + (1 << 20)]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif server.trickle:
                for byte in server.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(server.trickle)
            else:
                self.wfile.write(server.body)

    do_POST = do_PATCH = do_HEAD = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def probed() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Probed)
    # Closing the server waits for its handlers: none outlives its test (a late one, answering a probe that
    # timed out, would run inside whichever test comes next in this process).
    server.daemon_threads = False
    server.seen, server.bodies, server.status, server.delay = [], [], 200, 0.0
    server.headers, server.body, server.hang_up, server.trickle, server.chunked = [], b"", False, 0.0, False
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_probe_is_signed_for_api_gateway_with_the_functions_own_credentials(
    probed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Lambda gives them: keys and a session token in the environment. botocore's signer, given the same
    credentials, must compute the signature the probe sent, for service execute-api in the function's region."""
    credentials = lambda_credentials(monkeypatch, "eu-west-1")
    url = f"http://127.0.0.1:{probed.server_address[1]}{waker.READY_PROBE_PATH}"
    assert waker.signed_get(url) == 200
    [(path, headers)] = probed.seen
    assert path == "/ready"
    scheme, _, fields = headers["Authorization"].partition(" ")
    parts = dict(field.strip().split("=", 1) for field in fields.split(","))
    assert scheme == "AWS4-HMAC-SHA256"
    assert parts["Credential"] == (
        f"{credentials.access_key}/{headers['X-Amz-Date'][:8]}/eu-west-1/execute-api/aws4_request"
    )
    signed = parts["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "x-amz-security-token"} <= set(signed)
    assert headers["X-Amz-Security-Token"] == credentials.token
    request = AWSRequest(method="GET", url=url, headers={k: v for k, v in headers.items() if k.lower() in signed})
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(credentials, "execute-api", "eu-west-1")
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    assert parts["Signature"] == expected


@pytest.mark.parametrize("status", [403, 500, 503, 504])
def test_the_probe_answers_the_status_it_got(probed: Any, status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lambda_credentials(monkeypatch)
    probed.status = status
    assert waker.signed_get(f"http://127.0.0.1:{probed.server_address[1]}/ready") == status


def test_a_probe_nobody_answers_in_time_or_at_all_is_none(probed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lambda_credentials(monkeypatch)
    monkeypatch.setattr(waker, "PROBE_TIMEOUT_SECONDS", 0.1)
    probed.delay = 0.5
    assert waker.signed_get(f"http://127.0.0.1:{probed.server_address[1]}/ready") is None
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert waker.signed_get(f"http://127.0.0.1:{port}/ready") is None


def test_a_request_finding_the_task_ready_is_routed_and_forwarded_to_it_while_the_route_deploys(
    world: World,
) -> None:
    """Its client is served from the moment the task is, not once API Gateway has deployed the new route: the
    service's own answer, its status, headers (METADATA_SERVICE_VERSION, which Metaflow's client caches) and
    body, through the probe API, with the client's own key (the forwarding route checks it) and no credentials
    of the waker's."""
    world.waking_with_a_ready_task()
    request = world.request(
        "POST",
        "/flows/HelloFlow/run",
        rawQueryString="a=1&b=2",
        headers={
            "content-type": "application/json",
            "x-api-key": "k",
            "host": "api.example",
            "content-length": "11",
            "x-amzn-trace-id": "Root=1-2",
            "x-forwarded-for": "1.2.3.4",
            "connection": "keep-alive",
        },
        cookies=["a=1", "b=2"],
        body='{"tags": []}',
    )
    response = world.run(request)
    assert world.on_service()
    [(sent, deadline)] = world.forwarded
    assert sent == waker.Outgoing(
        "POST",
        f"{world.config.forward_url}/flows/HelloFlow/run?a=1&b=2",
        {"content-type": "application/json", "x-api-key": "k", "cookie": "a=1; b=2"},
        b'{"tags": []}',
    )
    assert deadline == world.clock() + waker.FORWARD_BUDGET_SECONDS  # from the request's arrival
    assert response == {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "METADATA_SERVICE_VERSION": "2.5.1"},
        "body": base64.b64encode(b'{"id": 1}').decode(),
        "isBase64Encoded": True,
    }
    assert world.calls.index("probe") < world.calls.index("update_route") < world.calls.index("forward")


def test_requests_arriving_while_the_route_deploys_switch_it_once(world: World) -> None:
    """UpdateRoute is a control-plane call with low rate limits: a request that finds the route already
    switched (the old deployment still sends it to the waker) only reads it, and is forwarded all the same."""
    world.waking_with_a_ready_task()
    for _ in range(3):
        assert world.run(world.request())["statusCode"] == 200
    assert world.calls.count("update_route") == 1 and world.calls.count("get_route") == 3
    assert len(world.forwarded) == 3


def test_an_encoded_path_is_forwarded_encoded(world: World) -> None:
    """HTTP APIs pass `rawPath` decoded: a space or a non-ASCII character is encoded again, a "/" stays one."""
    world.waking_with_a_ready_task()
    world.run(world.request(path="/flows/Hello Flow/runs/ü"))
    assert world.forwarded[0][0].url == f"{world.config.forward_url}/flows/Hello%20Flow/runs/%C3%BC"


HOP_BY_HOP_HEADERS = [
    "connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
]
"""RFC 2616 section 13.5.1's hop-by-hop headers that a request or an answer may carry."""


@pytest.mark.parametrize("header", [*HOP_BY_HOP_HEADERS, "host", "content-length", "expect"])
def test_headers_of_one_connection_go_no_further_either_way(world: World, header: str) -> None:
    """Hop-by-hop headers, and those the forward sets itself, never travel with the request; the answer's
    hop-by-hop headers and length never reach API Gateway (it sets its own)."""
    world.waking_with_a_ready_task()
    world.forward_failures.append(waker.Reply(200, ((header.title(), "x"), ("X-Kept", "1")), b"{}"))
    answer = world.run(world.request(headers={header.title(): "x", "x-kept": "1"}))
    [(sent, _)] = world.forwarded
    assert sent.headers == {"x-kept": "1"}
    returned = {name.lower() for name in answer["headers"]}
    assert returned == ({"x-kept"} if header in [*HOP_BY_HOP_HEADERS, "content-length"] else {"x-kept", header})


def test_a_request_without_a_raw_path_is_forwarded_to_its_context_path(world: World) -> None:
    world.waking_with_a_ready_task()
    request = world.request(path="/flows/HelloFlow/runs")
    del request["rawPath"]
    world.run(request)
    assert world.forwarded[0][0].url == f"{world.config.forward_url}/flows/HelloFlow/runs"


def test_each_forward_logs_how_long_after_the_request_and_the_task_start_it_came(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """What real wakes are held to: with the task started 30 s before the request arrived (2 s before the fake
    clock), forwarded now."""
    world.run(HTTP_REQUEST)
    world.add_task("1").started_at = world.now - datetime.timedelta(seconds=30)
    world.run(world.request("POST", "/flows/HelloFlow/run"))
    assert (
        "forwarded POST /flows/HelloFlow/run: 200, 0.0 s after the request arrived, 30.0 s after the task started"
        in caplog.text
    )


def test_a_base64_request_body_is_forwarded_as_the_bytes_it_encodes(world: World) -> None:
    world.waking_with_a_ready_task()
    world.run(world.request("POST", body=base64.b64encode(b"\x00\xff").decode(), isBase64Encoded=True))
    assert world.forwarded[0][0].body == b"\x00\xff"


def test_a_request_that_cannot_be_read_is_not_sent_and_gets_a_503(world: World) -> None:
    world.waking_with_a_ready_task()
    assert world.run(world.request("POST", body="not base64!", isBase64Encoded=True))["statusCode"] == 503
    # A forged event's path that would change the host or the port the request goes to
    for path in (".evil.example/flows", ":8443/flows"):
        assert world.run(world.request(path=path))["statusCode"] == 503
    assert "forward" not in world.calls


@pytest.mark.parametrize("status", [401, 403, 404, 409, 500, 503])
def test_the_services_and_the_key_checks_answers_are_passed_on_unchanged(world: World, status: int) -> None:
    """A 404 or a 409 means something to Metaflow's client (a missing run, a POST already carried out); a 401
    or 403 is the forwarding route's authorizer refusing the client's key, as the main route's would."""
    world.waking_with_a_ready_task()
    reply = waker.Reply(status, (("Content-Type", "text/plain"), ("X-Service", "1")), b"no such run")
    world.forward_failures.append(reply)
    assert world.run(world.request()) == waker.passed_on(reply)


def test_api_gateways_own_not_found_is_not_taken_for_the_services(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe API answers it itself while its forwarding route is not yet deployed: nothing reached the
    service, and to Metaflow a 404 would mean "no such flow"."""
    world.waking_with_a_ready_task()
    world.forward_failures.append(waker.Reply(404, (("Content-Type", "application/json"),), b'{"message":"Not Found"}'))
    assert world.run(world.request("POST"))["statusCode"] == 503
    assert "the probe API has no route for the forwarded POST /flows/HelloFlow" in caplog.text


def test_nothing_is_forwarded_before_the_task_is_ready_or_when_the_probe_fails(world: World) -> None:
    world.run(HTTP_REQUEST)
    world.add_task("1", last_status="RUNNING", health="UNKNOWN")
    assert world.run(world.request())["statusCode"] == 503
    world.tasks[0].health = "HEALTHY"
    world.link_failures.append(504)
    assert world.run(world.request())["statusCode"] == 503
    assert "forward" not in world.calls and not world.on_service()


def test_a_probe_refused_by_its_own_route_routes_on_health_but_forwards_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal says the probe API is broken: forwarding through it would likely fail too."""
    world.waking_with_a_ready_task()
    world.link_failures.append(403)
    assert world.run(world.request())["statusCode"] == 503
    assert world.on_service() and "forward" not in world.calls
    assert "the readiness probe was refused (403)" in caplog.text


@pytest.mark.parametrize(
    ("method", "oldest"),
    [
        # the first AWS call of its wake must be able to end in time
        ("GET", waker.ANSWER_BY_SECONDS - waker.CALL_SECONDS),
        # and a request that may change something needs time left for its forward: timing out, it would be a
        # 504, which its client never retries
        ("POST", waker.FORWARD_BUDGET_SECONDS - waker.UNSAFE_FORWARD_MIN_SECONDS),
    ],
)
def test_a_request_too_late_to_wake_or_forward_within_api_gateways_30_s_gets_a_503(
    world: World, method: str, oldest: float
) -> None:
    world.waking_with_a_ready_task()
    late = world.request(method)
    late["requestContext"]["timeEpoch"] -= int(oldest * 1000) + 1
    assert world.run(late)["statusCode"] == 503
    assert "forward" not in world.calls
    just_in_time = world.request(method)
    just_in_time["requestContext"]["timeEpoch"] -= int(oldest * 1000)
    assert world.run(just_in_time)["statusCode"] == 200
    assert world.forwarded[-1][1] == world.clock() - oldest + waker.FORWARD_BUDGET_SECONDS


@pytest.mark.parametrize(
    ("method", "failure", "status"),
    [
        ("POST", waker.NotDelivered("connection refused"), 503),  # never reached API Gateway: safe to retry
        ("POST", waker.NoAnswer(timed_out=True), 504),  # may have been carried out: not retried
        ("POST", waker.NoAnswer(timed_out=False), 502),
        ("POST", RuntimeError("anything else, once the request may have left"), 502),
        ("POST", waker.Reply(500, (), b'{"message":"Internal Server Error"}'), 500),  # the service may have had it
        ("GET", waker.NoAnswer(timed_out=True), 503),  # done or not, doing it again changes nothing
        ("GET", waker.NoAnswer(timed_out=False), 503),
        ("OPTIONS", waker.NoAnswer(timed_out=True), 503),  # changes nothing either
        ("PATCH", waker.NoAnswer(timed_out=True), 504),
        ("HEAD", RuntimeError("anything else"), 502),
        ("GET", waker.Reply(500, (), b'{"message":"Internal Server Error"}'), 503),  # API Gateway's own
        ("GET", waker.Reply(500, (), b'{"error":"the service\'s own"}'), 500),
    ],
)
def test_a_forward_that_fails_answers_what_lets_the_client_retry_only_what_repeating_cannot_harm(
    world: World, method: str, failure: Exception | waker.Reply, status: int
) -> None:
    world.waking_with_a_ready_task()
    world.forward_failures.append(failure)
    response = world.run(world.request(method))
    assert response["statusCode"] == status
    assert ("isBase64Encoded" in response) is (isinstance(failure, waker.Reply) and failure.status == status)
    if not isinstance(failure, waker.Reply):  # the waker's own answer: JSON saying what happened
        assert response["headers"]["Content-Type"] == "application/json"
        assert json.loads(response["body"])["message"].startswith("The Metaflow metadata service")
    assert world.on_service()


@pytest.mark.parametrize(("method", "status"), [("GET", 503), ("HEAD", 503), ("POST", 502), ("PATCH", 502)])
def test_an_answer_too_large_for_lambda_is_retried_only_where_repeating_it_changes_nothing(
    world: World, method: str, status: int
) -> None:
    world.waking_with_a_ready_task()
    world.forward_failures.append(waker.TooLarge("4000001"))
    assert world.run(world.request(method))["statusCode"] == status
    assert world.run(world.request(method))["statusCode"] == 200


def test_the_largest_answer_forwarded_fits_lambdas_6_mb_response() -> None:
    reply = waker.Reply(200, (("Content-Type", "application/json"),), b"x" * waker.FORWARD_LIMIT_BYTES)
    assert len(json.dumps(waker.passed_on(reply)).encode()) < 6 * 1024 * 1024


def test_a_throttled_route_switch_still_forwards_the_request(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Requests arriving together may all switch the route; the one whose switch fails is served all the same."""
    world.waking_with_a_ready_task()
    world.refuse_route_switches("TooManyRequestsException")
    assert world.run(world.request())["statusCode"] == 200
    assert "could not switch the route" in caplog.text


def test_answers_headers_are_passed_on_as_api_gateway_takes_them() -> None:
    """Payload 2.0: repeated headers joined by commas, cookies apart, hop-by-hop headers and the length dropped
    (API Gateway sets its own)."""
    reply = waker.Reply(
        201,
        (
            ("Vary", "Accept"),
            ("Vary", "Origin"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("Content-Length", "2"),
        ),
        b"{}",
    )
    assert waker.passed_on(reply) == {
        "statusCode": 201,
        "headers": {"Vary": "Accept,Origin"},
        "body": base64.b64encode(b"{}").decode(),
        "isBase64Encoded": True,
        "cookies": ["a=1", "b=2"],
    }


def test_the_ui_command_never_gets_a_forwarded_answer(world: World) -> None:
    world.waking_with_a_ready_task()
    assert world.run({"action": "wake"}) == "ready"
    assert "forward" not in world.calls


def lambda_credentials(monkeypatch: pytest.MonkeyPatch, region: str = "us-east-1") -> Credentials:
    """As Lambda gives them to the function: keys and a session token in the environment."""
    credentials = Credentials("AKIDPROBE", "probe-secret", "probe-session-token")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials.token)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    return credentials


def in_seconds(seconds: float) -> float:
    """A deadline `seconds` from now (what `send` takes)."""
    return time.time() + seconds


def test_a_forwarded_request_arrives_whole_and_unsigned_and_its_answer_comes_back_whole(
    probed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Method, path, query, headers and body as sent, and none of the function's credentials (the forwarding
    route takes the client's key); the answer's status, headers and body as the server sent them."""
    lambda_credentials(monkeypatch)
    probed.status, probed.headers, probed.body = 201, [("METADATA_SERVICE_VERSION", "2.5.1")], b'{"run_number": 7}'
    url = f"http://127.0.0.1:{probed.server_address[1]}/flows/HelloFlow/run?a=1&b=x%20y"
    body = b'{"user_name": "me", "tags": []}'
    sent = waker.Outgoing("POST", url, {"content-type": "application/json", "x-api-key": "k"}, body)
    reply = waker.send(sent, in_seconds(5))
    assert (reply.status, reply.body) == (201, b'{"run_number": 7}')
    assert ("METADATA_SERVICE_VERSION", "2.5.1") in reply.headers
    [(path, headers)], [received] = probed.seen, probed.bodies
    assert (path, received) == ("/flows/HelloFlow/run?a=1&b=x%20y", body)
    assert (headers["content-type"], headers["x-api-key"]) == ("application/json", "k")
    assert not {name.lower() for name in headers} & {"authorization", "x-amz-date", "x-amz-security-token"}


def test_a_head_request_is_answered_without_a_body(probed: Any) -> None:
    probed.body = b"ignored"
    reply = waker.send(waker.Outgoing("HEAD", f"http://127.0.0.1:{probed.server_address[1]}/ping", {}), in_seconds(5))
    assert (reply.status, reply.body) == (200, b"")


def test_a_forward_that_never_connects_is_not_delivered() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(waker.NotDelivered):
        waker.send(waker.Outgoing("POST", f"http://127.0.0.1:{port}/flows/F", {}, b"{}"), in_seconds(1))
    with pytest.raises(waker.NotDelivered):  # its deadline passed before it could be sent
        waker.send(waker.Outgoing("POST", f"http://127.0.0.1:{port}/flows/F", {}, b"{}"), in_seconds(-1))


def test_a_forward_sent_but_unanswered_says_whether_it_timed_out(probed: Any) -> None:
    url = f"http://127.0.0.1:{probed.server_address[1]}/flows/F"
    probed.delay = 0.5
    with pytest.raises(waker.NoAnswer) as late:
        waker.send(waker.Outgoing("POST", url, {}, b"{}"), in_seconds(0.1))
    assert late.value.timed_out
    probed.delay, probed.hang_up = 0.0, True
    with pytest.raises(waker.NoAnswer) as lost:
        waker.send(waker.Outgoing("POST", url, {}, b"{}"), in_seconds(1))
    assert not lost.value.timed_out
    assert probed.bodies == [b"{}", b"{}"], "both were delivered"


def test_a_server_trickling_its_answer_cannot_hold_the_waker_past_its_deadline(probed: Any) -> None:
    """Each read gets only what is left of the deadline: a byte every 0.2 s, each within any per-read timeout,
    still ends at the deadline (API Gateway would otherwise cut the waker off, its answer unknown)."""
    probed.body, probed.trickle = b"x" * 50, 0.2
    began = time.monotonic()
    with pytest.raises(waker.NoAnswer) as late:
        waker.send(waker.Outgoing("GET", f"http://127.0.0.1:{probed.server_address[1]}/flows", {}), in_seconds(1))
    assert late.value.timed_out
    assert time.monotonic() - began < 1.5


class Misbehaving(BaseHTTPRequestHandler):
    """A server whose answer `server.how` spoils: "headers" sends a header line every 0.2 s for 5 s; "cut"
    announces 100 bytes, sends 10 and hangs up."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Any = self.server
        self.close_connection = True
        with contextlib.suppress(ConnectionError):
            self.send_response(200)
            if server.how == "headers":
                for n in range(25):
                    self.send_header(f"X-Slow-{n}", "1")
                    self.flush_headers()
                    time.sleep(0.2)
                self.end_headers()
            else:
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"x" * 10)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def misbehaving() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.daemon_threads, server.how = False, "cut"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_headers_trickled_in_cannot_hold_the_waker_past_its_deadline(misbehaving: Any) -> None:
    """Each header line comes within any per-read timeout: only shutting the connection at the deadline ends
    the wait in time (API Gateway would otherwise cut the waker off, its answer unknown)."""
    misbehaving.how = "headers"
    began = time.monotonic()
    with pytest.raises(waker.NoAnswer) as late:
        waker.send(waker.Outgoing("GET", f"http://127.0.0.1:{misbehaving.server_address[1]}/flows", {}), in_seconds(1))
    assert late.value.timed_out
    assert time.monotonic() - began < 1.5


def test_an_answer_cut_short_of_its_length_is_no_answer(misbehaving: Any) -> None:
    """Passed on, a truncated body would reach Metaflow's client as a whole (broken) answer."""
    with pytest.raises(waker.NoAnswer) as cut:
        waker.send(waker.Outgoing("GET", f"http://127.0.0.1:{misbehaving.server_address[1]}/flows", {}), in_seconds(5))
    assert not cut.value.timed_out


def test_an_answer_too_large_to_pass_on_is_not_read_past_the_limit(probed: Any) -> None:
    """Announced: refused before its body is read. Not announced (chunked): read up to one byte past the limit
    at most, so the function's 128 MB hold whatever the service answers."""
    url = f"http://127.0.0.1:{probed.server_address[1]}/flows/F/runs"
    probed.body = b"x" * (waker.FORWARD_LIMIT_BYTES + 1)
    with pytest.raises(waker.TooLarge, match=str(waker.FORWARD_LIMIT_BYTES + 1)):
        waker.send(waker.Outgoing("GET", url, {}), in_seconds(5))
    probed.chunked, probed.body = True, b"x" * 20_000_000
    reads: list[int] = []
    original = http.client.HTTPResponse.read1

    def counted(response: http.client.HTTPResponse, n: int = -1) -> bytes:
        chunk = original(response, n)
        reads.append(len(chunk))
        return chunk

    with mock.patch.object(http.client.HTTPResponse, "read1", counted), pytest.raises(waker.TooLarge):
        waker.send(waker.Outgoing("GET", url, {}), in_seconds(5))
    assert sum(reads) == waker.FORWARD_LIMIT_BYTES + 1
    for chunked in (True, False):  # the largest answer passed on, announced or not
        probed.chunked, probed.body = chunked, b"x" * waker.FORWARD_LIMIT_BYTES
        assert len(waker.send(waker.Outgoing("GET", url, {}), in_seconds(5)).body) == waker.FORWARD_LIMIT_BYTES
