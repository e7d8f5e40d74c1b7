"""Datastore: the S3 bucket for Metaflow's artifacts (`metaflow/` prefix) and datatools (`data/`)."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import tls_only_bucket_policy
from .settings import DatastoreSettings

ABORT_MULTIPART_AFTER_DAYS = 7
NONCURRENT_VERSIONS_KEPT_DAYS = 30


class Datastore(Component):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, settings: DatastoreSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Datastore", name, opts)
        artifacts = self.named("artifacts")
        # `<prefix>-artifacts-<random>`: bucket names are global, so a fixed name breaks the second
        # stack. The name is fixed at creation (a new prefix must not replace the bucket), and unless
        # datastore:forceDestroy says otherwise the bucket outlives the stack with its artifacts.
        bucket = aws.s3.Bucket(
            artifacts,
            bucket_prefix=self.labelled("artifacts-"),
            force_destroy=settings.force_destroy,
            opts=self.child(retain_on_delete=not settings.force_destroy, ignore_changes=["bucket", "bucketPrefix"]),
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            artifacts,
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self.child(),
        )
        aws.s3.BucketOwnershipControls(
            artifacts,
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=self.child(),
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            artifacts,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    )
                )
            ],
            opts=self.child(),
        )
        # S3 refuses policy changes while the public access block is being written.
        aws.s3.BucketPolicy(
            artifacts,
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
            opts=self.child(public_access),
        )
        if settings.versioning:
            aws.s3.BucketVersioning(
                artifacts,
                bucket=bucket.id,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
                opts=self.child(),
            )
        aws.s3.BucketLifecycleConfiguration(
            artifacts, bucket=bucket.id, rules=lifecycle_rules(settings.versioning), opts=self.child()
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucketName": self.bucket_name, "bucketArn": self.bucket_arn})


def lifecycle_rules(versioning: bool) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """Abort forgotten multipart uploads (billed, invisible); with versioning, expire old versions."""
    every_object = aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix="")
    rules = [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-multipart-uploads",
            status="Enabled",
            filter=every_object,
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=ABORT_MULTIPART_AFTER_DAYS
            ),
        )
    ]
    if versioning:
        rules.append(
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-noncurrent-versions",
                status="Enabled",
                filter=every_object,
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=NONCURRENT_VERSIONS_KEPT_DAYS
                ),
            )
        )
    return rules
