"""Access: the IAM managed policy people attach to themselves to run Metaflow flows on this stack.

The stack creates no IAM users: people already have identities (IAM users, SSO roles, CI roles).
They attach the stack's `userPolicyArn` output to theirs, e.g.
`aws iam attach-user-policy --user-name alice --policy-arn "$(pulumi stack output userPolicyArn)"`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import Statement, step_secrets_statements, ui_tunnel_statements, user_policy

DESCRIPTION = "Run Metaflow flows on this stack: its Batch queue, its datastore, its job logs"
"""Constant: IAM replaces a policy whose description changes, and an attached policy cannot be deleted."""


@dataclass(frozen=True)
class AccessArgs:
    region: str
    bucket_arn: pulumi.Input[str]
    job_queue_arns: Sequence[pulumi.Input[str]]
    passable_role_arns: Sequence[pulumi.Input[str]]
    """The roles the Metaflow profile names: the task role, and the Fargate execution role if any."""
    ui_service: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None
    """(cluster name, service name) of the private UI, which people start and tunnel to."""
    secrets_name_prefix: str | None = None
    """With @secrets: people running steps locally read the same secrets their Batch tasks do."""
    extra_statements: pulumi.Input[Sequence[Statement]] | None = None
    """Statements a feature's component grants people (Step Functions: deploy and run its state machines)."""
    datastore_key_arn: pulumi.Input[str] | None = None
    """The datastore's SSE-KMS key: people read and write artifacts through S3 with it."""


class Access(Component):
    user_policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: AccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Access", name, opts)
        partition, account = self.partition, self.account

        def document(values: dict[str, Any]) -> str:
            return json.dumps(
                user_policy(
                    partition=partition,
                    region=args.region,
                    account=account,
                    bucket_arn=values["bucket_arn"],
                    job_queue_arns=values["job_queue_arns"],
                    passable_role_arns=values["passable_role_arns"],
                    datastore_key_arn=values["key"],
                    extra=[
                        *(
                            ui_tunnel_statements(
                                partition=partition,
                                region=args.region,
                                account=account,
                                cluster=values["ui"][0],
                                service=values["ui"][1],
                            )
                            if values["ui"]
                            else ()
                        ),
                        *(
                            step_secrets_statements(
                                partition=partition,
                                region=args.region,
                                account=account,
                                name_prefix=args.secrets_name_prefix,
                            )
                            if args.secrets_name_prefix
                            else ()
                        ),
                        *values["extra_statements"],
                    ],
                )
            )

        policy = aws.iam.Policy(
            self.named("user"),
            description=DESCRIPTION,
            policy=pulumi.Output.all(
                bucket_arn=args.bucket_arn,
                job_queue_arns=pulumi.Output.all(*args.job_queue_arns),
                passable_role_arns=pulumi.Output.all(*args.passable_role_arns),
                ui=pulumi.Output.all(*args.ui_service) if args.ui_service else None,
                extra_statements=args.extra_statements or [],
                key=args.datastore_key_arn,
            ).apply(document),
            opts=self.child(),
        )
        self.user_policy_arn = policy.arn
        self.register_outputs({"userPolicyArn": self.user_policy_arn})
