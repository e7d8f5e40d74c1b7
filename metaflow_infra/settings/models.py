"""The settings models: one pydantic model per config namespace, and `Settings`, all of them.

Declarations only; `loading` reads config into them. Every key is a `setting(...)`: its default
(the base every preset starts from; `data/presets.toml` lists only what a preset changes), its
description (the README's config table) and whether its feature has landed. A key whose feature
has not landed is refused when set to anything but its default: one marker drives that check and
the docs, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from .catalog import FARGATE_MEMORY_BY_CPU, default_preset, presets, provider_settings
from .values import (
    DAILY_WINDOW,
    WEEKLY_WINDOW,
    AccountIds,
    Bool,
    Cidr,
    CidrList,
    Int,
    NonNegativeInt,
    PositiveInt,
    StrList,
    parse_bool,
    parse_int,
    parse_json,
    repeated,
)

NOT_AVAILABLE = "not available yet"


def setting(default: Any, description: str, *, available: bool = True) -> Any:
    """A config key: its default, what it means, and whether its feature has landed."""
    return Field(default, description=description, json_schema_extra={"available": available})


def is_available(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return not isinstance(extra, dict) or extra.get("available", True) is not False


def documented_meaning(info: FieldInfo) -> str:
    description = info.description or ""
    return description if is_available(info) else f"{description} ({NOT_AVAILABLE})"


def fargate_size_problem(namespace: str, cpu: int, memory: int) -> str | None:
    """Why `cpu`/`memory` is not a Fargate task size, or None."""
    if cpu not in FARGATE_MEMORY_BY_CPU:
        return f"{namespace}:cpu {cpu} is not a Fargate size; accepted: {', '.join(map(str, FARGATE_MEMORY_BY_CPU))}"
    allowed = FARGATE_MEMORY_BY_CPU[cpu]
    if memory not in allowed:
        sizes = (
            f"{allowed.start} to {allowed.stop - 1} MiB in steps of {allowed.step}"
            if isinstance(allowed, range)
            else f"{', '.join(map(str, allowed))} MiB"
        )
        return f"{namespace}:memory {memory} does not fit {namespace}:cpu {cpu} on Fargate; accepted: {sizes}"
    return None


class Namespace(BaseModel):
    """One config namespace: camelCase keys, unknown keys refused, values immutable."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)


class ComputeType(str, Enum):
    EC2 = "ec2"
    SPOT = "spot"
    FARGATE = "fargate"
    FARGATE_SPOT = "fargate_spot"

    @property
    def is_fargate(self) -> bool:
        return self in (ComputeType.FARGATE, ComputeType.FARGATE_SPOT)


class AssumeRole(Namespace):
    role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")]
    session_name: str | None = None
    external_id: str | None = None


SECRET_PROVIDER_SETTINGS = frozenset({"accessKey", "secretKey", "token"})


def _provider_value(kind: str, value: Any) -> Any:
    """A provider setting parsed by the kind pulumi-aws declares; its shape checked, its contents left
    to the provider."""
    if kind == "bool":
        return parse_bool(value)
    if kind == "int":
        number = parse_int(value)
        if not -(2**63) <= number < 2**63:  # the provider reads its integers as 64-bit
            raise ValueError(f"expected a whole number from {-(2**63)} to {2**63 - 1}")
        return number
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    parsed = parse_json(value)
    shapes = {
        "strings": (list, str, "a list of strings"),
        "objects": (list, dict, "a JSON list of objects"),
        "object": (dict, None, "a JSON object"),
    }
    container, item, description = shapes[kind]
    if not isinstance(parsed, container) or (item and not all(isinstance(entry, item) for entry in parsed)):
        raise ValueError(f"expected {description}")
    return parsed


class AwsSettings(Namespace):
    """The `aws:` keys, all forwarded to this program's own AWS provider (an explicit provider, to tag
    everything, ignores stack config by itself). The typed ones are checked here; the provider's
    other settings are passed through, parsed by the kind pulumi-aws declares for them."""

    model_config = ConfigDict(alias_generator=to_camel, extra="allow", frozen=True)

    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")] = Field(
        description="the AWS region of the stack (or AWS_REGION from the environment)"
    )
    profile: str | None = setting(None, "the AWS CLI profile to deploy with")
    allowed_account_ids: AccountIds | None = setting(
        None, "refuse to deploy to any other AWS account (list of account ids)"
    )
    forbidden_account_ids: AccountIds | None = setting(
        None, "refuse to deploy to these AWS accounts (list of account ids)"
    )
    assume_roles: Annotated[list[AssumeRole], BeforeValidator(parse_json)] | None = setting(
        None, "roles to assume in turn: a list of {roleArn, sessionName, externalId}"
    )

    @model_validator(mode="before")
    @classmethod
    def _provider_settings(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        declared = {info.alias for info in cls.model_fields.values()}
        parsed = {}
        for key, value in values.items():
            if key in declared or key not in provider_settings():
                parsed[key] = value  # declared fields validate themselves; unknown keys are refused earlier
                continue
            try:
                parsed[key] = _provider_value(provider_settings()[key][1], value)
            except ValueError as err:
                raise ValueError(f"aws:{key} = {value!r}: {err}") from None
        return parsed


class MetaflowSettings(Namespace):
    preset: str = setting(default_preset(), f"one of {', '.join(presets())}: the defaults every other key starts from")
    prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=20)] = setting(
        "metaflow", "name prefix for every resource (lowercase letters, digits, hyphens; at most 20)"
    )
    tags: Annotated[dict[str, Annotated[str, Field(strict=True)]], BeforeValidator(parse_json)] = setting(
        {}, "extra tags for every resource (structured config: a map of strings; AWS's tag rules apply)"
    )


MAX_AZS = 3
"""The AZs a created VPC spans: more give spot more capacity pools; three is what most regions offer every
account."""


class EndpointService(str, Enum):
    """Interface endpoints `network:interfaceEndpoints` offers: what a private Batch instance, the metadata
    service and the UI call besides S3 and PyPI."""

    ECR = "ecr"
    LOGS = "logs"
    SECRETS_MANAGER = "secretsmanager"
    STS = "sts"
    ECS = "ecs"

    @property
    def aws_services(self) -> tuple[str, ...]:
        """The VPC endpoint services it takes: pulling from ECR calls two, the ECS agent three."""
        return {"ecr": ("ecr.api", "ecr.dkr"), "ecs": ("ecs", "ecs-agent", "ecs-telemetry")}.get(
            self.value, (self.value,)
        )


class NetworkSettings(Namespace):
    vpc_id: Annotated[str | None, Field(pattern=r"^vpc-[0-9a-f]{8,17}$")] = setting(
        None, "use this existing VPC instead of creating one (needs network:subnetIds)"
    )
    subnet_ids: StrList | None = setting(
        None, "existing subnets (at least two AZs) with a way out: public IPs + internet gateway, or NAT"
    )
    vpc_cidr: Cidr = setting("10.0.0.0/16", "address block of the VPC this program creates (a private IPv4 /16 to /20)")
    private_subnets: Bool = setting(
        False,
        "the database, the metadata service and Batch instances in private subnets (no public IP), out through "
        "NAT; with network:subnetIds, those subnets must be private (a default route to NAT, not an internet gateway)",
    )
    nat_gateways: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=MAX_AZS)] = setting(
        0,
        f"NAT gateways of the private subnets this program creates: 1 (all AZs share it: an outage of its AZ "
        f"cuts egress, ~$36.50/month) or one per AZ, up to {MAX_AZS} (each ~$36.50/month more)",
    )
    interface_endpoints: Annotated[list[EndpointService], BeforeValidator(parse_json)] = setting(
        [],
        "interface VPC endpoints of the private subnets this program creates, so that traffic to these AWS "
        "services skips NAT: any of ecr, logs, secretsmanager, sts, ecs (each ~$7.30 per AWS endpoint and AZ a "
        "month; ecr is two endpoints, ecs three). The S3 gateway endpoint is always there (free)",
    )

    @model_validator(mode="after")
    def _existing_network(self) -> NetworkSettings:
        if self.subnet_ids is not None:
            for subnet in self.subnet_ids:
                if not re.fullmatch(r"subnet-[0-9a-f]{8,17}", subnet):
                    raise ValueError(f"network:subnetIds: {subnet!r} is not a subnet id (subnet-…)")
        if (self.vpc_id is None) != (self.subnet_ids is None):
            given, missing = (
                ("network:vpcId", "network:subnetIds") if self.vpc_id else ("network:subnetIds", "network:vpcId")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: an existing network needs both, or neither to create one"
            )
        twice = repeated(self.subnet_ids or [])
        if twice:
            raise ValueError(
                f"network:subnetIds lists {', '.join(twice)} more than once: list each subnet once "
                "(a load balancer given one subnet twice is refused)"
            )
        if self.subnet_ids is not None and len(set(self.subnet_ids)) < 2:
            raise ValueError(
                f"network:subnetIds has {len(set(self.subnet_ids))} subnet(s): give at least two, "
                "in different availability zones"
            )
        return self


KMS_KEY_PATTERN = r"^(create|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/(mrk-)?[0-9a-f-]+)$"
CREATE_KEY = "create"


class DatastoreSettings(Namespace):
    force_destroy: Bool = setting(
        False, "DELETES YOUR ARTIFACTS: let `pulumi destroy` delete the bucket and everything in it (else it is kept)"
    )
    versioning: Bool = setting(
        False, "S3 versioning: an overwritten artifact stays recoverable for datastore:noncurrentVersionDays"
    )
    noncurrent_version_days: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=36500)] = setting(
        30, "days a replaced version is kept before it expires (with datastore:versioning)"
    )
    kms_key: Annotated[str | None, Field(pattern=KMS_KEY_PATTERN)] = setting(
        None,
        "SSE-KMS (with an S3 bucket key) instead of SSE-S3: a KMS key ARN in the stack's region, or `create` for a "
        "key of this stack, rotated yearly ($1/month; kept if the stack lets it go, since objects need it)",
    )


class DbSettings(Namespace):
    engine_version: Int = setting(
        17, "PostgreSQL major version; versions in RDS extended support are refused unless db:allowExtendedSupport"
    )
    instance_class: str = setting("db.t4g.micro", "RDS instance class (one RDS offers for PostgreSQL)")
    multi_az: Bool = setting(False, "a standby in a second AZ (doubles the database cost)")
    deletion_protection: Bool = setting(
        True, "refuse to delete the database (Pulumi and RDS both refuse) until this is turned off and applied"
    )
    skip_final_snapshot: Bool = setting(
        False, "DELETES YOUR METADATA: let a deleted database go without a final snapshot"
    )
    backup_retention_days: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=35)] = setting(
        1, "days of automated backups (0-35)"
    )
    allow_extended_support: Bool = setting(False, "accept a PostgreSQL version billed as RDS Extended Support")
    allocated_storage_gb: Annotated[int, BeforeValidator(parse_int), Field(ge=20, le=65536)] = setting(
        20, "gp3 storage in GiB (20 or more)"
    )
    backup_window: Annotated[str | None, Field(pattern=DAILY_WINDOW)] = setting(
        None,
        "daily UTC window of the automated backups, hh:mi-hh:mi, 30 minutes or more; set with db:maintenanceWindow "
        "(unset: RDS picks one)",
    )
    maintenance_window: Annotated[str | None, Field(pattern=WEEKLY_WINDOW)] = setting(
        None,
        "weekly UTC window in which RDS applies minor-version upgrades and patches, ddd:hh:mi-ddd:hh:mi, 30 "
        "minutes or more, apart from db:backupWindow (unset: RDS picks one)",
    )
    performance_insights: Bool = setting(
        False,
        "Performance Insights at its free 7-day retention: the database's load by query and wait, seen in "
        "CloudWatch Database Insights (Standard mode) since the Performance Insights console retired",
    )


class MetadataSettings(Namespace):
    enabled: Bool = setting(False, "run the metadata service and its database (else Metaflow keeps metadata locally)")
    image: str = setting(
        "netflixoss/metaflow_metadata_service:v2.5.1",
        "metadata service image, pinned by a release tag (v2.4.6 or later: TLS to PostgreSQL) or a digest",
    )
    cpu: Int = setting(256, "Fargate CPU units of the metadata service (256, 512, 1024, ...)")
    memory: Int = setting(1024, "Fargate memory (MiB) of the metadata service; must fit metadata:cpu")
    tasks: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=10)] = setting(
        1,
        "metadata service tasks, spread over the AZs; 2 or more keep it answering while one is replaced "
        "(each on-demand 0.5 vCPU/1 GB task ~$18/month)",
    )
    spot: Bool = setting(
        False,
        "run the metadata service on Fargate Spot (about 70% cheaper; an interruption "
        "leaves it without a task for a few minutes)",
    )
    api_key_rotation: PositiveInt = setting(
        1, "raise by one to rotate the API key; the previous key keeps working for an hour"
    )
    authorizer_concurrency: NonNegativeInt = setting(
        5,
        "concurrent runs reserved for (and capping) the API-key authorizer, bounding the cost of a flood "
        "of wrong keys; 0: no reservation",
    )
    scale_to_zero: Bool = setting(
        False,
        "Aurora Serverless v2 at 0 ACU and the service at 0 tasks while idle (~$1.45/month in us-east-1); the first "
        "request starts both (about 1.5 minutes at worst, answered 503 meanwhile, which Metaflow retries); a new "
        "stack only: an existing database is not converted",
    )
    idle_minutes: Annotated[int, BeforeValidator(parse_int), Field(ge=5, le=1440)] = setting(
        15,
        "minutes without a request before a scale-to-zero service stops (5-1440; metadata:scaleToZero)",
    )

    @model_validator(mode="after")
    def _fargate_size(self) -> MetadataSettings:
        problem = fargate_size_problem("metadata", self.cpu, self.memory)
        if problem:
            raise ValueError(problem)
        return self


class ComputeSettings(Namespace):
    type: ComputeType = setting(ComputeType.SPOT, "ec2, spot, fargate or fargate_spot")
    min_vcpus: NonNegativeInt = setting(0, "vCPUs kept running with no job queued (0: nothing bills while idle)")
    max_vcpus: PositiveInt = setting(
        32, "the most vCPUs each compute environment may run at once (the on-demand fallback has its own)"
    )
    instance_types: StrList = setting(
        ["c6i", "m6i", "r6i", "c5", "m5", "r5"], "instance families or types Batch may launch (EC2 and spot only)"
    )
    on_demand_fallback: Bool = setting(
        False, "queue an on-demand environment behind spot (or Fargate behind Fargate Spot); spot types only"
    )
    gpu: Bool = setting(
        False,
        "a GPU environment (NVIDIA AMI) and its queue, gpuJobQueue: spot or on-demand as compute:type says, on "
        "instances even when that is Fargate (Fargate has no GPUs); min 0 vCPUs",
    )
    gpu_instance_types: StrList = setting(
        ["g4dn", "g5"], "NVIDIA GPU families or types of the GPU environment (compute:gpu)"
    )
    gpu_max_vcpus: PositiveInt = setting(
        16, "the most vCPUs each GPU environment may run at once (compute:gpu; the on-demand fallback has its own)"
    )
    neuron_instance_types: StrList = setting(
        [],
        "Inferentia/Trainium families or types (e.g. inf2, trn1): an environment on the ECS Neuron AMI and its "
        "queue, neuronJobQueue, spot or on-demand like compute:gpu; empty: none",
    )
    neuron_max_vcpus: PositiveInt = setting(
        16, "the most vCPUs each Inferentia/Trainium environment may run at once (compute:neuronInstanceTypes)"
    )
    multi_node: Bool = setting(
        False,
        "an on-demand environment in a cluster placement group and its queue, multiNodeJobQueue, for @parallel "
        "multi-node jobs (Batch runs them on neither spot nor Fargate); min 0 vCPUs",
    )
    multi_node_instance_types: StrList = setting(
        ["c6i", "m6i", "r6i", "c5", "m5", "r5"],
        "CPU or GPU families or types of the multi-node environment (compute:multiNode)",
    )
    multi_node_max_vcpus: PositiveInt = setting(
        64, "the most vCPUs the multi-node environment may run at once, all nodes together (compute:multiNode)"
    )

    @model_validator(mode="after")
    def _vcpu_range(self) -> ComputeSettings:
        if self.min_vcpus > self.max_vcpus:
            raise ValueError(
                f"compute:minVcpus ({self.min_vcpus}) is greater than compute:maxVcpus ({self.max_vcpus}); "
                "min must be at most max (0 keeps nothing running while no job is queued)"
            )
        return self


LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557)
LOG_RETENTION_DAYS += (2922, 3288, 3653)  # 8, 9 and 10 years
"""The retention periods CloudWatch Logs accepts (`PutRetentionPolicy`'s `retentionInDays`)."""


class StepFunctionsSettings(Namespace):
    enabled: Bool = setting(
        False,
        "`step-functions create` and `@schedule`: the roles Step Functions and EventBridge use, the foreach "
        "table (DynamoDB), the execution log group",
    )
    log_retention_days: Int = setting(
        14, "days CloudWatch Logs keeps the execution history of `step-functions create --log-execution-history`"
    )

    @model_validator(mode="after")
    def _retention(self) -> StepFunctionsSettings:
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"stepFunctions:logRetentionDays = {self.log_retention_days} is not a period CloudWatch Logs keeps "
                f"logs for; accepted: {', '.join(map(str, LOG_RETENTION_DAYS))}"
            )
        return self


class UiAccess(str, Enum):
    PRIVATE = "private"
    ALLOW_LIST = "allowList"
    PUBLIC = "public"


class UiAuth(str, Enum):
    COGNITO = "cognito"
    OIDC = "oidc"


class OidcSettings(Namespace):
    """An OpenID Connect identity provider for the load balancer's sign-in (`ui:oidc`)."""

    issuer: Annotated[str, Field(pattern=r"^https://\S+$")]
    authorization_endpoint: Annotated[str, Field(pattern=r"^https://\S+$")]
    token_endpoint: Annotated[str, Field(pattern=r"^https://\S+$")]
    user_info_endpoint: Annotated[str, Field(pattern=r"^https://\S+$")]
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: Annotated[str, Field(min_length=1)]


DOMAIN_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"


class UiSettings(Namespace):
    enabled: Bool = setting(False, "the Metaflow UI (needs metadata:enabled); alone it is private")
    access: UiAccess = setting(
        UiAccess.PRIVATE,
        "private (no ingress; `python -m metaflow_infra ui` opens a tunnel), allowList (a load balancer only "
        "ui:allowedCidrs reach) or public (HTTPS and sign-in)",
    )
    certificate_arn: Annotated[
        str | None, Field(pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
    ] = setting(None, "ACM certificate (in the stack's region) for HTTPS on the UI; required for public")
    allowed_cidrs: CidrList | None = setting(None, "networks allowed to reach the UI (list of CIDRs; allowList)")
    auth: UiAuth = setting(UiAuth.COGNITO, "sign-in for public: cognito (a user pool of this stack) or oidc")
    oidc: Annotated[OidcSettings | None, BeforeValidator(parse_json)] = setting(
        None,
        "structured: issuer, authorizationEndpoint, tokenEndpoint, userInfoEndpoint, clientId, clientSecret "
        "(set it as a secret)",
    )
    domain: Annotated[str | None, Field(pattern=DOMAIN_PATTERN, max_length=253)] = setting(
        None, "DNS name of the UI (the certificate's); required for public"
    )
    hosted_zone_id: Annotated[str | None, Field(pattern=r"^Z[A-Z0-9]{1,31}$")] = setting(
        None, "Route 53 hosted zone to create the ui:domain record in"
    )
    cpu: Int = setting(512, "Fargate CPU units of the UI task")
    memory: Int = setting(2048, "Fargate memory (MiB) of the UI task; must fit ui:cpu")

    @model_validator(mode="after")
    def _fargate_size(self) -> UiSettings:
        problem = fargate_size_problem("ui", self.cpu, self.memory)
        if problem:
            raise ValueError(problem)
        return self


class EcrSettings(Namespace):
    enabled: Bool = setting(False, "an ECR repository for step images (scanned on push)")
    keep_images: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=10000)] = setting(
        30, "the newest images the repository keeps; older ones expire"
    )
    immutable_tags: Bool = setting(False, "refuse to push a tag that already exists")
    image_tag: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")] = setting(
        None, "a tag in the repository: steps run in that image by default (METAFLOW_BATCH_CONTAINER_IMAGE)"
    )


class SecretsSettings(Namespace):
    enabled: Bool = setting(False, "@secrets through Secrets Manager: steps may read secrets named <prefix>/...")


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class AlertsSettings(Namespace):
    enabled: Bool = setting(
        False,
        "CloudWatch alarms (metadata endpoint 5xx, no healthy service task; database CPU, free storage, "
        "connections) and failed Batch jobs, to an SNS topic (output alertTopicArn; $0.10 per alarm a month)",
    )
    email: Annotated[str | None, Field(pattern=EMAIL_PATTERN, max_length=254)] = setting(
        None, "an email address subscribed to the alerts topic (AWS asks it to confirm)"
    )


class BudgetSettings(Namespace):
    monthly_usd: Annotated[int | None, BeforeValidator(parse_int), Field(ge=1, le=10**9)] = setting(
        None,
        "an AWS Budgets monthly cost budget in USD for the whole account (Budgets sees a stack's tags only once "
        "they are activated for billing); email at 80% of actual and 100% of forecast cost (an account's first two "
        "budgets cost nothing)",
    )
    email: Annotated[str | None, Field(pattern=EMAIL_PATTERN, max_length=254)] = setting(
        None, "where budget alerts go (default: alerts:email)"
    )


def stack_scoped_name(prefix: str, stack: str) -> str:
    """`<prefix>-<stack>` as a DNS label: for names AWS does not auto-suffix (task family, Cloud Map
    namespace), so two stacks in one account never share one."""
    label = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-") or "stack"
    return f"{prefix}-{label}"


REGISTRY_REPOSITORY = "steps"
"""The repository of the images steps run in (`ecr:enabled`)."""
MIRROR_REPOSITORY = "metadata-service"
"""The in-region copy of the metadata-service image (`metadata:scaleToZero`)."""


def ecr_repository_name(prefix: str, stack: str, purpose: str) -> str:
    """`<prefix>-<stack>/<purpose>`: a stack's ECR repositories (ECR needs a name and takes no uppercase)."""
    return f"{prefix}-{stack.lower()}/{purpose}"


def budget_name(prefix: str, stack: str) -> str:
    return f"{prefix}-{stack}-monthly"


NAMESPACES: dict[str, type[Namespace]] = {
    "aws": AwsSettings,
    "metaflow": MetaflowSettings,
    "network": NetworkSettings,
    "datastore": DatastoreSettings,
    "db": DbSettings,
    "metadata": MetadataSettings,
    "compute": ComputeSettings,
    "stepFunctions": StepFunctionsSettings,
    "ui": UiSettings,
    "ecr": EcrSettings,
    "secrets": SecretsSettings,
    "alerts": AlertsSettings,
    "budget": BudgetSettings,
}


def known_keys(namespace: str) -> list[str]:
    declared = [f"{namespace}:{info.alias}" for info in NAMESPACES[namespace].model_fields.values()]
    passed_through = [f"aws:{key}" for key in provider_settings() if f"aws:{key}" not in declared]
    return declared + (passed_through if namespace == "aws" else [])


@cache  # asked for on every validation, of declarations that never change
def key_fields() -> dict[str, FieldInfo]:
    """Every config key with its declaration, in namespace order."""
    return {
        f"{namespace}:{info.alias}": info
        for namespace, model in NAMESPACES.items()
        for info in model.model_fields.values()
    }


class Settings(BaseModel):
    """Everything the program needs, validated; components receive this (or one namespace of it)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    stack: str
    aws: AwsSettings
    metaflow: MetaflowSettings
    network: NetworkSettings
    datastore: DatastoreSettings
    db: DbSettings
    metadata: MetadataSettings
    compute: ComputeSettings
    step_functions: StepFunctionsSettings = Field(alias="stepFunctions")
    ui: UiSettings
    ecr: EcrSettings
    secrets: SecretsSettings
    alerts: AlertsSettings
    budget: BudgetSettings

    @property
    def region(self) -> str:
        return self.aws.region

    @property
    def tags(self) -> dict[str, str]:
        """Tags every resource carries: the user's, plus the stack's name."""
        return {**self.metaflow.tags, "metaflow:stack": self.stack}

    def value(self, key: str) -> Any:
        """The validated value of `namespace:key`."""
        namespace, _, name = key.partition(":")
        group = getattr(self, "step_functions" if namespace == "stepFunctions" else namespace)
        field = next(field for field, info in type(group).model_fields.items() if info.alias == name)
        return getattr(group, field)
