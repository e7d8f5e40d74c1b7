"""Compute: AWS Batch compute environment(s) and job queue, and the IAM roles Batch and the
Metaflow task containers use.

No custom Batch service role: environments use the service-linked role `AWSServiceRoleForBatch`,
which Batch creates on first use. Only with it can Batch update an environment in place (instance
types, subnets, launch template); with a custom role every such change replaces the environment
and kills the jobs running in it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import task_role_policy
from .settings import ComputeSettings, ComputeType

ROOT_VOLUME_GB = 100
"""Room for the image, the code package and step scratch space; billed only while instances run."""

IMAGE_TYPE = "ECS_AL2023"
"""Batch blocks new environments on Amazon Linux 2 AMIs from 2026-06-30."""

ALLOCATION_STRATEGY = {
    ComputeType.SPOT: "SPOT_PRICE_CAPACITY_OPTIMIZED",
    ComputeType.EC2: "BEST_FIT_PROGRESSIVE",
}
BATCH_TYPE = {
    ComputeType.EC2: "EC2",
    ComputeType.SPOT: "SPOT",
    ComputeType.FARGATE: "FARGATE",
    ComputeType.FARGATE_SPOT: "FARGATE_SPOT",
}
INSTANCE_METADATA = "169.254.169.254/32"
IMDS_REJECT_RULE = f"--destination {INSTANCE_METADATA} --protocol tcp --jump REJECT --reject-with tcp-reset"
"""Containers must not reach the instance metadata service: it hands out the instance role's
credentials, the ECS agent's own, with which a task could act as the agent and collect the other
tasks' credentials. AWS's recipe (re:Post Knowledge Center, "How can I prevent containers from
accessing Amazon EC2 instance metadata in Amazon ECS?",
https://repost.aws/knowledge-center/ecs-container-ec2-metadata) puts a rule in Docker's DOCKER-USER
chain, which Docker jumps to first for every packet it forwards and never rewrites.

REJECT (a TCP reset), not the recipe's DROP: Metaflow asks IMDS for the instance identity at the start
of every Batch task (`plugins/aws/aws_utils.py` `get_ec2_instance_metadata`, (1 s, 10 s) timeouts),
and its spot-termination sidecar asks whether the instance is spot (`spot_monitor_sidecar.py`); a
dropped packet would cost a timeout each time, a reset costs nothing.

No interface match: DOCKER-USER sees only forwarded packets, i.e. containers on any Docker bridge,
never the host's own, so the ECS agent (on the host network) keeps IMDS. IMDS listens on TCP 80 only.
The ECS credentials endpoint (169.254.170.2) that gives tasks their own role is another address,
DNAT-ed by the agent to the host itself, so neither this rule nor the forward path touches it."""
ECS_CONFIG_LINES = ("ECS_AWSVPC_BLOCK_IMDS=true",)
"""The ECS agent's own switch for `awsvpc` tasks, whose traffic leaves by their own network interface
and bypasses DOCKER-USER (Batch runs EC2 jobs in `bridge` mode today; this closes the other door)."""
MIME_BOUNDARY = "==METAFLOW-BOUNDARY=="
"""Fixed, so the user data (and the launch template version) only changes when its content does."""

ON_DEMAND_FALLBACK = {ComputeType.SPOT: ComputeType.EC2, ComputeType.FARGATE_SPOT: ComputeType.FARGATE}
"""The on-demand twin queued behind a spot environment when compute:onDemandFallback is on."""


def environment_types(settings: ComputeSettings) -> list[ComputeType]:
    """The compute environments of the job queue, in the order Batch tries them."""
    fallback = ON_DEMAND_FALLBACK.get(settings.type) if settings.on_demand_fallback else None
    return [settings.type] + ([fallback] if fallback else [])


def block_instance_metadata_script() -> str:
    """The boothook: runs at every boot (iptables rules do not survive one) before Docker and the ECS
    agent start, so no task ever runs unprotected. Idempotent: creates DOCKER-USER if Docker has not
    yet (Docker keeps an existing chain and its rules), inserts the rule once, appends the agent
    setting once."""
    config = "\n".join(
        f"grep -qx '{line}' /etc/ecs/ecs.config 2>/dev/null || echo '{line}' >> /etc/ecs/ecs.config"
        for line in ECS_CONFIG_LINES
    )
    return f"""#cloud-boothook
#!/bin/bash
set -u
iptables --wait --new-chain DOCKER-USER 2>/dev/null || true
iptables --wait --check DOCKER-USER {IMDS_REJECT_RULE} 2>/dev/null \\
  || iptables --wait --insert DOCKER-USER 1 {IMDS_REJECT_RULE}
mkdir -p /etc/ecs
{config}
"""


def instance_user_data() -> str:
    """Launch-template user data for Batch instances. Batch merges its own part (the ECS cluster) into
    it, so it must be a MIME multi-part archive (AWS Batch User Guide, "Amazon EC2 user data in launch
    templates")."""
    archive = MIMEMultipart(boundary=MIME_BOUNDARY)
    archive.attach(MIMEText(block_instance_metadata_script(), "cloud-boothook", "us-ascii"))
    return archive.as_string()


@dataclass(frozen=True)
class Placement:
    """Where Batch puts instances or Fargate tasks."""

    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]


class Compute(Component):
    job_queue_arn: pulumi.Output[str]
    task_role_arn: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str] | None = None

    def __init__(
        self,
        name: str,
        settings: ComputeSettings,
        placement: Placement,
        bucket_arn: pulumi.Input[str],
        instance_tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`instance_tags`: the stack's tags, for the instances and volumes Batch launches (the
        provider's default tags reach only resources this program declares)."""
        super().__init__("Compute", name, opts)
        task_role = self.service_role(
            "batch-task",
            "ecs-tasks.amazonaws.com",
            inline=pulumi.Output.from_input(bucket_arn).apply(task_role_policy),
            inline_purpose="batch-task-datastore",
        )
        self.task_role_arn = task_role.arn

        types = environment_types(settings)
        if settings.type.is_fargate:
            execution_role = self.service_role(
                "batch-execution", "ecs-tasks.amazonaws.com", managed=["service-role/AmazonECSTaskExecutionRolePolicy"]
            )
            self.execution_role_arn = execution_role.arn
            environments = [self._fargate_environment(t, settings, placement) for t in types]
        else:
            instance_role = self.service_role(
                "batch-instance", "ec2.amazonaws.com", managed=["service-role/AmazonEC2ContainerServiceforEC2Role"]
            )
            profile = aws.iam.InstanceProfile(self.named("batch-instance"), role=instance_role.name, opts=self.child())
            template = self._launch_template(instance_tags)
            environments = [self._ec2_environment(t, settings, placement, profile, template) for t in types]

        queue = aws.batch.JobQueue(
            self.named("queue"),
            state="ENABLED",
            priority=1,
            compute_environment_orders=[
                aws.batch.JobQueueComputeEnvironmentOrderArgs(order=order, compute_environment=environment.arn)
                for order, environment in enumerate(environments, start=1)
            ],
            opts=self.child(),
        )
        self.job_queue_arn = queue.arn
        self.register_outputs({"jobQueueArn": self.job_queue_arn, "taskRoleArn": self.task_role_arn})

    def _launch_template(self, instance_tags: Mapping[str, str]) -> aws.ec2.LaunchTemplate:
        return aws.ec2.LaunchTemplate(
            self.named("batch"),
            # IMDSv2 only, and hop limit 1: an IMDSv2 token cannot travel the extra hop into a
            # container. Defence in depth behind the user data's REJECT rule, which is what keeps
            # containers from waiting on IMDS; the ECS agent is on the host network and needs one hop.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                http_protocol_ipv6="disabled",
            ),
            user_data=base64.b64encode(instance_user_data().encode("ascii")).decode("ascii"),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=ROOT_VOLUME_GB, volume_type="gp3", encrypted="true", delete_on_termination="true"
                    ),
                )
            ],
            # The stack's tags on what Batch launches (Batch merges them with its own). Here rather than
            # in the environments' `compute_resources.tags`: both update an environment in place only
            # while it is updatable (service-linked role, an updatable allocation strategy; otherwise
            # the provider replaces it), but only the template tags the volumes too, once for both
            # environments.
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=dict(instance_tags))
                for kind in ("instance", "volume")
            ]
            if instance_tags
            else None,
            opts=self.child(),
        )

    def _ec2_environment(
        self,
        kind: ComputeType,
        settings: ComputeSettings,
        placement: Placement,
        profile: aws.iam.InstanceProfile,
        template: aws.ec2.LaunchTemplate,
    ) -> aws.batch.ComputeEnvironment:
        return aws.batch.ComputeEnvironment(
            self.named(kind.value),
            type="MANAGED",
            compute_resources=aws.batch.ComputeEnvironmentComputeResourcesArgs(
                type=BATCH_TYPE[kind],
                allocation_strategy=ALLOCATION_STRATEGY[kind],
                # Kept-running vCPUs belong to the first environment only; the fallback starts from zero.
                min_vcpus=settings.min_vcpus if kind is settings.type else 0,
                max_vcpus=settings.max_vcpus,
                instance_types=list(settings.instance_types),
                instance_role=profile.arn,
                subnets=placement.subnet_ids,
                security_group_ids=[placement.security_group_id],
                launch_template=aws.batch.ComputeEnvironmentComputeResourcesLaunchTemplateArgs(
                    launch_template_id=template.id, version=template.latest_version.apply(str)
                ),
                ec2_configurations=[
                    aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs(image_type=IMAGE_TYPE)
                ],
            ),
            # Batch moves desired vCPUs by itself as jobs come and go.
            opts=self.child(ignore_changes=["computeResources.desiredVcpus"]),
        )

    def _fargate_environment(
        self,
        kind: ComputeType,
        settings: ComputeSettings,
        placement: Placement,
    ) -> aws.batch.ComputeEnvironment:
        return aws.batch.ComputeEnvironment(
            self.named(kind.value.replace("_", "-")),
            type="MANAGED",
            compute_resources=aws.batch.ComputeEnvironmentComputeResourcesArgs(
                type=BATCH_TYPE[kind],
                max_vcpus=settings.max_vcpus,
                subnets=placement.subnet_ids,
                security_group_ids=[placement.security_group_id],
            ),
            opts=self.child(),
        )
