"""Datastore: the S3 bucket for artifacts (`metaflow/` prefix) and datatools (`data/`), and the
RDS PostgreSQL database of the metadata service when that service is on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from .policies import tls_only_bucket_policy
from .settings import DatastoreSettings, DbSettings

DATABASE_NAME = "metaflow"
DATABASE_USER = "metaflow"
SECRET_RECOVERY_DAYS = 7
"""A deleted secret can be restored for this long (the shortest window AWS allows besides none)."""

ABORT_MULTIPART_AFTER_DAYS = 7
NONCURRENT_VERSIONS_KEPT_DAYS = 30


@dataclass(frozen=True)
class DatabasePlacement:
    settings: DbSettings
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]


@dataclass(frozen=True)
class DatabaseEndpoint:
    """How the metadata service reaches the database; the password stays in Secrets Manager."""

    address: pulumi.Output[str]
    port: pulumi.Output[int]
    name: str
    user: str
    password_secret_arn: pulumi.Output[str]


def stored_secret(name: str, description: str, value: pulumi.Input[str],
                  parent: pulumi.Resource) -> aws.secretsmanager.Secret:
    """A Secrets Manager secret holding `value`, child of `parent`."""
    child = pulumi.ResourceOptions(parent=parent)
    secret = aws.secretsmanager.Secret(name, description=description,
                                       recovery_window_in_days=SECRET_RECOVERY_DAYS, opts=child)
    aws.secretsmanager.SecretVersion(name, secret_id=secret.id, secret_string=value, opts=child)
    return secret


def extended_support_choice(settings: DbSettings) -> str:
    """Opt out of paid RDS Extended Support unless the user accepted it explicitly."""
    if settings.allow_extended_support:
        return "open-source-rds-extended-support"
    return "open-source-rds-extended-support-disabled"


class Datastore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    database: Optional[DatabaseEndpoint] = None

    def __init__(
        self,
        name: str,
        settings: DatastoreSettings,
        database: Optional[DatabasePlacement] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        super().__init__("metaflow:infra:Datastore", name, None, opts)
        self._name = name
        child = pulumi.ResourceOptions(parent=self)
        # Auto-named (`<name>-artifacts-<random>`): bucket names are global, so a fixed name breaks
        # the second stack. Deleting a non-empty bucket needs datastore:forceDestroy.
        bucket = aws.s3.Bucket(f"{name}-artifacts", force_destroy=settings.force_destroy, opts=child)
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-artifacts", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketOwnershipControls(
            f"{name}-artifacts", bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-artifacts", bucket=bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.
                BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"))],
            opts=child)
        aws.s3.BucketPolicy(
            f"{name}-artifacts", bucket=bucket.id, policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
            # S3 refuses policy changes while the public access block is being written.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]))
        if settings.versioning:
            aws.s3.BucketVersioning(
                f"{name}-artifacts", bucket=bucket.id,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
                opts=child)
        aws.s3.BucketLifecycleConfiguration(f"{name}-artifacts", bucket=bucket.id,
                                            rules=lifecycle_rules(settings.versioning), opts=child)
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        outputs: dict[str, pulumi.Output[str]] = {"bucketName": self.bucket_name, "bucketArn": self.bucket_arn}
        if database is not None:
            self.database = self._create_database(database, skip_final_snapshot=settings.force_destroy)
            outputs["databaseAddress"] = self.database.address
        self.register_outputs(outputs)

    def _create_database(self, placement: DatabasePlacement, skip_final_snapshot: bool) -> DatabaseEndpoint:
        settings, name = placement.settings, self._name
        child = pulumi.ResourceOptions(parent=self)
        password = random.RandomPassword(f"{name}-db-password", length=40, special=False, opts=child)
        secret = stored_secret(f"{name}-db-password", "Metaflow metadata database: master password",
                               password.result, self)
        subnets = aws.rds.SubnetGroup(f"{name}-db", subnet_ids=placement.subnet_ids,
                                      description="Metaflow metadata database", opts=child)
        parameters = aws.rds.ParameterGroup(
            f"{name}-db", family=f"postgres{settings.engine_version}",
            description="Metaflow metadata database: TLS required",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1", apply_method="immediate")],
            opts=child)
        final_snapshot: Optional[pulumi.Output[str]] = None
        if not skip_final_snapshot:  # a unique, stable name for the snapshot taken on deletion
            suffix = random.RandomId(f"{name}-db-final-snapshot", byte_length=4, opts=child)
            final_snapshot = suffix.hex.apply(lambda hex_suffix: f"{name}-db-final-{hex_suffix}")
        instance = aws.rds.Instance(
            f"{name}-db",
            engine="postgres",
            engine_version=str(settings.engine_version),
            engine_lifecycle_support=extended_support_choice(settings),
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=True,  # changing db:engineVersion upgrades in place
            # Apply config changes on `pulumi up`, not at the next maintenance window: a new
            # parameter group (new major version) could not replace the old one until then.
            apply_immediately=True,
            instance_class=settings.instance_class,
            allocated_storage=settings.allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            multi_az=settings.multi_az,
            publicly_accessible=False,
            db_name=DATABASE_NAME,
            username=DATABASE_USER,
            password=password.result,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[placement.security_group_id],
            parameter_group_name=parameters.name,
            backup_retention_period=settings.backup_retention_days,
            deletion_protection=settings.deletion_protection,
            copy_tags_to_snapshot=True,
            skip_final_snapshot=skip_final_snapshot,
            final_snapshot_identifier=final_snapshot,
            opts=child)
        return DatabaseEndpoint(address=instance.address, port=instance.port, name=DATABASE_NAME,
                                user=DATABASE_USER, password_secret_arn=secret.arn)


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
