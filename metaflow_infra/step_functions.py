"""StepFunctions: what `python flow.py step-functions create` and `@schedule` need (`stepFunctions:enabled`).

Metaflow deploys the state machines and their schedules itself, under the names the profile's
`METAFLOW_SFN_STATE_MACHINE_PREFIX` starts: the stack provides the roles they run as, the foreach table,
the log group and the permissions, scoped to that prefix.

- The role Step Functions assumes (`METAFLOW_SFN_IAM_ROLE`): submit, watch and stop steps on this stack's
  Batch queues, read the foreach table, run a Distributed Map foreach, deliver execution logs.
- The role EventBridge assumes (`METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE`): start this stack's state machines,
  for `@schedule`.
- The foreach table (`METAFLOW_SFN_DYNAMO_DB_TABLE`), exactly Metaflow's schema: partition key `pathspec`
  (a string), items expiring at their `ttl` attribute (`step_functions_decorator.py` `_ttl`: the run's
  timeout, 366 days by default, plus 90). On demand: no capacity to size, nothing billed while no flow runs, and no
  `ProvisionedThroughputExceededException` in a wide foreach (`dynamo_db_client.py`). No point-in-time
  recovery: it bills per GB-month to protect bookkeeping that is worthless once its run has ended (a
  restored copy could not resume a run). Encrypted at rest with DynamoDB's default key.
- The execution log group (`METAFLOW_SFN_EXECUTION_LOG_GROUP_ARN`), for `--log-execution-history`.
- The Batch task role may use the foreach table: a policy of this component on Compute's role.

The state machines and rules Metaflow creates are not Pulumi's: turning `stepFunctions:enabled` off (or
changing the prefix) leaves them in place, failing, until `step-functions delete` removes them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import (
    Statement,
    foreach_table_task_policy,
    scheduler_role_policy,
    step_functions_role_policy,
    step_functions_user_statements,
)
from .profile import DISTRIBUTED_MAP_PREFIX, StepFunctionsProfile
from .settings.models import StepFunctionsSettings

TABLE_PARTITION_KEY = "pathspec"
"""Metaflow's key: `dynamo_db_client.py` (items keyed `{"pathspec": {"S": ...}}`) and the state machine's
`dynamodb:getItem` (`step_functions.py` `State.dynamo_db`)."""
TABLE_TTL_ATTRIBUTE = "ttl"
"""`dynamo_db_client.py` `save_foreach_cardinality`: every item carries its expiry, epoch seconds, in `ttl`."""
MAX_STATE_MACHINE_PREFIX = 32
"""Longest `METAFLOW_SFN_STATE_MACHINE_PREFIX`. Metaflow cuts an EventBridge rule's name to its first 47
characters (plus a hash) beyond 64, and a @project's state machine name to its first 60: the prefix and its
`_` must survive both, or the permissions scoped to `<prefix>_*` would not cover them. 32 also leaves 47
characters of Step Functions' 80 for the flow's name."""


def state_machine_prefix(prefix: str, stack: str) -> str:
    """`<prefix>-<stack>`: one stack's state machines apart from every other's in the account. Only letters,
    digits and hyphens (no `_`: the prefix is followed by one, so no stack's prefix is a prefix of
    another's names); a stack name that needs changing to fit, or is too long, gets a hash of itself, so
    two stacks never share a prefix."""
    readable = f"{prefix}-{stack}"
    if re.fullmatch(r"[A-Za-z0-9-]+", stack) and len(readable) <= MAX_STATE_MACHINE_PREFIX:
        return readable
    digest = hashlib.sha256(stack.encode()).hexdigest()[:8]
    label = re.sub(r"[^A-Za-z0-9-]+", "-", stack).strip("-")
    head = f"{prefix}-{label}"[: MAX_STATE_MACHINE_PREFIX - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


@dataclass(frozen=True)
class StepFunctionsArgs:
    settings: StepFunctionsSettings
    region: str
    stack: str
    bucket_name: pulumi.Input[str]
    job_queue_arns: Sequence[pulumi.Input[str]]
    """Every queue steps may name: the state machines submit to them."""
    task_role_arn: pulumi.Input[str]
    """The Batch task role (Compute's): it gets the foreach table."""
    datastore_key_arn: pulumi.Input[str] | None = None
    """The datastore's SSE-KMS key: distributed-map results are written through S3 with it."""


class StepFunctions(Component):
    state_machine_prefix: str
    profile: pulumi.Output[StepFunctionsProfile]
    user_statements: pulumi.Output[list[Statement]]
    """What people need to deploy, run, schedule and delete this stack's state machines."""

    def __init__(self, name: str, args: StepFunctionsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("StepFunctions", name, opts)
        partition, account, region = self.partition, self.account, args.region
        prefix = state_machine_prefix(self.prefix, args.stack)
        scope: dict[str, Any] = {"partition": partition, "region": region, "account": account}

        # Named once, at creation: deployed state machines hold the table's name in their definitions.
        table = aws.dynamodb.Table(
            self.named("sfn-foreach"),
            name=f"{prefix}-sfn-foreach",
            billing_mode="PAY_PER_REQUEST",
            hash_key=TABLE_PARTITION_KEY,
            attributes=[aws.dynamodb.TableAttributeArgs(name=TABLE_PARTITION_KEY, type="S")],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=TABLE_TTL_ATTRIBUTE, enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=False),
            opts=self.child(ignore_changes=["name"]),
        )
        table_arn = table.name.apply(
            lambda table_name: f"arn:{partition}:dynamodb:{region}:{account}:table/{table_name}"
        )
        # `/aws/vendedlogs/`: CloudWatch Logs' advice for delivered logs, whose resource policy then needs one
        # entry for all such groups instead of one per group (its size is limited).
        log_group = aws.cloudwatch.LogGroup(
            self.named("sfn-executions"),
            name=f"/aws/vendedlogs/states/{prefix}",
            retention_in_days=args.settings.log_retention_days,
            opts=self.child(ignore_changes=["name"]),
        )
        bucket_arn = pulumi.Output.from_input(args.bucket_name).apply(lambda bucket: f"arn:{partition}:s3:::{bucket}")
        map_results_arn = bucket_arn.apply(lambda arn: f"{arn}/{DISTRIBUTED_MAP_PREFIX}")

        role = self.service_role(
            "sfn",
            "states.amazonaws.com",
            inline=pulumi.Output.all(
                queues=pulumi.Output.all(*args.job_queue_arns),
                table=table_arn,
                results=map_results_arn,
                key=args.datastore_key_arn,
            ).apply(
                lambda values: step_functions_role_policy(
                    **scope,
                    state_machine_prefix=prefix,
                    job_queue_arns=values["queues"],
                    table_arn=values["table"],
                    map_results_arn=values["results"],
                    datastore_key_arn=values["key"],
                )
            ),
        )
        scheduler = self.service_role(
            "sfn-scheduler",
            "events.amazonaws.com",
            inline=scheduler_role_policy(**scope, state_machine_prefix=prefix),
        )
        # Compute owns the task role and its policy; this one adds the table, and goes with this feature.
        aws.iam.RolePolicy(
            self.named("batch-task-sfn-foreach"),
            role=pulumi.Output.from_input(args.task_role_arn).apply(lambda arn: arn.rsplit("/", 1)[-1]),
            policy=table_arn.apply(lambda arn: json.dumps(foreach_table_task_policy(arn))),
            opts=self.child(),
        )

        self.state_machine_prefix = prefix
        self.profile = pulumi.Output.all(
            role=role.arn,
            scheduler=scheduler.arn,
            table=table.name,
            log_group=log_group.arn,
            bucket=args.bucket_name,
        ).apply(
            lambda values: StepFunctionsProfile(
                role_arn=values["role"],
                scheduler_role_arn=values["scheduler"],
                table_name=values["table"],
                state_machine_prefix=prefix,
                # The provider's `arn` drops the `:*` Step Functions' logging configuration requires.
                log_group_arn=f"{values['log_group']}:*",
                distributed_map_output_path=f"s3://{values['bucket']}/{DISTRIBUTED_MAP_PREFIX}",
            )
        )
        self.user_statements = pulumi.Output.all(role.arn, scheduler.arn).apply(
            lambda arns: step_functions_user_statements(
                **scope, state_machine_prefix=prefix, role_arn=arns[0], scheduler_role_arn=arns[1]
            )
        )
        self.register_outputs(
            {
                "stateMachinePrefix": prefix,
                "roleArn": role.arn,
                "schedulerRoleArn": scheduler.arn,
                "tableName": table.name,
                "logGroupArn": log_group.arn,
            }
        )
