"""Compute: AWS Batch compute environment(s) and job queue, and the IAM roles Batch and the
Metaflow task containers use.

No custom Batch service role: environments use the service-linked role `AWSServiceRoleForBatch`,
which Batch creates on first use. Only with it can Batch update an environment in place (instance
types, subnets, launch template); with a custom role every such change replaces the environment
and kills the jobs running in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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
ON_DEMAND_FALLBACK = {ComputeType.SPOT: ComputeType.EC2, ComputeType.FARGATE_SPOT: ComputeType.FARGATE}
"""The on-demand twin queued behind a spot environment when compute:onDemandFallback is on."""


def environment_types(settings: ComputeSettings) -> list[ComputeType]:
    """The compute environments of the job queue, in the order Batch tries them."""
    fallback = ON_DEMAND_FALLBACK.get(settings.type) if settings.on_demand_fallback else None
    return [settings.type] + ([fallback] if fallback else [])


@dataclass(frozen=True)
class Placement:
    """Where Batch puts instances or Fargate tasks."""

    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]


class Compute(Component):
    job_queue_arn: pulumi.Output[str]
    task_role_arn: pulumi.Output[str]
    execution_role_arn: Optional[pulumi.Output[str]] = None

    def __init__(
        self,
        name: str,
        settings: ComputeSettings,
        placement: Placement,
        bucket_arn: pulumi.Input[str],
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        super().__init__("Compute", name, opts)
        task_role = self.service_role("batch-task", "ecs-tasks.amazonaws.com",
                                      inline=pulumi.Output.from_input(bucket_arn).apply(task_role_policy),
                                      inline_purpose="batch-task-datastore")
        self.task_role_arn = task_role.arn

        types = environment_types(settings)
        if settings.type.is_fargate:
            execution_role = self.service_role("batch-execution", "ecs-tasks.amazonaws.com",
                                               managed=["service-role/AmazonECSTaskExecutionRolePolicy"])
            self.execution_role_arn = execution_role.arn
            environments = [self._fargate_environment(t, settings, placement) for t in types]
        else:
            instance_role = self.service_role("batch-instance", "ec2.amazonaws.com",
                                              managed=["service-role/AmazonEC2ContainerServiceforEC2Role"])
            profile = aws.iam.InstanceProfile(self.named("batch-instance"), role=instance_role.name,
                                              opts=self.child())
            template = self._launch_template()
            environments = [self._ec2_environment(t, settings, placement, profile, template) for t in types]

        queue = aws.batch.JobQueue(
            self.named("queue"), state="ENABLED", priority=1,
            compute_environment_orders=[
                aws.batch.JobQueueComputeEnvironmentOrderArgs(order=order, compute_environment=environment.arn)
                for order, environment in enumerate(environments, start=1)],
            opts=self.child())
        self.job_queue_arn = queue.arn
        self.register_outputs({"jobQueueArn": self.job_queue_arn, "taskRoleArn": self.task_role_arn})

    def _launch_template(self) -> aws.ec2.LaunchTemplate:
        return aws.ec2.LaunchTemplate(
            self.named("batch"),
            # IMDSv2 only; hop limit 2 so containers (one hop further) can still read instance metadata.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=2),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=ROOT_VOLUME_GB, volume_type="gp3", encrypted="true", delete_on_termination="true"))],
            opts=self.child())

    def _ec2_environment(
        self, kind: ComputeType, settings: ComputeSettings, placement: Placement,
        profile: aws.iam.InstanceProfile, template: aws.ec2.LaunchTemplate,
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
                    launch_template_id=template.id, version=template.latest_version.apply(str)),
                ec2_configurations=[aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs(
                    image_type=IMAGE_TYPE)],
            ),
            # Batch moves desired vCPUs by itself as jobs come and go.
            opts=self.child(ignore_changes=["computeResources.desiredVcpus"]))

    def _fargate_environment(
        self, kind: ComputeType, settings: ComputeSettings, placement: Placement,
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
            opts=self.child())
