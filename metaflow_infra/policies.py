"""IAM and bucket policy documents: pure functions of ARNs, tested without Pulumi.

Components feed them resolved ARNs through `Output.apply` and serialise with `json.dumps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Policy = dict[str, Any]
Statement = dict[str, Any]
VERSION = "2012-10-17"


def document(*statements: dict[str, Any]) -> Policy:
    return {"Version": VERSION, "Statement": list(statements)}


SERVICES_SENDING_SOURCE_ACCOUNT = frozenset({"ecs-tasks.amazonaws.com", "states.amazonaws.com", "events.amazonaws.com"})
"""Services that set aws:SourceAccount when they assume a role. EC2 does not, for instance
profiles: the condition there would leave instances without credentials (and jobs RUNNABLE).
Step Functions and EventBridge do, and document it for their roles' trust policies (Step Functions
Developer Guide, "Creating an IAM role for your state machine": "Prevent cross-service confused deputy
issue"; EventBridge User Guide, "Cross-service confused deputy prevention": for rule targets the
source is the rule)."""


def assume_role_policy(service: str, account: str | None = None) -> Policy:
    """Trust `service`; with `account`, only on this account's behalf where the service says so."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if account is not None and service in SERVICES_SENDING_SOURCE_ACCOUNT:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
    return document(statement)


def object_arns(bucket_arn: str) -> str:
    return f"{bucket_arn}/*"


def datastore_statements(bucket_arn: str) -> list[dict[str, Any]]:
    """Exactly what Metaflow's S3 client (metaflow 2.19.39) does with the datastore, from a laptop or a
    Batch task alike:

    - list: `s3:ListBucket`, for ListObjectsV2 (`plugins/datatools/s3/s3op.py` `list_prefix`, the
      paginator at line 605). It also lets a HeadObject of a missing key answer 404 rather than 403,
      which `op_info` (s3op.py:186-199) tells apart: "not there yet" versus "access denied".
    - read: `s3:GetObject`, which authorizes GetObject and HeadObject: `head_object` (s3op.py:186,
      569; `s3.py`:792, 1235), `get_object` (s3op.py:238, 253; s3.py:921, 940), `download_file`
      (s3op.py:262, s3.py:949: a HeadObject then ranged GETs), and the code package the task's
      bootstrap downloads (`metaflow_environment.py`:131).
    - write: `s3:PutObject`, which authorizes PutObject and the multipart trio CreateMultipartUpload,
      UploadPart and CompleteMultipartUpload: `upload_file` (s3op.py:355) and `upload_fileobj`
      (s3.py:1224) go through s3transfer, multipart above 8 MiB.
    - `s3:AbortMultipartUpload`: s3transfer registers `abort_multipart_upload` as the clean-up of a
      multipart upload that fails (`s3transfer/tasks.py`:357), so no orphaned parts are left billing.

    Deliberately absent: `s3:DeleteObject` (no code path in metaflow deletes an object),
    `s3:ListMultipartUploadParts` and `s3:ListBucketMultipartUploads` (s3transfer keeps the part ETags
    itself and never lists parts or uploads). tests/test_policies.py holds this list to the operations
    metaflow's client sends to a recording S3 endpoint."""
    return [
        {"Sid": "ListDatastore", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn]},
        {
            "Sid": "ReadWriteDatastoreObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [object_arns(bucket_arn)],
        },
    ]


def datastore_key_statements(key_arn: str | None, write: bool) -> list[Statement]:
    """With SSE-KMS (`datastore:kmsKey`), the key use S3 makes on a caller's behalf: Decrypt to read an
    object, GenerateDataKey to write one (multipart uploads included), and only through S3 in the key's
    region (kms:ViaService), so the grant opens the datastore and nothing else the key protects."""
    if key_arn is None:
        return []
    region = key_arn.split(":")[3]
    return [
        {
            "Sid": "DatastoreKeyThroughS3",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"] if write else ["kms:Decrypt"],
            "Resource": [key_arn],
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        }
    ]


def task_role_policy(bucket_arn: str, key_arn: str | None = None) -> Policy:
    """What Metaflow steps on Batch do with AWS: use the datastore (and its key), nothing else (the
    metadata service takes an API key, not IAM)."""
    return document(*datastore_statements(bucket_arn), *datastore_key_statements(key_arn, write=True))


def ui_task_policy(bucket_arn: str, exec_channel: bool, key_arn: str | None = None) -> Policy:
    """The UI backend reads artifacts, logs and cards from the datastore, and writes nothing. With
    `exec_channel`, the Session Manager channel ECS Exec port forwarding opens into the task."""
    statements: list[dict[str, Any]] = [
        {"Sid": "ListDatastore", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn]},
        {
            "Sid": "ReadDatastoreObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [object_arns(bucket_arn)],
        },
        *datastore_key_statements(key_arn, write=False),
    ]
    if exec_channel:
        # ssmmessages accepts no resource-level permissions: "*" is all AWS allows.
        statements.append(
            {
                "Sid": "SessionManagerChannel",
                "Effect": "Allow",
                "Resource": "*",
                "Action": [
                    "ssmmessages:CreateControlChannel",
                    "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel",
                    "ssmmessages:OpenDataChannel",
                ],
            }
        )
    return document(*statements)


JOB_DEFINITION_NAMES = "metaflow_*"
"""Metaflow names every job definition it registers `metaflow_<sha224 of the definition>`
(`plugins/aws/batch/batch_client.py`:439-441). SubmitJob sees the definition with its revision
(`metaflow_<hash>:<n>`), which the trailing `*` covers too."""
BATCH_JOB_LOG_GROUP = "/aws/batch/job"
"""Where Batch's default `awslogs` driver writes every job's output; Metaflow sets no other."""
JOB_ROLES_PASSED_TO = "batch.amazonaws.com"
"""The service a job role is passed to: `RegisterJobDefinition` is a Batch API call, so Batch is the
service receiving the role. AWS's own example conditioned this PassRole on `batch.amazonaws.com`
(AWS Batch User Guide, "Restricting to POSIX user, Docker image, privilege level, and role on job
submission", until its 2020-10 revision dropped the condition), as Seqera's documented policy for
registering job definitions still does. Not `ecs-tasks.amazonaws.com`: that is where Batch's own
service-linked role passes the role on to ECS, under Batch's permissions, not the user's."""


def user_policy(
    *,
    partition: str,
    region: str,
    account: str,
    bucket_arn: str,
    job_queue_arns: Sequence[str],
    passable_role_arns: Sequence[str],
    extra: Sequence[Statement] = (),
    datastore_key_arn: str | None = None,
) -> Policy:
    """What a person (IAM user or role) needs to run `@batch` flows against this stack with metaflow
    2.19.39, and nothing more. The metadata service needs no IAM: it admits requests by API key.

    Batch calls, from `plugins/aws/batch/batch_client.py` and `batch.py`:
    DescribeJobQueues (batch_client.py:25, 51, 175), DescribeComputeEnvironments (:181),
    DescribeJobDefinitions (:444), RegisterJobDefinition (:451), SubmitJob (:139), DescribeJobs (:47,
    696), ListJobs (:39, for `batch list` and `batch kill`), TerminateJob (:794, `batch kill` and an
    interrupted run). Never DeregisterJobDefinition or CancelJob."""
    batch = f"arn:{partition}:batch:{region}:{account}"
    jobs = f"{batch}:job/*"
    definitions = f"{batch}:job-definition/{JOB_DEFINITION_NAMES}"
    return document(
        {
            # AWS allows nothing narrower: these five accept no resource-level permissions (the Service
            # Authorization Reference lists no resource type for them), so only "*" works.
            "Sid": "DescribeBatch",
            "Effect": "Allow",
            "Action": [
                "batch:DescribeComputeEnvironments",
                "batch:DescribeJobDefinitions",
                "batch:DescribeJobQueues",
                "batch:DescribeJobs",
                "batch:ListJobs",
            ],
            "Resource": "*",
        },
        {
            "Sid": "RegisterMetaflowJobDefinitions",
            "Effect": "Allow",
            "Action": ["batch:RegisterJobDefinition"],
            "Resource": [definitions],
        },
        {
            # SubmitJob is authorized against the queue, the job definition and the new job alike.
            "Sid": "SubmitToThisStacksQueues",
            "Effect": "Allow",
            "Action": ["batch:SubmitJob"],
            "Resource": [*job_queue_arns, definitions, jobs],
        },
        {
            # A job's ARN holds only its id, so no narrower pattern names this stack's jobs.
            # TagResource: Metaflow sends tags with SubmitJob when METAFLOW_BATCH_EMIT_TAGS is on
            # (batch.py:382-405), and tagging on creation is authorized as batch:TagResource on the job.
            "Sid": "ManageJobs",
            "Effect": "Allow",
            "Action": ["batch:TerminateJob", "batch:TagResource"],
            "Resource": [jobs],
        },
        {
            # Exactly the roles the Metaflow profile names, and only into Batch job definitions.
            "Sid": "PassJobRoles",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": list(passable_role_arns),
            "Condition": {"StringEquals": {"iam:PassedToService": JOB_ROLES_PASSED_TO}},
        },
        *datastore_statements(bucket_arn),
        *datastore_key_statements(datastore_key_arn, write=True),
        {
            # Metaflow itself reads task output from the datastore (mflog), never from CloudWatch; but
            # a task killed hard (out of memory) never saves its last lines there (batch.py:563-565),
            # so people read them here. Streams are named `<job definition>/default/<task id>`.
            "Sid": "ReadMetaflowJobLogs",
            "Effect": "Allow",
            "Action": ["logs:GetLogEvents"],
            "Resource": [
                f"arn:{partition}:logs:{region}:{account}:log-group:{BATCH_JOB_LOG_GROUP}"
                f":log-stream:{JOB_DEFINITION_NAMES}"
            ],
        },
        *extra,
    )


UI_TUNNEL_DOCUMENT = "AWS-StartPortForwardingSession"
"""The one Session Manager document people may start on the UI's task: forwarding its own port only
(not `...ToRemoteHost`, which would reach the database through it; not a shell)."""


def ui_tunnel_statements(*, partition: str, region: str, account: str, cluster: str, service: str) -> list[Statement]:
    """What `python -m metaflow_infra ui` calls to start the private UI, tunnel to it and stop it."""
    ecs = f"arn:{partition}:ecs:{region}:{account}"
    tasks = f"{ecs}:task/{cluster}/*"
    return [
        {
            "Sid": "StartAndStopTheUi",
            "Effect": "Allow",
            "Action": ["ecs:DescribeServices", "ecs:UpdateService"],
            "Resource": [f"{ecs}:service/{cluster}/{service}"],
        },
        {
            # ListTasks names no resource for Fargate tasks; the cluster condition is its only scope.
            "Sid": "FindTheUiTask",
            "Effect": "Allow",
            "Action": ["ecs:ListTasks"],
            "Resource": "*",
            "Condition": {"ArnEquals": {"ecs:cluster": f"{ecs}:cluster/{cluster}"}},
        },
        {"Sid": "DescribeTheUiTask", "Effect": "Allow", "Action": ["ecs:DescribeTasks"], "Resource": [tasks]},
        {
            # The document check makes Session Manager authorize the document too, so a session
            # without one (a shell) is refused.
            "Sid": "ForwardTheUiPort",
            "Effect": "Allow",
            "Action": ["ssm:StartSession"],
            "Resource": [tasks, f"arn:{partition}:ssm:{region}::document/{UI_TUNNEL_DOCUMENT}"],
            "Condition": {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}},
        },
        {
            "Sid": "EndOwnSessions",
            "Effect": "Allow",
            "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
            "Resource": [f"arn:{partition}:ssm:{region}:{account}:session/*"],
            "Condition": {"StringLike": {"ssm:resourceTag/aws:ssmmessages:session-id": ["${aws:userid}"]}},
        },
        # DescribeSessions accepts no resource-level permissions: "*" is all AWS allows.
        {"Sid": "SeeWhoElseIsIn", "Effect": "Allow", "Action": ["ssm:DescribeSessions"], "Resource": "*"},
    ]


def waker_policy(
    *,
    partition: str,
    region: str,
    account: str,
    cluster: str,
    service: str,
    api_id: str,
    route_id: str,
    discovery_service_arn: str,
    function_arn: str,
    log_group_arn: str,
    probe_route_arn: str,
    database_cluster_arn: str | None = None,
    database_secret_arn: str | None = None,
) -> Policy:
    """The scale-to-zero waker: start, watch and stop one ECS service, switch one route, call the readiness
    probe's one route, read the API's request count, start its own watcher, write its logs; with the database's
    Data API on, resume that one database (the Data API reads the credentials' secret with the caller's own
    permission: RDS Data API guide, "Authorizing access to the Amazon RDS Data API")."""
    ecs = f"arn:{partition}:ecs:{region}:{account}"
    database: list[Statement] = []
    if database_cluster_arn is not None and database_secret_arn is not None:
        database = [
            {
                "Sid": "ResumeTheDatabase",
                "Effect": "Allow",
                "Action": ["rds-data:ExecuteStatement"],
                "Resource": [database_cluster_arn],
            },
            {
                "Sid": "ReadItsCredentials",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [database_secret_arn],
            },
        ]
    return document(
        {
            "Sid": "StartAndStopTheService",
            "Effect": "Allow",
            "Action": ["ecs:DescribeServices", "ecs:UpdateService"],
            "Resource": [f"{ecs}:service/{cluster}/{service}"],
        },
        {
            # ListInstances takes no resource: the service's ARN as a condition is its only scope.
            "Sid": "FindRegisteredTasks",
            "Effect": "Allow",
            "Action": ["servicediscovery:ListInstances"],
            "Resource": "*",
            "Condition": {"ArnEquals": {"servicediscovery:ServiceArn": discovery_service_arn}},
        },
        {
            "Sid": "SeeTheirHealth",
            "Effect": "Allow",
            "Action": ["ecs:DescribeTasks"],
            "Resource": [f"{ecs}:task/{cluster}/*"],
        },
        {
            "Sid": "SwitchTheRoute",
            "Effect": "Allow",
            "Action": ["apigateway:GET", "apigateway:PATCH"],
            "Resource": [f"arn:{partition}:apigateway:{region}::/apis/{api_id}/routes/{route_id}"],
        },
        {
            "Sid": "ProbeTheTaskAsClientsReachIt",
            "Effect": "Allow",
            "Action": ["execute-api:Invoke"],
            "Resource": [probe_route_arn],
        },
        # GetMetricStatistics accepts no resource-level permissions: "*" is all AWS allows.
        {"Sid": "CountRequests", "Effect": "Allow", "Action": ["cloudwatch:GetMetricStatistics"], "Resource": "*"},
        invoke_statement("StartItsWatcher", function_arn),
        write_logs_statement(log_group_arn),
        *database,
    )


def invoke_statement(sid: str, function_arn: str) -> Statement:
    """Run one Lambda function."""
    return {"Sid": sid, "Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": [function_arn]}


def wake_statements(function_arn: str) -> list[Statement]:
    """For people opening the private UI of a scale-to-zero stack: wake the metadata service first."""
    return [invoke_statement("WakeTheMetadataService", function_arn)]


def invoke_function_policy(function_arn: str) -> Policy:
    """For EventBridge Scheduler's role: run one function."""
    return document(invoke_statement("RunOneFunction", function_arn))


def tls_only_bucket_policy(bucket_arn: str) -> Policy:
    """Refuse every request to the bucket that does not use TLS."""
    return document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, object_arns(bucket_arn)],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )


def alerts_topic_policy(topic_arn: str, *, events_rule_arn: str, alarm_arns: Sequence[str]) -> Policy:
    """Who may publish to the alerts topic: this stack's failed-jobs rule and its alarms, nothing else.
    People of the account still manage the topic through their own IAM policies."""
    statements: list[Statement] = [
        {
            "Sid": "FailedJobsRule",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": ["sns:Publish"],
            "Resource": [topic_arn],
            "Condition": {"ArnEquals": {"aws:SourceArn": [events_rule_arn]}},
        }
    ]
    if alarm_arns:
        statements.append(
            {
                "Sid": "StackAlarms",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["sns:Publish"],
                "Resource": [topic_arn],
                "Condition": {"ArnEquals": {"aws:SourceArn": list(alarm_arns)}},
            }
        )
    return document(*statements)


def aws_managed_policy_arn(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


def write_logs_statement(log_group_arn: str) -> Statement:
    return {
        "Sid": "WriteOneLogGroup",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [f"{log_group_arn}:log-stream:*"],
    }


def read_secret_and_write_logs(secret_arn: str, log_group_arn: str, pull_repository_arn: str | None = None) -> Policy:
    """For a task execution role or a Lambda: fetch one secret, write to one log group; with
    `pull_repository_arn`, pull images from that one ECR repository too."""
    statements = [
        {
            "Sid": "ReadOneSecret",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [secret_arn],
        },
        write_logs_statement(log_group_arn),
    ]
    if pull_repository_arn is not None:
        statements += image_pull_statements(pull_repository_arn)
    return document(*statements)


def image_pull_statements(repository_arn: str) -> list[Statement]:
    """What ECS needs to pull a task's image from one ECR repository."""
    return [
        {
            "Sid": "PullFromOneRepository",
            "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": [repository_arn],
        },
        {
            # GetAuthorizationToken names no resource (ECR's service authorization reference): "*" is all IAM takes.
            "Sid": "SignInToTheRegistry",
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken"],
            "Resource": ["*"],
        },
    ]


def image_mirror_policy(repository_arn: str, log_group_arn: str) -> Policy:
    """The image mirror (lambdas/mirror.py): see what one repository holds and push an image into it through
    ECR's API (which needs no registry sign-in), write to one log group."""
    return document(
        {
            "Sid": "PushToOneRepository",
            "Effect": "Allow",
            "Action": [
                "ecr:DescribeImages",
                "ecr:BatchCheckLayerAvailability",
                "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart",
                "ecr:CompleteLayerUpload",
                "ecr:PutImage",
            ],
            "Resource": [repository_arn],
        },
        write_logs_statement(log_group_arn),
    )


def step_secrets_statements(*, partition: str, region: str, account: str, name_prefix: str) -> list[Statement]:
    """Read the secrets `@secrets` names under this stack's prefix (their ARNs end in a random
    6-character suffix, hence the `*`). Metaflow's backend calls GetSecretValue only
    (plugins/aws/secrets_manager/aws_secrets_manager_secrets_provider.py:134)."""
    return [
        {
            "Sid": "ReadThisStacksSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name_prefix}*"],
        }
    ]


def step_secrets_policy(*, partition: str, region: str, account: str, name_prefix: str) -> Policy:
    return document(
        *step_secrets_statements(partition=partition, region=region, account=account, name_prefix=name_prefix)
    )


# --- Step Functions (`stepFunctions:enabled`) ---------------------------------------------------------------
# Grounded in metaflow 2.19.39, `metaflow/plugins/aws/step_functions/` unless another path is given.

STATE_MACHINE_NAME_JOINER = "_"
"""Metaflow names a state machine `<METAFLOW_SFN_STATE_MACHINE_PREFIX>_<flow name>` (step_functions_cli.py:
283-288; a name that already starts with the prefix is kept as it is), and its EventBridge rule after the
state machine (step_functions.py:161, 173), cut to `<first 47 characters>-<hash>` beyond 64
(event_bridge_client.py:81-86). So `<prefix>_*` names this stack's state machines, their executions and
their rules, and no other stack's as long as no prefix contains the joiner."""
BATCH_EVENTS_RULE = "StepFunctionsGetEventsForBatchJobsRule"
"""The EventBridge rule Step Functions manages in the account to learn when a `.sync` Batch job ends
(Step Functions Developer Guide, "IAM policies for AWS Batch", Run a Job (.sync))."""
LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
)
"""What the state machine's role needs for `loggingConfiguration` to reach a log group (Step Functions
Developer Guide, "Using CloudWatch Logs to log execution history": IAM policies for logging). Step
Functions sets up a CloudWatch Logs *delivery* and the delivery writes the events, so the role needs no
logs:PutLogEvents of its own."""


def _prefix_arns(partition: str, region: str, account: str, state_machine_prefix: str) -> tuple[str, str, str]:
    """This stack's state machines, their executions (Distributed Map children included) and their rules."""
    names = f"{state_machine_prefix}{STATE_MACHINE_NAME_JOINER}*"
    # A run is `execution:<state machine>:<run>`, a Distributed Map child `execution:<state machine>/<label>:<run>`.
    return (
        f"arn:{partition}:states:{region}:{account}:stateMachine:{names}",
        f"arn:{partition}:states:{region}:{account}:execution:{names}",
        f"arn:{partition}:events:{region}:{account}:rule/{names}",
    )


def step_functions_role_policy(
    *,
    partition: str,
    region: str,
    account: str,
    state_machine_prefix: str,
    job_queue_arns: Sequence[str],
    table_arn: str,
    map_results_arn: str,
    datastore_key_arn: str | None = None,
) -> Policy:
    """What the state machines Metaflow deploys do with the role `METAFLOW_SFN_IAM_ROLE` names:

    - every step is a `batch:submitJob.sync` task (step_functions.py:1116-1148) on the step's queue with a
      Metaflow job definition (`metaflow_*`), tagged (`Tags`, :1132-1134) when the profile's
      METAFLOW_BATCH_EMIT_TAGS is on; `.sync` watches the job with DescribeJobs, stops it with TerminateJob
      when the run is stopped, and keeps the account's Batch events rule (AWS: "IAM policies for AWS Batch");
    - a foreach reads its split count from the foreach table (`dynamodb:getItem`, :1150-1158);
    - with `--use-distributed-map` (:412-479) the foreach runs as child executions of the state machine itself
      (AWS: "IAM policies for using Distributed Map states"), whose results the map writes under
      `map_results_arn` (ResultWriter `s3:putObject`, :1247-1256; AWS's ResultWriter policy: PutObject,
      GetObject, ListMultipartUploadParts, AbortMultipartUpload) and reads back (`s3:getObject`, :451, 474);
    - with `--log-execution-history`, the execution history goes to the stack's log group
      (step_functions_client.py:66-80).

    Nothing else: no other bucket, table, queue or state machine."""
    batch = f"arn:{partition}:batch:{region}:{account}"
    jobs = f"{batch}:job/*"
    definitions = f"{batch}:job-definition/{JOB_DEFINITION_NAMES}"
    state_machines, executions, _ = _prefix_arns(partition, region, account, state_machine_prefix)
    return document(
        {
            # SubmitJob is authorized against the queue, the job definition and the new job alike.
            "Sid": "SubmitStepsToThisStacksQueues",
            "Effect": "Allow",
            "Action": ["batch:SubmitJob"],
            "Resource": [*job_queue_arns, definitions, jobs],
        },
        {
            # A job's ARN holds only its id: no narrower pattern names this stack's jobs.
            "Sid": "TagAndStopSteps",
            "Effect": "Allow",
            "Action": ["batch:TagResource", "batch:TerminateJob"],
            "Resource": [jobs],
        },
        # DescribeJobs accepts no resource-level permissions: "*" is all AWS allows.
        {"Sid": "WatchSteps", "Effect": "Allow", "Action": ["batch:DescribeJobs"], "Resource": "*"},
        {
            "Sid": "BatchJobEventsRule",
            "Effect": "Allow",
            "Action": ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            "Resource": [f"arn:{partition}:events:{region}:{account}:rule/{BATCH_EVENTS_RULE}"],
        },
        {"Sid": "ReadForeachSplits", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": [table_arn]},
        {
            "Sid": "StartDistributedMapChildren",
            "Effect": "Allow",
            "Action": ["states:StartExecution"],
            "Resource": [state_machines],
        },
        {
            "Sid": "WatchDistributedMapChildren",
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": [executions],
        },
        {
            "Sid": "DistributedMapResults",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
            "Resource": [object_arns(map_results_arn)],
        },
        *datastore_key_statements(datastore_key_arn, write=True),
        {
            # The log delivery actions accept no resource-level permissions: "*" is all AWS allows.
            "Sid": "DeliverExecutionLogs",
            "Effect": "Allow",
            "Action": list(LOG_DELIVERY_ACTIONS),
            "Resource": "*",
        },
    )


def scheduler_role_policy(*, partition: str, region: str, account: str, state_machine_prefix: str) -> Policy:
    """What EventBridge does with the role `METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE` names: start a `@schedule`d
    flow's state machine, the target Metaflow gives its rule (event_bridge_client.py:50-61). Only this
    stack's state machines."""
    state_machines, _, _ = _prefix_arns(partition, region, account, state_machine_prefix)
    return document(
        {
            "Sid": "StartThisStacksStateMachines",
            "Effect": "Allow",
            "Action": ["states:StartExecution"],
            "Resource": [state_machines],
        }
    )


def foreach_table_task_policy(table_arn: str) -> Policy:
    """What Metaflow steps running under Step Functions do with the foreach table (dynamo_db_client.py):
    a foreach step records its split count (PutItem, :14), each last step inside a foreach records its
    task id for the join (UpdateItem, :31), and the join reads them back (GetItem, :55; through
    set_batch_environment.py:24)."""
    return document(
        {
            "Sid": "ForeachBookkeeping",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem"],
            "Resource": [table_arn],
        }
    )


STEP_FUNCTIONS_PASSED_TO = "states.amazonaws.com"
"""CreateStateMachine and UpdateStateMachine pass the state machine's role to Step Functions (Service
Authorization Reference: iam:PassRole with iam:PassedToService states.amazonaws.com)."""
SCHEDULER_PASSED_TO = "events.amazonaws.com"
"""PutTargets passes the target's role to EventBridge."""


def step_functions_user_statements(
    *,
    partition: str,
    region: str,
    account: str,
    state_machine_prefix: str,
    role_arn: str,
    scheduler_role_arn: str,
) -> list[Statement]:
    """What `step-functions create`, `trigger`, `list-runs`, `terminate` and `delete` call
    (step_functions_cli.py, step_functions.py), on this stack's state machines and rules only:

    - find a state machine by name: ListStateMachines (step_functions_client.py:15, `search`); read it:
      DescribeStateMachine (:55; before every create, trigger, list-runs, terminate and delete);
    - `create`: CreateStateMachine (:28), or UpdateStateMachine (:40) when it exists, passing
      METAFLOW_SFN_IAM_ROLE; then its schedule (step_functions.py:143-168): PutRule (event_bridge_client.py:43)
      and PutTargets (:50, passing METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE) with `@schedule`, DisableRule (:37)
      without — so every create needs it, even for a flow without a schedule;
    - `trigger`: StartExecution (step_functions_client.py:62); `list-runs`: ListExecutions (:71, 78);
      `terminate`: ListExecutions then StopExecution (:86);
    - `delete`: RemoveTargets (event_bridge_client.py:65), DeleteRule (:71), DeleteStateMachine
      (step_functions_client.py:130).

    `create` also registers job definitions and uploads the code package: the Batch and datastore
    statements of `user_policy` cover that. Nothing on the foreach table: only steps use it."""
    state_machines, executions, rules = _prefix_arns(partition, region, account, state_machine_prefix)
    return [
        # ListStateMachines accepts no resource-level permissions: "*" is all AWS allows.
        {"Sid": "FindStateMachines", "Effect": "Allow", "Action": ["states:ListStateMachines"], "Resource": "*"},
        {
            "Sid": "DeployAndRunThisStacksStateMachines",
            "Effect": "Allow",
            "Action": [
                "states:CreateStateMachine",
                "states:UpdateStateMachine",
                "states:DescribeStateMachine",
                "states:DeleteStateMachine",
                "states:StartExecution",
                "states:ListExecutions",
            ],
            "Resource": [state_machines],
        },
        {"Sid": "StopThisStacksRuns", "Effect": "Allow", "Action": ["states:StopExecution"], "Resource": [executions]},
        {
            "Sid": "PassTheStateMachineRole",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": [role_arn],
            "Condition": {"StringEquals": {"iam:PassedToService": STEP_FUNCTIONS_PASSED_TO}},
        },
        {
            "Sid": "PassTheSchedulerRole",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": [scheduler_role_arn],
            "Condition": {"StringEquals": {"iam:PassedToService": SCHEDULER_PASSED_TO}},
        },
        {
            "Sid": "ScheduleThisStacksStateMachines",
            "Effect": "Allow",
            "Action": [
                "events:PutRule",
                "events:PutTargets",
                "events:DisableRule",
                "events:RemoveTargets",
                "events:DeleteRule",
            ],
            "Resource": [rules],
        },
    ]
