"""Datastore: the S3 bucket for artifacts (`metaflow/` prefix) and datatools (`data/`)."""

from __future__ import annotations

import json
from typing import Optional

import pulumi
import pulumi_aws as aws

from .policies import tls_only_bucket_policy
from .settings import DatastoreSettings

ABORT_MULTIPART_AFTER_DAYS = 7
NONCURRENT_VERSIONS_KEPT_DAYS = 30


class Datastore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, settings: DatastoreSettings, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("metaflow:infra:Datastore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Auto-named (`<name>-artifacts-<random>`): bucket names are global, so a fixed name breaks
        # the second stack. Deleting a non-empty bucket needs datastore:forceDestroy.
        bucket = aws.s3.Bucket(f"{name}-artifacts", force_destroy=settings.force_destroy, opts=child)
        after_bucket = pulumi.ResourceOptions(parent=self, depends_on=[bucket])
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-artifacts", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=after_bucket)
        aws.s3.BucketOwnershipControls(
            f"{name}-artifacts", bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=after_bucket)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-artifacts", bucket=bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.
                BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"))],
            opts=after_bucket)
        aws.s3.BucketPolicy(
            f"{name}-artifacts", bucket=bucket.id, policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
            # S3 refuses policy changes while the public access block is being written.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]))
        if settings.versioning:
            aws.s3.BucketVersioning(
                f"{name}-artifacts", bucket=bucket.id,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
                opts=after_bucket)
        aws.s3.BucketLifecycleConfiguration(f"{name}-artifacts", bucket=bucket.id,
                                            rules=lifecycle_rules(settings.versioning), opts=after_bucket)
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucketName": self.bucket_name, "bucketArn": self.bucket_arn})


def lifecycle_rules(versioning: bool) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """Abort forgotten multipart uploads (billed, invisible); with versioning, expire old versions."""
    every_object = aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix="")
    rules = [aws.s3.BucketLifecycleConfigurationRuleArgs(
        id="abort-incomplete-multipart-uploads", status="Enabled", filter=every_object,
        abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
            days_after_initiation=ABORT_MULTIPART_AFTER_DAYS))]
    if versioning:
        rules.append(aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-noncurrent-versions", status="Enabled", filter=every_object,
            noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=NONCURRENT_VERSIONS_KEPT_DAYS)))
    return rules
