"""Alerts: what tells someone the stack needs a look. CloudWatch alarms on the metadata endpoint and its
database, failed Batch jobs (an EventBridge rule), all to one SNS topic with an optional email
subscription; and an optional AWS Budgets monthly budget that emails on its own."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import alerts_topic_policy
from .settings import AlertsSettings, BudgetSettings, budget_name

BYTES_PER_GB = 1024**3
FREE_STORAGE_ALARM_SHARE = 0.1
"""Free storage below a tenth of the allocated storage: time to raise db:allocatedStorageGb (RDS refuses
writes when it runs out, and the metadata service with it)."""
DATABASE_CPU_ALARM_PERCENT = 80
DATABASE_CONNECTIONS_ALARM = 100
"""Each service task's pool opens at most 10 connections (MF_METADATA_DB_POOL_MAX), the UI's as many: a
hundred means something else connects, or tasks pile up; db.t4g.small allows about 190."""
ENDPOINT_5XX_ALARM = 5
"""Server errors in five minutes: the service's answers fail, not a client's request."""
BUDGET_ALERTS = (("ACTUAL", 80), ("FORECASTED", 100))
"""Email when actual cost passes 80% of the budget, and when the month's forecast passes it."""


@dataclass(frozen=True)
class ServiceWatch:
    """What the metadata-service alarms watch."""

    api_id: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    database_id: pulumi.Input[str]
    database_storage_gb: int


@dataclass(frozen=True)
class AlertsArgs:
    settings: AlertsSettings
    budget: BudgetSettings
    stack: str
    job_queue_arns: Sequence[pulumi.Input[str]]
    service: ServiceWatch | None = None


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm, as a pure description (tested without Pulumi)."""

    purpose: str
    description: str
    namespace: str
    metric: str
    statistic: str
    comparison: str
    threshold: float
    period: int
    periods: int
    missing_data: str


def service_alarm_specs(database_storage_gb: int) -> list[AlarmSpec]:
    """The alarms of a stack with the metadata service; their dimensions are added where declared."""
    return [
        AlarmSpec(
            "alarm-endpoint-5xx",
            "Metaflow metadata endpoint answers with server errors (5xx)",
            "AWS/ApiGateway",
            "5xx",
            "Sum",
            "GreaterThanOrEqualToThreshold",
            ENDPOINT_5XX_ALARM,
            300,
            1,
            "notBreaching",  # no requests, no errors
        ),
        AlarmSpec(
            "alarm-service-no-task",
            "Metaflow metadata service has no running task (ECS reports no CPU samples)",
            "AWS/ECS",
            "CPUUtilization",
            "SampleCount",
            "LessThanThreshold",
            1,
            60,
            3,
            "breaching",  # no task, no samples: exactly what this alarm is for
        ),
        AlarmSpec(
            "alarm-db-cpu",
            f"Metaflow database CPU above {DATABASE_CPU_ALARM_PERCENT}% for 15 minutes",
            "AWS/RDS",
            "CPUUtilization",
            "Average",
            "GreaterThanThreshold",
            DATABASE_CPU_ALARM_PERCENT,
            300,
            3,
            "missing",
        ),
        AlarmSpec(
            "alarm-db-storage",
            f"Metaflow database free storage below {FREE_STORAGE_ALARM_SHARE:.0%} of {database_storage_gb} GB",
            "AWS/RDS",
            "FreeStorageSpace",
            "Minimum",
            "LessThanThreshold",
            database_storage_gb * BYTES_PER_GB * FREE_STORAGE_ALARM_SHARE,
            300,
            1,
            "missing",
        ),
        AlarmSpec(
            "alarm-db-connections",
            f"Metaflow database has more than {DATABASE_CONNECTIONS_ALARM} connections",
            "AWS/RDS",
            "DatabaseConnections",
            "Maximum",
            "GreaterThanThreshold",
            DATABASE_CONNECTIONS_ALARM,
            300,
            1,
            "missing",
        ),
    ]


def failed_jobs_pattern(job_queue_arns: Sequence[str]) -> dict[str, object]:
    """EventBridge pattern of a Batch job of this stack's queues that failed (each attempt Metaflow retries
    is a job of its own, so a step retried three times can send four)."""
    return {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job State Change"],
        "detail": {"status": ["FAILED"], "jobQueue": list(job_queue_arns)},
    }


class Alerts(Component):
    topic_arn: pulumi.Output[str] | None = None

    def __init__(self, name: str, args: AlertsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Alerts", name, opts)
        if args.settings.enabled:
            self.topic_arn = self._topic_and_alarms(args)
        if args.budget.monthly_usd is not None:
            self._budget(args)
        self.register_outputs({"topicArn": self.topic_arn})

    def _topic_and_alarms(self, args: AlertsArgs) -> pulumi.Output[str]:
        topic = aws.sns.Topic(self.named("alerts"), opts=self.child())
        if args.settings.email:
            aws.sns.TopicSubscription(
                self.named("alerts-email"),
                topic=topic.arn,
                protocol="email",
                endpoint=args.settings.email,
                opts=self.child(),
            )
        rule = aws.cloudwatch.EventRule(
            self.named("failed-jobs"),
            description="Metaflow: a Batch job of this stack failed",
            event_pattern=pulumi.Output.all(*args.job_queue_arns).apply(
                lambda arns: json.dumps(failed_jobs_pattern(arns))
            ),
            opts=self.child(),
        )
        aws.cloudwatch.EventTarget(
            self.named("failed-jobs"),
            rule=rule.name,
            arn=topic.arn,
            input_transformer=aws.cloudwatch.EventTargetInputTransformerArgs(
                input_paths={
                    "job": "$.detail.jobName",
                    "reason": "$.detail.statusReason",
                    "queue": "$.detail.jobQueue",
                },
                input_template='"Metaflow Batch job <job> failed in <queue>: <reason>"',
            ),
            opts=self.child(),
        )
        alarms = []
        if args.service is not None:
            alarms = self._service_alarms(args.service, topic)
        aws.sns.TopicPolicy(
            self.named("alerts"),
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, rule.arn, *[alarm.arn for alarm in alarms]).apply(
                lambda arns: json.dumps(alerts_topic_policy(arns[0], events_rule_arn=arns[1], alarm_arns=arns[2:]))
            ),
            opts=self.child(),
        )
        return topic.arn

    def _service_alarms(self, service: ServiceWatch, topic: aws.sns.Topic) -> list[aws.cloudwatch.MetricAlarm]:
        dimensions: dict[str, dict[str, pulumi.Input[str]]] = {
            "AWS/ApiGateway": {"ApiId": service.api_id},
            "AWS/ECS": {"ClusterName": service.cluster_name, "ServiceName": service.service_name},
            "AWS/RDS": {"DBInstanceIdentifier": service.database_id},
        }
        return [
            aws.cloudwatch.MetricAlarm(
                self.named(spec.purpose),
                alarm_description=spec.description,
                namespace=spec.namespace,
                metric_name=spec.metric,
                dimensions=dimensions[spec.namespace],
                statistic=spec.statistic,
                comparison_operator=spec.comparison,
                threshold=spec.threshold,
                period=spec.period,
                evaluation_periods=spec.periods,
                treat_missing_data=spec.missing_data,
                alarm_actions=[topic.arn],
                ok_actions=[topic.arn],
                opts=self.child(),
            )
            for spec in service_alarm_specs(service.database_storage_gb)
        ]

    def _budget(self, args: AlertsArgs) -> None:
        budget = args.budget
        email = budget.email or args.settings.email
        assert budget.monthly_usd is not None and email is not None  # settings refuse a budget nobody hears of
        aws.budgets.Budget(
            self.named("budget"),
            name=budget_name(self.prefix, args.stack),
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=str(budget.monthly_usd),
            limit_unit="USD",
            notifications=[
                aws.budgets.BudgetNotificationArgs(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=percent,
                    threshold_type="PERCENTAGE",
                    subscriber_email_addresses=[email],
                )
                for kind, percent in BUDGET_ALERTS
            ],
            opts=self.child(),
        )
