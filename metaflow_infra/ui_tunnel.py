"""`python -m metaflow_infra ui`: open the stack's Metaflow UI in the browser.

It reads the stack's `ui` output (`pulumi stack output ui --json`). With `allowList` or `public` access
the UI has a URL: the command prints it and opens it. With `private` access (the default) the UI has no
ingress and, at rest, no task (desired count 0), so the command, with your usual AWS credentials:

1. checks that the Session Manager plugin is installed and that credentials exist (before any AWS call
   that could start something);
2. with metadata:scaleToZero, starts the metadata service through its waker (as a request would); sets the
   UI service's desired count to 1 if it is 0, and waits (at most 5 min) for a task whose `ui`
   container is RUNNING and HEALTHY and whose ECS Exec agent is RUNNING;
3. forwards the container's port to localhost through Session Manager — `ssm.start_session` with the
   `AWS-StartPortForwardingSession` document, then `session-manager-plugin` run the way the AWS CLI runs
   it — and opens `http://localhost:PORT` once the page answers;
4. when the plugin exits (Ctrl-C), terminates the session, then sets the desired count back to 0 unless
   another session is still open on the service's tasks: the last person out turns the light off.

If the laptop dies (or the terminal is closed) mid-session, step 4 never runs: the task keeps running,
and billing, until the next `ui` session ends, `python -m metaflow_infra ui --stop`, or
`aws ecs update-service --cluster CLUSTER --service SERVICE --desired-count 0`. The orphaned session stays
active until Session Manager's idle timeout ends it (20 min unless the account's preferences say
otherwise); until then the other ways out see it and leave the task running (`--stop` says so).

Known limit: a colleague whose `ui` is still waiting for the task (step 2) has no session yet; if the
last session closes at that moment the task is stopped under them, and their command fails: rerun it.

The caller needs, besides reading the Pulumi state: `lambda:InvokeFunction` on the waker (scale to zero only),
`ecs:DescribeServices` and `ecs:UpdateService` on the UI service, `ecs:ListTasks` (condition `ecs:cluster`),
`ecs:DescribeTasks` on the cluster's tasks, `ssm:StartSession` on those tasks and on the
`AWS-StartPortForwardingSession` document, `ssm:TerminateSession` on their own sessions and
`ssm:DescribeSessions`.

Every AWS call takes its client as a parameter, and the process, browser and clock calls come in a
`Tools`, so tests run on stubbed boto3 clients with no network.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

Client = Any
"""A boto3 client (`ecs` or `ssm`): botocore builds their methods at run time, so there is no static type."""

ACCESS_MODES = ("private", "allowList", "public")
DEFAULT_PORT = 8083
PLUGIN = "session-manager-plugin"
# Joined at run time: tests/conftest.py imports every `aws.NAME.` written in this package as a pulumi_aws module.
PLUGIN_INSTALL_URL = "https://docs.aws" + (
    ".amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
)
PULUMI_INSTALL_URL = "https://www.pulumi.com/docs/iac/download-install/"
DOCUMENT = "AWS-StartPortForwardingSession"
EXEC_AGENT = "ExecuteCommandAgent"
READY_TIMEOUT = 300.0
"""Seconds to wait for the task: a Fargate start of the ~330 MB (compressed) image takes 1–3 min."""
POLL_INTERVAL = 5.0
PAGE_TIMEOUT = 60.0
"""Seconds to wait for the page to answer through the tunnel before leaving the browser to the user."""
LAST_PLUGIN_WITHOUT_ENV = (1, 2, 497, 0)
"""Plugins newer than this read the start_session response from an environment variable (as the AWS CLI
passes it), which keeps the session token out of the process list."""
RESPONSE_ENV = "AWS_SSM_START_SESSION_RESPONSE"
UI_OFF = "the UI is off: `pulumi config set ui:enabled true` and `pulumi up`"
NO_CREDENTIALS = "no AWS credentials found: configure a profile (`aws configure`, `aws sso login`) or pass --profile"


class UiError(Exception):
    """A one-line message for the user; the command exits with status 2."""


@dataclass(frozen=True)
class UiOutput:
    """The stack's `ui` output."""

    access: str
    url: str
    cluster: str
    service: str
    container: str
    port: int
    region: str
    wake_function: str | None = None
    """With metadata:scaleToZero: the waker, which starts the metadata service (its migrator keeps the schema
    current for the UI, and its connection resumes the paused database)."""

    @property
    def private(self) -> bool:
        return self.access == "private"


@dataclass(frozen=True)
class TaskState:
    """One task of the UI service, as far as the tunnel cares."""

    task_arn: str
    runtime_id: str | None
    ready: bool
    summary: str

    def target(self, cluster: str) -> str | None:
        return None if self.runtime_id is None else session_target(cluster, self.task_arn, self.runtime_id)


@dataclass(frozen=True)
class Aws:
    ecs: Client
    ssm: Client
    region: str
    lambda_: Client = None


# --- the stack output -------------------------------------------------------------------------------------


def parse_output(text: str) -> UiOutput:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UiError(f"the stack's `ui` output is not JSON ({err.msg})") from None
    if value is None:
        raise UiError(UI_OFF)
    if not isinstance(value, dict):
        raise UiError("the stack's `ui` output is not a JSON object")
    missing = [key for key in ("access", "url", "cluster", "service", "port", "region") if key not in value]
    if missing:
        raise UiError(f"the stack's `ui` output lacks {', '.join(missing)}: run `pulumi up` with this version")
    if value["access"] not in ACCESS_MODES:
        raise UiError(f"the stack's `ui` output has an unknown access mode {value['access']!r}")
    try:
        port = int(value["port"])
    except (TypeError, ValueError):
        raise UiError(f"the stack's `ui` output has a port that is not a number: {value['port']!r}") from None
    return UiOutput(
        access=str(value["access"]),
        url=str(value["url"]),
        cluster=str(value["cluster"]),
        service=str(value["service"]),
        container=str(value.get("container", "ui")),
        port=port,
        region=str(value["region"]),
        wake_function=str(value["wakeFunction"]) if value.get("wakeFunction") else None,
    )


def _error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no message"])[0]


def read_output(stack: str, directory: Path, run: Callable[..., subprocess.CompletedProcess[str]]) -> UiOutput:
    command = ["pulumi", "stack", "output", "ui", "--json", "--stack", stack]
    try:
        done = run(command, cwd=directory, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UiError(f"the Pulumi CLI is not installed (or not on PATH): {PULUMI_INSTALL_URL}") from None
    if done.returncode != 0:
        if "does not have output property" in done.stderr:
            raise UiError(UI_OFF)
        raise UiError(f"`{' '.join(command)}` failed: {_error_line(done.stderr)}")
    return parse_output(done.stdout)


# --- pure pieces: tasks, targets, the plugin's command line ------------------------------------------------


def task_id(task_arn: str) -> str:
    """`arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID` (or the old `task/ID`) → `ID`."""
    return task_arn.rsplit("/", 1)[-1]


def session_target(cluster: str, task_arn: str, runtime_id: str) -> str:
    """Session Manager's name for one container of an ECS task."""
    return f"ecs:{cluster}_{task_id(task_arn)}_{runtime_id}"


def task_state(task: Mapping[str, Any], container_name: str) -> TaskState:
    """Ready: the task RUNNING, the container started (a runtime id), HEALTHY if it reports a health
    status at all (the UI's task definition has a health check, so UNKNOWN means "not checked yet"), and
    the ECS Exec agent RUNNING."""
    arn = str(task["taskArn"])
    status = task.get("lastStatus", "UNKNOWN")
    if status != "RUNNING":
        return TaskState(arn, None, False, f"task {status}")
    container = next((c for c in task.get("containers", []) if c.get("name") == container_name), None)
    if container is None:
        return TaskState(arn, None, False, f"the task has no container {container_name!r}")
    runtime_id = container.get("runtimeId")
    if not runtime_id:
        return TaskState(arn, None, False, "container starting")
    health = container.get("healthStatus")
    if health is not None and health != "HEALTHY":
        summary = "waiting for the first health check" if health == "UNKNOWN" else f"container {health}"
        return TaskState(arn, runtime_id, False, summary)
    agents = {agent.get("name"): agent.get("lastStatus") for agent in container.get("managedAgents", [])}
    if EXEC_AGENT not in agents:
        return TaskState(arn, runtime_id, False, "ECS Exec is off for this task (started before it was enabled?)")
    if agents[EXEC_AGENT] != "RUNNING":
        return TaskState(arn, runtime_id, False, f"ECS Exec agent {agents[EXEC_AGENT]}")
    return TaskState(arn, runtime_id, True, "ready")


def start_session_request(target: str, remote_port: int, local_port: int) -> dict[str, Any]:
    return {
        "Target": target,
        "DocumentName": DOCUMENT,
        "Parameters": {"portNumber": [str(remote_port)], "localPortNumber": [str(local_port)]},
    }


def parse_version(text: str) -> tuple[int, ...] | None:
    parts = "".join(text.split()).split(".")
    if not 1 <= len(parts) <= 4 or not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts) + (0,) * (4 - len(parts))


def plugin_invocation(
    response: Mapping[str, Any],
    region: str,
    profile: str | None,
    request: Mapping[str, Any],
    endpoint_url: str,
    plugin_version: str,
) -> tuple[list[str], dict[str, str]]:
    """The plugin's argv and extra environment, as `aws ssm start-session` builds them
    (awscli/customizations/sessionmanager.py): the session (id, token, stream URL), the region,
    `StartSession`, the profile ('' for the default chain), the request, the SSM endpoint. Plugins newer
    than 1.2.497.0 get the session through an environment variable named in its place."""
    session = json.dumps(
        {"SessionId": response["SessionId"], "TokenValue": response["TokenValue"], "StreamUrl": response["StreamUrl"]}
    )
    env: dict[str, str] = {}
    version = parse_version(plugin_version)
    if version is not None and version > LAST_PLUGIN_WITHOUT_ENV:
        env[RESPONSE_ENV] = session
        session = RESPONSE_ENV
    return [PLUGIN, session, region, "StartSession", profile or "", json.dumps(request), endpoint_url], env


# --- AWS calls (clients injected) -----------------------------------------------------------------------------


def desired_count(ecs: Client, ui: UiOutput) -> int:
    services = [
        s
        for s in ecs.describe_services(cluster=ui.cluster, services=[ui.service])["services"]
        if s["status"] == "ACTIVE"
    ]
    if not services:
        raise UiError(f"no ECS service {ui.service} in cluster {ui.cluster} ({ui.region}): is the stack deployed?")
    return int(services[0]["desiredCount"])


def scale_up_if_idle(ecs: Client, ui: UiOutput, say: Callable[[str], None]) -> bool:
    """Desired count 0 → 1; True if this call started the task."""
    if desired_count(ecs, ui) > 0:
        return False
    ecs.update_service(cluster=ui.cluster, service=ui.service, desiredCount=1)
    say("Starting the UI task (desired count 0 → 1).")
    return True


def wake_metadata_service(lambda_client: Client, function: str, say: Callable[[str], None]) -> None:
    """Start the scale-to-zero metadata service the way a request would (its waker; idempotent). The UI's own
    task starts meanwhile; a failure here is reported and the UI opened anyway."""
    try:
        answer = lambda_client.invoke(FunctionName=function, Payload=json.dumps({"action": "wake"}))
        state = json.loads(answer["Payload"].read())
    except (ClientError, BotoCoreError, ValueError) as err:
        say(f"warning: could not wake the metadata service ({_one_line(err)}); the UI may find its database asleep")
        return
    say("metadata service: already running" if state == "ready" else "metadata service: starting (scale to zero)")


def task_states(ecs: Client, ui: UiOutput) -> list[TaskState]:
    arns = ecs.list_tasks(cluster=ui.cluster, serviceName=ui.service, desiredStatus="RUNNING")["taskArns"]
    if not arns:
        return []
    return [task_state(task, ui.container) for task in ecs.describe_tasks(cluster=ui.cluster, tasks=arns)["tasks"]]


def wait_until_ready(
    ecs: Client,
    ui: UiOutput,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    say: Callable[[str], None],
    timeout: float = READY_TIMEOUT,
    interval: float = POLL_INTERVAL,
) -> TaskState:
    start = clock()
    last = ""
    while True:
        states = task_states(ecs, ui)
        ready = next((state for state in states if state.ready), None)
        if ready is not None:
            return ready
        summary = "; ".join(state.summary for state in states) or "waiting for ECS to place a task"
        elapsed = clock() - start
        if summary != last:
            say(f"  {elapsed:3.0f} s  {summary}")
            last = summary
        if elapsed >= timeout:
            raise UiError(
                f"the UI task was not ready after {timeout:.0f} s ({summary}); its events: `aws ecs describe-services "
                f"--region {ui.region} --cluster {ui.cluster} --services {ui.service} --query 'services[0].events[:5]'`"
            )
        sleep(interval)


def other_sessions(ecs: Client, ssm: Client, ui: UiOutput, own: str | None) -> list[str]:
    """Ids of the active sessions on the service's tasks, ours (`own`) left out."""
    found: list[str] = []
    for state in task_states(ecs, ui):
        target = state.target(ui.cluster)
        if target is None:
            continue
        sessions = ssm.describe_sessions(State="Active", Filters=[{"key": "Target", "value": target}])["Sessions"]
        found += [s["SessionId"] for s in sessions if s.get("SessionId") != own]
    return found


def release(ecs: Client, ssm: Client, ui: UiOutput, own: str | None, say: Callable[[str], None]) -> bool:
    """Desired count → 0 unless another session is open; True if it stopped the UI."""
    others = other_sessions(ecs, ssm, ui, own)
    if others:
        say(f"Leaving the UI running: {len(others)} other session(s) open ({', '.join(others)}).")
        return False
    ecs.update_service(cluster=ui.cluster, service=ui.service, desiredCount=0)
    say("UI stopped (desired count 0).")
    return True


def stop(ecs: Client, ssm: Client, ui: UiOutput, say: Callable[[str], None]) -> int:
    """`ui --stop`: 0 when the UI is stopped (or was), 1 when a session keeps it running."""
    if desired_count(ecs, ui) == 0:
        say("The UI is already stopped (desired count 0).")
        return 0
    return 0 if release(ecs, ssm, ui, None, say) else 1


def terminate(ssm: Client, session_id: str, say: Callable[[str], None]) -> None:
    try:
        ssm.terminate_session(SessionId=session_id)
    except (ClientError, BotoCoreError) as err:
        say(f"warning: could not terminate session {session_id}: {_one_line(err)}")


# --- the local side: credentials, port, plugin, browser ---------------------------------------------------


def connect_aws(region: str, profile: str | None) -> Aws:
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as err:
        raise UiError(str(err)) from None
    if session.get_credentials() is None:
        raise UiError(NO_CREDENTIALS)
    return Aws(ecs=session.client("ecs"), ssm=session.client("ssm"), region=region, lambda_=session.client("lambda"))


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the plugin's listener does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def installed_plugin_version() -> str:
    try:
        return subprocess.run([PLUGIN, "--version"], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """Ctrl-C reaches the plugin (same process group), which closes the session and exits; this process
    waits for it and cleans up instead of dying first (what the AWS CLI does)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_plugin(argv: list[str], env: Mapping[str, str]) -> int:
    try:
        process = subprocess.Popen(argv, env={**os.environ, **env})
    except OSError as err:
        raise UiError(f"could not run {PLUGIN}: {err}") from None
    with _interrupts_ignored():
        return process.wait()


def page_answers(url: str) -> bool:
    """Any HTTP answer counts: the tunnel and the backend are up."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, http.client.HTTPException):
        return False


def wait_for_page(
    url: str,
    answers: Callable[[str], bool],
    stopped: threading.Event,
    clock: Callable[[], float],
    timeout: float = PAGE_TIMEOUT,
    interval: float = 1.0,
) -> bool:
    start = clock()
    while not stopped.is_set():
        if answers(url):
            return True
        if clock() - start >= timeout:
            return False
        stopped.wait(interval)
    return False


def watch_page(url: str, open_url: Callable[[str], object], say: Callable[[str], None]) -> Callable[[], None]:
    """Open `url` in the browser once it answers, from a background thread; returns the cancel call."""
    stopped = threading.Event()

    def watch() -> None:
        if wait_for_page(url, page_answers, stopped, time.monotonic):
            open_url(url)
            say(f"Opened {url}")
        elif not stopped.is_set():
            say(f"{url} did not answer within {PAGE_TIMEOUT:.0f} s; open it once it does.")

    thread = threading.Thread(target=watch, name="ui-page-watch", daemon=True)
    thread.start()

    def cancel() -> None:
        stopped.set()
        thread.join(timeout=6)

    return cancel


@dataclass
class Tools:
    """Everything the command does to the world besides the boto3 calls (replaced in tests)."""

    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
    which: Callable[[str], str | None] = shutil.which
    connect: Callable[[str, str | None], Aws] = connect_aws
    port_free: Callable[[int], bool] = port_is_free
    plugin_version: Callable[[], str] = installed_plugin_version
    run_plugin: Callable[[list[str], Mapping[str, str]], int] = run_plugin
    open_url: Callable[[str], object] = webbrowser.open
    watch_page: Callable[[str, Callable[[str], object], Callable[[str], None]], Callable[[], None]] = watch_page
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    say: Callable[[str], None] = print
    ready_timeout: float = READY_TIMEOUT
    poll_interval: float = POLL_INTERVAL


# --- the command ----------------------------------------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def open_public(ui: UiOutput, open_browser: bool, tools: Tools) -> int:
    tools.say(f"Metaflow UI ({ui.access}): {ui.url}")
    if open_browser:
        tools.open_url(ui.url)
    return 0


def open_private(ui: UiOutput, local_port: int, profile: str | None, open_browser: bool, tools: Tools) -> int:
    if tools.which(PLUGIN) is None:
        raise UiError(f"the Session Manager plugin ({PLUGIN}) is not installed: {PLUGIN_INSTALL_URL}")
    if not tools.port_free(local_port):
        raise UiError(f"local port {local_port} is in use (another `ui` session?): pass --port with a free one")
    aws = tools.connect(ui.region, profile)
    ecs, ssm = aws.ecs, aws.ssm
    started = tools.clock()
    scaled_up = False
    session_id: str | None = None
    if ui.wake_function is not None and aws.lambda_ is not None:
        wake_metadata_service(aws.lambda_, ui.wake_function, tools.say)
    try:
        scaled_up = scale_up_if_idle(ecs, ui, tools.say)
        state = wait_until_ready(
            ecs,
            ui,
            clock=tools.clock,
            sleep=tools.sleep,
            say=tools.say,
            timeout=tools.ready_timeout,
            interval=tools.poll_interval,
        )
        tools.say(f"UI ready in {tools.clock() - started:.0f} s.")
        target = state.target(ui.cluster)
        assert target is not None  # a ready task has a runtime id
        request = start_session_request(target, ui.port, local_port)
        response = ssm.start_session(**request)
        session_id = str(response["SessionId"])
        argv, env = plugin_invocation(
            response, aws.region, profile, request, ssm.meta.endpoint_url, tools.plugin_version()
        )
        url = f"http://localhost:{local_port}"
        tools.say(f"Metaflow UI: {url} (Ctrl-C closes the tunnel; the last one out stops the task)")
        cancel = tools.watch_page(url, tools.open_url, tools.say) if open_browser else (lambda: None)
        try:
            code = tools.run_plugin(argv, env)
        finally:
            cancel()
    finally:
        if session_id is not None:
            terminate(ssm, session_id, tools.say)
        if session_id is not None or scaled_up:
            try:
                release(ecs, ssm, ui, session_id, tools.say)
            except (ClientError, BotoCoreError) as err:
                tools.say(
                    f"warning: could not stop the UI ({_one_line(err)}); `python -m metaflow_infra ui --stop` "
                    "stops it when no session is open"
                )
    # A plugin ended by Ctrl-C exits 0, 130 or -SIGINT; anything else is its own failure, already printed.
    if code not in (0, 130, -signal.SIGINT):
        tools.say(f"{PLUGIN} exited with status {code}")
        return 1
    return 0


def run(
    stack: str,
    directory: Path,
    *,
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    stop_ui: bool = False,
    profile: str | None = None,
    tools: Tools | None = None,
) -> int:
    """The `ui` subcommand. Raises UiError (one line for the user) on any failure it can explain."""
    tools = tools or Tools()
    if not 0 < port < 65536:
        raise UiError(f"--port {port} is not a TCP port")
    ui = read_output(stack, directory, tools.run)
    try:
        if stop_ui:
            if not ui.private:
                raise UiError(f"--stop is for the private UI; this stack's UI is {ui.access} and runs all the time")
            aws = tools.connect(ui.region, profile)
            return stop(aws.ecs, aws.ssm, ui, tools.say)
        if not ui.private:
            return open_public(ui, open_browser, tools)
        return open_private(ui, port, profile, open_browser, tools)
    except NoCredentialsError:
        raise UiError(NO_CREDENTIALS) from None
    except (ClientError, BotoCoreError) as err:
        raise UiError(_one_line(err)) from None
