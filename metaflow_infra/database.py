"""Database: the RDS PostgreSQL instance behind the metadata service (and the UI backend), its
subnet and TLS parameter groups, and its generated password in Secrets Manager."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from .base import Component
from .secrets import stored_secret
from .settings import DbSettings

DATABASE_NAME = "metaflow"
DATABASE_USER = "metaflow"
PERFORMANCE_INSIGHTS_FREE_DAYS = 7
FORMER_PARENT_TYPE = "metaflow:infra:Datastore"
"""Until 2026-12 these resources were children of the Datastore component; aliases keep them."""


@dataclass(frozen=True)
class DatabaseArgs:
    settings: DbSettings
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]


@dataclass(frozen=True)
class DatabaseEndpoint:
    """How a service reaches the database; the password stays in Secrets Manager."""

    address: pulumi.Output[str]
    port: pulumi.Output[int]
    name: str
    user: str
    password_secret_arn: pulumi.Output[str]


def connection_environment(
    host: str, port: int, name: str, user: str, password_secret_arn: str
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The metadata-service image's database settings, as ECS container `environment` and `secrets`:
    the password only as an ECS secret. Shared by every container that runs that image."""
    environment = [
        {"name": "MF_METADATA_DB_HOST", "value": host},
        {"name": "MF_METADATA_DB_PORT", "value": str(port)},
        {"name": "MF_METADATA_DB_NAME", "value": name},
        {"name": "MF_METADATA_DB_USER", "value": user},
        # PostgreSQL 15+ on RDS forces TLS (rds.force_ssl=1); images from v2.4.6 honour this.
        {"name": "MF_METADATA_DB_SSL_MODE", "value": "require"},
    ]
    return environment, [{"name": "MF_METADATA_DB_PSWD", "valueFrom": password_secret_arn}]


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
        secret = stored_secret(
            self.named("db-password"),
            "Metaflow metadata database: master password",
            password.result,
            self._moved("db-password"),
        )
        subnets = aws.rds.SubnetGroup(
            self.named("db"),
            subnet_ids=args.subnet_ids,
            description="Metaflow metadata database",
            opts=self._moved("db"),
        )
        parameters = aws.rds.ParameterGroup(
            self.named("db"),
            family=f"postgres{settings.engine_version}",
            description="Metaflow metadata database: TLS required",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1", apply_method="immediate")],
            opts=self._moved("db"),
        )
        final_snapshot: pulumi.Output[str] | None = None
        if not settings.skip_final_snapshot:  # a unique, stable name for the snapshot taken on deletion
            suffix = random.RandomId(
                self.named("db-final-snapshot"), byte_length=4, opts=self._moved("db-final-snapshot")
            )
            final_snapshot = suffix.hex.apply(lambda hex_suffix: self.labelled(f"db-final-{hex_suffix}"))
        instance = aws.rds.Instance(
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
            password=password.result,
            db_subnet_group_name=subnets.name,
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
        self.endpoint = DatabaseEndpoint(
            address=instance.address,
            port=instance.port,
            name=DATABASE_NAME,
            user=DATABASE_USER,
            password_secret_arn=secret.arn,
        )
        self.instance_id = instance.identifier
        self.register_outputs({"address": instance.address})

    def _moved(self, purpose: str, **options: Any) -> pulumi.ResourceOptions:
        """Options for the child `purpose` that also match the state it had under the Datastore
        component, whose name, like its children's, then started with the prefix."""
        former_parent = pulumi.create_urn(self.prefix, FORMER_PARENT_TYPE)
        former = pulumi.Alias(name=self.labelled(purpose), parent=former_parent)
        return self.child(aliases=[former], **options)
