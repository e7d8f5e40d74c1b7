"""The whole stack: settings in, components wired, outputs out. `__main__.py` only calls `build`."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from .compute import Compute, Placement
from .datastore import Datastore
from .network import Network
from .profile import ProfileInputs, metaflow_profile
from .settings import Settings


def build(settings: Settings) -> dict[str, pulumi.Output[Any]]:
    """Declare every resource of the stack; return the stack outputs by name."""
    name = settings.metaflow.prefix
    # One provider carries the tags, so every taggable resource gets them without repeating them.
    provider = aws.Provider(
        f"{name}-aws", region=settings.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=settings.tags))
    opts = pulumi.ResourceOptions(providers=[provider])

    network = Network(name, settings.network, with_metadata_service=settings.metadata.enabled, opts=opts)
    datastore = Datastore(name, settings.datastore, opts=opts)
    compute = Compute(
        name, settings.compute,
        Placement(subnet_ids=network.subnet_ids, security_group_id=network.batch_security_group_id),
        bucket_arn=datastore.bucket_arn, opts=opts)

    profile = pulumi.Output.all(
        bucket_name=datastore.bucket_name,
        job_queue_arn=compute.job_queue_arn,
        task_role_arn=compute.task_role_arn,
        fargate_execution_role_arn=compute.execution_role_arn,
    ).apply(lambda values: metaflow_profile(ProfileInputs(**values)))
    return {
        "metaflowProfile": profile,
        "bucketName": datastore.bucket_name,
        "jobQueueArn": compute.job_queue_arn,
    }
