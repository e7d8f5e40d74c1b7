"""Datastore: the S3 bucket for Metaflow's artifacts (`metaflow/` prefix) and datatools (`data/`)."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from .base import Component
from .policies import tls_only_bucket_policy
from .settings import CREATE_KEY, DatastoreSettings

ABORT_MULTIPART_AFTER_DAYS = 7
KEY_DELETION_WINDOW_DAYS = 30
"""The longest wait KMS allows before deleting a key someone schedules for deletion: time to cancel."""


class Datastore(Component):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    key_arn: pulumi.Output[str] | None
    """The SSE-KMS key of the objects (datastore:kmsKey), or None for SSE-S3."""

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
        self.key_arn = self._key(settings.kms_key)
        aws.s3.BucketServerSideEncryptionConfiguration(
            artifacts,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256" if self.key_arn is None else "aws:kms",
                        kms_master_key_id=self.key_arn,
                    ),
                    # One data key per bucket and period instead of a KMS call per object: fewer requests
                    # billed, fewer throttles on wide foreaches.
                    bucket_key_enabled=True if self.key_arn is not None else None,
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
            artifacts,
            bucket=bucket.id,
            rules=lifecycle_rules(settings.versioning, settings.noncurrent_version_days),
            opts=self.child(),
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucketName": self.bucket_name, "bucketArn": self.bucket_arn})

    def _key(self, kms_key: str | None) -> pulumi.Output[str] | None:
        """The SSE-KMS key: the user's, or this stack's own, rotated yearly. Kept when the stack lets it go
        (a config change, `pulumi destroy`): every object written under it needs it to be read, and the
        bucket outlives the stack too. A kept key bills $1/month until deleted by hand."""
        if kms_key is None:
            return None
        if kms_key != CREATE_KEY:
            return pulumi.Output.from_input(kms_key)
        key = aws.kms.Key(
            self.named("artifacts"),
            description=f"Metaflow datastore {self.labelled('artifacts')}: SSE-KMS for its objects",
            enable_key_rotation=True,
            deletion_window_in_days=KEY_DELETION_WINDOW_DAYS,
            opts=self.child(retain_on_delete=True),
        )
        return key.arn


def lifecycle_rules(versioning: bool, noncurrent_days: int) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
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
                    noncurrent_days=noncurrent_days
                ),
            )
        )
    return rules
