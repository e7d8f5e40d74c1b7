"""Each policy document as a pure function of its ARNs: exactly which actions on exactly which
resources under exactly which conditions. Statement ids (Sid) are labels and left out of the
comparisons; everything IAM evaluates is compared whole."""

from __future__ import annotations

from typing import Any

import pytest

from metaflow_infra.policies import (
    assume_role_policy,
    aws_managed_policy_arn,
    datastore_statements,
    foreach_table_task_policy,
    image_mirror_policy,
    invoke_function_policy,
    read_secret_and_write_logs,
    scheduler_role_policy,
    step_functions_role_policy,
    step_functions_user_statements,
    step_secrets_policy,
    step_secrets_statements,
    task_role_policy,
    tls_only_bucket_policy,
    ui_task_policy,
    ui_tunnel_statements,
    user_policy,
    waker_policy,
)

BUCKET = "arn:aws:s3:::bkt"
ACCOUNT = "123456789012"


def evaluated(document: dict[str, Any]) -> dict[str, Any]:
    """The document as IAM evaluates it: statement ids dropped."""
    return {**document, "Statement": without_sids(document["Statement"])}


def without_sids(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in statement.items() if key != "Sid"} for statement in statements]


def allow(actions: list[str], resources: Any, **condition: Any) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Action": actions, "Resource": resources}
    return {**statement, "Condition": condition} if condition else statement


DATASTORE = [
    allow(["s3:ListBucket"], [BUCKET]),
    allow(["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"], [f"{BUCKET}/*"]),
]


def test_ecs_tasks_are_trusted_only_on_behalf_of_this_account() -> None:
    assert assume_role_policy("ecs-tasks.amazonaws.com", ACCOUNT) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
            }
        ],
    }


def test_services_that_send_no_source_account_are_trusted_without_the_condition() -> None:
    for service, account in (("ec2.amazonaws.com", ACCOUNT), ("ecs-tasks.amazonaws.com", None)):
        assert assume_role_policy(service, account)["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ]


def test_tasks_list_the_datastore_and_read_and_write_its_objects_and_nothing_else() -> None:
    assert without_sids(datastore_statements(BUCKET)) == DATASTORE
    assert evaluated(task_role_policy(BUCKET)) == {"Version": "2012-10-17", "Statement": DATASTORE}


def test_the_ui_task_reads_the_datastore_and_writes_nothing() -> None:
    assert evaluated(ui_task_policy(BUCKET, exec_channel=False))["Statement"] == [
        allow(["s3:ListBucket"], [BUCKET]),
        allow(["s3:GetObject"], [f"{BUCKET}/*"]),
    ]


def test_a_private_ui_task_also_opens_the_session_manager_channel_of_ecs_exec() -> None:
    statements = evaluated(ui_task_policy(BUCKET, exec_channel=True))["Statement"]
    assert statements[:2] == evaluated(ui_task_policy(BUCKET, exec_channel=False))["Statement"]
    assert statements[2:] == [
        allow(
            [
                "ssmmessages:CreateControlChannel",
                "ssmmessages:CreateDataChannel",
                "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel",
            ],
            "*",
        )
    ]


def people(**extra: Any) -> dict[str, Any]:
    return user_policy(
        partition="aws-cn",
        region="cn-north-1",
        account=ACCOUNT,
        bucket_arn=BUCKET,
        job_queue_arns=["queue-1", "queue-2"],
        passable_role_arns=["role-1", "role-2"],
        **extra,
    )


BATCH = f"arn:aws-cn:batch:cn-north-1:{ACCOUNT}"
PEOPLE = [
    allow(
        [
            "batch:DescribeComputeEnvironments",
            "batch:DescribeJobDefinitions",
            "batch:DescribeJobQueues",
            "batch:DescribeJobs",
            "batch:ListJobs",
        ],
        "*",
    ),
    allow(["batch:RegisterJobDefinition"], [f"{BATCH}:job-definition/metaflow_*"]),
    allow(["batch:SubmitJob"], ["queue-1", "queue-2", f"{BATCH}:job-definition/metaflow_*", f"{BATCH}:job/*"]),
    allow(["batch:TerminateJob", "batch:TagResource"], [f"{BATCH}:job/*"]),
    allow(["iam:PassRole"], ["role-1", "role-2"], StringEquals={"iam:PassedToService": "batch.amazonaws.com"}),
    *DATASTORE,
    allow(
        ["logs:GetLogEvents"],
        [f"arn:aws-cn:logs:cn-north-1:{ACCOUNT}:log-group:/aws/batch/job:log-stream:metaflow_*"],
    ),
]


def test_people_run_list_and_kill_metaflow_jobs_pass_the_profiles_roles_use_the_datastore_and_read_job_logs() -> None:
    assert evaluated(people()) == {"Version": "2012-10-17", "Statement": PEOPLE}


def test_statements_for_optional_features_are_appended_to_what_people_may_do() -> None:
    extra = [allow(["ssm:DescribeSessions"], "*")]
    assert evaluated(people(extra=extra))["Statement"] == [*PEOPLE, *extra]


def test_people_start_tunnel_to_and_stop_only_the_ui_service_and_its_tasks() -> None:
    statements = ui_tunnel_statements(
        partition="aws-cn", region="cn-north-1", account=ACCOUNT, cluster="c", service="s"
    )
    ecs = f"arn:aws-cn:ecs:cn-north-1:{ACCOUNT}"
    assert without_sids(statements) == [
        allow(["ecs:DescribeServices", "ecs:UpdateService"], [f"{ecs}:service/c/s"]),
        allow(["ecs:ListTasks"], "*", ArnEquals={"ecs:cluster": f"{ecs}:cluster/c"}),
        allow(["ecs:DescribeTasks"], [f"{ecs}:task/c/*"]),
        allow(
            ["ssm:StartSession"],
            [f"{ecs}:task/c/*", "arn:aws-cn:ssm:cn-north-1::document/AWS-StartPortForwardingSession"],
            BoolIfExists={"ssm:SessionDocumentAccessCheck": "true"},
        ),
        allow(
            ["ssm:TerminateSession", "ssm:ResumeSession"],
            [f"arn:aws-cn:ssm:cn-north-1:{ACCOUNT}:session/*"],
            StringLike={"ssm:resourceTag/aws:ssmmessages:session-id": ["${aws:userid}"]},
        ),
        allow(["ssm:DescribeSessions"], "*"),
    ]


def test_steps_read_only_the_secrets_under_this_stacks_prefix() -> None:
    expected = [
        allow(["secretsmanager:GetSecretValue"], [f"arn:aws-cn:secretsmanager:cn-north-1:{ACCOUNT}:secret:mf/*"])
    ]
    kwargs = {"partition": "aws-cn", "region": "cn-north-1", "account": ACCOUNT, "name_prefix": "mf/"}
    assert without_sids(step_secrets_statements(**kwargs)) == expected
    assert evaluated(step_secrets_policy(**kwargs)) == {"Version": "2012-10-17", "Statement": expected}


def test_the_bucket_refuses_every_request_without_tls() -> None:
    assert evaluated(tls_only_bucket_policy(BUCKET)) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [BUCKET, f"{BUCKET}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def test_a_task_execution_role_or_lambda_reads_one_secret_and_writes_one_log_group() -> None:
    assert evaluated(read_secret_and_write_logs("secret-arn", "group-arn"))["Statement"] == [
        allow(["secretsmanager:GetSecretValue"], ["secret-arn"]),
        allow(["logs:CreateLogStream", "logs:PutLogEvents"], ["group-arn:log-stream:*"]),
    ]


def test_an_execution_role_given_a_repository_pulls_from_it_alone() -> None:
    """ECR's sign-in takes no resource; the pull itself is scoped to the one repository."""
    assert evaluated(read_secret_and_write_logs("secret-arn", "group-arn", "repo-arn"))["Statement"] == [
        allow(["secretsmanager:GetSecretValue"], ["secret-arn"]),
        allow(["logs:CreateLogStream", "logs:PutLogEvents"], ["group-arn:log-stream:*"]),
        allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], ["repo-arn"]),
        allow(["ecr:GetAuthorizationToken"], ["*"]),
    ]


def test_the_image_mirror_pushes_to_one_repository_and_writes_one_log_group() -> None:
    push = [
        "ecr:DescribeImages",
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
    ]
    assert evaluated(image_mirror_policy("repo-arn", "group-arn"))["Statement"] == [
        allow(push, ["repo-arn"]),
        allow(["logs:CreateLogStream", "logs:PutLogEvents"], ["group-arn:log-stream:*"]),
    ]


def test_the_image_mirror_calls_nothing_its_policy_does_not_allow() -> None:
    """Every ECR operation lambdas/mirror.py calls, named as IAM names it, is in the policy."""
    import ast
    from importlib import resources

    source = resources.files("metaflow_infra").joinpath("lambdas", "mirror.py").read_text()
    called = {
        node.func.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "ecr"
    }
    actions = {"ecr:" + "".join(part.capitalize() for part in name.split("_")) for name in called}
    assert actions == set(image_mirror_policy("r", "g")["Statement"][0]["Action"])


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_aws_managed_policies_are_named_in_the_stacks_partition(partition: str) -> None:
    assert aws_managed_policy_arn(partition, "Name") == f"arn:{partition}:iam::aws:policy/Name"


# --- Step Functions -------------------------------------------------------------------------------------------

STATES = f"arn:aws-cn:states:cn-north-1:{ACCOUNT}"
SFN = {"partition": "aws-cn", "region": "cn-north-1", "account": ACCOUNT, "state_machine_prefix": "mf"}


def test_state_machines_run_steps_on_this_stacks_queues_and_their_foreach_and_map_bookkeeping_only() -> None:
    policy = step_functions_role_policy(
        **SFN, job_queue_arns=["queue-1"], table_arn="table-arn", map_results_arn=f"{BUCKET}/sfn"
    )
    assert evaluated(policy)["Statement"] == [
        allow(["batch:SubmitJob"], ["queue-1", f"{BATCH}:job-definition/metaflow_*", f"{BATCH}:job/*"]),
        allow(["batch:TagResource", "batch:TerminateJob"], [f"{BATCH}:job/*"]),
        allow(["batch:DescribeJobs"], "*"),
        allow(
            ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            [f"arn:aws-cn:events:cn-north-1:{ACCOUNT}:rule/StepFunctionsGetEventsForBatchJobsRule"],
        ),
        allow(["dynamodb:GetItem"], ["table-arn"]),
        allow(["states:StartExecution"], [f"{STATES}:stateMachine:mf_*"]),
        allow(["states:DescribeExecution", "states:StopExecution"], [f"{STATES}:execution:mf_*"]),
        allow(
            ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
            [f"{BUCKET}/sfn/*"],
        ),
        allow(
            [
                "logs:CreateLogDelivery",
                "logs:GetLogDelivery",
                "logs:UpdateLogDelivery",
                "logs:DeleteLogDelivery",
                "logs:ListLogDeliveries",
                "logs:PutResourcePolicy",
                "logs:DescribeResourcePolicies",
                "logs:DescribeLogGroups",
            ],
            "*",
        ),
    ]


def test_schedules_start_only_this_stacks_state_machines() -> None:
    assert evaluated(scheduler_role_policy(**SFN)) == {
        "Version": "2012-10-17",
        "Statement": [allow(["states:StartExecution"], [f"{STATES}:stateMachine:mf_*"])],
    }


def test_steps_keep_their_foreach_bookkeeping_in_the_foreach_table_only() -> None:
    assert evaluated(foreach_table_task_policy("table-arn"))["Statement"] == [
        allow(["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem"], ["table-arn"])
    ]


def test_people_deploy_run_schedule_and_stop_only_this_stacks_state_machines() -> None:
    statements = step_functions_user_statements(**SFN, role_arn="sfn-role", scheduler_role_arn="events-role")
    assert without_sids(statements) == [
        allow(["states:ListStateMachines"], "*"),
        allow(
            [
                "states:CreateStateMachine",
                "states:UpdateStateMachine",
                "states:DescribeStateMachine",
                "states:DeleteStateMachine",
                "states:StartExecution",
                "states:ListExecutions",
            ],
            [f"{STATES}:stateMachine:mf_*"],
        ),
        allow(["states:StopExecution"], [f"{STATES}:execution:mf_*"]),
        allow(["iam:PassRole"], ["sfn-role"], StringEquals={"iam:PassedToService": "states.amazonaws.com"}),
        allow(["iam:PassRole"], ["events-role"], StringEquals={"iam:PassedToService": "events.amazonaws.com"}),
        allow(
            ["events:PutRule", "events:PutTargets", "events:DisableRule", "events:RemoveTargets", "events:DeleteRule"],
            [f"arn:aws-cn:events:cn-north-1:{ACCOUNT}:rule/mf_*"],
        ),
    ]


def test_the_waker_may_start_stop_and_route_one_service_only() -> None:
    document = waker_policy(
        partition="aws-cn",
        region="cn-north-1",
        account=ACCOUNT,
        cluster="c",
        service="s",
        api_id="api1",
        route_id="rt1",
        discovery_service_arn=f"arn:aws-cn:servicediscovery:cn-north-1:{ACCOUNT}:service/srv-1",
        function_arn=f"arn:aws-cn:lambda:cn-north-1:{ACCOUNT}:function:f",
        log_group_arn=f"arn:aws-cn:logs:cn-north-1:{ACCOUNT}:log-group:g",
        probe_route_arn=f"arn:aws-cn:execute-api:cn-north-1:{ACCOUNT}:probe1/$default/GET/ready",
    )
    assert without_sids(document["Statement"]) == [
        {
            "Effect": "Allow",
            "Action": ["ecs:DescribeServices", "ecs:UpdateService"],
            "Resource": [f"arn:aws-cn:ecs:cn-north-1:{ACCOUNT}:service/c/s"],
        },
        {
            "Effect": "Allow",
            "Action": ["servicediscovery:ListInstances"],
            "Resource": "*",
            "Condition": {
                "ArnEquals": {
                    "servicediscovery:ServiceArn": f"arn:aws-cn:servicediscovery:cn-north-1:{ACCOUNT}:service/srv-1"
                }
            },
        },
        {
            "Effect": "Allow",
            "Action": ["ecs:DescribeTasks"],
            "Resource": [f"arn:aws-cn:ecs:cn-north-1:{ACCOUNT}:task/c/*"],
        },
        {
            "Effect": "Allow",
            "Action": ["apigateway:GET", "apigateway:PATCH"],
            "Resource": ["arn:aws-cn:apigateway:cn-north-1::/apis/api1/routes/rt1"],
        },
        {
            "Effect": "Allow",
            "Action": ["execute-api:Invoke"],
            "Resource": [f"arn:aws-cn:execute-api:cn-north-1:{ACCOUNT}:probe1/$default/GET/ready"],
        },
        {"Effect": "Allow", "Action": ["cloudwatch:GetMetricStatistics"], "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [f"arn:aws-cn:lambda:cn-north-1:{ACCOUNT}:function:f"],
        },
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [f"arn:aws-cn:logs:cn-north-1:{ACCOUNT}:log-group:g:log-stream:*"],
        },
    ]


def test_the_scheduler_may_run_one_function() -> None:
    function = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f"
    assert evaluated(invoke_function_policy(function)) == {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": [function]}],
    }


def test_the_waker_may_resume_one_database_and_read_its_credentials_only() -> None:
    """With the Data API on: ExecuteStatement on the cluster, GetSecretValue on its one secret (the Data API
    reads it with the caller's permission), appended to the same statements."""
    arguments: dict[str, Any] = {
        "partition": "aws",
        "region": "us-east-1",
        "account": ACCOUNT,
        "cluster": "c",
        "service": "s",
        "api_id": "api1",
        "route_id": "rt1",
        "discovery_service_arn": f"arn:aws:servicediscovery:us-east-1:{ACCOUNT}:service/srv-1",
        "function_arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f",
        "log_group_arn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:g",
        "probe_route_arn": f"arn:aws:execute-api:us-east-1:{ACCOUNT}:probe1/$default/GET/ready",
    }
    cluster = f"arn:aws:rds:us-east-1:{ACCOUNT}:cluster:db-1"
    secret = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-password-AbCdEf"
    without = waker_policy(**arguments)["Statement"]
    with_data_api = waker_policy(**arguments, database_cluster_arn=cluster, database_secret_arn=secret)["Statement"]
    assert with_data_api[: len(without)] == without
    assert without_sids(with_data_api[len(without) :]) == [
        allow(["rds-data:ExecuteStatement"], [cluster]),
        allow(["secretsmanager:GetSecretValue"], [secret]),
    ]
