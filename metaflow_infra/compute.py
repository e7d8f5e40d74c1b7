"""Compute: AWS Batch compute environment(s) and job queue, and the IAM roles Batch and the
Metaflow task containers use. Optionally a GPU queue, an Inferentia/Trainium queue and a multi-node
(@parallel) queue, each over environments of its own that keep nothing running, on the same instance
profile and launch template as the CPU environments.

No custom Batch service role: environments use the service-linked role `AWSServiceRoleForBatch`,
which Batch creates on first use. Only with it can Batch update an environment in place (instance
types, subnets, launch template); with a custom role every such change replaces the environment
and kills the jobs running in it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import task_role_policy
from .settings import ComputeSettings, ComputeType, instance_families

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

GPU_IMAGE_TYPE = "ECS_AL2023_NVIDIA"
"""Batch's ECS GPU AMI (Amazon Linux 2023 with the NVIDIA driver and container toolkit): "Default for all GPU
instance families" except p3 and g3 (botocore's Batch model, Ec2Configuration.imageType)."""
NEURON_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/neuron/recommended/image_id"
"""Batch has no image type for Inferentia/Trainium: the environment overrides the ECS_AL2023 image with the
ECS-optimized Neuron AMI (Neuron driver and runtime), whose current id AWS publishes in this public SSM
parameter. Read at every deploy, so a `pulumi up` after AWS publishes a new one rolls the environment onto it
(an in-place infrastructure update: the environment uses the service-linked role)."""
PLACEMENT_STRATEGY = "cluster"
"""Multi-node jobs: "create a cluster placement group in a single Availability Zone and associate it with your
compute resources" (AWS Batch User Guide, "Compute environment considerations for MNP")."""
MULTI_NODE_SUBNETS = 1
"""A cluster placement group cannot span availability zones, so the multi-node environment uses one subnet."""

INSTANCE_PURCHASE = {
    ComputeType.SPOT: ComputeType.SPOT,
    ComputeType.EC2: ComputeType.EC2,
    ComputeType.FARGATE_SPOT: ComputeType.SPOT,
    ComputeType.FARGATE: ComputeType.EC2,
}
"""How GPU and Inferentia/Trainium environments buy instances for each compute:type. Fargate has neither GPUs
nor Neuron devices, so a Fargate stack's accelerators run on instances: spot for fargate_spot, on-demand for
fargate."""


def environment_types(settings: ComputeSettings) -> list[ComputeType]:
    """The compute environments of the job queue, in the order Batch tries them."""
    fallback = ON_DEMAND_FALLBACK.get(settings.type) if settings.on_demand_fallback else None
    return [settings.type] + ([fallback] if fallback else [])


def accelerator_environment_types(settings: ComputeSettings) -> list[ComputeType]:
    """The environments of the GPU (or Inferentia/Trainium) queue, in the order Batch tries them: spot or
    on-demand as compute:type says, with the same on-demand fallback behind spot."""
    first = INSTANCE_PURCHASE[settings.type]
    fallback = ON_DEMAND_FALLBACK.get(first) if settings.on_demand_fallback else None
    return [first] + ([fallback] if fallback else [])


def has_gpu_families(instance_types: Sequence[str]) -> bool:
    families = instance_families()
    return any(families.get(entry.partition(".")[0], {}).get("gpu") for entry in instance_types)


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
    multi_node_security_group_id: pulumi.Input[str] | None = None
    """The group the nodes of a multi-node job share to reach each other (needed with compute:multiNode)."""


QUEUE_OUTPUTS = {"": "jobQueueArn", "gpu": "gpuJobQueue", "neuron": "neuronJobQueue", "multinode": "multiNodeJobQueue"}
"""Stack output of each queue, by the purpose its resources are named after ("" for the CPU queue)."""


class Compute(Component):
    job_queue_arn: pulumi.Output[str]
    task_role_arn: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str] | None = None
    queue_arns: dict[str, pulumi.Output[str]]
    """Every job queue's ARN by its stack output name (jobQueueArn first; the others only when on)."""

    def __init__(
        self,
        name: str,
        settings: ComputeSettings,
        placement: Placement,
        bucket_arn: pulumi.Input[str],
        instance_tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
        datastore_key_arn: pulumi.Input[str] | None = None,
    ) -> None:
        """`instance_tags`: the stack's tags, for the instances and volumes Batch launches (the
        provider's default tags reach only resources this program declares). `datastore_key_arn`: the
        datastore's SSE-KMS key, which steps use through S3."""
        super().__init__("Compute", name, opts)
        self._settings = settings
        self._placement = placement
        self._instance_tags = instance_tags
        self._instance_setup: tuple[aws.iam.InstanceProfile, aws.ec2.LaunchTemplate] | None = None
        task_role = self.service_role(
            "batch-task",
            "ecs-tasks.amazonaws.com",
            inline=pulumi.Output.all(bucket_arn, datastore_key_arn).apply(lambda arns: task_role_policy(*arns)),
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
            environments = [
                self._ec2_environment(
                    kind.value,
                    kind,
                    instance_types=list(settings.instance_types),
                    # Kept-running vCPUs belong to the first environment only; the fallback starts from zero.
                    min_vcpus=settings.min_vcpus if kind is settings.type else 0,
                    max_vcpus=settings.max_vcpus,
                    images=[aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs(image_type=IMAGE_TYPE)],
                )
                for kind in types
            ]
        self.queue_arns = {QUEUE_OUTPUTS[""]: self._queue("", environments)}
        if settings.gpu:
            self._accelerator_queue("gpu", settings.gpu_instance_types, settings.gpu_max_vcpus, self._gpu_images())
        if settings.neuron_instance_types:
            neuron = self._neuron_images()
            self._accelerator_queue("neuron", settings.neuron_instance_types, settings.neuron_max_vcpus, neuron)
        if settings.multi_node:
            self._multi_node_queue()
        self.job_queue_arn = self.queue_arns[QUEUE_OUTPUTS[""]]
        self.register_outputs({**self.queue_arns, "taskRoleArn": self.task_role_arn})

    def _queue(self, purpose: str, environments: Sequence[aws.batch.ComputeEnvironment]) -> pulumi.Output[str]:
        queue = aws.batch.JobQueue(
            self.named(f"{purpose}-queue" if purpose else "queue"),
            state="ENABLED",
            priority=1,
            compute_environment_orders=[
                aws.batch.JobQueueComputeEnvironmentOrderArgs(order=order, compute_environment=environment.arn)
                for order, environment in enumerate(environments, start=1)
            ],
            opts=self.child(),
        )
        return queue.arn

    def _accelerator_queue(
        self,
        purpose: str,
        instance_types: Sequence[str],
        max_vcpus: int,
        images: list[aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs],
    ) -> None:
        """A queue of its own (steps ask for it with @batch(queue=...)) over instances with the accelerator:
        spot first when compute:type is spot, the on-demand fallback behind, nothing kept running."""
        environments = [
            self._ec2_environment(
                f"{purpose}-{kind.value}",
                kind,
                instance_types=list(instance_types),
                min_vcpus=0,
                max_vcpus=max_vcpus,
                images=images,
            )
            for kind in accelerator_environment_types(self._settings)
        ]
        self.queue_arns[QUEUE_OUTPUTS[purpose]] = self._queue(purpose, environments)

    def _gpu_images(self) -> list[aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs]:
        return [aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs(image_type=GPU_IMAGE_TYPE)]

    def _neuron_images(self) -> list[aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs]:
        ami = aws.ssm.get_parameter(name=NEURON_AMI_PARAMETER, opts=pulumi.InvokeOptions(parent=self)).value
        return [
            aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs(
                image_type=IMAGE_TYPE, image_id_override=ami
            )
        ]

    def _multi_node_queue(self) -> None:
        """Batch runs multi-node parallel jobs on managed on-demand EC2 only ("not supported on compute
        environments that use Spot Instances", nor Fargate: AWS Batch User Guide, "Compute environment
        considerations for MNP"), so whatever compute:type says: on-demand, in one cluster placement group, in
        one subnet, with the group that lets the nodes of a job reach each other."""
        settings, placement = self._settings, self._placement
        if placement.multi_node_security_group_id is None:
            raise ValueError("compute:multiNode needs the network's multi-node security group")
        group = aws.ec2.PlacementGroup(self.named("multinode"), strategy=PLACEMENT_STRATEGY, opts=self.child())
        images = [aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs(image_type=IMAGE_TYPE)]
        if has_gpu_families(settings.multi_node_instance_types):  # Batch picks the image matching each type
            images += self._gpu_images()
        environment = self._ec2_environment(
            "multinode",
            ComputeType.EC2,
            instance_types=list(settings.multi_node_instance_types),
            min_vcpus=0,
            max_vcpus=settings.multi_node_max_vcpus,
            images=images,
            subnets=pulumi.Output.from_input(placement.subnet_ids).apply(lambda ids: ids[:MULTI_NODE_SUBNETS]),
            security_groups=[placement.security_group_id, placement.multi_node_security_group_id],
            placement_group=group.name,
        )
        self.queue_arns[QUEUE_OUTPUTS["multinode"]] = self._queue("multinode", [environment])

    def _instances(self) -> tuple[aws.iam.InstanceProfile, aws.ec2.LaunchTemplate]:
        """The instance role, its profile and the launch template every EC2 environment shares: made once,
        with the first environment on instances (a Fargate stack has none until an accelerator needs one)."""
        if self._instance_setup is None:
            instance_role = self.service_role(
                "batch-instance", "ec2.amazonaws.com", managed=["service-role/AmazonEC2ContainerServiceforEC2Role"]
            )
            profile = aws.iam.InstanceProfile(self.named("batch-instance"), role=instance_role.name, opts=self.child())
            self._instance_setup = (profile, self._launch_template(self._instance_tags))
        return self._instance_setup

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
            # the provider replaces it), but only the template tags the volumes too, once for every
            # environment.
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
        purpose: str,
        kind: ComputeType,
        *,
        instance_types: list[str],
        min_vcpus: int,
        max_vcpus: int,
        images: list[aws.batch.ComputeEnvironmentComputeResourcesEc2ConfigurationArgs],
        subnets: pulumi.Input[list[str]] | None = None,
        security_groups: Sequence[pulumi.Input[str]] | None = None,
        placement_group: pulumi.Input[str] | None = None,
    ) -> aws.batch.ComputeEnvironment:
        """An environment on instances: the shared instance profile and launch template (IMDS rule, encrypted
        root volume, the stack's tags), the stack's subnets and Batch group unless told otherwise."""
        profile, template = self._instances()
        return aws.batch.ComputeEnvironment(
            self.named(purpose),
            type="MANAGED",
            compute_resources=aws.batch.ComputeEnvironmentComputeResourcesArgs(
                type=BATCH_TYPE[kind],
                allocation_strategy=ALLOCATION_STRATEGY[kind],
                min_vcpus=min_vcpus,
                max_vcpus=max_vcpus,
                instance_types=instance_types,
                instance_role=profile.arn,
                subnets=subnets if subnets is not None else self._placement.subnet_ids,
                security_group_ids=list(security_groups or [self._placement.security_group_id]),
                placement_group=placement_group,
                launch_template=aws.batch.ComputeEnvironmentComputeResourcesLaunchTemplateArgs(
                    launch_template_id=template.id, version=template.latest_version.apply(str)
                ),
                ec2_configurations=images,
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
