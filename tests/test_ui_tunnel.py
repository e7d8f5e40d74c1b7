"""`python -m metaflow_infra ui`: real boto3 clients behind botocore's Stubber (no network), the
process, browser and clock calls faked."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from metaflow_infra import ui_tunnel
from metaflow_infra.__main__ import main
from metaflow_infra.ui_tunnel import (
    DOCUMENT,
    PLUGIN_INSTALL_URL,
    UI_OFF,
    Aws,
    Tools,
    UiError,
    UiOutput,
    parse_output,
    plugin_invocation,
    read_output,
    session_target,
    start_session_request,
    task_state,
    wait_for_page,
)

REGION = "us-east-1"
CLUSTER = "metaflow-dev"
SERVICE = "metaflow-dev-ui"
ACCOUNT = "123456789012"
TASK_ID = "0123456789abcdef0123456789abcdef"
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{TASK_ID}"
RUNTIME_ID = f"{TASK_ID}-3524862419"
TARGET = f"ecs:{CLUSTER}_{TASK_ID}_{RUNTIME_ID}"
OTHER_TASK_ID = "fedcba9876543210fedcba9876543210"
OTHER_TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{OTHER_TASK_ID}"
SESSION_ID = "alice-0a1b2c3d4e5f60718"
SSM_ENDPOINT = f"https://ssm.{REGION}.amazonaws.com"

PRIVATE = {
    "access": "private",
    "url": "http://localhost:8083",
    "cluster": CLUSTER,
    "service": SERVICE,
    "container": "ui",
    "port": 8083,
    "region": REGION,
}
UI = parse_output(json.dumps(PRIVATE))

SERVICES = {"cluster": CLUSTER, "services": [SERVICE]}
LIST_TASKS = {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "RUNNING"}


# --- fakes ------------------------------------------------------------------------------------------------------


class Clock:
    """Time that moves only when the code sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class World:
    """Records what the command did outside boto3."""

    def __init__(self, pulumi_stdout: str = json.dumps(PRIVATE), plugin_code: int = 0) -> None:
        self.pulumi_stdout = pulumi_stdout
        self.plugin_code = plugin_code
        self.commands: list[tuple[list[str], Path]] = []
        self.plugin_calls: list[tuple[list[str], dict[str, str]]] = []
        self.opened: list[str] = []
        self.watched: list[str] = []
        self.said: list[str] = []
        self.connected: list[tuple[str, str | None]] = []
        self.events: list[str] = []

    def run(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.commands.append((command, kwargs["cwd"]))
        return subprocess.CompletedProcess(command, 0, stdout=self.pulumi_stdout, stderr="")

    def run_plugin(self, argv: list[str], env: Any) -> int:
        self.events.append("plugin")
        self.plugin_calls.append((argv, dict(env)))
        return self.plugin_code

    def watch_page(self, url: str, open_url: Any, say: Any) -> Any:
        self.watched.append(url)
        open_url(url)
        return lambda: self.events.append("watch cancelled")

    def tools(self, aws: Aws | None = None, **overrides: Any) -> Tools:
        clock = Clock()

        def connect(region: str, profile: str | None) -> Aws:
            if aws is None:
                raise AssertionError("no AWS call expected")
            self.connected.append((region, profile))
            return aws

        values: dict[str, Any] = {
            "run": self.run,
            "which": lambda name: f"/usr/local/bin/{name}",
            "connect": connect,
            "port_free": lambda port: True,
            "plugin_version": lambda: "1.2.707.0\n",
            "run_plugin": self.run_plugin,
            "open_url": self.opened.append,
            "watch_page": self.watch_page,
            "clock": clock,
            "sleep": clock.sleep,
            "say": self.said.append,
        }
        values.update(overrides)
        return Tools(**values)


@pytest.fixture(scope="module")
def clients() -> tuple[Any, Any]:
    """The module's ECS and SSM clients, built once (a session and two clients cost ~0.1 s a test); each test
    stubs them with Stubbers of its own."""
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return session.client("ecs"), session.client("ssm")


@pytest.fixture
def aws(clients: tuple[Any, Any]) -> Iterator[tuple[Aws, Stubber, Stubber]]:
    ecs, ssm = clients
    with Stubber(ecs) as ecs_stub, Stubber(ssm) as ssm_stub:
        yield Aws(ecs=ecs, ssm=ssm, region=REGION), ecs_stub, ssm_stub
        ecs_stub.assert_no_pending_responses()
        ssm_stub.assert_no_pending_responses()


def service(desired: int) -> dict[str, Any]:
    return {"services": [{"serviceName": SERVICE, "status": "ACTIVE", "desiredCount": desired}]}


def task(
    arn: str = TASK_ARN,
    status: str = "RUNNING",
    runtime_id: str | None = RUNTIME_ID,
    health: str | None = "HEALTHY",
    agent: str | None = "RUNNING",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "ui", "lastStatus": status}
    if runtime_id is not None:
        container["runtimeId"] = runtime_id
    if health is not None:
        container["healthStatus"] = health
    if agent is not None:
        container["managedAgents"] = [{"name": "ExecuteCommandAgent", "lastStatus": agent}]
    return {"taskArn": arn, "lastStatus": status, "containers": [container]}


def expect_tasks(ecs_stub: Stubber, *tasks: dict[str, Any]) -> None:
    arns = [t["taskArn"] for t in tasks]
    ecs_stub.add_response("list_tasks", {"taskArns": arns}, LIST_TASKS)
    if arns:
        ecs_stub.add_response("describe_tasks", {"tasks": list(tasks)}, {"cluster": CLUSTER, "tasks": arns})


def expect_sessions(ssm_stub: Stubber, target: str, *session_ids: str) -> None:
    sessions = [{"SessionId": s, "Target": target, "Status": "Connected"} for s in session_ids]
    ssm_stub.add_response(
        "describe_sessions",
        {"Sessions": sessions},
        {"State": "Active", "Filters": [{"key": "Target", "value": target}]},
    )


def expect_scale(ecs_stub: Stubber, count: int) -> None:
    ecs_stub.add_response("update_service", {}, {"cluster": CLUSTER, "service": SERVICE, "desiredCount": count})


def expect_session_start(ssm_stub: Stubber, local_port: int = 8083) -> None:
    ssm_stub.add_response(
        "start_session",
        {"SessionId": SESSION_ID, "TokenValue": "token", "StreamUrl": "wss://ssmmessages.example/stream"},
        start_session_request(TARGET, 8083, local_port),
    )


# --- reading the stack output -------------------------------------------------------------------------------


def test_read_output_runs_pulumi_in_the_project_directory(tmp_path: Path) -> None:
    world = World()
    assert read_output("prod", tmp_path, world.run) == UI
    assert world.commands == [(["pulumi", "stack", "output", "ui", "--json", "--stack", "prod"], tmp_path)]


def test_read_output_without_the_pulumi_cli_says_how_to_install_it(tmp_path: Path) -> None:
    def missing(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("pulumi")

    with pytest.raises(UiError, match="Pulumi CLI is not installed"):
        read_output("dev", tmp_path, missing)


def test_read_output_says_the_ui_is_off_when_the_stack_has_no_ui_output(tmp_path: Path) -> None:
    def no_output(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            command, 255, "", "error: current stack does not have output property 'ui'\n"
        )

    with pytest.raises(UiError) as raised:
        read_output("dev", tmp_path, no_output)
    assert str(raised.value) == UI_OFF


def test_read_output_reports_other_pulumi_failures_as_their_error_line(tmp_path: Path) -> None:
    def no_stack(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 255, "", "warning: x\nerror: no stack named 'dev' found\n")

    with pytest.raises(UiError, match=r"failed: error: no stack named 'dev' found$"):
        read_output("dev", tmp_path, no_stack)


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        ("{not json", "is not JSON"),
        ('"http://localhost:8083"', "not a JSON object"),
        ("null", "the UI is off"),
        (json.dumps({**PRIVATE, "access": "open"}), "unknown access mode 'open'"),
        (json.dumps({k: v for k, v in PRIVATE.items() if k != "cluster"}), "lacks cluster"),
        (json.dumps({**PRIVATE, "port": "http"}), "port that is not a number"),
    ],
)
def test_malformed_ui_output_is_a_clear_error(stdout: str, message: str) -> None:
    with pytest.raises(UiError, match=message):
        parse_output(stdout)


# --- non-private access ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("access", ["public", "allowList"])
def test_non_private_ui_opens_its_url_without_touching_aws(tmp_path: Path, access: str) -> None:
    world = World(json.dumps({**PRIVATE, "access": access, "url": "https://ui.example.com"}))
    assert ui_tunnel.run("dev", tmp_path, tools=world.tools(aws=None)) == 0
    assert world.opened == ["https://ui.example.com"]
    assert world.connected == []
    assert any("https://ui.example.com" in line for line in world.said)


def test_no_browser_prints_the_url_and_opens_nothing(tmp_path: Path) -> None:
    world = World(json.dumps({**PRIVATE, "access": "public", "url": "https://ui.example.com"}))
    assert ui_tunnel.run("dev", tmp_path, open_browser=False, tools=world.tools(aws=None)) == 0
    assert world.opened == []
    assert world.said == ["Metaflow UI (public): https://ui.example.com"]


# --- private: checks before any AWS call ----------------------------------------------------------------------


def test_missing_plugin_is_a_clear_error_before_any_aws_call(tmp_path: Path) -> None:
    world = World()
    with pytest.raises(UiError, match="Session Manager plugin") as raised:
        ui_tunnel.run("dev", tmp_path, tools=world.tools(aws=None, which=lambda name: None))
    assert PLUGIN_INSTALL_URL in str(raised.value)
    assert world.connected == []


def test_busy_local_port_is_a_clear_error_before_any_aws_call(tmp_path: Path) -> None:
    world = World()
    with pytest.raises(UiError, match="local port 8084 is in use"):
        ui_tunnel.run("dev", tmp_path, port=8084, tools=world.tools(aws=None, port_free=lambda port: False))
    assert world.connected == []


def test_missing_credentials_are_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UiError, match="no AWS credentials"):
        ui_tunnel.connect_aws(REGION, None)


def test_unknown_profile_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(UiError, match="nobody"):
        ui_tunnel.connect_aws(REGION, "nobody")


# --- scaling up and waiting -------------------------------------------------------------------------------------


def test_scale_up_only_when_the_desired_count_is_zero(aws: tuple[Aws, Stubber, Stubber]) -> None:
    clients, ecs_stub, _ = aws
    said: list[str] = []
    ecs_stub.add_response("describe_services", service(0), SERVICES)
    expect_scale(ecs_stub, 1)
    assert ui_tunnel.scale_up_if_idle(clients.ecs, UI, said.append) is True
    ecs_stub.add_response("describe_services", service(1), SERVICES)
    assert ui_tunnel.scale_up_if_idle(clients.ecs, UI, said.append) is False
    assert said == ["Starting the UI task (desired count 0 → 1)."]


def test_missing_service_says_the_stack_may_not_be_deployed(aws: tuple[Aws, Stubber, Stubber]) -> None:
    clients, ecs_stub, _ = aws
    ecs_stub.add_response(
        "describe_services", {"services": [], "failures": [{"arn": SERVICE, "reason": "MISSING"}]}, SERVICES
    )
    with pytest.raises(UiError, match="is the stack deployed"):
        ui_tunnel.desired_count(clients.ecs, UI)


@pytest.mark.parametrize(
    ("kwargs", "ready", "summary"),
    [
        ({"status": "PROVISIONING", "runtime_id": None, "health": None, "agent": None}, False, "task PROVISIONING"),
        ({"runtime_id": None, "health": "UNKNOWN", "agent": "PENDING"}, False, "container starting"),
        ({"health": "UNKNOWN", "agent": "RUNNING"}, False, "waiting for the first health check"),
        ({"health": "UNHEALTHY"}, False, "container UNHEALTHY"),
        ({"agent": "PENDING"}, False, "ECS Exec agent PENDING"),
        ({"agent": None}, False, "ECS Exec is off for this task (started before it was enabled?)"),
        ({}, True, "ready"),
        ({"health": None}, True, "ready"),
    ],
)
def test_a_task_is_ready_when_running_started_healthy_and_its_exec_agent_runs(
    kwargs: dict[str, Any], ready: bool, summary: str
) -> None:
    state = task_state(task(**kwargs), "ui")
    assert (state.ready, state.summary) == (ready, summary)


def test_wait_polls_until_running_runtime_id_healthy_and_exec_agent_running(
    aws: tuple[Aws, Stubber, Stubber],
) -> None:
    clients, ecs_stub, _ = aws
    clock, said = Clock(), []
    expect_tasks(ecs_stub)
    expect_tasks(ecs_stub, task(status="PENDING", runtime_id=None, health=None, agent=None))
    expect_tasks(ecs_stub, task(health="UNKNOWN", agent="PENDING"))
    expect_tasks(ecs_stub, task(agent="PENDING"))
    expect_tasks(ecs_stub, task())
    state = ui_tunnel.wait_until_ready(clients.ecs, UI, clock=clock, sleep=clock.sleep, say=said.append, interval=5)
    assert state.target(CLUSTER) == TARGET
    assert clock() == 1020.0
    assert said == [
        "    0 s  waiting for ECS to place a task",
        "    5 s  task PENDING",
        "   10 s  waiting for the first health check",
        "   15 s  ECS Exec agent PENDING",
    ]


def test_wait_picks_the_ready_task_among_several(aws: tuple[Aws, Stubber, Stubber]) -> None:
    clients, ecs_stub, _ = aws
    clock = Clock()
    expect_tasks(ecs_stub, task(OTHER_TASK_ARN, status="DEACTIVATING"), task())
    state = ui_tunnel.wait_until_ready(clients.ecs, UI, clock=clock, sleep=clock.sleep, say=print)
    assert state.task_arn == TASK_ARN


def test_wait_times_out_naming_the_last_state_and_where_to_look(aws: tuple[Aws, Stubber, Stubber]) -> None:
    clients, ecs_stub, _ = aws
    clock = Clock()
    for _ in range(3):
        expect_tasks(ecs_stub, task(status="PENDING", runtime_id=None, health=None, agent=None))
    with pytest.raises(UiError, match=r"not ready after 10 s \(task PENDING\).*describe-services"):
        ui_tunnel.wait_until_ready(clients.ecs, UI, clock=clock, sleep=clock.sleep, say=print, timeout=10, interval=5)


# --- the session and the plugin --------------------------------------------------------------------------------


def test_session_target_document_and_parameters_are_exact() -> None:
    assert session_target(CLUSTER, TASK_ARN, RUNTIME_ID) == TARGET
    assert start_session_request(TARGET, 8083, 9000) == {
        "Target": TARGET,
        "DocumentName": "AWS-StartPortForwardingSession",
        "Parameters": {"portNumber": ["8083"], "localPortNumber": ["9000"]},
    }
    assert DOCUMENT == "AWS-StartPortForwardingSession"


RESPONSE = {
    "SessionId": SESSION_ID,
    "TokenValue": "token",
    "StreamUrl": "wss://ssmmessages.example/stream",
    "ResponseMetadata": {"RequestId": "r"},
}
SESSION_JSON = json.dumps(
    {"SessionId": SESSION_ID, "TokenValue": "token", "StreamUrl": "wss://ssmmessages.example/stream"}
)
REQUEST = start_session_request(TARGET, 8083, 8083)


def test_plugin_argv_is_the_aws_cli_one_with_the_session_in_the_environment() -> None:
    argv, env = plugin_invocation(RESPONSE, REGION, None, REQUEST, SSM_ENDPOINT, "1.2.707.0\n")
    assert argv == [
        "session-manager-plugin",
        "AWS_SSM_START_SESSION_RESPONSE",
        REGION,
        "StartSession",
        "",
        json.dumps(REQUEST),
        SSM_ENDPOINT,
    ]
    assert env == {"AWS_SSM_START_SESSION_RESPONSE": SESSION_JSON}


@pytest.mark.parametrize("version", ["1.2.497.0", "1.1.61.0", "", "unknown"])
def test_old_or_unknown_plugins_get_the_session_on_the_command_line(version: str) -> None:
    argv, env = plugin_invocation(RESPONSE, REGION, "work", REQUEST, SSM_ENDPOINT, version)
    assert argv == [
        "session-manager-plugin",
        SESSION_JSON,
        REGION,
        "StartSession",
        "work",
        json.dumps(REQUEST),
        SSM_ENDPOINT,
    ]
    assert env == {}


def test_the_page_is_opened_once_it_answers() -> None:
    clock, answers = Clock(), iter([False, False, True])
    assert wait_for_page("http://localhost:8083", lambda url: next(answers), threading.Event(), clock, interval=0)


def test_waiting_for_the_page_gives_up_after_its_timeout() -> None:
    clock = Clock()

    def never(url: str) -> bool:
        clock.sleep(10)
        return False

    assert not wait_for_page("http://localhost:8083", never, threading.Event(), clock, timeout=30, interval=0)


# --- whole private sessions -------------------------------------------------------------------------------------


def test_private_session_starts_the_task_tunnels_and_stops_it_when_no_one_else_is_in(
    aws: tuple[Aws, Stubber, Stubber], tmp_path: Path
) -> None:
    clients, ecs_stub, ssm_stub = aws
    world = World()
    ecs_stub.add_response("describe_services", service(0), SERVICES)
    expect_scale(ecs_stub, 1)
    expect_tasks(ecs_stub, task(status="PROVISIONING", runtime_id=None, health=None, agent=None))
    expect_tasks(ecs_stub, task())
    expect_session_start(ssm_stub)
    ssm_stub.add_response("terminate_session", {"SessionId": SESSION_ID}, {"SessionId": SESSION_ID})
    expect_tasks(ecs_stub, task())
    expect_sessions(ssm_stub, TARGET, SESSION_ID)  # ours, still terminating: not someone else's
    expect_scale(ecs_stub, 0)

    assert ui_tunnel.run("dev", tmp_path, profile="work", tools=world.tools(clients)) == 0
    assert world.connected == [(REGION, "work")]
    [(argv, env)] = world.plugin_calls
    assert argv == [
        "session-manager-plugin",
        "AWS_SSM_START_SESSION_RESPONSE",
        REGION,
        "StartSession",
        "work",
        json.dumps(start_session_request(TARGET, 8083, 8083)),
        SSM_ENDPOINT,
    ]
    assert json.loads(env["AWS_SSM_START_SESSION_RESPONSE"])["SessionId"] == SESSION_ID
    assert world.watched == world.opened == ["http://localhost:8083"]
    assert world.events == ["plugin", "watch cancelled"]
    assert "UI ready in 5 s." in world.said
    assert world.said[-1] == "UI stopped (desired count 0)."


def test_scale_down_is_skipped_while_another_session_is_active(
    aws: tuple[Aws, Stubber, Stubber], tmp_path: Path
) -> None:
    clients, ecs_stub, ssm_stub = aws
    world = World()
    ecs_stub.add_response("describe_services", service(1), SERVICES)  # a colleague's task: no scale-up
    expect_tasks(ecs_stub, task())
    expect_session_start(ssm_stub, local_port=9000)
    ssm_stub.add_response("terminate_session", {"SessionId": SESSION_ID}, {"SessionId": SESSION_ID})
    expect_tasks(ecs_stub, task())
    expect_sessions(ssm_stub, TARGET, "bob-99aa88bb77cc66dd5")

    tools = world.tools(clients)
    assert ui_tunnel.run("dev", tmp_path, port=9000, open_browser=False, tools=tools) == 0
    assert world.watched == [] and world.opened == []
    assert "UI ready in 0 s." in world.said
    assert world.said[-1] == "Leaving the UI running: 1 other session(s) open (bob-99aa88bb77cc66dd5)."


def test_plugin_failure_still_closes_the_session_and_reports_its_status(
    aws: tuple[Aws, Stubber, Stubber], tmp_path: Path
) -> None:
    clients, ecs_stub, ssm_stub = aws
    world = World(plugin_code=1)
    ecs_stub.add_response("describe_services", service(1), SERVICES)
    expect_tasks(ecs_stub, task())
    expect_session_start(ssm_stub)
    ssm_stub.add_response("terminate_session", {"SessionId": SESSION_ID}, {"SessionId": SESSION_ID})
    expect_tasks(ecs_stub, task())
    expect_sessions(ssm_stub, TARGET)
    expect_scale(ecs_stub, 0)
    assert ui_tunnel.run("dev", tmp_path, tools=world.tools(clients)) == 1
    assert world.said[-1] == "session-manager-plugin exited with status 1"


def test_a_task_that_never_gets_ready_is_stopped_again_when_we_started_it(
    aws: tuple[Aws, Stubber, Stubber], tmp_path: Path
) -> None:
    clients, ecs_stub, _ = aws
    world = World()
    ecs_stub.add_response("describe_services", service(0), SERVICES)
    expect_scale(ecs_stub, 1)
    for _ in range(2):
        expect_tasks(ecs_stub, task(status="PENDING", runtime_id=None, health=None, agent=None))
    expect_tasks(ecs_stub, task(status="PENDING", runtime_id=None, health=None, agent=None))  # release: no targets
    expect_scale(ecs_stub, 0)
    tools = world.tools(clients, ready_timeout=5, poll_interval=5)
    with pytest.raises(UiError, match="not ready after 5 s"):
        ui_tunnel.run("dev", tmp_path, tools=tools)
    assert world.plugin_calls == []
    assert world.said[-1] == "UI stopped (desired count 0)."


def test_aws_refusals_become_one_line_errors(aws: tuple[Aws, Stubber, Stubber], tmp_path: Path) -> None:
    clients, ecs_stub, _ = aws
    ecs_stub.add_client_error(
        "describe_services",
        service_error_code="AccessDeniedException",
        service_message="User: arn:aws:iam::123456789012:user/alice is not authorized to perform: ecs:DescribeServices",
        expected_params=SERVICES,
    )
    with pytest.raises(UiError, match=r"^An error occurred \(AccessDeniedException\).*ecs:DescribeServices$"):
        ui_tunnel.run("dev", tmp_path, tools=World().tools(clients))


# --- --stop -------------------------------------------------------------------------------------------------------


def test_stop_scales_to_zero_when_no_session_is_open(aws: tuple[Aws, Stubber, Stubber], tmp_path: Path) -> None:
    clients, ecs_stub, ssm_stub = aws
    world = World()
    ecs_stub.add_response("describe_services", service(1), SERVICES)
    expect_tasks(ecs_stub, task(), task(OTHER_TASK_ARN, runtime_id=None, health=None, agent=None))
    expect_sessions(ssm_stub, TARGET)
    expect_scale(ecs_stub, 0)
    assert ui_tunnel.run("dev", tmp_path, stop_ui=True, tools=world.tools(clients, which=lambda name: None)) == 0
    assert world.said == ["UI stopped (desired count 0)."]


def test_stop_says_so_and_leaves_the_task_while_a_session_is_open(
    aws: tuple[Aws, Stubber, Stubber], tmp_path: Path
) -> None:
    clients, ecs_stub, ssm_stub = aws
    world = World()
    ecs_stub.add_response("describe_services", service(1), SERVICES)
    expect_tasks(ecs_stub, task())
    expect_sessions(ssm_stub, TARGET, SESSION_ID)
    assert ui_tunnel.run("dev", tmp_path, stop_ui=True, tools=world.tools(clients)) == 1
    assert world.said == [f"Leaving the UI running: 1 other session(s) open ({SESSION_ID})."]


def test_stop_when_already_stopped_changes_nothing(aws: tuple[Aws, Stubber, Stubber], tmp_path: Path) -> None:
    clients, ecs_stub, _ = aws
    world = World()
    ecs_stub.add_response("describe_services", service(0), SERVICES)
    assert ui_tunnel.run("dev", tmp_path, stop_ui=True, tools=world.tools(clients)) == 0
    assert world.said == ["The UI is already stopped (desired count 0)."]


def test_stop_is_refused_for_a_ui_that_is_not_private(tmp_path: Path) -> None:
    world = World(json.dumps({**PRIVATE, "access": "public", "url": "https://ui.example.com"}))
    with pytest.raises(UiError, match="--stop is for the private UI"):
        ui_tunnel.run("dev", tmp_path, stop_ui=True, tools=world.tools(aws=None))


# --- the command line -------------------------------------------------------------------------------------------


def test_cli_without_pulumi_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["ui", "--stack", "dev", "--dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("error: the Pulumi CLI is not installed")


def test_cli_passes_its_options_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_run(stack: str, directory: Path, **kwargs: Any) -> int:
        calls.append((stack, directory, kwargs))
        return 0

    monkeypatch.setattr("metaflow_infra.__main__.run_ui", fake_run)
    argv = [
        "ui",
        "--stack",
        "prod",
        "--port",
        "9000",
        "--no-browser",
        "--stop",
        "--profile",
        "p",
        "--dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert calls == [("prod", tmp_path, {"port": 9000, "open_browser": False, "stop_ui": True, "profile": "p"})]


def test_uioutput_knows_private_access() -> None:
    assert parse_output(json.dumps(PRIVATE)) == UiOutput(
        "private", "http://localhost:8083", CLUSTER, SERVICE, "ui", 8083, REGION
    )
    assert UI.private


# --- the local helpers, on loopback -------------------------------------------------------------------------------


def test_a_listening_local_port_is_not_free() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not ui_tunnel.port_is_free(port)
    assert ui_tunnel.port_is_free(port)


def test_any_http_answer_counts_as_the_page_being_up() -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), NotFound) as server:
        thread = threading.Thread(target=server.handle_request, daemon=True)
        thread.start()
        assert ui_tunnel.page_answers(f"http://127.0.0.1:{server.server_address[1]}/")
        thread.join(timeout=5)
        port = server.server_address[1]
    assert not ui_tunnel.page_answers(f"http://127.0.0.1:{port}/")


def test_a_plugin_that_cannot_be_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UiError, match="could not run session-manager-plugin"):
        ui_tunnel.run_plugin([str(tmp_path / "session-manager-plugin")], {})
