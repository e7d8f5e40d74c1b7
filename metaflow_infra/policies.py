"""IAM and bucket policy documents: pure functions of ARNs, tested without Pulumi.

Components feed them resolved ARNs through `Output.apply` and serialise with `json.dumps`.
"""

from __future__ import annotations

from typing import Any, Optional

Policy = dict[str, Any]
VERSION = "2012-10-17"


def document(*statements: dict[str, Any]) -> Policy:
    return {"Version": VERSION, "Statement": list(statements)}


SERVICES_SENDING_SOURCE_ACCOUNT = frozenset({"ecs-tasks.amazonaws.com"})
"""Services that set aws:SourceAccount when they assume a role. EC2 does not, for instance
profiles: the condition there would leave instances without credentials (and jobs RUNNABLE)."""


def assume_role_policy(service: str, account: Optional[str] = None) -> Policy:
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


def task_role_policy(bucket_arn: str) -> Policy:
    """What Metaflow steps on Batch do with the datastore: list it, read, write and delete objects."""
    return document(
        {"Sid": "ListDatastore", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn]},
        {
            "Sid": "ReadWriteDatastoreObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": [object_arns(bucket_arn)],
        },
    )


def tls_only_bucket_policy(bucket_arn: str) -> Policy:
    """Refuse every request to the bucket that does not use TLS."""
    return document({
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, object_arns(bucket_arn)],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    })


def aws_managed_policy_arn(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


def read_secret_and_write_logs(secret_arn: str, log_group_arn: str) -> Policy:
    """For a task execution role or a Lambda: fetch one secret, write to one log group."""
    return document(
        {"Sid": "ReadOneSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
         "Resource": [secret_arn]},
        {"Sid": "WriteOneLogGroup", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [f"{log_group_arn}:log-stream:*"]},
    )
