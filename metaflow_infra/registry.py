"""Registry: an ECR repository for the images Metaflow steps run in (`ecr:enabled`).

Batch instances and Fargate tasks pull from it with the roles they already have (the AWS managed
ECS policies allow ECR pulls). Images are scanned on push and only the newest `ecr:keepImages`
are kept; storage bills per GB ($0.10/GB-month), nothing while empty.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from .base import Component
from .settings import REGISTRY_REPOSITORY, EcrSettings, ecr_repository_name


def lifecycle_policy(keep: int) -> dict[str, Any]:
    """Expire every image beyond the newest `keep` (tagged or not)."""
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"keep the newest {keep} images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
                "action": {"type": "expire"},
            }
        ]
    }


class Registry(Component):
    repository_url: pulumi.Output[str]
    registry: pulumi.Output[str]
    """`<account>.dkr.ecr.<region>.amazonaws.com`: what METAFLOW_BATCH_CONTAINER_REGISTRY names."""
    repository_name: pulumi.Output[str]

    def __init__(
        self, name: str, settings: EcrSettings, stack: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("Registry", name, opts)
        repository = aws.ecr.Repository(
            self.named("steps"),
            # Named at creation (ECR needs a name); a later prefix change must not replace it and its images.
            name=ecr_repository_name(self.prefix, stack, REGISTRY_REPOSITORY),
            image_tag_mutability="IMMUTABLE" if settings.immutable_tags else "MUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            opts=self.child(ignore_changes=["name"]),
        )
        aws.ecr.LifecyclePolicy(
            self.named("steps"),
            repository=repository.name,
            policy=json.dumps(lifecycle_policy(settings.keep_images)),
            opts=self.child(),
        )
        self.repository_url = repository.repository_url
        self.repository_name = repository.name
        self.registry = repository.repository_url.apply(lambda url: url.split("/", 1)[0])
        self.register_outputs({"repositoryUrl": self.repository_url})
