"""The Metaflow profile: the flat `METAFLOW_*` JSON users put in `~/.metaflowconfig/`.

A pure function of resource attributes. Every key is one the `metaflow` package reads
(tests check each against `metaflow.metaflow_config`); every value is real.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SECRET_KEYS = frozenset({"METAFLOW_SERVICE_AUTH_KEY"})
"""Profile keys whose values are secrets."""
ARTIFACTS_PREFIX = "metaflow"
DATATOOLS_PREFIX = "data"
DISTRIBUTED_MAP_PREFIX = "sfn-distributed-map"
"""Where a Distributed Map foreach (`step-functions create --use-distributed-map`) writes its results: apart
from the artifacts, so the state machines' role may write there and nowhere else in the bucket."""
TASK_REPLACEMENT_SECONDS = 180
"""Estimated longest gap without a metadata task: a Spot replacement starting cold (Fargate
placement, a ~330 MB pull from Docker Hub, migrator, health check), plus margin. Not measured."""
SERVICE_RETRY_COUNT = 9
"""Metaflow retries a 503 after sleeping 1, 2, 4, ... s, so attempt N comes 2**(N-1) - 1 s after the
first: 9 reach 255 s, the fewest that outlast TASK_REPLACEMENT_SECONDS (metaflow's 5 reach 15 s). With
metadata:scaleToZero they also outlast the documented worst-case wake (wake.worst_wake_seconds, with or without
the Data API) with margin; tests/test_wake_simulation.py runs it through Metaflow's own client."""
SERVICE_RETRY_SECONDS = 2 ** (SERVICE_RETRY_COUNT - 1) - 1
"""When the last of SERVICE_RETRY_COUNT attempts comes, after the first."""


@dataclass(frozen=True)
class MetadataEndpoint:
    url: str
    """What laptops use: the public HTTPS endpoint."""
    internal_url: str
    """What Batch tasks use, from inside the VPC."""
    auth_key: str


@dataclass(frozen=True)
class StepFunctionsProfile:
    """What `step-functions create` and `@schedule` need (`stepFunctions:enabled`)."""

    role_arn: str
    """The role the state machines run as (METAFLOW_SFN_IAM_ROLE)."""
    scheduler_role_arn: str
    """The role EventBridge starts `@schedule`d state machines with (METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE)."""
    table_name: str
    state_machine_prefix: str
    log_group_arn: str
    """Ends in `:*`, as Step Functions' logging configuration requires."""
    distributed_map_output_path: str


@dataclass(frozen=True)
class ProfileInputs:
    bucket_name: str
    job_queue_arn: str
    task_role_arn: str
    fargate_execution_role_arn: str | None = None
    metadata: MetadataEndpoint | None = None
    ui_url: str | None = None
    container_registry: str | None = None
    """The stack's ECR registry: image names without a registry resolve against it."""
    container_image: str | None = None
    secrets_region: str | None = None
    """With @secrets: the region of the Secrets Manager secrets steps read."""
    job_tags: dict[str, str] | None = None
    """Tags for every Batch job Metaflow submits (and, propagated, its ECS task): the bill splits by them."""
    step_functions: StepFunctionsProfile | None = None


def metaflow_profile(inputs: ProfileInputs) -> dict[str, str]:
    profile = {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{inputs.bucket_name}/{ARTIFACTS_PREFIX}",
        "METAFLOW_DATATOOLS_S3ROOT": f"s3://{inputs.bucket_name}/{DATATOOLS_PREFIX}",
        "METAFLOW_BATCH_JOB_QUEUE": inputs.job_queue_arn,
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": inputs.task_role_arn,
        "METAFLOW_DEFAULT_METADATA": "service" if inputs.metadata else "local",
    }
    if inputs.container_registry:
        profile["METAFLOW_BATCH_CONTAINER_REGISTRY"] = inputs.container_registry
    if inputs.container_image:
        profile["METAFLOW_BATCH_CONTAINER_IMAGE"] = inputs.container_image
    if inputs.secrets_region:
        profile["METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE"] = "aws-secrets-manager"
        profile["METAFLOW_AWS_SECRETS_MANAGER_DEFAULT_REGION"] = inputs.secrets_region
    if inputs.ui_url:
        profile["METAFLOW_UI_URL"] = inputs.ui_url
    if inputs.job_tags:
        profile["METAFLOW_BATCH_EMIT_TAGS"] = "true"
        profile["METAFLOW_BATCH_DEFAULT_TAGS"] = json.dumps(inputs.job_tags, sort_keys=True)
    if inputs.fargate_execution_role_arn:
        profile["METAFLOW_ECS_FARGATE_EXECUTION_ROLE"] = inputs.fargate_execution_role_arn
    if inputs.step_functions:
        sfn = inputs.step_functions
        profile["METAFLOW_SFN_IAM_ROLE"] = sfn.role_arn
        profile["METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE"] = sfn.scheduler_role_arn
        profile["METAFLOW_SFN_DYNAMO_DB_TABLE"] = sfn.table_name
        profile["METAFLOW_SFN_STATE_MACHINE_PREFIX"] = sfn.state_machine_prefix
        profile["METAFLOW_SFN_EXECUTION_LOG_GROUP_ARN"] = sfn.log_group_arn
        profile["METAFLOW_SFN_S3_DISTRIBUTED_MAP_OUTPUT_PATH"] = sfn.distributed_map_output_path
    if inputs.metadata:
        profile["METAFLOW_SERVICE_URL"] = inputs.metadata.url
        profile["METAFLOW_SERVICE_INTERNAL_URL"] = inputs.metadata.internal_url
        profile["METAFLOW_SERVICE_AUTH_KEY"] = inputs.metadata.auth_key
        profile["METAFLOW_SERVICE_RETRY_COUNT"] = str(SERVICE_RETRY_COUNT)
    return profile
