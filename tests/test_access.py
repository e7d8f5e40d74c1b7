"""Access: the managed policy people attach to run flows on the stack, grounded in metaflow's own calls.

The Batch half is checked by driving metaflow's Batch client (`batch_client.py`, `batch.py`) against a
fake Batch that records every call with the resources IAM would authorize it on; the datastore half
by `test_policies.py`, which drives metaflow's S3 client the same way.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.session import get_session
from conftest import offline, policy_of
from parliament import analyze_policy_string

from metaflow_infra.offline import ACCOUNT_ID, OfflineRun
from metaflow_infra.policies import datastore_statements, user_policy

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # metaflow's vendored yaml imports PyYAML's old `_yaml`
    from metaflow.plugins.aws.batch import batch_client
    from metaflow.plugins.aws.batch.batch import Batch
    from metaflow.plugins.aws.batch.batch_client import BatchClient, BatchJob

POLICY = "aws:iam/policy:Policy"
REGION = "us-east-1"
BATCH = f"arn:aws:batch:{REGION}:{ACCOUNT_ID}"
QUEUE = f"{BATCH}:job-queue/metaflow-queue-0123456"
TASK_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/metaflow-batch-task-0123456"
EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/metaflow-batch-execution-0123456"
BUCKET = "arn:aws:s3:::metaflow-artifacts-0123456"


def policy_for(
    queues: tuple[str, ...] = (QUEUE,), roles: tuple[str, ...] = (TASK_ROLE,), partition: str = "aws"
) -> dict[str, Any]:
    return user_policy(
        partition=partition,
        region=REGION,
        account=ACCOUNT_ID,
        bucket_arn=BUCKET,
        job_queue_arns=queues,
        passable_role_arns=roles,
    )


def resources_of(statement: dict[str, Any]) -> list[str]:
    return [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]


def allows(policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    """IAM's answer for one action on one resource, for the features these policies use: Allow
    statements, exact actions, `*` wildcards in resources, StringEquals conditions."""
    for statement in policy["Statement"]:
        conditions = statement.get("Condition", {})
        assert set(conditions) <= {"StringEquals"}, "the evaluator knows StringEquals only"
        if (
            statement["Effect"] == "Allow"
            and action.lower() in (a.lower() for a in statement["Action"])
            and any(fnmatchcase(resource, pattern) for pattern in resources_of(statement))
            and all((context or {}).get(key) == value for key, value in conditions.get("StringEquals", {}).items())
        ):
            return True
    return False


# --- metaflow's Batch client against a recording Batch --------------------------------------------------------


class RecordingBatch:
    """Stands in for boto3's Batch client: answers like Batch for one queue on one compute environment,
    and records each call as IAM authorizes it, `(action, resource, condition context)`."""

    exceptions = type("Exceptions", (), {"ClientError": ClientError})

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.authorized: list[tuple[str, str, dict[str, str]]] = []
        self.operations: list[str] = []
        self.jobs: dict[str, dict[str, Any]] = {}

    def _call(self, operation: str, *resources: str, context: dict[str, str] | None = None) -> None:
        self.operations.append(operation)
        for resource in resources or ("*",):
            self.authorized.append((f"batch:{operation}", resource, context or {}))

    def describe_job_queues(self, **_: Any) -> dict[str, Any]:
        self._call("DescribeJobQueues")
        environment = f"{BATCH}:compute-environment/e"
        return {
            "jobQueues": [
                {
                    "jobQueueName": QUEUE.rsplit("/", 1)[1],
                    "jobQueueArn": QUEUE,
                    "state": "ENABLED",
                    "status": "VALID",
                    "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": environment}],
                }
            ]
        }

    def describe_compute_environments(self, **_: Any) -> dict[str, Any]:
        self._call("DescribeComputeEnvironments")
        return {"computeEnvironments": [{"computeResources": {"type": self.platform}}]}

    def describe_job_definitions(self, **_: Any) -> dict[str, Any]:
        self._call("DescribeJobDefinitions")
        return {"jobDefinitions": []}

    def register_job_definition(self, **definition: Any) -> dict[str, Any]:
        self._call("RegisterJobDefinition", f"{BATCH}:job-definition/{definition['jobDefinitionName']}")
        container = definition["containerProperties"]
        for role in (container["jobRoleArn"], container.get("executionRoleArn")):
            if role:  # the roles the definition carries are passed to the service receiving the call
                self.authorized.append(("iam:PassRole", role, {"iam:PassedToService": "batch.amazonaws.com"}))
        return {"jobDefinitionArn": f"{BATCH}:job-definition/{definition['jobDefinitionName']}:1"}

    def submit_job(self, **job: Any) -> dict[str, Any]:
        job_id = f"0000000{len(self.jobs)}-aaaa-bbbb-cccc-dddddddddddd"
        self._call("SubmitJob", job["jobQueue"], job["jobDefinition"], f"{BATCH}:job/{job_id}")
        if job.get("tags"):
            self.authorized.append(("batch:TagResource", f"{BATCH}:job/{job_id}", {}))
        self.jobs[job_id] = {
            "jobId": job_id,
            "jobName": job["jobName"],
            "jobQueue": job["jobQueue"],
            "status": "RUNNING",
            "createdAt": 1,
            "parameters": dict(job.get("parameters", {})),
            "container": {},
        }
        return {"jobId": job_id}

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        self._call("DescribeJobs")
        return {"jobs": [self.jobs[job_id] for job_id in jobs]}

    def list_jobs(self, **_: Any) -> dict[str, Any]:
        self._call("ListJobs")
        return {"jobSummaryList": [{"jobId": j["jobId"], "jobName": j["jobName"]} for j in self.jobs.values()]}

    def terminate_job(self, jobId: str, reason: str) -> dict[str, Any]:
        self._call("TerminateJob", f"{BATCH}:job/{jobId}")
        self.jobs[jobId].update(status="FAILED", stoppedAt=2)
        return {}

    def get_paginator(self, operation: str) -> Any:
        client = self

        class Paginator:
            def paginate(self, **params: Any) -> Iterator[dict[str, Any]]:
                yield getattr(client, operation)(**params)

        return Paginator()


class Clock:
    """batch_client's `time`: every reading is two seconds later, so its one-second polling throttle
    (`Throttle`, shared by every job) never spins."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        self.now += 2.0
        return self.now


def run_a_flow_step_the_way_metaflow_does(platform: str, execution_role: str | None) -> RecordingBatch:
    """`Batch.create_job` + `launch_job` (registering the job definition, submitting with tags), then
    `batch list` and `batch kill` (`Batch.list_jobs`, `Batch.kill_jobs`)."""
    fake = RecordingBatch(platform)
    client = BatchClient.__new__(BatchClient)
    client._client = fake
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_client, "time", Clock())
        job = (
            BatchJob(fake)
            .job_name("alice-HelloFlow-1-start-1-0")
            .job_queue(QUEUE)
            .command(["bash", "-c", "true"])
            .image("python:3.11")
            .iam_role(TASK_ROLE)
            .execution_role(execution_role)
            .cpu(1)
            .gpu(0)
            .memory(4096)
            .timeout_in_secs(3600)
            .job_def(
                "python:3.11",
                TASK_ROLE,
                QUEUE,
                execution_role,
                None,
                None,
                None,
                None,
                None,
                memory=4096,
                host_volumes=None,
                efs_volumes=None,
                use_tmpfs=False,
                tmpfs_tempdir=True,
                tmpfs_size=None,
                tmpfs_path="/metaflow_temp",
                num_parallel=0,
                ephemeral_storage=None,
                log_driver=None,
                log_options=None,
                privileged=False,
            )
            .task_id("1")
            .parameter("metaflow.user", "alice")
            .parameter("metaflow.flow_name", "HelloFlow")
            .parameter("metaflow.run_id", "1")
            .tag("app", "metaflow")
            .tag("metaflow:stack", "dev")
        )  # what METAFLOW_BATCH_EMIT_TAGS adds
        job.execute()
        batch = Batch.__new__(Batch)
        batch._client = client
        echoed: list[str] = []
        batch.list_jobs("HelloFlow", "1", "alice", lambda line, *_, **__: echoed.append(line))
        batch.kill_jobs("HelloFlow", "1", "alice", lambda line, *_, **__: echoed.append(line))
        assert any(line.startswith("Killing AWS Batch job") for line in echoed), echoed
    return fake


@pytest.mark.parametrize("platform, roles", [("SPOT", (TASK_ROLE,)), ("FARGATE", (TASK_ROLE, EXECUTION_ROLE))])
def test_every_batch_call_metaflow_makes_to_run_list_and_kill_a_step_is_allowed(
    platform: str, roles: tuple[str, ...]
) -> None:
    fake = run_a_flow_step_the_way_metaflow_does(platform, roles[1] if len(roles) > 1 else None)
    policy = policy_for(roles=roles)
    denied = [call for call in fake.authorized if not allows(policy, *call)]
    assert not denied
    # …and the policy grants no Batch or IAM action metaflow does not call.
    granted = {action for s in policy["Statement"] for action in s["Action"] if action.startswith(("batch:", "iam:"))}
    assert granted == {action for action, _, _ in fake.authorized}


def test_recorded_calls_are_real_batch_operations() -> None:
    """The fake's operation names are Batch's: the IAM action of each is `batch:<Operation>`."""
    fake = run_a_flow_step_the_way_metaflow_does("SPOT", None)
    assert set(fake.operations) <= set(get_session().get_service_model("batch").operation_names)


def test_only_metaflow_job_definitions_may_be_registered() -> None:
    policy = policy_for()
    assert allows(policy, "batch:RegisterJobDefinition", f"{BATCH}:job-definition/metaflow_0a1b2c")
    assert not allows(policy, "batch:RegisterJobDefinition", f"{BATCH}:job-definition/someone-elses")
    assert not allows(policy, "batch:DeregisterJobDefinition", f"{BATCH}:job-definition/metaflow_0a1b2c:1")


def test_jobs_go_only_to_this_stacks_queues() -> None:
    policy = policy_for(queues=(QUEUE, f"{BATCH}:job-queue/gpu"))
    for queue in (QUEUE, f"{BATCH}:job-queue/gpu"):
        assert allows(policy, "batch:SubmitJob", queue)
    assert not allows(policy, "batch:SubmitJob", f"{BATCH}:job-queue/another-teams")
    assert not allows(policy, "batch:SubmitJob", QUEUE.replace(REGION, "eu-west-1"))


def test_only_the_profiles_roles_may_be_passed_and_only_to_batch() -> None:
    policy = policy_for(roles=(TASK_ROLE, EXECUTION_ROLE))
    to_batch = {"iam:PassedToService": "batch.amazonaws.com"}
    assert all(allows(policy, "iam:PassRole", role, to_batch) for role in (TASK_ROLE, EXECUTION_ROLE))
    assert not allows(policy, "iam:PassRole", f"arn:aws:iam::{ACCOUNT_ID}:role/admin", to_batch)
    for service in ("ec2.amazonaws.com", "lambda.amazonaws.com", "ecs-tasks.amazonaws.com"):
        assert not allows(policy, "iam:PassRole", TASK_ROLE, {"iam:PassedToService": service})


def test_people_use_the_datastore_exactly_as_tasks_do() -> None:
    datastore = [s for s in policy_for()["Statement"] if any(a.startswith("s3:") for a in s["Action"])]
    assert datastore == datastore_statements(BUCKET)


def test_job_logs_are_readable_for_metaflow_jobs_only() -> None:
    policy = policy_for()
    group = f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/batch/job"
    assert allows(policy, "logs:GetLogEvents", f"{group}:log-stream:metaflow_0a1b2c/default/0123456789abcdef")
    assert not allows(policy, "logs:GetLogEvents", f"{group}:log-stream:payroll/default/0123456789abcdef")
    assert not any(a.startswith("logs:") and a != "logs:GetLogEvents" for s in policy["Statement"] for a in s["Action"])


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_user_policy_passes_parliament_in_every_partition(partition: str) -> None:
    document = json.dumps(
        policy_for(queues=(QUEUE, f"{BATCH}:job-queue/b"), roles=(TASK_ROLE, EXECUTION_ROLE), partition=partition)
    )
    assert [(f.issue, f.detail) for f in analyze_policy_string(document).findings] == []


# --- the declared component -----------------------------------------------------------------------------------


def test_the_user_policy_is_an_access_component_output(minimal: OfflineRun) -> None:
    policy = minimal.one(POLICY)
    assert minimal.component_of(policy).type == "metaflow:infra:Access"
    assert minimal.outputs["userPolicyArn"] == policy.state["arn"]


@pytest.mark.parametrize(
    "overrides, profile_keys",
    [
        ({}, ["METAFLOW_ECS_S3_ACCESS_IAM_ROLE"]),
        ({"compute:type": "fargate"}, ["METAFLOW_ECS_S3_ACCESS_IAM_ROLE", "METAFLOW_ECS_FARGATE_EXECUTION_ROLE"]),
    ],
)
def test_the_declared_policy_passes_exactly_the_roles_the_profile_names(
    overrides: dict[str, Any], profile_keys: list[str]
) -> None:
    run = offline("minimal", overrides)
    profile = run.outputs["metaflowProfile"]
    [passing] = [s for s in policy_of(run.one(POLICY).inputs)["Statement"] if s["Action"] == ["iam:PassRole"]]
    assert passing["Resource"] == [profile[key] for key in profile_keys]


def test_the_declared_policy_covers_this_stacks_queue_and_bucket(minimal: OfflineRun) -> None:
    policy = policy_of(minimal.one(POLICY).inputs)
    queue = minimal.outputs["jobQueueArn"]
    bucket = minimal.one("aws:s3/bucket:Bucket").state["arn"]
    assert allows(policy, "batch:SubmitJob", queue)
    assert allows(policy, "s3:PutObject", f"{bucket}/metaflow/HelloFlow/data/0a/0a1b")
    assert allows(policy, "s3:ListBucket", bucket)
    assert not allows(policy, "s3:GetObject", "arn:aws:s3:::another-bucket/key")
