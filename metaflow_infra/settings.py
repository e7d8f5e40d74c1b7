"""Stack settings: every config key read once, merged over its preset, validated by pydantic.

`load_settings(raw)` is pure: it takes a flat mapping of `namespace:key` to values (strings as
Pulumi hands them over, or native values) and returns a frozen `Settings`, or raises one
`pulumi.RunError` naming every bad key, its value and what is accepted. Components receive the
typed result and never read `pulumi.Config` themselves.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import json
import os
import re
import tomllib
from enum import Enum
from functools import cache
from importlib import resources
from typing import Annotated, Any, Mapping, Optional

import pulumi
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

DEFAULT_PRESET = "dev"
AVAILABLE_PRESETS = ("minimal", "dev")
REGION_KEY = "aws:region"


def _data(name: str) -> dict[str, Any]:
    return tomllib.loads(resources.files("metaflow_infra").joinpath("data", name).read_text())


@cache
def presets() -> dict[str, dict[str, Any]]:
    return _data("presets.toml")


@cache
def instance_families() -> dict[str, dict[str, Any]]:
    return _data("instance_types.toml")["families"]


@cache
def unsupported_zone_ids(region: str) -> list[str]:
    """Zone IDs where HTTP API VPC links or Fargate do not run."""
    return list(_data("zones.toml")["unsupported_zone_ids"].get(region, []))


@cache
def postgres_end_of_standard_support() -> dict[int, datetime.date]:
    return {int(k): v for k, v in _data("postgres.toml")["end_of_standard_support"].items()}


# --- value parsers: Pulumi hands every config value over as a string --------------------------


def _parse_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise ValueError("expected true or false")
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


def _parse_int(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError("expected a whole number")


def _parse_json(value: Any) -> Any:
    """Structured keys arrive as JSON text from `pulumi config set`; lists may be comma-separated."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"is not valid JSON ({err.msg})") from None
    return [item.strip() for item in text.split(",") if item.strip()]


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 network in CIDR form, e.g. 10.0.0.0/16") from None


Bool = Annotated[bool, BeforeValidator(_parse_bool)]
Int = Annotated[int, BeforeValidator(_parse_int)]
NonNegativeInt = Annotated[int, BeforeValidator(_parse_int), Field(ge=0)]
Cidr = Annotated[str, AfterValidator(_check_cidr)]
StrList = Annotated[list[str], BeforeValidator(_parse_json)]
CidrList = Annotated[list[Cidr], BeforeValidator(_parse_json)]
ARN_PATTERN = r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:.+$"


class _Namespace(BaseModel):
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


class AssumeRole(_Namespace):
    role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")]
    session_name: Optional[str] = None
    external_id: Optional[str] = None


AccountIds = Annotated[list[Annotated[str, Field(pattern=r"^\d{12}$")]], BeforeValidator(_parse_json)]


class AwsSettings(_Namespace):
    """The `aws:` keys this program forwards to its AWS provider (it uses its own, to tag everything)."""

    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")] = Field(
        description="the AWS region of the stack (or AWS_REGION from the environment)")
    profile: Optional[str] = Field(None, description="the AWS CLI profile to deploy with")
    allowed_account_ids: Optional[AccountIds] = Field(
        None, description="refuse to deploy to any other AWS account (list of account ids)")
    forbidden_account_ids: Optional[AccountIds] = Field(
        None, description="refuse to deploy to these AWS accounts (list of account ids)")
    assume_roles: Optional[Annotated[list[AssumeRole], BeforeValidator(_parse_json)]] = Field(
        None, description="roles to assume in turn: a list of {roleArn, sessionName, externalId}")


class MetaflowSettings(_Namespace):
    preset: str = Field(DEFAULT_PRESET, description="one of minimal, dev, production: the defaults every other key starts from")
    prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=20)] = Field("metaflow", description="name prefix for every resource (lowercase letters, digits, hyphens; at most 20)")
    tags: Annotated[dict[str, Annotated[str, Field(strict=True, max_length=256)]], BeforeValidator(_parse_json)] = Field({}, description="extra tags for every resource (structured config: a map of strings)")

    @model_validator(mode="after")
    def _tag_keys(self) -> "MetaflowSettings":
        for key in self.tags:
            if key.lower().startswith("aws:") or not 0 < len(key) <= 128:
                raise ValueError(f"tag key {key!r} is not allowed: 1-128 characters, not starting with 'aws:'")
        return self


class NetworkSettings(_Namespace):
    vpc_id: Annotated[Optional[str], Field(pattern=r"^vpc-[0-9a-f]{8,17}$")] = Field(None, description="use this existing VPC instead of creating one (needs network:subnetIds)")
    subnet_ids: Optional[StrList] = Field(None, description="existing subnets (at least two AZs) with a way out: public IPs + internet gateway, or NAT")
    vpc_cidr: Cidr = Field("10.0.0.0/16", description="address block of the VPC this program creates (/16 to /20)")
    private_subnets: Bool = Field(False, description="put tasks and the database in private subnets (needs NAT; not available yet)")
    nat_gateways: NonNegativeInt = Field(0, description="NAT gateways for private subnets (not available yet)")

    @model_validator(mode="after")
    def _existing_network(self) -> "NetworkSettings":
        if self.subnet_ids is not None:
            for subnet in self.subnet_ids:
                if not re.fullmatch(r"subnet-[0-9a-f]{8,17}", subnet):
                    raise ValueError(f"network:subnetIds: {subnet!r} is not a subnet id (subnet-…)")
        if (self.vpc_id is None) != (self.subnet_ids is None):
            given, missing = ("network:vpcId", "network:subnetIds") if self.vpc_id else ("network:subnetIds", "network:vpcId")
            raise ValueError(f"{given} is set but {missing} is not: an existing network needs both, or neither to create one")
        if self.subnet_ids is not None and len(set(self.subnet_ids)) < 2:
            raise ValueError(
                f"network:subnetIds has {len(set(self.subnet_ids))} subnet(s): give at least two, in different availability zones"
            )
        network = ipaddress.ip_network(self.vpc_cidr)
        if network.version != 4 or not 16 <= network.prefixlen <= 20:
            raise ValueError(f"network:vpcCidr {self.vpc_cidr!r}: an IPv4 block from /16 to /20 is needed for the subnets")
        return self


class DatastoreSettings(_Namespace):
    force_destroy: Bool = Field(False, description="let `pulumi destroy` delete the bucket with the artifacts in it")
    versioning: Bool = Field(False, description="S3 versioning; old versions expire after 30 days")
    kms_key: Annotated[Optional[str], Field(pattern=ARN_PATTERN)] = Field(None, description="KMS key ARN for SSE-KMS instead of SSE-S3 (not available yet)")


class DbSettings(_Namespace):
    engine_version: Int = Field(17, description="PostgreSQL major version; versions in RDS extended support are refused unless db:allowExtendedSupport")
    instance_class: Annotated[str, Field(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")] = Field("db.t4g.micro", description="RDS instance class")
    multi_az: Bool = Field(False, description="a standby in a second AZ (doubles the database cost)")
    deletion_protection: Bool = Field(False, description="refuse to delete the database until this is turned off")
    backup_retention_days: Annotated[int, BeforeValidator(_parse_int), Field(ge=0, le=35)] = Field(1, description="days of automated backups (0-35)")
    allow_extended_support: Bool = Field(False, description="accept a PostgreSQL version billed as RDS Extended Support")
    allocated_storage_gb: Annotated[int, BeforeValidator(_parse_int), Field(ge=20, le=65536)] = Field(20, description="gp3 storage in GiB (20 or more)")

    @model_validator(mode="after")
    def _current_classes(self) -> "DbSettings":
        if self.instance_class.startswith(("db.t2.", "db.m4.", "db.r4.")):
            raise ValueError(
                f"db:instanceClass {self.instance_class!r} is a previous-generation class RDS no longer offers "
                "for current PostgreSQL versions; use e.g. db.t4g.micro, db.t4g.small, db.t4g.medium or db.m7g.large"
            )
        return self


FARGATE_MEMORY_BY_CPU: dict[int, range] = {
    256: range(512, 2048 + 1, 512),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
    8192: range(16384, 61440 + 1, 4096),
    16384: range(32768, 122880 + 1, 8192),
}
"""AWS's valid Fargate task sizes (cpu units -> memory MiB)."""


MINIMUM_SERVICE_VERSION = (2, 4, 6)
"""The first metadata-service release whose run_goose.py and service both honour MF_METADATA_DB_SSL_MODE."""


class MetadataSettings(_Namespace):
    enabled: Bool = Field(False, description="run the metadata service and its database (else Metaflow keeps metadata locally)")
    image: Annotated[str, Field(pattern=r"^[\w.\-/]+:v?\d+\.\d+\.\d+$")] = Field("netflixoss/metaflow_metadata_service:v2.5.1", description="metadata service image, pinned to a release that speaks TLS to PostgreSQL")
    cpu: Int = Field(256, description="Fargate CPU units of the metadata service (256, 512, 1024, ...)")
    memory: Int = Field(1024, description="Fargate memory (MiB) of the metadata service; must fit metadata:cpu")
    spot: Bool = Field(False, description="run the metadata service on Fargate Spot (about 70% cheaper, may restart)")

    @model_validator(mode="after")
    def _tls_capable_image(self) -> "MetadataSettings":
        version = tuple(int(part) for part in re.findall(r"\d+", self.image.rpartition(":")[2])[:3])
        if version < MINIMUM_SERVICE_VERSION:
            floor = ".".join(map(str, MINIMUM_SERVICE_VERSION))
            raise ValueError(
                f"metadata:image {self.image!r} is older than v{floor}: earlier releases cannot speak TLS to "
                "PostgreSQL 15+ (rds.force_ssl) or migrate the schema non-interactively; use v2.5.1 or later")
        return self

    @model_validator(mode="after")
    def _fargate_size(self) -> "MetadataSettings":
        if self.cpu not in FARGATE_MEMORY_BY_CPU:
            raise ValueError(
                f"metadata:cpu {self.cpu} is not a Fargate size; accepted: {', '.join(map(str, FARGATE_MEMORY_BY_CPU))}"
            )
        allowed = FARGATE_MEMORY_BY_CPU[self.cpu]
        if self.memory not in allowed:
            raise ValueError(
                f"metadata:memory {self.memory} does not fit metadata:cpu {self.cpu} on Fargate; accepted: "
                f"{allowed.start} to {allowed.stop - 1} MiB in steps of {allowed.step}"
            )
        return self


class ComputeSettings(_Namespace):
    type: ComputeType = Field(ComputeType.SPOT, description="ec2, spot, fargate or fargate_spot")
    min_vcpus: NonNegativeInt = Field(0, description="vCPUs kept running with no job queued (0: nothing bills while idle)")
    max_vcpus: Annotated[int, BeforeValidator(_parse_int), Field(ge=1)] = Field(32, description="the most vCPUs each compute environment may run at once (the on-demand fallback has its own)")
    instance_types: StrList = Field(["c5", "m5", "r5"], description="instance families or types Batch may launch (EC2 and spot only)")
    on_demand_fallback: Bool = Field(False, description="queue an on-demand environment behind spot (or Fargate behind Fargate Spot)")
    gpu: Bool = Field(False, description="add a GPU environment and queue (not available yet)")
    gpu_instance_types: StrList = Field(["g4dn", "g5"], description="GPU instance families (not available yet)")
    gpu_max_vcpus: Annotated[int, BeforeValidator(_parse_int), Field(ge=1)] = Field(16, description="the most vCPUs of the GPU environment (not available yet)")
    multi_node: Bool = Field(False, description="an environment for @parallel multi-node jobs (not available yet)")

    @model_validator(mode="after")
    def _vcpu_range(self) -> "ComputeSettings":
        if self.min_vcpus > self.max_vcpus:
            raise ValueError(
                f"compute:minVcpus ({self.min_vcpus}) is greater than compute:maxVcpus ({self.max_vcpus}); "
                "min must be at most max (0 keeps nothing running while no job is queued)"
            )
        return self


class StepFunctionsSettings(_Namespace):
    enabled: Bool = Field(False, description="Step Functions, DynamoDB and EventBridge roles for `step-functions create` (not available yet)")


class UiSettings(_Namespace):
    enabled: Bool = Field(False, description="the Metaflow UI (not available yet)")
    certificate_arn: Annotated[Optional[str], Field(pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")] = Field(None, description="ACM certificate for HTTPS on the UI")
    allowed_cidrs: Optional[CidrList] = Field(None, description="networks allowed to reach the UI (list of CIDRs)")
    domain: Optional[str] = Field(None, description="domain name of the UI")


class EcrSettings(_Namespace):
    enabled: Bool = Field(False, description="an ECR repository for step images (not available yet)")


class SecretsSettings(_Namespace):
    enabled: Bool = Field(False, description="@secrets through Secrets Manager (not available yet)")


class AlertsSettings(_Namespace):
    email: Optional[str] = Field(None, description="where alarms are sent (not available yet)")


class BudgetSettings(_Namespace):
    monthly_usd: Optional[Annotated[int, BeforeValidator(_parse_int), Field(ge=1)]] = Field(None, description="an AWS budget in USD per month (not available yet)")
    email: Optional[str] = Field(None, description="where budget alerts are sent (not available yet)")


NAMESPACES: dict[str, type[_Namespace]] = {
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


# --- loading ----------------------------------------------------------------------------------


def known_keys(namespace: str) -> list[str]:
    return [f"{namespace}:{info.alias}" for info in NAMESPACES[namespace].model_fields.values()]


class ConfigError(pulumi.RunError):
    """A user's config mistake: Pulumi prints the message without a Python traceback."""


def _fail(problems: list[str]) -> ConfigError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return ConfigError(f"Invalid stack configuration:\n{lines}")


OTHER_NAMESPACES = ("pulumi",)
"""Config namespaces this program leaves alone."""


def _unknown_namespace_problem(key: str, namespace: str, name: str) -> str:
    owners = [n for n in NAMESPACES if f"{n}:{name}" in known_keys(n)]
    if owners:
        hint = f"did you mean {owners[0]}:{name}?"
    else:
        close = difflib.get_close_matches(namespace, list(NAMESPACES), n=1)
        hint = f"did you mean {close[0]}:{name}?" if close else f"namespaces: {', '.join(NAMESPACES)}"
    return f"{key}: '{namespace}' is not a config namespace of this program ({hint})"


def _unknown_key_problems(raw: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in raw:
        namespace, _, name = key.partition(":")
        if namespace in OTHER_NAMESPACES:
            continue
        if namespace not in NAMESPACES:
            problems.append(_unknown_namespace_problem(key, namespace, name))
            continue
        keys = known_keys(namespace)
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            problems.append(f"{key} is not a known key.{hint} Keys in '{namespace}': {', '.join(keys)}")
    return problems


def _region(raw: Mapping[str, Any]) -> str:
    region = raw.get(REGION_KEY) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise _fail([f"{REGION_KEY} is not set: run `pulumi config set aws:region us-east-1` (or your region)"])
    return str(region)


def _describe_error(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    namespace = loc[0] if loc else ""
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be ", "accepted: ")
    if len(loc) < 2:  # a namespace-level check: its message names the keys
        return message
    key = f"{namespace}:{loc[1]}" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc[2:])
    return f"{key} = {error['input']!r}: {message}"


def _preset_name(raw: Mapping[str, Any], check_availability: bool) -> str:
    preset = str(raw.get("metaflow:preset", DEFAULT_PRESET))
    if preset not in presets():
        raise _fail([f"metaflow:preset = {preset!r} is not a preset; accepted: {', '.join(presets())}"])
    if check_availability and preset not in AVAILABLE_PRESETS:
        raise _fail([
            f"metaflow:preset = {preset!r} is not available yet in this release (it needs features that have not "
            f"landed: private subnets with NAT, Step Functions). Available presets: {', '.join(AVAILABLE_PRESETS)}"
        ])
    return preset


def _not_yet_available(settings: Settings) -> list[str]:
    """Switches whose parts have not landed: refusing them beats a silent partial stack."""
    unavailable = {
        "network:privateSubnets": settings.network.private_subnets,
        "network:natGateways": settings.network.nat_gateways > 0,
        "datastore:kmsKey": settings.datastore.kms_key is not None,
        "compute:gpu": settings.compute.gpu,
        "compute:multiNode": settings.compute.multi_node,
        "stepFunctions:enabled": settings.step_functions.enabled,
        "ui:enabled": settings.ui.enabled,
        "ecr:enabled": settings.ecr.enabled,
        "secrets:enabled": settings.secrets.enabled,
        "alerts:email": settings.alerts.email is not None,
        "budget:monthlyUsd": settings.budget.monthly_usd is not None,
    }
    return [
        f"{key} is not available yet in this release; leave it unset (or false) for now"
        for key, requested in unavailable.items()
        if requested
    ]


def _instance_type_problems(key: str, types: list[str], region: str, want_gpu: bool) -> list[str]:
    families = instance_families()
    kind = [f for f, spec in families.items() if bool(spec.get("gpu")) == want_gpu]
    problems = []
    for entry in types:
        family, _, size = entry.partition(".")
        spec = families.get(family)
        if spec is None or bool(spec.get("gpu")) != want_gpu or (size and size not in spec["sizes"]):
            problems.append(
                f"{key}: {entry!r} is not a known instance type; accepted: a family ({', '.join(kind)}) "
                "or family.size, e.g. c6i.xlarge"
            )
        elif "*" not in spec["regions"] and region not in spec["regions"]:
            problems.append(f"{key}: {family} is not offered in {region}; families offered there: "
                            f"{', '.join(offered_families(region, want_gpu))}")
    if not types:
        problems.append(f"{key} is empty: name at least one instance family or type")
    return problems


def offered_families(region: str, gpu: bool = False) -> list[str]:
    return [
        family
        for family, spec in instance_families().items()
        if bool(spec.get("gpu")) == gpu and ("*" in spec["regions"] or region in spec["regions"])
    ]


def _db_problems(db: DbSettings, today: datetime.date) -> list[str]:
    calendar = postgres_end_of_standard_support()
    if db.engine_version not in calendar:
        return [f"db:engineVersion = {db.engine_version}: not an RDS PostgreSQL major version; accepted: "
                f"{', '.join(map(str, calendar))}"]
    end = calendar[db.engine_version]
    if end < today and not db.allow_extended_support:
        current = [str(v) for v, e in calendar.items() if e >= today]
        return [
            f"db:engineVersion = {db.engine_version}: PostgreSQL {db.engine_version} left RDS standard support on "
            f"{end.isoformat()} and is billed as RDS Extended Support (about $0.10-0.20 per vCPU-hour on top of the "
            f"instance). Choose one of {', '.join(current)}, or set db:allowExtendedSupport true to pay for it"
        ]
    return []


def load_settings(raw: Mapping[str, Any], stack: str, today: Optional[datetime.date] = None,
                  check_availability: bool = True) -> Settings:
    """Validate `namespace:key` config over its preset; raise one ConfigError listing every problem.
    `check_availability=False` lets cost comparisons price presets and switches not deployable yet."""
    today = today or datetime.date.today()
    region = _region(raw)
    preset = _preset_name(raw, check_availability)
    problems = _unknown_key_problems(raw)
    if problems:
        raise _fail(problems)

    merged: dict[str, Any] = {**presets()[preset], **raw, "metaflow:preset": preset, REGION_KEY: region}
    user_set_instance_types = "compute:instanceTypes" in raw
    if not user_set_instance_types:
        merged["compute:instanceTypes"] = [
            f for f in merged["compute:instanceTypes"] if f in offered_families(region)
        ]
    nested: dict[str, dict[str, Any]] = {namespace: {} for namespace in NAMESPACES}
    for key, value in merged.items():
        namespace, _, name = key.partition(":")
        if namespace in nested:
            nested[namespace][name] = value
    try:
        settings = Settings.model_validate({"stack": stack, **nested})
    except ValidationError as err:
        raise _fail([_describe_error(e) for e in err.errors()]) from None

    problems = (_not_yet_available(settings) if check_availability else []) + _db_problems(settings.db, today)
    problems += _instance_type_problems("compute:instanceTypes", settings.compute.instance_types, region, want_gpu=False)
    if settings.compute.type.is_fargate and user_set_instance_types:
        problems.append("compute:instanceTypes does not apply to Fargate compute (compute:type "
                        f"{settings.compute.type.value}); unset it")
    if problems:
        raise _fail(problems)
    return settings


def raw_config_from_pulumi() -> dict[str, Any]:
    """Every config value Pulumi passed to this program, keyed `namespace:key`."""
    return {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
