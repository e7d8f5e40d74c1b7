"""ImageMirror: the metadata-service image copied into an ECR repository in the stack's region
(`metadata:scaleToZero`), so every wake pulls it from there.

With scale to zero a task starts on every wake, and Fargate pulls the whole image for every task it starts.
From Docker Hub that pull crosses the internet and counts against Docker Hub's limit of 10 unauthenticated
pulls an hour per IP address (a NAT gateway's one address is shared by everything behind it); a refused or
slow pull is a failed or slow wake. From ECR in the same region it is neither (docs/scale-to-zero.md).

`pulumi up` runs the copy itself: a Lambda function (`lambdas/mirror.py`) invoked once per image reference,
which copies the exact image (same digest) and answers its digest; tasks name the image by that digest. The
repository holds nothing but copies of the public image, so it is deleted with its images when scale to zero
is turned off. Storage bills per GB-month (`costs.py`); pulls within the region cost nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_aws as aws

from .base import Component
from .endpoint import log_group, python_function
from .policies import image_mirror_policy
from .settings import MIRROR_REPOSITORY, ecr_repository_name
from .wake import image_size_warning

MIRROR_TIMEOUT_SECONDS = 900
"""Lambda's longest run: a copy of the ~330 MB image takes a fraction of it."""
MIRROR_MEMORY_MB = 512
"""One 10 MiB part in memory at a time, base64-encoded once more for ECR's API."""


@dataclass(frozen=True)
class ServiceImage:
    """The image the metadata service and the UI run: the configured reference, or its in-region copy."""

    reference: pulumi.Input[str]
    repository_arn: pulumi.Input[str] | None = None
    """The ECR repository tasks pull it from, when it is a copy: their execution roles may pull from it."""


@dataclass(frozen=True)
class ImageMirrorArgs:
    image: str
    """`metadata:image`, validated and pinned."""
    stack: str


class ImageMirror(Component):
    image: ServiceImage

    def __init__(self, name: str, args: ImageMirrorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ImageMirror", name, opts)
        repository = aws.ecr.Repository(
            self.named("service-image"),
            name=ecr_repository_name(self.prefix, args.stack, MIRROR_REPOSITORY),
            # A tag keeps naming the image first copied under it; tasks pull by digest anyway.
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            # Only copies of a public image: nothing is lost when scale to zero is turned off.
            force_delete=True,
            opts=self.child(ignore_changes=["name"]),
        )
        logs = log_group(self, "image-mirror")
        role = self.service_role(
            "image-mirror",
            "lambda.amazonaws.com",
            inline=pulumi.Output.all(repository.arn, logs.arn).apply(
                lambda arns: image_mirror_policy(arns[0], arns[1])
            ),
        )
        function = python_function(
            self,
            "image-mirror",
            "mirror",
            role,
            logs,
            memory_mb=MIRROR_MEMORY_MB,
            timeout_seconds=MIRROR_TIMEOUT_SECONDS,
        )
        # Runs when created, that is once per image reference (a new `metadata:image` is a new input); the
        # role's policy must exist first, as the function uses it at once.
        copy = aws.lambda_.Invocation(
            self.named("image-mirror"),
            function_name=function.name,
            input=repository.name.apply(lambda repository_name: copy_request(args.image, repository_name)),
            # A new repository (one a future change of its settings replaces) starts empty: copy again.
            opts=self.child(self.role_policies["image-mirror"], replace_with=[repository]),
        )
        answer = copy.result.apply(json.loads)
        answer.apply(_warn_if_too_large)
        # Pulumi runs the copy only when it creates the invocation (AWS is never read back): a copy deleted
        # since, by hand or with its repository, would leave every wake without an image. Every preview and
        # `pulumi up` looks for the repository and then the copy, once the copy has answered (the first
        # `pulumi up` creates both). Listing repositories never fails on a missing one, as listing its images would.
        repositories = aws.ecr.get_repositories_output(
            region=answer.apply(lambda _: cast(str | None, None)), opts=pulumi.InvokeOutputOptions(parent=self)
        )
        present = pulumi.Output.all(repository.name, repositories.names, copy.urn).apply(
            lambda values: _require_repository(values[0], values[1], values[2])
        )
        listed = aws.ecr.get_images_output(repository_name=present, opts=pulumi.InvokeOutputOptions(parent=self))
        pulumi.Output.all(repository.name, answer, listed.image_ids, copy.urn).apply(
            lambda values: _require_copy(values[0], values[1]["digest"], [_digest_of(i) for i in values[2]], values[3])
        )
        self.image = ServiceImage(
            reference=pulumi.Output.all(repository.repository_url, answer).apply(
                lambda values: f"{values[0]}@{values[1]['digest']}"
            ),
            repository_arn=repository.arn,
        )
        self.register_outputs({"image": self.image.reference})


def copy_request(image: str, repository: str) -> str:
    """The mirror function's event (lambdas/mirror.py)."""
    return json.dumps({"image": image, "repository": repository})


class MissingCopyError(pulumi.RunError):
    """The image copy the tasks name is no longer in its repository (a RunError: reported without a traceback)."""


def missing_copy_message(repository: str, digest: str, present: list[str], invocation_urn: str) -> str | None:
    if digest in present:
        return None
    return (
        f"the metadata-service image copy {digest} is missing from ECR repository {repository} (deleted since "
        f"`pulumi up` made it?), and wakes cannot start the service without it: copy it again with "
        f"`pulumi up --replace '{invocation_urn}'`"
    )


def missing_repository_message(repository: str, names: list[str], invocation_urn: str) -> str | None:
    if repository in names:
        return None
    return (
        f"ECR repository {repository}, which holds the metadata-service image copy, is gone (deleted since "
        "`pulumi up` made it?), and wakes cannot start the service without it: let Pulumi see that with "
        f"`pulumi refresh`, then create it and copy the image again with `pulumi up --replace '{invocation_urn}'`"
    )


def _require_repository(repository: str, names: list[str], invocation_urn: str) -> str:
    message = missing_repository_message(repository, names, invocation_urn)
    if message:
        raise MissingCopyError(message)
    return repository


def _require_copy(repository: str, digest: str, present: list[str], invocation_urn: str) -> None:
    message = missing_copy_message(repository, digest, present, invocation_urn)
    if message:
        raise MissingCopyError(message)


def _digest_of(image_id: Any) -> str:
    # Invoke results reach the program as dicts of Python names, whatever the result class says.
    return image_id["image_digest"] if isinstance(image_id, dict) else image_id.image_digest


def _warn_if_too_large(answer: dict[str, Any]) -> None:
    warning = image_size_warning(answer["compressedBytes"])
    if warning:
        pulumi.log.warn(warning)
