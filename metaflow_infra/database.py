"""Database: the RDS PostgreSQL instance behind the metadata service (and the UI backend) — or, with
`metadata:scaleToZero`, an Aurora Serverless v2 cluster that pauses at 0 ACU — its subnet and TLS
parameter groups, and its generated password in Secrets Manager."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from .base import Component
from .secrets import stored_secret
from .settings import DbSettings, aurora_pause_versions

DATABASE_NAME = "metaflow"
DATABASE_USER = "metaflow"
PERFORMANCE_INSIGHTS_FREE_DAYS = 7
AURORA_ENGINE = aws.rds.EngineType.AURORA_POSTGRESQL
AURORA_MAX_ACU = 2
"""A metadata service's queries are small; 2 ACUs (about 4 GiB) bound what a busy hour can cost."""
AURORA_PAUSE_SECONDS = 300
"""Pause 5 minutes after the last connection closes (Aurora's minimum and default)."""
FORMER_PARENT_TYPE = "metaflow:infra:Datastore"
"""Until 2026-12 these resources were children of the Datastore component; aliases keep them."""


@dataclass(frozen=True)
class DatabaseArgs:
    settings: DbSettings
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    serverless: bool = False
    """Aurora Serverless v2 at 0 ACU with auto-pause (metadata:scaleToZero) instead of an RDS instance."""
    data_api: bool = False
    """With `serverless`: turn on the cluster's RDS Data API, so the waker can resume it without a connection of
    its own (the waker runs outside the VPC) while the service's task starts."""


@dataclass(frozen=True)
class DatabaseEndpoint:
    """How a service reaches the database; the password stays in Secrets Manager."""

    address: pulumi.Output[str]
    port: pulumi.Output[int]
    name: str
    user: str
    password_secret_arn: pulumi.Output[str]
    password_key: str | None = None
    """The JSON key of the password in the secret, or None when the secret is the password itself."""
    data_api_cluster_arn: pulumi.Output[str] | None = None
    """The cluster whose RDS Data API is on (DatabaseArgs.data_api); the secret then holds `username` too."""


DATA_API_PASSWORD_KEY = "password"
"""The RDS Data API reads a cluster's credentials from a secret holding JSON with `username` and `password`."""


def data_api_credentials(user: str, password: str) -> str:
    return json.dumps({"username": user, "password": password})


def connection_environment(
    host: str, port: int, name: str, user: str, password_secret_arn: str, password_key: str | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The metadata-service image's database settings, as ECS container `environment` and `secrets`:
    the password only as an ECS secret (one JSON key of it with `password_key`). Shared by every container that
    runs that image."""
    environment = [
        {"name": "MF_METADATA_DB_HOST", "value": host},
        {"name": "MF_METADATA_DB_PORT", "value": str(port)},
        {"name": "MF_METADATA_DB_NAME", "value": name},
        {"name": "MF_METADATA_DB_USER", "value": user},
        # PostgreSQL 15+ on RDS forces TLS (rds.force_ssl=1); images from v2.4.6 honour this.
        {"name": "MF_METADATA_DB_SSL_MODE", "value": "require"},
    ]
    # ECS takes one key of a JSON secret as `<arn>:<key>::` (the last two fields: version stage and id).
    value_from = f"{password_secret_arn}:{password_key}::" if password_key else password_secret_arn
    return environment, [{"name": "MF_METADATA_DB_PSWD", "valueFrom": value_from}]


def extended_support_choice(settings: DbSettings) -> str:
    """Opt out of paid RDS Extended Support unless the user accepted it explicitly."""
    if settings.allow_extended_support:
        return "open-source-rds-extended-support"
    return "open-source-rds-extended-support-disabled"


class Database(Component):
    endpoint: DatabaseEndpoint
    instance_id: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Database", name, opts)
        settings = args.settings
        password = random.RandomPassword(
            self.named("db-password"), length=40, special=False, opts=self._moved("db-password")
        )
        data_api = args.serverless and args.data_api
        secret_arn = stored_secret(
            self.named("db-password"),
            "Metaflow metadata database: master password",
            password.result.apply(lambda value: data_api_credentials(DATABASE_USER, value))
            if data_api
            else password.result,
            self._moved("db-password"),
        )
        subnets = aws.rds.SubnetGroup(
            self.named("db"),
            subnet_ids=args.subnet_ids,
            description="Metaflow metadata database",
            opts=self._moved("db"),
        )
        final_snapshot: pulumi.Output[str] | None = None
        if not settings.skip_final_snapshot:  # a unique, stable name for the snapshot taken on deletion
            suffix = random.RandomId(
                self.named("db-final-snapshot"), byte_length=4, opts=self._moved("db-final-snapshot")
            )
            final_snapshot = suffix.hex.apply(lambda hex_suffix: self.labelled(f"db-final-{hex_suffix}"))
        cluster_arn: pulumi.Output[str] | None = None
        if args.serverless:
            cluster = self._aurora(args, password.result, subnets.name, final_snapshot)
            address, port, self.instance_id = cluster.endpoint, cluster.port, cluster.cluster_identifier
            cluster_arn = cluster.arn if data_api else None
        else:
            instance = self._instance(args, password.result, subnets.name, final_snapshot)
            address, port, self.instance_id = instance.address, instance.port, instance.identifier
        self.endpoint = DatabaseEndpoint(
            address=address,
            port=port,
            name=DATABASE_NAME,
            user=DATABASE_USER,
            password_secret_arn=secret_arn,
            password_key=DATA_API_PASSWORD_KEY if data_api else None,
            data_api_cluster_arn=cluster_arn,
        )
        self.register_outputs({"address": address})

    def _instance(
        self,
        args: DatabaseArgs,
        password: pulumi.Output[str],
        subnet_group: pulumi.Output[str],
        final_snapshot: pulumi.Output[str] | None,
    ) -> aws.rds.Instance:
        settings = args.settings
        parameters = aws.rds.ParameterGroup(
            self.named("db"),
            family=f"postgres{settings.engine_version}",
            description="Metaflow metadata database: TLS required",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1", apply_method="immediate")],
            opts=self._moved("db"),
        )
        return aws.rds.Instance(
            self.named("db"),
            identifier_prefix=self.labelled("db-"),
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
            password=password,
            db_subnet_group_name=subnet_group,
            vpc_security_group_ids=[args.security_group_id],
            parameter_group_name=parameters.name,
            backup_retention_period=settings.backup_retention_days,
            backup_window=settings.backup_window,
            maintenance_window=settings.maintenance_window,
            deletion_protection=settings.deletion_protection,
            copy_tags_to_snapshot=True,
            # The free retention, 7 days (longer bills per vCPU); Database Insights' Standard mode shows it.
            performance_insights_enabled=settings.performance_insights or None,
            performance_insights_retention_period=PERFORMANCE_INSIGHTS_FREE_DAYS
            if settings.performance_insights
            else None,
            skip_final_snapshot=settings.skip_final_snapshot,
            final_snapshot_identifier=final_snapshot,
            # Deleting the database (metadata:enabled false, another preset, `pulumi destroy`) is
            # refused by Pulumi and by RDS while db:deletionProtection is on. Its name is fixed at
            # creation: a new prefix must not replace it.
            opts=self._moved(
                "db", protect=settings.deletion_protection, ignore_changes=["identifier", "identifierPrefix"]
            ),
        )

    def _aurora(
        self,
        args: DatabaseArgs,
        password: pulumi.Output[str],
        subnet_group: pulumi.Output[str],
        final_snapshot: pulumi.Output[str] | None,
    ) -> aws.rds.Cluster:
        """Aurora PostgreSQL Serverless v2: 0 ACU and paused while nothing is connected, resumed by the next
        connection (the metadata service's migrator, when the waker starts its task)."""
        settings = args.settings
        version = aurora_pause_versions()[settings.engine_version]
        parameters = aws.rds.ClusterParameterGroup(
            self.named("db-cluster"),
            family=f"aurora-postgresql{settings.engine_version}",
            description="Metaflow metadata database (Aurora): TLS required",
            parameters=[
                aws.rds.ClusterParameterGroupParameterArgs(name="rds.force_ssl", value="1", apply_method="immediate")
            ],
            opts=self.child(),
        )
        cluster = aws.rds.Cluster(
            self.named("db-cluster"),
            cluster_identifier_prefix=self.labelled("db-"),
            engine=AURORA_ENGINE,
            engine_mode="provisioned",
            engine_version=version,
            serverlessv2_scaling_configuration=aws.rds.ClusterServerlessv2ScalingConfigurationArgs(
                min_capacity=0, max_capacity=AURORA_MAX_ACU, seconds_until_auto_pause=AURORA_PAUSE_SECONDS
            ),
            database_name=DATABASE_NAME,
            master_username=DATABASE_USER,
            master_password=password,
            db_subnet_group_name=subnet_group,
            vpc_security_group_ids=[args.security_group_id],
            db_cluster_parameter_group_name=parameters.name,
            # The RDS Data API: an HTTPS call from the waker resumes the paused database (no charge while unused).
            enable_http_endpoint=args.data_api or None,
            storage_encrypted=True,
            backup_retention_period=settings.backup_retention_days,
            preferred_backup_window=settings.backup_window,
            preferred_maintenance_window=settings.maintenance_window,
            deletion_protection=settings.deletion_protection,
            copy_tags_to_snapshot=True,
            skip_final_snapshot=settings.skip_final_snapshot,
            final_snapshot_identifier=final_snapshot,
            apply_immediately=True,
            # Protected like the RDS instance. Aurora applies minor versions itself: without the ignore, the next
            # `pulumi up` would try to move back to the version it was created with.
            opts=self.child(
                protect=settings.deletion_protection,
                ignore_changes=["clusterIdentifier", "clusterIdentifierPrefix", "engineVersion"],
            ),
        )
        aws.rds.ClusterInstance(
            self.named("db-writer"),
            identifier_prefix=self.labelled("db-writer-"),
            cluster_identifier=cluster.id,
            instance_class="db.serverless",
            engine=AURORA_ENGINE,
            engine_version=cluster.engine_version,
            publicly_accessible=False,
            db_subnet_group_name=subnet_group,
            auto_minor_version_upgrade=True,
            apply_immediately=True,
            opts=self.child(ignore_changes=["identifier", "identifierPrefix", "engineVersion"]),
        )
        return cluster

    def _moved(self, purpose: str, **options: Any) -> pulumi.ResourceOptions:
        """Options for the child `purpose` that also match the state it had under the Datastore
        component, whose name, like its children's, then started with the prefix."""
        former_parent = pulumi.create_urn(self.prefix, FORMER_PARENT_TYPE)
        former = pulumi.Alias(name=self.labelled(purpose), parent=former_parent)
        return self.child(aliases=[former], **options)
