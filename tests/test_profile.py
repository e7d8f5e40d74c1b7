"""The Metaflow profile: the real `metaflow` package reads every key, with the values we wrote."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import offline

from metaflow_infra.offline import OfflineRun
from metaflow_infra.plan import masked_profile
from metaflow_infra.profile import (
    SECRET_KEYS,
    MetadataEndpoint,
    ProfileInputs,
    StepFunctionsProfile,
    metaflow_profile,
)

READ_BACK = """
import json, sys
from metaflow import metaflow_config as config
keys = json.loads(sys.argv[1])
values = {key: getattr(config, key.removeprefix("METAFLOW_"), None) for key in keys}
# Metaflow parses numbers, booleans and JSON: print them back the way the profile writes them.
print(json.dumps({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in values.items()}))
"""


def read_with_metaflow(profile: dict[str, str], home: Path, name: str = "dev") -> dict[str, object]:
    """Write the profile where Metaflow looks for it and read it back through metaflow_config."""
    (home / f"config_{name}.json").write_text(json.dumps(profile))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env.update(METAFLOW_HOME=str(home), METAFLOW_PROFILE=name, USERNAME="tester")
    result = subprocess.run(
        [sys.executable, "-c", READ_BACK, json.dumps(list(profile))],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=home,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def metaflow_reads(key: str) -> bool:
    from metaflow import metaflow_config

    return hasattr(metaflow_config, key.removeprefix("METAFLOW_"))


FULL = ProfileInputs(
    bucket_name="b",
    job_queue_arn="arn:aws:batch:us-east-1:1:job-queue/q",
    task_role_arn="arn:aws:iam::1:role/t",
    fargate_execution_role_arn="arn:aws:iam::1:role/e",
    metadata=MetadataEndpoint(
        url="https://x.execute-api.us-east-1.amazonaws.com", internal_url="http://svc:8080", auth_key="k"
    ),
)


@pytest.mark.parametrize("inputs", [FULL, ProfileInputs("b", "q", "r")], ids=["every-feature", "minimal"])
def test_every_profile_key_is_one_metaflow_reads(inputs: ProfileInputs) -> None:
    profile = metaflow_profile(inputs)
    assert all(key.startswith("METAFLOW_") for key in profile)
    assert [key for key in profile if not metaflow_reads(key)] == []


def test_the_judge_would_catch_a_misspelt_key() -> None:
    assert not metaflow_reads("METAFLOW_DATATOOLS_SYSROOT_S3")


def test_minimal_profile_is_read_back_by_metaflow(minimal: OfflineRun, tmp_path: Path) -> None:
    profile = minimal.outputs["metaflowProfile"]
    assert read_with_metaflow(profile, tmp_path) == profile


def test_minimal_profile_points_at_the_declared_resources(minimal: OfflineRun) -> None:
    bucket = minimal.one("aws:s3/bucket:Bucket").state["bucket"]
    [task_role] = [r for r in minimal.of_type("aws:iam/role:Role") if r.name.endswith("batch-task")]
    assert minimal.outputs["metaflowProfile"] == {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{bucket}/metaflow",
        "METAFLOW_DATATOOLS_S3ROOT": f"s3://{bucket}/data",
        "METAFLOW_BATCH_JOB_QUEUE": minimal.one("aws:batch/jobQueue:JobQueue").state["arn"],
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": task_role.state["arn"],
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_BATCH_EMIT_TAGS": "true",
        "METAFLOW_BATCH_DEFAULT_TAGS": '{"metaflow:stack": "dev"}',
    }
    assert minimal.outputs["bucketName"] == bucket
    assert minimal.outputs["jobQueueArn"] == minimal.one("aws:batch/jobQueue:JobQueue").state["arn"]


def test_fargate_profile_is_read_back_by_metaflow(tmp_path: Path) -> None:
    profile = offline("minimal", {"compute:type": "fargate"}).outputs["metaflowProfile"]
    assert "METAFLOW_ECS_FARGATE_EXECUTION_ROLE" in profile
    assert read_with_metaflow(profile, tmp_path) == profile


def test_dev_profile_is_read_back_by_metaflow(tmp_path: Path) -> None:
    profile = offline("dev").outputs["metaflowProfile"]
    assert profile["METAFLOW_DEFAULT_METADATA"] == "service" and profile["METAFLOW_SERVICE_AUTH_KEY"]
    assert read_with_metaflow(profile, tmp_path) == profile


def test_metaflow_sends_the_profile_key_as_x_api_key(tmp_path: Path) -> None:
    profile = offline("dev").outputs["metaflowProfile"]
    (tmp_path / "config_dev.json").write_text(json.dumps(profile))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env.update(METAFLOW_HOME=str(tmp_path), METAFLOW_PROFILE="dev", USERNAME="tester")
    script = "import json; from metaflow.metaflow_config import SERVICE_HEADERS; print(json.dumps(SERVICE_HEADERS))"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"x-api-key": profile["METAFLOW_SERVICE_AUTH_KEY"]}


# --- The profile as a function of its inputs, without a stack -----------------------------------------------


def test_a_profile_without_optional_features_names_the_datastore_queue_and_task_role_and_keeps_metadata_local() -> None:
    inputs = ProfileInputs(bucket_name="bkt", job_queue_arn="queue-arn", task_role_arn="role-arn")
    assert metaflow_profile(inputs) == {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": "s3://bkt/metaflow",
        "METAFLOW_DATATOOLS_S3ROOT": "s3://bkt/data",
        "METAFLOW_BATCH_JOB_QUEUE": "queue-arn",
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": "role-arn",
        "METAFLOW_DEFAULT_METADATA": "local",
    }


def test_a_profile_with_every_feature_names_each_of_them() -> None:
    inputs = dataclasses.replace(
        FULL,
        job_tags={"team": "ds", "metaflow:stack": "dev"},
        ui_url="https://ui.example.com",
        container_registry="1.dkr.ecr.us-east-1.amazonaws.com",
        container_image="steps:1",
        secrets_region="eu-west-1",
        step_functions=StepFunctionsProfile(
            role_arn="sfn-role",
            scheduler_role_arn="events-role",
            table_name="foreach-table",
            state_machine_prefix="mf",
            log_group_arn="log-group-arn:*",
            distributed_map_output_path="s3://b/sfn-distributed-map",
        ),
    )
    assert metaflow_profile(inputs) == {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": "s3://b/metaflow",
        "METAFLOW_DATATOOLS_S3ROOT": "s3://b/data",
        "METAFLOW_BATCH_JOB_QUEUE": FULL.job_queue_arn,
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": FULL.task_role_arn,
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_BATCH_CONTAINER_REGISTRY": "1.dkr.ecr.us-east-1.amazonaws.com",
        "METAFLOW_BATCH_CONTAINER_IMAGE": "steps:1",
        "METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE": "aws-secrets-manager",
        "METAFLOW_AWS_SECRETS_MANAGER_DEFAULT_REGION": "eu-west-1",
        "METAFLOW_UI_URL": "https://ui.example.com",
        "METAFLOW_BATCH_EMIT_TAGS": "true",
        "METAFLOW_BATCH_DEFAULT_TAGS": '{"metaflow:stack": "dev", "team": "ds"}',
        "METAFLOW_ECS_FARGATE_EXECUTION_ROLE": "arn:aws:iam::1:role/e",
        "METAFLOW_SFN_IAM_ROLE": "sfn-role",
        "METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE": "events-role",
        "METAFLOW_SFN_DYNAMO_DB_TABLE": "foreach-table",
        "METAFLOW_SFN_STATE_MACHINE_PREFIX": "mf",
        "METAFLOW_SFN_EXECUTION_LOG_GROUP_ARN": "log-group-arn:*",
        "METAFLOW_SFN_S3_DISTRIBUTED_MAP_OUTPUT_PATH": "s3://b/sfn-distributed-map",
        "METAFLOW_SERVICE_URL": "https://x.execute-api.us-east-1.amazonaws.com",
        "METAFLOW_SERVICE_INTERNAL_URL": "http://svc:8080",
        "METAFLOW_SERVICE_AUTH_KEY": "k",
        "METAFLOW_SERVICE_RETRY_COUNT": "9",
    }
    assert [key for key in metaflow_profile(inputs) if not metaflow_reads(key)] == []


def test_job_tags_are_written_in_key_order_whatever_order_they_come_in() -> None:
    """The same tags give the same profile, so the stack output does not change from one run to the next."""
    forward = metaflow_profile(ProfileInputs("b", "q", "r", job_tags={"a": "1", "b": "2"}))
    backward = metaflow_profile(ProfileInputs("b", "q", "r", job_tags={"b": "2", "a": "1"}))
    assert forward["METAFLOW_BATCH_DEFAULT_TAGS"] == backward["METAFLOW_BATCH_DEFAULT_TAGS"] == '{"a": "1", "b": "2"}'


def test_empty_optional_values_add_nothing() -> None:
    empty = {"fargate_execution_role_arn": "", "ui_url": "", "container_registry": "", "container_image": ""}
    profile = metaflow_profile(ProfileInputs("b", "q", "r", **empty, secrets_region="", job_tags={}))
    assert profile == metaflow_profile(ProfileInputs("b", "q", "r"))


def test_the_only_secret_in_a_profile_is_the_service_key_and_plan_masks_it() -> None:
    assert {key for key in metaflow_profile(FULL) if key in SECRET_KEYS} == {"METAFLOW_SERVICE_AUTH_KEY"}
    assert masked_profile(metaflow_profile(FULL))["METAFLOW_SERVICE_AUTH_KEY"] != "k"


def test_profile_inputs_cannot_be_changed_once_made() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FULL.bucket_name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FULL.metadata.auth_key = "other"  # type: ignore[misc, union-attr]
    step_functions = StepFunctionsProfile("role", "scheduler", "table", "mf", "group:*", "s3://b/map")
    with pytest.raises(dataclasses.FrozenInstanceError):
        step_functions.role_arn = "other"  # type: ignore[misc]
