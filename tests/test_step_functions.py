"""Step Functions (`stepFunctions:enabled`): the roles, the foreach table and the permissions that
`python flow.py step-functions create` and `@schedule` need, held to what metaflow itself does.

The judge is metaflow 2.19.39 run for real: its CLI deploys a scheduled foreach flow (Distributed Map,
execution logs), deploys it again without its schedule, triggers it, lists and terminates its runs and
deletes it, each command in a process of its own, against a fake AWS that answers like AWS and records every
call (`FAKE_AWS`). The calls are what people's policy must allow; the state machine metaflow compiles is what
the Step Functions role must allow; the target it gives its schedule is what the EventBridge role must allow;
metaflow's DynamoDB client is what the Batch task role must allow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from conftest import offline, policy_of
from parliament import analyze_policy_string
from test_access import allows
from test_policies import ACCEPTED_FINDINGS, actions_granted_on_every_resource, finding_action, resource_types_by_action
from test_profile import read_with_metaflow

from metaflow_infra.costs import USAGE_NOT_INCLUDED, estimate_monthly_cost
from metaflow_infra.offline import ACCOUNT_ID, OfflineRun
from metaflow_infra.settings import ConfigError, load_settings
from metaflow_infra.settings.models import LOG_RETENTION_DAYS
from metaflow_infra.step_functions import MAX_STATE_MACHINE_PREFIX, state_machine_prefix

ON = {"stepFunctions:enabled": True}
REGION = "us-east-1"
SFN = f"arn:aws:states:{REGION}:{ACCOUNT_ID}"
BATCH = f"arn:aws:batch:{REGION}:{ACCOUNT_ID}"
EVENTS = f"arn:aws:events:{REGION}:{ACCOUNT_ID}"
JOB = f"{BATCH}:job/0a1b2c3d-aaaa-bbbb-cccc-dddddddddddd"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
TABLE = "aws:dynamodb/table:Table"
LOG_DELIVERY = [
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
]
"""What AWS's Step Functions guide asks of the role for logging to CloudWatch Logs ("IAM policies for logging")."""


# --- metaflow's CLI against a recording AWS -------------------------------------------------------------------

FAKE_AWS = r'''
"""Runs scripts with every boto3 call answered here, as AWS would for a Step Functions deployment, and recorded
with its parameters. argv[1] is a JSON file of rounds, each a list of [name, the command whose AWS state it
starts from or null, argv, environment]; a command's state (state machines, rules, its calls) ends in <name>.json,
its production tokens in tokens/<name>, its output in <name>.out. Prints {name: exit status}."""
import datetime, functools, json, os, runpy, shutil, sys, traceback
import boto3, botocore.client, botocore.session
import metaflow.cli, metaflow.plugins.aws.step_functions.step_functions_cli

state = None
REGION, ACCOUNT = "us-east-1", "123456789012"
SFN, BATCH = f"arn:aws:states:{REGION}:{ACCOUNT}", f"arn:aws:batch:{REGION}:{ACCOUNT}"
NOW = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc)


def fail(client, operation, code, message):
    raise client.exceptions.from_code(code)({"Error": {"Code": code, "Message": message}}, operation)


def states(client, op, p):
    machines = state["machines"]
    if op == "ListStateMachines":
        return {"stateMachines": [{"name": n, "stateMachineArn": f"{SFN}:stateMachine:{n}", "type": "STANDARD",
                                   "creationDate": NOW} for n in machines]}
    if op == "CreateStateMachine":
        if p["name"] in machines:
            fail(client, op, "StateMachineAlreadyExists",
                 f"State Machine Already Exists: '{SFN}:stateMachine:{p['name']}'")
        machines[p["name"]] = {k: v for k, v in p.items() if k != "name"}
        return {"stateMachineArn": f"{SFN}:stateMachine:{p['name']}", "creationDate": NOW}
    name = p.get("stateMachineArn", "").rsplit(":", 1)[-1]
    if op == "UpdateStateMachine":
        machines[name].update({k: v for k, v in p.items() if k != "stateMachineArn"})
        return {"updateDate": NOW}
    if op == "DescribeStateMachine":
        machine = machines[name]
        return {"stateMachineArn": p["stateMachineArn"], "name": name, "definition": machine["definition"],
                "roleArn": machine["roleArn"], "type": "STANDARD", "creationDate": NOW}
    if op == "StartExecution":
        return {"executionArn": f"{SFN}:execution:{name}:run-1", "startDate": NOW}
    if op == "ListExecutions":
        return {"executions": [{"executionArn": f"{SFN}:execution:{name}:run-1", "name": "run-1",
                                "stateMachineArn": p["stateMachineArn"], "status": "RUNNING", "startDate": NOW}]}
    if op == "StopExecution":
        return {"stopDate": NOW}
    if op == "DeleteStateMachine":
        machines.pop(name)
        return {}


def events(client, op, p):
    rules = state["rules"]
    if op == "PutRule":
        rules[p["Name"]] = {"schedule": p.get("ScheduleExpression"), "targets": []}
        return {"RuleArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{p['Name']}"}
    name = p.get("Name") or p.get("Rule")
    if name not in rules:
        fail(client, op, "ResourceNotFoundException", f"Rule {name} does not exist.")
    if op == "PutTargets":
        rules[name]["targets"] = p["Targets"]
    elif op == "RemoveTargets":
        rules[name]["targets"] = []
    elif op == "DeleteRule":
        rules.pop(name)
    return {"FailedEntryCount": 0, "FailedEntries": []} if op.endswith("Targets") else {}


def batch(client, op, p):
    if op == "DescribeJobQueues":
        queue = p["jobQueues"][0]
        return {"jobQueues": [{"jobQueueName": queue.rsplit("/", 1)[1], "jobQueueArn": queue, "state": "ENABLED",
                               "status": "VALID", "priority": 1, "computeEnvironmentOrder": [
                                   {"order": 1, "computeEnvironment": f"{BATCH}:compute-environment/ce"}]}]}
    if op == "DescribeComputeEnvironments":
        return {"computeEnvironments": [{"computeEnvironmentName": "ce", "computeResources": {"type": "SPOT"},
                                         "computeEnvironmentArn": f"{BATCH}:compute-environment/ce"}]}
    if op == "DescribeJobDefinitions":
        return {"jobDefinitions": []}
    if op == "RegisterJobDefinition":
        name = p["jobDefinitionName"]
        return {"jobDefinitionName": name, "jobDefinitionArn": f"{BATCH}:job-definition/{name}:1", "revision": 1}


def s3(client, op, p):
    if op == "HeadObject":
        fail(client, op, "404", "Not Found")
    return {"ETag": '"0"'}


def dynamodb(client, op, p):
    return {"Item": {"parent_task_ids_for_foreach_join": {"SS": ["job-2"]}}} if op == "GetItem" else {}


SERVICES = {"stepfunctions": states, "events": events, "batch": batch, "s3": s3, "dynamodb": dynamodb}


def answer(self, operation, params):
    service = self.meta.service_model.service_name
    state["calls"].append([service, operation, params])
    response = SERVICES[service](self, operation, params)
    if response is None:
        raise NotImplementedError(f"the fake AWS does not answer {service} {operation}")
    return response


botocore.client.BaseClient._make_api_call = answer
# Each command runs in a process of its own, as `python flow.py ...` does, but forked from this one after metaflow,
# boto3 and the services' models are loaded: otherwise each loads them again (~1 s of CPU a command). Sessions
# share one model loader, as the clients of one session do (metaflow makes a session per client).
botocore.session.create_loader = functools.cache(botocore.session.create_loader)
for service in SERVICES:
    boto3.session.Session().client(service)


def run(name, start_from, argv, env):
    global state
    output = os.open(f"{name}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.environ.update(env)
    # The production token metaflow keeps on this machine: the command's own copy of the one it starts from
    # (commands of a round would otherwise write and read one file at once).
    os.environ["METAFLOW_TOKEN_HOME"] = os.path.abspath(f"tokens/{name}")
    if start_from:
        shutil.copytree(f"tokens/{start_from}", f"tokens/{name}")
    state = json.load(open(f"{start_from}.json")) if start_from else {"machines": {}, "rules": {}}
    state["calls"] = []
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    json.dump(state, open(f"{name}.json", "w"), default=str)
    sys.stdout.flush()
    sys.stderr.flush()
    return status


statuses = {}
for commands in json.load(open(sys.argv[1])):
    children = {}
    for name, *command in commands:
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            try:
                os._exit(run(name, *command))
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        children[child] = name
    for child, name in children.items():
        statuses[name] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
print(json.dumps(statuses))
'''

FOREACH_FLOW = """
import os

from metaflow import FlowSpec, schedule, step


# Deployed with a daily schedule, then again without one (as if the line were removed).
@schedule(daily=os.environ["DAILY"] == "yes")
class ForeachFlow(FlowSpec):
    @step
    def start(self):
        self.items = [1, 2, 3]
        self.next(self.square, foreach="items")

    @step
    def square(self):
        self.value = self.input**2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ForeachFlow()
"""

FOREACH_BOOKKEEPING = """
# What a foreach's steps do with the table, through metaflow's own client (dynamo_db_client.py), called as
# step_functions_decorator.py:428-445 and set_batch_environment.py:24 call it.
from metaflow.plugins.aws.step_functions.dynamo_db_client import DynamoDbClient

client = DynamoDbClient()
client.save_foreach_cardinality("job-1", 3, 1767225600)
client.save_parent_task_id_for_foreach_join("job-1", "job-2")
client.get_parent_task_ids_for_foreach_join("job-1")
"""

Call = tuple[str, str, dict[str, Any]]


@dataclass
class Recording:
    calls: list[Call]
    machines: dict[str, dict[str, Any]]
    rules: dict[str, dict[str, Any]]
    output: str


class MetaflowAgainstFakeAws:
    """A directory with the flows, the fake and the stack's profile; runs metaflow commands in rounds, a round's
    commands in parallel."""

    def __init__(self, home: Path, profile: dict[str, str]) -> None:
        self.home = home
        for name, text in (
            ("fake_aws.py", FAKE_AWS),
            ("foreach_flow.py", FOREACH_FLOW),
            ("bookkeeping.py", FOREACH_BOOKKEEPING),
        ):
            (home / name).write_text(text)
        (home / "config_sfn.json").write_text(json.dumps(profile))
        # PYTHONPYCACHEPREFIX, if set, stays: the commands read the bytecode the tests' processes wrote.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "AWS_"))}
        self.env.update(
            METAFLOW_HOME=str(home),
            METAFLOW_PROFILE="sfn",
            USERNAME="alice",
            AWS_DEFAULT_REGION=REGION,
            AWS_ACCESS_KEY_ID="offline",
            AWS_SECRET_ACCESS_KEY="offline",
        )

    def run(self, rounds: list[dict[str, tuple[str | None, list[str], dict[str, str]]]]) -> dict[str, Recording]:
        """Each round: name -> (the recording whose AWS state it starts from, or None; script and arguments;
        environment). A round starts once the one before has ended."""
        # Metaflow is loaded once, before any command's environment applies: one that set metaflow's config
        # (METAFLOW_*) would be silently ignored, so none may.
        for commands in rounds:
            for name, (_, _, env) in commands.items():
                assert not [key for key in env if key.startswith("METAFLOW_")], (name, env)
        (self.home / "commands.json").write_text(
            json.dumps([[[name, *command] for name, command in commands.items()] for commands in rounds])
        )
        driver = subprocess.Popen(
            [sys.executable, "fake_aws.py", "commands.json"],
            cwd=self.home,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a timeout ends the commands too
        )
        try:
            output, _ = driver.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            raise
        assert driver.returncode == 0, output
        statuses = json.loads(output.splitlines()[-1])
        recordings = {}
        for name in (name for commands in rounds for name in commands):
            output = (self.home / f"{name}.out").read_text()
            assert statuses[name] == 0, f"{name}: {output}"
            state = json.loads((self.home / f"{name}.json").read_text())
            calls = [(service, operation, params) for service, operation, params in state["calls"]]
            recordings[name] = Recording(calls, state["machines"], state["rules"], output)
        return recordings


@pytest.fixture(scope="module")
def run() -> OfflineRun:
    return offline("minimal", ON)


@pytest.fixture(scope="module")
def profile(run: OfflineRun) -> dict[str, str]:
    return run.outputs["metaflowProfile"]


@pytest.fixture(scope="module")
def metaflow(profile: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Recording]:
    """Every step-functions command, as people type them, against the stack's profile."""
    cli = MetaflowAgainstFakeAws(tmp_path_factory.mktemp("metaflow"), profile)
    sfn = ["foreach_flow.py", "--no-pylint", "step-functions"]
    create = [*sfn, "create", "--use-distributed-map", "--log-execution-history"]
    daily, unscheduled = {"DAILY": "yes"}, {"DAILY": "no"}
    return cli.run(
        [
            {"create": (None, create, daily), "bookkeeping": (None, ["bookkeeping.py"], {})},
            {
                "create-unscheduled": ("create", create, unscheduled),
                "trigger": ("create", [*sfn, "trigger"], daily),
                "list-runs": ("create", [*sfn, "list-runs"], daily),
                "terminate": ("create", [*sfn, "terminate", "sfn-run-1"], daily),
                "delete": ("create", [*sfn, "delete"], daily),
            },
        ]
    )


def user_call_authorizations(call: Call) -> list[tuple[str, str, dict[str, str]]]:
    """What IAM authorizes one recorded call on: (action, resource, condition context)."""
    service, operation, p = call
    if service == "stepfunctions":
        action = f"states:{operation}"
        if operation == "ListStateMachines":
            return [(action, "*", {})]
        if operation == "CreateStateMachine":
            passed = ("iam:PassRole", p["roleArn"], {"iam:PassedToService": "states.amazonaws.com"})
            return [(action, f"{SFN}:stateMachine:{p['name']}", {}), passed]
        if operation == "UpdateStateMachine":
            passed = ("iam:PassRole", p["roleArn"], {"iam:PassedToService": "states.amazonaws.com"})
            return [(action, p["stateMachineArn"], {}), passed]
        if operation == "StopExecution":
            return [(action, p["executionArn"], {})]
        return [(action, p["stateMachineArn"], {})]
    if service == "events":
        rule = f"{EVENTS}:rule/{p.get('Name') or p.get('Rule')}"
        passed = [
            ("iam:PassRole", target["RoleArn"], {"iam:PassedToService": "events.amazonaws.com"})
            for target in p.get("Targets", [])
            if "RoleArn" in target
        ]
        return [(f"events:{operation}", rule, {}), *passed]
    if service == "batch":
        action = f"batch:{operation}"
        if operation == "RegisterJobDefinition":
            role = p["containerProperties"]["jobRoleArn"]
            passed = ("iam:PassRole", role, {"iam:PassedToService": "batch.amazonaws.com"})
            return [(action, f"{BATCH}:job-definition/{p['jobDefinitionName']}", {}), passed]
        return [(action, "*", {})]
    if service == "s3":
        action = {"HeadObject": "s3:GetObject", "PutObject": "s3:PutObject", "GetObject": "s3:GetObject"}[operation]
        return [(action, f"arn:aws:s3:::{p['Bucket']}/{p['Key']}", {})]
    raise AssertionError(f"the judge does not know {service} {operation}")


PEOPLE_COMMANDS = ("create", "create-unscheduled", "trigger", "list-runs", "terminate", "delete")


def test_metaflow_deploys_reschedules_runs_and_deletes_against_the_fake(metaflow: dict[str, Recording]) -> None:
    """The judge ran what people run: each command reached AWS as metaflow does it."""
    operations = {name: [op for _, op, _ in metaflow[name].calls] for name in PEOPLE_COMMANDS}
    assert "CreateStateMachine" in operations["create"] and "PutTargets" in operations["create"]
    # The commands after it hold the production token the first deployment stored on this machine.
    assert "first time you are deploying" in metaflow["create"].output
    assert "first time you are deploying" not in metaflow["create-unscheduled"].output
    # Deploying it again updates it; without a schedule, disables its rule (every create without one calls
    # DisableRule, whether or not the rule exists).
    assert {"UpdateStateMachine", "DisableRule"} <= set(operations["create-unscheduled"])
    assert "StartExecution" in operations["trigger"] and "ListExecutions" in operations["list-runs"]
    assert "StopExecution" in operations["terminate"]
    assert {"RemoveTargets", "DeleteRule", "DeleteStateMachine"} <= set(operations["delete"])
    assert not metaflow["delete"].machines and not metaflow["delete"].rules


def user_policy_of(run: OfflineRun) -> dict[str, Any]:
    return policy_of(run.one("aws:iam/policy:Policy").inputs)


def test_people_may_make_every_call_the_step_functions_commands_make(
    run: OfflineRun, metaflow: dict[str, Recording]
) -> None:
    policy = user_policy_of(run)
    recorded = [
        auth for name in PEOPLE_COMMANDS for call in metaflow[name].calls for auth in user_call_authorizations(call)
    ]
    denied = [auth for auth in recorded if not allows(policy, *auth)]
    assert not denied
    # …and nothing on Step Functions, EventBridge or DynamoDB that metaflow does not call.
    granted = {
        action
        for statement in policy["Statement"]
        for action in statement["Action"]
        if action.startswith(("states:", "events:", "dynamodb:"))
    }
    assert granted == {action for action, _, _ in recorded if action.startswith(("states:", "events:", "dynamodb:"))}


def test_people_deploy_run_and_schedule_this_stacks_state_machines_only(
    run: OfflineRun, profile: dict[str, str]
) -> None:
    policy = user_policy_of(run)
    prefix = profile["METAFLOW_SFN_STATE_MACHINE_PREFIX"]
    for other in ("metaflow-dev2", "metaflow-other", "someone"):
        assert not allows(policy, "states:CreateStateMachine", f"{SFN}:stateMachine:{other}_Flow")
        assert not allows(policy, "states:StartExecution", f"{SFN}:stateMachine:{other}_Flow")
        assert not allows(policy, "states:StopExecution", f"{SFN}:execution:{other}_Flow:run")
        assert not allows(policy, "events:PutTargets", f"{EVENTS}:rule/{other}_Flow")
    assert allows(policy, "states:CreateStateMachine", f"{SFN}:stateMachine:{prefix}_Flow")
    for role, service in (("METAFLOW_SFN_IAM_ROLE", "events"), ("METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE", "states")):
        # each role only to its own service
        assert not allows(policy, "iam:PassRole", profile[role], {"iam:PassedToService": f"{service}.amazonaws.com"})
    assert not any(a.startswith("dynamodb:") for s in policy["Statement"] for a in s["Action"])


# --- the state machine metaflow compiles, and the roles it runs with --------------------------------------------


def walk(states: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every state, into Parallel branches and Map iterators."""
    found = []
    for name, state in states.items():
        found.append((name, state))
        for branch in state.get("Branches", []):
            found += walk(branch["States"])
        for key in ("Iterator", "ItemProcessor"):
            if key in state:
                found += walk(state[key]["States"])
    return found


def state_machine_needs(name: str, machine: dict[str, Any]) -> list[tuple[str, str]]:
    """What Step Functions does, as the state machine's role, to run `machine` (AWS's Step Functions guide:
    "IAM policies for AWS Batch", "IAM policies for using Distributed Map states", "IAM policies for ResultWriter",
    "Using CloudWatch Logs to log execution history")."""
    definition = json.loads(machine["definition"])
    needs: list[tuple[str, str]] = []
    results: list[str] = []
    for state_name, state in walk(definition["States"]):
        resource, parameters = state.get("Resource", ""), state.get("Parameters", {})
        if resource.endswith(":states:::batch:submitJob.sync"):
            needs += [("batch:SubmitJob", arn) for arn in (parameters["JobQueue"], parameters["JobDefinition"], JOB)]
            needs += [("batch:TagResource", JOB)] if "Tags" in parameters else []
            needs += [("batch:DescribeJobs", "*"), ("batch:TerminateJob", JOB)]
            needs += [
                (action, f"{EVENTS}:rule/StepFunctionsGetEventsForBatchJobsRule")
                for action in ("events:PutTargets", "events:PutRule", "events:DescribeRule")
            ]
        elif resource.endswith(":states:::dynamodb:getItem"):
            needs.append(
                ("dynamodb:GetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{parameters['TableName']}")
            )
        elif resource.endswith((":states:::aws-sdk:s3:getObject",)):
            # Reads back the ResultWriter's manifest of the map before it.
            needs += [("s3:GetObject", f"{results[-1]}/0a1b/manifest.json")]
        elif state["Type"] == "Task":
            raise AssertionError(f"the judge does not know {resource} ({state_name})")
        processor = state.get("ItemProcessor") or state.get("Iterator") or {}
        if processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED":
            assert processor["ProcessorConfig"]["ExecutionType"] == "STANDARD"
            needs += [("states:StartExecution", f"{SFN}:stateMachine:{name}")]
            child = f"{SFN}:execution:{name}/{state_name}:0a1b2c3d"
            needs += [("states:DescribeExecution", child), ("states:StopExecution", child)]
        if "ResultWriter" in state:
            writer = state["ResultWriter"]
            assert writer["Resource"].endswith(":states:::s3:putObject")
            location = f"arn:aws:s3:::{writer['Parameters']['Bucket']}/{writer['Parameters']['Prefix']}"
            results.append(location)
            needs += [
                (action, f"{location}/0a1b/SUCCEEDED_0.json")
                for action in ("s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload")
            ]
        if "ItemReader" in state:
            assert state["ItemReader"]["Resource"].endswith(":states:::s3:getObject")
            needs += [("s3:GetObject", f"{results[-1]}/0a1b/SUCCEEDED_0.json")]  # the results written above
    if machine["loggingConfiguration"]["level"] != "OFF":
        needs += [(action, "*") for action in LOG_DELIVERY]
    return needs


def role_policy(run: OfflineRun, name: str) -> dict[str, Any]:
    [policy] = [p for p in run.of_type(ROLE_POLICY) if p.name == name]
    return policy_of(policy.inputs)


def role(run: OfflineRun, name: str) -> dict[str, Any]:
    [found] = [r for r in run.of_type("aws:iam/role:Role") if r.name == name]
    return found.state


def test_the_state_machine_role_allows_all_that_metaflows_state_machine_does(
    run: OfflineRun, metaflow: dict[str, Recording], profile: dict[str, str]
) -> None:
    [(name, machine)] = metaflow["create"].machines.items()
    assert name.startswith(f"{profile['METAFLOW_SFN_STATE_MACHINE_PREFIX']}_")
    assert machine["roleArn"] == profile["METAFLOW_SFN_IAM_ROLE"] == role(run, "metaflow-sfn")["arn"]
    policy = role_policy(run, "metaflow-sfn")
    needs = state_machine_needs(name, machine)
    actions = {action for action, _ in needs}
    # The judge saw every kind of state this flow compiles to: steps, the foreach table, a Distributed Map.
    assert {
        "batch:SubmitJob",
        "dynamodb:GetItem",
        "states:StartExecution",
        "s3:PutObject",
        "logs:CreateLogDelivery",
    } <= actions
    assert [need for need in needs if not allows(policy, *need)] == []
    # …and the role may do nothing else.
    assert {a for s in policy["Statement"] for a in s["Action"]} == actions


def test_the_state_machine_role_reaches_nothing_but_this_stack(run: OfflineRun, profile: dict[str, str]) -> None:
    policy = role_policy(run, "metaflow-sfn")
    bucket = run.one("aws:s3/bucket:Bucket").state["bucket"]
    table = run.one(TABLE).state["name"]
    assert not allows(policy, "batch:SubmitJob", f"{BATCH}:job-queue/another-teams-queue")
    assert not allows(policy, "batch:SubmitJob", f"{BATCH}:job-definition/not-metaflows:1")
    assert not allows(policy, "s3:GetObject", "arn:aws:s3:::another-bucket/sfn-distributed-map/x")
    assert not allows(policy, "s3:GetObject", f"arn:aws:s3:::{bucket}/metaflow/Flow/data/0a/0a1b")  # artifacts
    assert not allows(policy, "dynamodb:GetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/another-table")
    assert not allows(policy, "dynamodb:PutItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table}")
    assert not allows(policy, "states:StartExecution", f"{SFN}:stateMachine:metaflow-dev2_Flow")
    assert not allows(policy, "states:StopExecution", f"{SFN}:execution:someone-else_Flow:run")
    assert not allows(policy, "iam:PassRole", profile["METAFLOW_ECS_S3_ACCESS_IAM_ROLE"])


def test_the_scheduler_role_starts_this_stacks_state_machines_only(
    run: OfflineRun, metaflow: dict[str, Recording], profile: dict[str, str]
) -> None:
    [scheduled] = metaflow["create"].rules.values()
    [target] = scheduled["targets"]
    assert (
        target["RoleArn"]
        == profile["METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE"]
        == role(run, "metaflow-sfn-scheduler")["arn"]
    )
    policy = role_policy(run, "metaflow-sfn-scheduler")
    assert allows(policy, "states:StartExecution", target["Arn"])
    for other in ("metaflow-dev2_ForeachFlow", "metaflow-de_ForeachFlow", "prod_ForeachFlow"):
        assert not allows(policy, "states:StartExecution", f"{SFN}:stateMachine:{other}")
    assert [a for s in policy["Statement"] for a in s["Action"]] == ["states:StartExecution"]


def test_each_role_is_trusted_by_its_service_on_this_accounts_behalf_only(run: OfflineRun) -> None:
    for name, service in (("metaflow-sfn", "states.amazonaws.com"), ("metaflow-sfn-scheduler", "events.amazonaws.com")):
        [statement] = json.loads(role(run, name)["assumeRolePolicy"])["Statement"]
        assert statement["Principal"] == {"Service": service} and statement["Action"] == "sts:AssumeRole"
        assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}


def test_batch_tasks_keep_foreach_bookkeeping_in_this_table_and_no_other(
    run: OfflineRun, metaflow: dict[str, Recording], profile: dict[str, str]
) -> None:
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{profile['METAFLOW_SFN_DYNAMO_DB_TABLE']}"
    calls = metaflow["bookkeeping"].calls
    assert {(service, params["TableName"]) for service, _, params in calls} == {
        ("dynamodb", profile["METAFLOW_SFN_DYNAMO_DB_TABLE"])
    }
    [attached] = [p for p in run.of_type(ROLE_POLICY) if p.name == "metaflow-batch-task-sfn-foreach"]
    task_role = profile["METAFLOW_ECS_S3_ACCESS_IAM_ROLE"]
    assert attached.inputs["role"] == task_role.rsplit("/", 1)[1] == role(run, "metaflow-batch-task")["name"]
    policy = policy_of(attached.inputs)
    assert all(allows(policy, f"dynamodb:{operation}", table) for _, operation, _ in calls)
    assert {a for s in policy["Statement"] for a in s["Action"]} == {f"dynamodb:{op}" for _, op, _ in calls}
    assert not allows(policy, "dynamodb:GetItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/another-table")
    # The state machine tells the foreach's tasks the same table (step_functions.py:850).
    definition = json.loads(metaflow["create"].machines["metaflow-dev_ForeachFlow"]["definition"])
    environment = definition["States"]["start"]["Parameters"]["ContainerOverrides"]["Environment"]
    assert {"Name": "METAFLOW_SFN_DYNAMO_DB_TABLE", "Value": profile["METAFLOW_SFN_DYNAMO_DB_TABLE"]} in environment


# --- the foreach table -------------------------------------------------------------------------------------------


def test_the_foreach_table_has_metaflows_schema(run: OfflineRun, metaflow: dict[str, Recording]) -> None:
    table = run.one(TABLE).inputs
    assert table["hashKey"] == "pathspec" and "rangeKey" not in table
    assert table["attributes"] == [{"name": "pathspec", "type": "S"}]
    assert table["ttl"] == {"attributeName": "ttl", "enabled": True}
    assert table["billingMode"] == "PAY_PER_REQUEST" and "readCapacity" not in table
    assert table["pointInTimeRecovery"] == {"enabled": False}
    assert "serverSideEncryption" not in table  # DynamoDB's default: encrypted with an AWS owned key
    # Metaflow's items: keyed by a string `pathspec`, expiring at the number in `ttl` (epoch seconds).
    [put] = [params for _, op, params in metaflow["bookkeeping"].calls if op == "PutItem"]
    keys = [params["Key"] for _, op, params in metaflow["bookkeeping"].calls if "Key" in params]
    assert set(put["Item"]["pathspec"]) == {"S"} and set(put["Item"]["ttl"]) == {"N"}
    assert all(set(key) == {"pathspec"} and set(key["pathspec"]) == {"S"} for key in keys)
    definition = json.loads(metaflow["create"].machines["metaflow-dev_ForeachFlow"]["definition"])
    [get] = [s["Parameters"] for _, s in walk(definition["States"]) if s.get("Resource", "").endswith("getItem")]
    assert list(get["Key"]) == ["pathspec"] and list(get["Key"]["pathspec"]) == ["S.$"]


def test_the_table_is_what_botocores_dynamodb_model_accepts(run: OfflineRun) -> None:
    model = botocore.session.get_session().get_service_model("dynamodb")
    table = run.one(TABLE).inputs
    assert table["billingMode"] in model.shape_for("BillingMode").enum
    assert "HASH" in model.shape_for("KeyType").enum  # hashKey: the provider sends it as KeyType HASH
    assert {a["type"] for a in table["attributes"]} <= set(model.shape_for("ScalarAttributeType").enum)
    name = model.shape_for("TableName").metadata
    assert name["min"] <= len(table["name"]) <= name["max"] and re.fullmatch(name["pattern"], table["name"])


def test_the_table_keeps_its_name_whatever_the_prefix_becomes(run: OfflineRun) -> None:
    """Deployed state machines hold the table's name: a new prefix must not replace it."""
    assert "name" in run.one(TABLE).ignore_changes


# --- the profile ------------------------------------------------------------------------------------------------


def test_metaflow_reads_every_step_functions_key_of_the_profile(
    run: OfflineRun, profile: dict[str, str], tmp_path: Path
) -> None:
    assert read_with_metaflow(profile, tmp_path) == profile
    group = run.one("aws:cloudwatch/logGroup:LogGroup")
    bucket = run.one("aws:s3/bucket:Bucket").state["bucket"]
    assert {key: value for key, value in profile.items() if "SFN" in key} == {
        "METAFLOW_SFN_IAM_ROLE": role(run, "metaflow-sfn")["arn"],
        "METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE": role(run, "metaflow-sfn-scheduler")["arn"],
        "METAFLOW_SFN_DYNAMO_DB_TABLE": run.one(TABLE).state["name"],
        "METAFLOW_SFN_STATE_MACHINE_PREFIX": "metaflow-dev",
        "METAFLOW_SFN_EXECUTION_LOG_GROUP_ARN": f"{group.state['arn']}:*",
        "METAFLOW_SFN_S3_DISTRIBUTED_MAP_OUTPUT_PATH": f"s3://{bucket}/sfn-distributed-map",
    }


def test_the_state_machine_logs_to_the_stacks_log_group_for_a_while(
    run: OfflineRun, metaflow: dict[str, Recording], profile: dict[str, str]
) -> None:
    group = run.one("aws:cloudwatch/logGroup:LogGroup")
    assert group.inputs["retentionInDays"] == 14 and group.inputs["name"].startswith("/aws/vendedlogs/states/")
    [(_, machine)] = metaflow["create"].machines.items()
    [destination] = machine["loggingConfiguration"]["destinations"]
    # Step Functions wants the log group's ARN with its `:*` (the provider's `arn` has none).
    assert destination["cloudWatchLogsLogGroup"]["logGroupArn"] == profile["METAFLOW_SFN_EXECUTION_LOG_GROUP_ARN"]
    assert profile["METAFLOW_SFN_EXECUTION_LOG_GROUP_ARN"].endswith(f"log-group:{group.inputs['name']}:*")


def test_a_distributed_map_writes_its_results_where_the_role_may_write(
    metaflow: dict[str, Recording], profile: dict[str, str]
) -> None:
    [(_, machine)] = metaflow["create"].machines.items()
    [writer] = [s["ResultWriter"] for _, s in walk(json.loads(machine["definition"])["States"]) if "ResultWriter" in s]
    assert (
        f"s3://{writer['Parameters']['Bucket']}/{writer['Parameters']['Prefix']}"
        == profile["METAFLOW_SFN_S3_DISTRIBUTED_MAP_OUTPUT_PATH"]
    )


# --- one stack's state machines apart from another's ---------------------------------------------------------------

STACKS = ["dev", "dev2", "dev-2", "dev_2", "dev.2", "Dev", "prod", "a" * 100, "a" * 99 + "b", "team_ml.prod-eu-west-1"]


@pytest.mark.parametrize("prefix", ["metaflow", "m", "a" * 20])
def test_every_stack_gets_its_own_state_machine_prefix(prefix: str) -> None:
    prefixes = [state_machine_prefix(prefix, stack) for stack in STACKS]
    assert len(set(prefixes)) == len(STACKS)
    for value in prefixes:
        assert re.fullmatch(r"[A-Za-z0-9-]+", value) and len(value) <= MAX_STATE_MACHINE_PREFIX
    # `<p>_*` (what the policies grant) never covers another stack's names: no prefix holds the `_` after it.
    for mine in prefixes:
        assert not [other for other in prefixes if other != mine and f"{other}_".startswith(f"{mine}_")]
    assert state_machine_prefix(prefix, "dev") == f"{prefix}-dev"


def test_metaflows_own_name_cutting_keeps_the_prefix() -> None:
    """Step Functions allows 80 characters; metaflow cuts @project names at 60 and EventBridge rule names
    at 47 (plus a hash): the longest prefix survives both, with room for a 47-character flow name."""
    from metaflow.plugins.aws.step_functions import step_functions_cli
    from metaflow.plugins.aws.step_functions.event_bridge_client import format as rule_name

    prefix = state_machine_prefix("a" * 20, "b" * 100)
    assert len(prefix) == MAX_STATE_MACHINE_PREFIX
    assert len(f"{prefix}_{'F' * 47}") == 80
    assert rule_name(f"{prefix}_{'F' * 47}").startswith(f"{prefix}_")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step_functions_cli, "SFN_STATE_MACHINE_PREFIX", prefix)
        project = {"project_name": "churn"}
        patch.setattr(
            step_functions_cli,
            "current",
            SimpleNamespace(get=project.get, project_flow_name="churn.prod." + "F" * 60, branch_name="prod"),
        )
        name, _, is_project = step_functions_cli.resolve_state_machine_name(SimpleNamespace(), None)
    assert is_project and len(name) <= 80 and name.startswith(f"{prefix}_")
    assert rule_name(name).startswith(f"{prefix}_")


# --- settings, presets, parliament, cost ----------------------------------------------------------------------------


def test_on_in_production_only(minimal: OfflineRun) -> None:
    raw = {"aws:region": REGION}
    for preset, enabled in (("minimal", False), ("dev", False), ("production", True)):
        settings = load_settings({**raw, "metaflow:preset": preset}, stack="dev", check_availability=False)
        assert settings.step_functions.enabled is enabled
    assert not [r for r in minimal.resources if "sfn" in r.name or r.type.endswith("StepFunctions")]


def test_log_retention_is_one_cloudwatch_keeps_and_only_set_with_step_functions() -> None:
    documented = botocore.session.get_session().get_service_model("logs").shape_for("Days").documentation
    possible = documented.split("Possible values are:")[1].split("</p>")[0]
    assert tuple(int(days) for days in re.findall(r"\d+", possible)) == LOG_RETENTION_DAYS
    raw = {"aws:region": REGION, "metaflow:preset": "minimal", **{k: json.dumps(v) for k, v in ON.items()}}
    assert (
        load_settings({**raw, "stepFunctions:logRetentionDays": "90"}, stack="dev").step_functions.log_retention_days
        == 90
    )
    for value in ("10", "0", "forever"):
        with pytest.raises(ConfigError, match="stepFunctions:logRetentionDays"):
            load_settings({**raw, "stepFunctions:logRetentionDays": value}, stack="dev")
    with pytest.raises(ConfigError, match="stepFunctions:logRetentionDays has no effect while stepFunctions:enabled"):
        load_settings({"aws:region": REGION, "stepFunctions:logRetentionDays": "90"}, stack="dev")


def test_every_document_passes_parliament_and_stars_only_what_aws_cannot_scope(run: OfflineRun) -> None:
    documents = {p.name: p.inputs["policy"] for p in run.of_type(ROLE_POLICY)}
    documents["user"] = run.one("aws:iam/policy:Policy").inputs["policy"]
    for name, document in documents.items():
        for finding in analyze_policy_string(document).findings:
            detail = finding_action(finding.detail)
            assert (finding.issue, detail) in ACCEPTED_FINDINGS, (name, finding.issue, finding.detail)
        for action in actions_granted_on_every_resource(json.loads(document)):
            assert resource_types_by_action()[action.lower()] == [], f"{name} allows {action} on * but it can be scoped"


def test_nothing_of_it_bills_while_idle(run: OfflineRun) -> None:
    """On-demand DynamoDB, roles, an empty log group and rules cost nothing at rest; their use is listed."""
    without = load_settings({"aws:region": REGION, "metaflow:preset": "minimal"}, stack="dev")
    assert estimate_monthly_cost(run.settings).lines == estimate_monthly_cost(without).lines == []
    assert any("Step Functions" in item and "DynamoDB" in item for item in USAGE_NOT_INCLUDED)
