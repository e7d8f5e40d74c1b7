"""StepSecrets: `@secrets` through Secrets Manager (`secrets:enabled`). Metaflow steps on Batch may read
the secrets named `<prefix>/...` and no other; nothing is created, so nothing bills.

Secrets encrypted with Secrets Manager's default key (`aws/secretsmanager`) need no KMS permission:
that key's policy lets Secrets Manager decrypt for any principal of the account allowed to read the
secret. A secret under a customer-managed key also needs kms:Decrypt on that key, granted by its owner.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import step_secrets_policy


class StepSecrets(Component):
    name_prefix: str

    def __init__(
        self, name: str, region: str, task_role_arn: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("StepSecrets", name, opts)
        self.name_prefix = f"{self.prefix}/"
        partition, account = self.partition, self.account
        aws.iam.RolePolicy(
            self.named("batch-task-secrets"),
            role=pulumi.Output.from_input(task_role_arn).apply(lambda arn: arn.rsplit("/", 1)[-1]),
            policy=pulumi.Output.json_dumps(
                step_secrets_policy(partition=partition, region=region, account=account, name_prefix=self.name_prefix)
            ),
            opts=self.child(),
        )
        self.register_outputs({})
