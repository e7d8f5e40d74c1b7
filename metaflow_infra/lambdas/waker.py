"""The scale-to-zero waker (`metadata:scaleToZero`): starts the metadata service on demand, moves the API's
`$default` route between itself and the service, and stops the service when nobody uses it. Runs on AWS
Lambda's Python runtime (boto3 included). docs/scale-to-zero.md explains the design (path D).

The route is the switch. While it targets this function, every authorized request lands here and gets a
503 — the one answer Metaflow's client always retries — and starts the service. It targets the service's
VPC-link integration only while a task is RUNNING, HEALTHY and registered in Cloud Map, and has answered a
probe sent the way clients' requests go (API Gateway, the VPC link, Cloud Map, the task), so no request ever
meets an empty Cloud Map service or a VPC link AWS is still rebuilding (answers AWS does not document). One
function, six events:

- an API request (HTTP API payload 2.0): wake, and hold the request while the service starts, for up to
  HOLD_SECONDS; once a task is ready and answers the probe, switch the route to it and forward the request to
  it through the probe API (behind the same API-key authorizer as the main route), since API Gateway takes a
  while to deploy the switch; otherwise answer 503. Any error before the forward still answers 503. Held
  requests turn Metaflow's widening retries into near-continuous coverage of the wake: the client is served
  within seconds of the task, not at its next retry, up to a minute later (docs/scale-to-zero.md, "Holding
  and forwarding");
- `{"action": "watch", "wokenAt": <epoch seconds>}` (started by a wake, asynchronously): resume the paused
  database through the RDS Data API while the task starts, poll until a task is ready, then switch the route
  to the service;
- `{"action": "tick"}` (EventBridge Scheduler, every minute): while the service serves, stop it after
  IDLE_MINUTES without a request — route to this function first, drain, then desired count 0; also repair
  a route a lost watcher never switched;
- an ECS task state change whose desired status is STOPPED (Spot, crash, deploy, the idle stop): unless
  another task is ready, route to this function before Cloud Map loses the instance;
- `{"action": "wake"}` (the `ui` command, before it opens the UI): wake, answer the service's state;
- a Batch job state change of a Step Functions run's start step, RUNNABLE on the stack's queue: start a
  sleeping service before the step's instance has (steps on Batch keep Metaflow's 5 retries, and a scheduled
  run has no client to wake it first).

Every step is idempotent and derived from what AWS reports, so concurrent wakes and repeated events are
harmless: setting a desired count of 1 twice starts one task, switching a route twice is one switch.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)
_log.setLevel(logging.INFO)

RETRY_AFTER_SECONDS = 5
READY_PROBE_PATH = "/ready"
"""The one route of the probe API: IAM-authorized (only the waker may call it) and sent to the service's `/ping`
through the same VPC link and Cloud Map service as every client request. An API of its own, so that probes
never count among the requests that keep the service awake."""
PROBE_TIMEOUT_SECONDS = 3.0
CONNECT_SECONDS = 3.0
"""The longest a connection to the probe API may take to open (the rest of a deadline is for the answer)."""
ANSWER_BY_SECONDS = 28.0
"""Of API Gateway's 30 s for the waker's answer (the integration's timeout), when the waker answers a request at
the latest, from its arrival: no AWS call of a request's wake starts unless it can end by then (CALL_SECONDS)."""
CALL_SECONDS = 4.0
"""The longest one of a request's AWS calls can take: one attempt (no backoff, whatever `x-amz-retry-after`
asks) of a 1 s connect and a 2 s read (REQUEST_CALLS), and a second for the address lookup; a probe,
PROBE_TIMEOUT_SECONDS."""
FORWARD_BUDGET_SECONDS = 27.0
"""From a request's arrival, until when its forward may take: a hard deadline (`send` shuts the connection at
it)."""
HOLD_SECONDS = 20.0
"""How long, from its arrival, a request that finds the service starting waits in the waker for a ready task
before its 503 (its last probe and calls may take up to HOLD_OVERRUN_SECONDS more)."""
HOLD_POLL_SECONDS = 2.0
"""A held request asks the probe API once per poll (one request, no ECS call); ECS and Cloud Map only once the
task answers it."""
HOLD_OVERRUN_SECONDS = PROBE_TIMEOUT_SECONDS + 1
"""How much later than HOLD_SECONDS a held request's 503 comes at most in the usual case: its last probe, and a
second of calls. Slow calls can make it up to ANSWER_BY_SECONDS - HOLD_SECONDS."""
FORWARD_MIN_SECONDS = 1.0
"""A request that changes nothing is not forwarded with less left (503: its client retries)."""
UNSAFE_FORWARD_MIN_SECONDS = 6.0
"""Nor one that may change something with less left: its forward timing out would be a 504 its client never
retries, where a 503 costs it one retry. A request the hold's last look finds the task ready for (at
HOLD_SECONDS) still has it, unless that look took over a second."""
FORWARD_LIMIT_BYTES = 4_000_000
"""The largest answer the waker passes on: Lambda returns at most 6 MB from a synchronous invocation
(Lambda quotas, "Invocation payload"), and the body, base64-encoded, grows by a third. Read no further."""
API_GATEWAY_NOT_FOUND = b'{"message":"Not Found"}'
"""What API Gateway itself answers for a path no route takes (the forwarding route not yet deployed): the
service's 404s say other things."""
API_GATEWAY_ERROR = b'{"message":"Internal Server Error"}'
"""What API Gateway itself answers when the forwarding route's authorizer cannot run (its permission not yet
applied, or throttled), or an integration fails."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Requests that change nothing: one whose forward failed or whose answer is too large to pass on can be
retried (503)."""
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
)
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
"""Request headers the forwarded request sets itself (its host and length); API Gateway's own `x-amz-`,
`x-amzn-` and `x-forwarded-` headers are dropped too. The client's `x-api-key` goes on: the forwarding route
checks it with the main route's authorizer."""
NOT_RETURNED = HOP_BY_HOP | {"content-length"}
PATH_SAFE = "/-_.~!$&'()*+,;=:@"
"""What a path segment may hold unencoded (RFC 3986, `pchar`), and its separator."""
WAKING_BODY = json.dumps(
    {"message": "The Metaflow metadata service is starting (scale to zero); retry in a few seconds."}
)


@dataclass(frozen=True)
class Config:
    cluster: str
    service: str
    api_id: str
    route_id: str
    waker_integration_id: str
    service_integration_id: str
    discovery_service_id: str
    idle_minutes: float
    drain_seconds: float = 45.0
    """Longer than API Gateway's 30 s integration timeout: every request already on its way to the task ends."""
    watch_seconds: float = 600.0
    poll_seconds: float = 1.0
    """Each poll is three free describe/list calls (well within ECS's and Cloud Map's request rates); the
    watcher runs for the whole wake anyway, and a ready task waits at most one poll for the route."""
    database_cluster_arn: str | None = None
    """With the cluster's RDS Data API on: the watcher resumes the database at once, not when the migrator
    connects after the image pull."""
    database_secret_arn: str | None = None
    database_name: str | None = None
    probe_url: str = ""
    """The probe API's READY_PROBE_PATH: a task is routed to only once a probe through it answers 200."""
    hold_seconds: float = HOLD_SECONDS
    hold_poll_seconds: float = HOLD_POLL_SECONDS

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        return cls(
            cluster=env["CLUSTER"],
            service=env["SERVICE"],
            api_id=env["API_ID"],
            route_id=env["ROUTE_ID"],
            waker_integration_id=env["WAKER_INTEGRATION_ID"],
            service_integration_id=env["SERVICE_INTEGRATION_ID"],
            discovery_service_id=env["DISCOVERY_SERVICE_ID"],
            idle_minutes=float(env["IDLE_MINUTES"]),
            drain_seconds=float(env.get("DRAIN_SECONDS", "45")),
            watch_seconds=float(env.get("WATCH_SECONDS", "600")),
            database_cluster_arn=env.get("DB_CLUSTER_ARN"),
            database_secret_arn=env.get("DB_SECRET_ARN"),
            database_name=env.get("DB_NAME"),
            probe_url=env["PROBE_URL"],
        )

    @property
    def forward_url(self) -> str:
        """The probe API's root: its `$default` route takes any other path to the service, behind the API key."""
        return self.probe_url.removesuffix(READY_PROBE_PATH)

    def target(self, to_service: bool) -> str:
        return f"integrations/{self.service_integration_id if to_service else self.waker_integration_id}"


@dataclass(frozen=True)
class Outgoing:
    """A request the waker sends through the probe API."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class NotDelivered(Exception):
    """The request never wholly left the waker (no connection, or it broke while sending): API Gateway cannot
    have passed it on, so sending it again is safe."""


class TooLarge(Exception):
    """The answer is larger than FORWARD_LIMIT_BYTES: not read beyond that, not passed on."""


class NoAnswer(Exception):
    """The request was sent but no answer came back (`timed_out`, or the connection broke): it may have been
    carried out."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "connection lost")
        self.timed_out = timed_out


@dataclass(frozen=True)
class Clients:
    """The boto3 clients the waker calls (botocore builds their methods at run time: no static types)."""

    ecs: Any
    apigatewayv2: Any
    cloudwatch: Any
    servicediscovery: Any
    lambda_: Any
    rds_data: Any
    probe: Callable[[str], int | None]
    """GETs a URL signed with the function's own credentials (the probe API's route takes IAM authorization):
    the status it answers, None when it could not be reached."""
    forward: Callable[[Outgoing, float], Reply]
    """Sends a request as it is, answered by a deadline (epoch seconds): its answer, or NotDelivered, NoAnswer or
    TooLarge."""


@dataclass(frozen=True)
class ServiceState:
    desired: int
    ready_tasks: tuple[str, ...]
    """Tasks registered in Cloud Map (what the VPC link routes to), RUNNING, HEALTHY (the task definition has a
    health check) and not being stopped."""
    up_since: datetime.datetime | None
    """When the longest-running of its tasks started; with none started, when the service last changed (a
    task that never starts must not keep the service asking for one forever)."""
    tasks: tuple[dict[str, Any], ...] = ()
    """The registered tasks as ECS describes them."""

    def ready(self, excluding: str | None = None) -> bool:
        return any(task != excluding for task in self.ready_tasks)


def desired_count(aws: Clients, config: Config) -> tuple[int, dict[str, Any]]:
    [service] = aws.ecs.describe_services(cluster=config.cluster, services=[config.service])["services"]
    return service["desiredCount"], service


def service_state(aws: Clients, config: Config) -> ServiceState:
    desired, service = desired_count(aws, config)
    # ECS registers each task of the service in Cloud Map under the task's id.
    ids = [i["Id"] for i in aws.servicediscovery.list_instances(ServiceId=config.discovery_service_id)["Instances"]]
    tasks = aws.ecs.describe_tasks(cluster=config.cluster, tasks=ids)["tasks"] if ids else []
    ready = tuple(
        task["taskArn"]
        for task in tasks
        if task.get("lastStatus") == "RUNNING"
        and task.get("healthStatus") == "HEALTHY"
        and task.get("desiredStatus") == "RUNNING"
    )
    starts = [task["startedAt"] for task in tasks if task.get("startedAt")]
    starts = starts or [
        deployment["updatedAt"] for deployment in service.get("deployments", []) if "updatedAt" in deployment
    ]
    return ServiceState(desired, ready, min(starts) if starts else None, tuple(tasks))


def signed(outgoing: Outgoing) -> Outgoing:
    """The request with a SigV4 signature (service `execute-api`) from the function's credentials."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = boto3.Session()
    request = AWSRequest(method=outgoing.method, url=outgoing.url, data=outgoing.body, headers=outgoing.headers)
    SigV4Auth(session.get_credentials().get_frozen_credentials(), "execute-api", session.region_name).add_auth(request)
    return Outgoing(outgoing.method, outgoing.url, dict(request.headers.items()), outgoing.body)


def send(outgoing: Outgoing, deadline: float, clock: Callable[[], float] = time.time) -> Reply:
    """Send a request and read its answer by `deadline` (epoch seconds), whatever the server's pace: the time
    left bounds each socket operation, and once it is up the connection is shut, whatever is being read (a
    status line or headers trickled in). An answer is read up to FORWARD_LIMIT_BYTES + 1 bytes at most, and one
    cut short of its announced length is no answer."""

    def left() -> float:
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError("the deadline passed")
        return remaining

    parts = urllib.parse.urlsplit(outgoing.url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.netloc, timeout=CONNECT_SECONDS)
    try:
        connection.timeout = min(left(), CONNECT_SECONDS)
        connection.request(
            outgoing.method,
            (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            body=outgoing.body or None,
            headers=outgoing.headers,
        )
    except (OSError, http.client.HTTPException) as error:  # refused, unresolved, too late, reset while sending
        connection.close()
        raise NotDelivered(str(error)) from error
    sock = connection.sock  # the answer is read from it even once http.client lets the connection go
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - clock()), expire)
    timer.daemon = True
    timer.start()
    try:
        sock.settimeout(left())
        response = connection.getresponse()
        announced = response.getheader("content-length")
        if announced and announced.isdigit() and int(announced) > FORWARD_LIMIT_BYTES:
            raise TooLarge(announced)
        body = bytearray()
        while len(body) <= FORWARD_LIMIT_BYTES:
            sock.settimeout(left())
            chunk = response.read1(FORWARD_LIMIT_BYTES + 1 - len(body))
            if not chunk:
                if expired.is_set() or response.length:  # shut at the deadline, or cut short by the server
                    raise http.client.IncompleteRead(bytes(body), response.length)
                return Reply(response.status, tuple(response.getheaders()), bytes(body))
            body += chunk
        raise TooLarge(f"more than {FORWARD_LIMIT_BYTES}")
    except TimeoutError as error:
        raise NoAnswer(timed_out=True) from error
    except (OSError, http.client.HTTPException) as error:  # reset, cut off, or shut at the deadline
        raise NoAnswer(timed_out=expired.is_set()) from error
    finally:
        timer.cancel()
        connection.close()
        sock.close()


def signed_get(url: str) -> int | None:
    """The probe: a signed GET; the status it answers, None when it got none."""
    deadline = time.time() + PROBE_TIMEOUT_SECONDS  # signing (a boto3 session) counts too
    try:
        return send(signed(Outgoing("GET", url, {})), deadline).status
    except (NotDelivered, NoAnswer, TooLarge):
        return None


PROBE_REFUSED = frozenset({401, 403, 404})
"""Answers about the probe itself (its route, or the waker's right to call it), not about the way to the task."""


def probe_status(aws: Clients, config: Config) -> int | None:
    """The probe's answer; None when it got none, or could not be sent at all (the error is logged)."""
    try:
        return aws.probe(config.probe_url)
    except OutOfTime:
        raise
    except Exception:  # a probe must never end a wake or a tick: it only withholds the route
        _log.exception("the readiness probe could not be sent")
        return None


def probe_allows(status: int | None) -> bool:
    """Nothing but a 200 counts, except a refusal of the probe itself: a broken probe must not keep a serving
    task from every client, so the route then follows ECS's health alone, as it did before the probe."""
    if status in PROBE_REFUSED:
        _log.error(
            "the readiness probe was refused (%s): its route or the waker's permission to call it is wrong; "
            "routing on ECS's health alone",
            status,
        )
        return True
    if status != 200:
        _log.info("a task is ready but the probe through the API answered %s; the waker stays in front", status)
    return status == 200


def routable(aws: Clients, config: Config, state: ServiceState) -> bool:
    """A ready task that answers through API Gateway's way to it. ECS's health check and Cloud Map's listing
    say the task serves; only a request through API Gateway and the VPC link says clients will reach it (a link
    unused for 60 days is rebuilt on its next traffic, failing requests meanwhile with answers AWS does not
    document)."""
    return state.ready() and probe_allows(probe_status(aws, config))


def route_on_service(aws: Clients, config: Config) -> bool:
    target = aws.apigatewayv2.get_route(ApiId=config.api_id, RouteId=config.route_id).get("Target")
    return target == config.target(True)


def switch_route(aws: Clients, config: Config, to_service: bool) -> None:
    aws.apigatewayv2.update_route(ApiId=config.api_id, RouteId=config.route_id, Target=config.target(to_service))
    _log.info("route switched to the %s", "service" if to_service else "waker")


def start_watcher(aws: Clients, function_arn: str, woken_at: float) -> None:
    """`woken_at`: when the request (or event) that started the wake arrived, for the logged timings."""
    payload = json.dumps({"action": "watch", "wokenAt": woken_at})
    aws.lambda_.invoke(FunctionName=function_arn, InvocationType="Event", Payload=payload)


@dataclass(frozen=True)
class Woken:
    state: str
    """"starting", or "ready" (the route is on the service, or was just switched to it)."""
    reachable: bool = False
    """A ready task answered a probe through the API (200): a request may be forwarded to it."""
    task_started: float | None = None
    """When the ready task started (epoch seconds), for the forward's log."""


def wake(aws: Clients, config: Config, function_arn: str, woken_at: float, routed_to_waker: bool = True) -> Woken:
    """Ask for one task (idempotent) and watch it start; if one is ready already, route to it. `routed_to_waker`:
    a request reached the waker, so the route targeted it when the request came; the UI's command looks first."""
    state = service_state(aws, config)
    if state.desired == 0:
        aws.ecs.update_service(cluster=config.cluster, service=config.service, desiredCount=1)
        start_watcher(aws, function_arn, woken_at)
        _log.info("service started")
        return Woken("starting")
    if not routed_to_waker and route_on_service(aws, config):
        return Woken("ready")
    if not state.ready():
        return Woken("starting")
    # A watcher was lost, the route was switched away from a serving task, or (most often) the task is ready and
    # the route's deployment is under way.
    status = probe_status(aws, config)
    if not probe_allows(status):
        return Woken("starting")
    started = [
        t["startedAt"].timestamp() for t in state.tasks if t["taskArn"] in state.ready_tasks and "startedAt" in t
    ]
    woken = Woken("ready", reachable=status == 200, task_started=min(started, default=None))
    try:
        # Requests arriving during the deployment all find the waker: one look is cheaper than a switch each.
        if not route_on_service(aws, config):
            switch_route(aws, config, to_service=True)
    except Exception:
        if not woken.reachable:
            raise
        # One throttled switch must not keep its request waiting; the watcher, the next request or the tick
        # switches it.
        _log.warning("could not switch the route; the watcher or the next request will", exc_info=True)
    return woken


def hold(
    aws: Clients,
    config: Config,
    event: dict[str, Any],
    function_arn: str,
    arrived: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """The answer to a request that reached the waker. Wake, and while the service starts keep the request, looking
    every poll, so that it is forwarded as soon as a task is ready, not at the client's next retry. Its 503 comes
    no earlier than `hold_seconds` after its arrival, whatever the phase of the polls or what failed meanwhile
    (a wake's call, a forward that reached nothing): the model of the client's wait rests on it
    (wake.worst_first_answer_seconds). The exceptions are answers that holding cannot change: a task routed to
    on ECS's health alone (the probe refused), which the client's retry reaches directly, and a forward's own
    503s (a request that cannot be read, or a safe one whose answer is too large for Lambda)."""
    held_until = arrived + config.hold_seconds
    look = True  # the first look wakes the service; later ones once the task answers the probe, or one failed
    while True:
        failed = False
        if look:
            try:
                woken = wake(aws, config, function_arn, arrived)
            except OutOfTime:
                raise
            except Exception:  # a throttle, say: the next poll looks again (the service may not be started yet)
                _log.exception("a look at the service failed; the request is still held")
                woken, failed = Woken("starting"), True
            if woken.reachable:
                answer = forward(aws, config, event, woken, arrived, clock)
                if answer is not None:
                    return answer
            elif woken.state == "ready":
                return waking_response()
        if clock() >= held_until:
            return waking_response()
        sleep(max(0.0, min(config.hold_poll_seconds, held_until - clock())))
        look = failed or probe_status(aws, config) in (200, *PROBE_REFUSED)  # the task answers, or only ECS can tell


class OutOfTime(Exception):
    """Too little of a request's time is left for another AWS call: it is answered without one (503)."""


class _Bounded:
    """A client whose calls are refused (OutOfTime) unless they can end by a deadline."""

    def __init__(self, client: Any, deadline: float, clock: Callable[[], float]) -> None:
        self._client, self._deadline, self._clock = client, deadline, clock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._deadline - self._clock() < CALL_SECONDS:
                raise OutOfTime(name)
            return method(*args, **kwargs)

        return call


def within(aws: Clients, deadline: float, clock: Callable[[], float]) -> Clients:
    """The clients a request's wake uses: no call starts that could end after `deadline` (epoch seconds), so
    API Gateway gets the waker's answer, not its own timeout's, whatever AWS's APIs take (a throttle, say)."""

    def probe(url: str) -> int | None:
        if deadline - clock() < PROBE_TIMEOUT_SECONDS:
            raise OutOfTime("probe")
        return aws.probe(url)

    return dataclasses.replace(
        aws,
        ecs=_Bounded(aws.ecs, deadline, clock),
        apigatewayv2=_Bounded(aws.apigatewayv2, deadline, clock),
        servicediscovery=_Bounded(aws.servicediscovery, deadline, clock),
        lambda_=_Bounded(aws.lambda_, deadline, clock),
        probe=probe,
    )


def nudge(aws: Clients, config: Config) -> str:
    """A scheduled run's start step is queued on Batch: start a sleeping service and give the database its head
    start, and no more. No watcher: runs scheduled for the same minute would each start one, and their polling
    shares the account's ECS and API Gateway request rates. The step's first request (a wake that finds the task
    ready), or the next tick, routes to the task, which by then has long started: Batch starts an instance
    first. While the service runs or wakes, one call."""
    desired, _ = desired_count(aws, config)
    if desired > 0:
        return "awake"
    aws.ecs.update_service(cluster=config.cluster, service=config.service, desiredCount=1)
    resume_database(aws, config)
    _log.info("service started for a queued run")
    return "starting"


def resume_database(aws: Clients, config: Config) -> str:
    """Ask the Data API for `SELECT 1`. On a paused Aurora Serverless v2 database it answers
    DatabaseResumingException at once and resumes it ("The Data API request automatically resumes the DB
    instance"), so the database wakes while the task is placed and pulls its image. Anything else is logged and
    ignored: the migrator's own connection resumes it anyway, later."""
    if not (config.database_cluster_arn and config.database_secret_arn):
        return "no data api"
    try:
        aws.rds_data.execute_statement(
            resourceArn=config.database_cluster_arn,
            secretArn=config.database_secret_arn,
            database=config.database_name,
            sql="SELECT 1",
        )
    except Exception as error:
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
        if code == "DatabaseResumingException":
            _log.info("database resuming")
            return "resuming"
        _log.warning("could not resume the database early (%s); the migrator's connection will", code or error)
        return "not resumed"
    return "awake"


WAKE_STAGES = (
    ("scheduled", None, "createdAt"),
    ("pull", "pullStartedAt", "pullStoppedAt"),
    ("placedAndPulled", "createdAt", "pullStoppedAt"),
    ("toRunning", "pullStoppedAt", "startedAt"),
    ("toReady", "startedAt", None),
)
"""What the watcher logs of each wake (seconds, from ECS's task timestamps), to hold real wakes against the
documented stages (docs/scale-to-zero.md): from the first request to the task's creation (the model's waker
and schedule), the image pull, the task's creation to the pull's end (the model's start, but the container's
own start), then to the task's RUNNING (its containers starting; ECS may count the migrator in), and from
there to the route switch (health check, notice, probe). `wake` is the first request to the UpdateRoute call:
all of the model's stages but the route's deployment."""


def wake_timings(task: dict[str, Any] | None, woken_at: float, switched: float) -> dict[str, Any]:
    """Seconds of each stage of WAKE_STAGES (None where ECS gave no timestamp, or no task), and the whole wake."""

    def at(field: str | None, default: float) -> float | None:
        if field is None:
            return default
        value = (task or {}).get(field)
        return value.timestamp() if isinstance(value, datetime.datetime) else None

    timings: dict[str, Any] = {}
    for name, begin, end in WAKE_STAGES:
        first, last = at(begin, woken_at), at(end, switched)
        timings[name] = round(last - first, 1) if first is not None and last is not None else None
    timings["wake"] = round(switched - woken_at, 1)
    return timings


def watch(
    aws: Clients, config: Config, clock: Callable[[], float], sleep: Callable[[float], None], woken_at: float
) -> str:
    """Resume the database, wait for a ready task, then route to it; stop waiting if the service is stopped."""
    started = clock()
    deadline = started + config.watch_seconds
    resume_database(aws, config)
    # Traffic through the VPC link while the task starts: a link gone inactive (60 days without traffic) is
    # rebuilt on traffic, so the rebuild runs beside the task's start. The answer does not matter yet.
    last_probe = probe_status(aws, config)
    while True:
        state = service_state(aws, config)
        if state.desired == 0:
            return "stopped"
        if state.ready():
            last_probe = probe_status(aws, config)
            if probe_allows(last_probe):
                switch_route(aws, config, to_service=True)
                # The task may have been stopped while it was probed, its stop event finding the waker still in
                # front: then the waker goes back in front, and the watch goes on.
                if service_state(aws, config).ready():
                    [task] = [t for t in state.tasks if t["taskArn"] == state.ready_tasks[0]]
                    timings = {**wake_timings(task, woken_at, clock()), "outcome": "switched"}
                    _log.info("wake timings %s", json.dumps(timings))
                    return "switched"
                switch_route(aws, config, to_service=False)
                _log.warning("the task stopped as the route reached it; the waker is in front again")
        if clock() >= deadline:
            _log.warning("no ready task after %.0f s; the next request or tick looks again", config.watch_seconds)
            # The slowest wakes count too: how far the furthest registered task got (Cloud Map lists a task once
            # it runs: one stuck before, in its pull say, leaves the stages empty), and what the probe last said.
            progress = ("startedAt", "pullStoppedAt", "pullStartedAt", "createdAt")
            furthest = max(state.tasks, key=lambda t: [f in t for f in progress], default=None)
            timings = {**wake_timings(furthest, woken_at, clock()), "outcome": "gave up", "probe": last_probe}
            _log.info("wake timings %s", json.dumps(timings))
            return "gave up"
        sleep(config.poll_seconds)


def requests_since(aws: Clients, config: Config, start: datetime.datetime, end: datetime.datetime) -> float:
    """Requests the API received (to either target) in [start, end], from its free basic metrics."""
    answer = aws.cloudwatch.get_metric_statistics(
        Namespace="AWS/ApiGateway",
        MetricName="Count",
        Dimensions=[{"Name": "ApiId", "Value": config.api_id}],
        StartTime=start,
        EndTime=end,
        Period=60,
        Statistics=["Sum"],
    )
    return sum(point["Sum"] for point in answer["Datapoints"])


def tick(aws: Clients, config: Config, now: datetime.datetime, sleep: Callable[[float], None]) -> str:
    """Once a minute: stop an idle service (the route first), or repair a route nobody switched."""
    desired, _ = desired_count(aws, config)
    on_service = route_on_service(aws, config)
    if desired == 0:  # the idle path: two free calls, no metrics
        if on_service:  # stopped from outside: put the waker back in front
            switch_route(aws, config, to_service=False)
        return "asleep"
    state = service_state(aws, config)
    if on_service and not state.ready():
        # Nothing serves behind the route (a task stopped as a watcher switched to it): the waker answers.
        switch_route(aws, config, to_service=False)
        return "waker in front"
    window = datetime.timedelta(minutes=config.idle_minutes)
    up_long_enough = state.up_since is not None and now - state.up_since >= window
    idle = up_long_enough and requests_since(aws, config, now - window, now) == 0
    if not on_service and routable(aws, config, state):
        try:
            switch_route(aws, config, to_service=True)
            return "switched"
        except Exception:  # requests are still served (forwarded); an idle service must still stop
            _log.error("could not switch the route to a ready task", exc_info=True)
            on_service = route_on_service(aws, config)  # a switch reported failed may have been made
    if not on_service:
        if not idle:
            return "starting"
        # A wake nobody came back for (its task never became ready, or its client gave up): stop it.
    else:
        if not idle:
            return "serving"
        switch_route(aws, config, to_service=False)
        sleep(config.drain_seconds)
        if route_on_service(aws, config):  # a request came during the drain and the waker routed it back
            return "stop abandoned"
    aws.ecs.update_service(cluster=config.cluster, service=config.service, desiredCount=0)
    _log.info("service stopped after %.0f idle minutes", config.idle_minutes)
    return "stopped"


def _event_time(event: dict[str, Any], default: float) -> float:
    """An EventBridge event's `time` (ISO 8601, UTC), in epoch seconds."""
    try:
        return datetime.datetime.fromisoformat(event["time"]).timestamp()  # Python 3.11+ reads the "Z"
    except (KeyError, AttributeError, ValueError):
        return default


def task_stopping(aws: Clients, config: Config, event: dict[str, Any], function_arn: str, now: float) -> str:
    """A task of the service is being stopped: keep the route only if another task is ready."""
    state = service_state(aws, config)
    if state.ready(excluding=event["detail"]["taskArn"]):
        return "another task serves"
    if not route_on_service(aws, config):
        # ECS reports each step of a stop: only the event that takes the route from the task starts a watcher.
        return "waker in front"
    switch_route(aws, config, to_service=False)
    if state.desired > 0:  # ECS replaces it (crash, Spot, deploy): route back once the new one is ready
        start_watcher(aws, function_arn, _event_time(event, now))
        return "replacing"
    return "waker in front"


def waking_response() -> dict[str, Any]:
    return {
        "statusCode": 503,
        "headers": {"Content-Type": "application/json", "Retry-After": str(RETRY_AFTER_SECONDS)},
        "body": WAKING_BODY,
    }


def error_response(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": message}),
    }


def outgoing(event: dict[str, Any], base_url: str) -> Outgoing:
    """The request API Gateway passed to the waker (payload 2.0), addressed to the service through the probe
    API: same method, path, query, headers (but those of NOT_FORWARDED and API Gateway's own) and body."""
    method = event["requestContext"]["http"]["method"]
    # HTTP APIs pass the path decoded (an encoded "/" cannot be told from a real one): encode it again.
    path = urllib.parse.quote(event.get("rawPath") or event["requestContext"]["http"]["path"], safe=PATH_SAFE)
    if not path.startswith("/"):  # it would change the host or port the request is sent to
        raise ValueError(f"not a path: {path!r}")
    query = event.get("rawQueryString") or ""
    headers = {
        name: value
        for name, value in (event.get("headers") or {}).items()
        if name.lower() not in NOT_FORWARDED and not name.lower().startswith(("x-amz-", "x-amzn-", "x-forwarded-"))
    }
    if event.get("cookies"):  # payload 2.0 takes them out of the headers
        headers["cookie"] = "; ".join(event["cookies"])
    body = event.get("body") or ""
    data = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    return Outgoing(method, base_url + path + (f"?{query}" if query else ""), headers, data)


def passed_on(reply: Reply) -> dict[str, Any]:
    """The service's answer as the waker returns it to API Gateway (payload 2.0)."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in reply.headers:
        if name.lower() == "set-cookie":
            cookies.append(value)
        elif name.lower() not in NOT_RETURNED:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    answer = {
        "statusCode": reply.status,
        "headers": headers,
        "body": base64.b64encode(reply.body).decode(),
        "isBase64Encoded": True,
    }
    return {**answer, "cookies": cookies} if cookies else answer


def forward(
    aws: Clients, config: Config, event: dict[str, Any], woken: Woken, arrived: float, clock: Callable[[], float]
) -> dict[str, Any] | None:
    """Pass a request on to the ready task through the probe API, and its answer back, while API Gateway deploys
    the route to the task: what the direct route would answer; None where the request can be sent again (it did
    not reach the service, or repeating it changes nothing)."""
    deadline = arrived + FORWARD_BUDGET_SECONDS
    try:
        request = outgoing(event, config.forward_url)
    except Exception:  # nothing was sent; nor will it ever be
        _log.exception("could not read the request to forward it; answering 503")
        return waking_response()
    safe = request.method in SAFE_METHODS
    if deadline - clock() < (FORWARD_MIN_SECONDS if safe else UNSAFE_FORWARD_MIN_SECONDS):
        return None
    what = f"{request.method} {urllib.parse.urlsplit(request.url).path}"
    try:
        reply = aws.forward(request, deadline)
    except NotDelivered as error:
        _log.warning("could not forward %s (%s)", what, error)
        return None
    except NoAnswer as error:
        _log.warning("forwarded %s but got no answer (%s)", what, error)
        if safe:  # carried out or not, doing it again changes nothing
            return None
        # It may have been carried out: not an answer the client retries.
        if error.timed_out:
            return error_response(504, "The Metaflow metadata service did not answer in time.")
        return error_response(502, "The Metaflow metadata service's answer was lost.")
    except TooLarge as error:
        _log.warning("the answer to %s is too large to forward (%s bytes)", what, error)
        if safe:
            return waking_response()  # not again now: its retry takes the route, by then deployed
        return error_response(502, "The Metaflow metadata service's answer is too large to pass on while it wakes.")
    except Exception:  # after the request may have left: it may have been carried out
        _log.exception("forwarding %s failed", what)
        return error_response(502, "The Metaflow metadata service's answer was lost.")
    if reply.status == 404 and reply.body.strip() == API_GATEWAY_NOT_FOUND:
        # API Gateway's own: the probe API has no forwarding route yet (a deploy under way); the service saw nothing.
        _log.error("the probe API has no route for the forwarded %s (%s)", what, reply.body)
        return None
    if safe and reply.status == 500 and reply.body.strip() == API_GATEWAY_ERROR:
        # API Gateway's own: its authorizer could not run, or the integration failed (the latter maybe after the
        # service had the request, so only for requests that change nothing).
        _log.error("the probe API failed the forwarded %s (%s)", what, reply.body)
        return None
    now = clock()
    since_start = f"{now - woken.task_started:.1f} s" if woken.task_started is not None else "unknown"
    _log.info(
        "forwarded %s: %s, %.1f s after the request arrived, %s after the task started",
        what,
        reply.status,
        now - arrived,
        since_start,
    )
    return passed_on(reply)


def dispatch(
    event: dict[str, Any],
    function_arn: str,
    aws: Clients,
    config: Config,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    if "requestContext" in event:  # an API request reached the waker: the service is not routed to
        # HTTP API payload 2.0: when API Gateway received the request (milliseconds).
        epoch = event["requestContext"].get("timeEpoch")
        arrived = epoch / 1000 if isinstance(epoch, int | float) else clock()
        try:
            return hold(
                within(aws, arrived + ANSWER_BY_SECONDS, clock), config, event, function_arn, arrived, clock, sleep
            )
        except OutOfTime as late:
            _log.warning("no time left for %s: answering 503", late)
        except Exception:  # the client retries a 503, never a 500: answer it whatever went wrong
            _log.exception("wake failed; answering 503 anyway")
        return waking_response()
    if event.get("source") == "aws.ecs":
        return task_stopping(aws, config, event, function_arn, clock())
    if event.get("source") == "aws.batch":  # a scheduled run's start step is queued
        return nudge(aws, config)
    action = event.get("action")
    if action == "watch":
        woken_at = event.get("wokenAt")
        return watch(aws, config, clock, sleep, woken_at if isinstance(woken_at, int | float) else clock())
    if action == "tick":
        return tick(aws, config, datetime.datetime.fromtimestamp(clock(), datetime.UTC), sleep)
    if action == "wake":
        return wake(aws, config, function_arn, clock(), routed_to_waker=False).state
    raise ValueError(f"unknown event: {sorted(event)}")


REQUEST_CALLS: dict[str, Any] = {
    "connect_timeout": 1,
    "read_timeout": 2,
    "retries": {"total_max_attempts": 1, "mode": "standard"},
}
"""botocore settings of the calls a request's wake makes: CALL_SECONDS at most each (a held request looks again
every poll anyway)."""
BACKGROUND_CALLS: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"max_attempts": 3, "mode": "standard"},
}
"""Those of the watcher, the tick and the events, which nobody waits for: retried."""

_clients: dict[bool, Clients] = {}


def _aws(for_request: bool) -> Clients:
    """The function's clients: `for_request`, with the bounded calls a request's answer needs within API
    Gateway's 30 s; otherwise patient ones."""
    if for_request not in _clients:
        import boto3
        from botocore.config import Config as BotoConfig

        calls = BotoConfig(**(REQUEST_CALLS if for_request else BACKGROUND_CALLS))
        # The Data API call only gives the database a head start: one attempt, so a slow answer never holds up
        # the watcher's first look at the task (the others' four attempts could cost ~20 s).
        once = BotoConfig(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1, "mode": "standard"})
        _clients[for_request] = Clients(
            *(
                boto3.client(name, config=calls)
                for name in ("ecs", "apigatewayv2", "cloudwatch", "servicediscovery", "lambda")
            ),
            rds_data=boto3.client("rds-data", config=once),
            probe=signed_get,
            forward=send,
        )
    return _clients[for_request]


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # Lambda runs module code at the environment's init, reportedly with the CPU unthrottled whatever the memory
    # size: boto3 and the clients are built there, not by a wake's first request (a cold start on its critical
    # path). Should that fail, the first call builds them.
    with contextlib.suppress(Exception):
        _aws(for_request=True)
        _aws(for_request=False)


def handler(event: dict[str, Any], context: Any) -> Any:
    try:
        aws, config = _aws(for_request="requestContext" in event), Config.from_env(dict(os.environ))
    except Exception:
        if "requestContext" not in event:
            raise
        _log.exception("waker misconfigured; answering 503 anyway")
        return waking_response()
    return dispatch(event, context.invoked_function_arn, aws, config)
