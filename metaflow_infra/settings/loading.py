"""Reading config into `Settings`: merge over the preset, validate, then the checks that span keys
or need the catalog. Every problem is collected and reported in one `ConfigError`."""

from __future__ import annotations

import datetime
import difflib
import os
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import pulumi
from pydantic import ValidationError

from .aws_rules import (
    account_id_problems,
    arn_partition_problems,
    batch_instance_type_keywords,
    bucket_prefix_problems,
    db_instance_class_problems,
    image_pin,
    image_reference_problems,
    max_reserved_concurrency,
    rds_window_problems,
    region_problems,
    service_missing_in,
    stack_name_problems,
    tag_problems,
    vpc_cidr_problems,
)
from .catalog import (
    MINIMUM_SERVICE_VERSION,
    aurora_pause_versions,
    available_presets,
    default_preset,
    instance_families,
    postgres_end_of_standard_support,
    presets,
)
from .models import (
    CREATE_KEY,
    MIRROR_REPOSITORY,
    NAMESPACES,
    NOT_AVAILABLE,
    REGISTRY_REPOSITORY,
    ComputeType,
    DbSettings,
    MetadataSettings,
    Settings,
    UiAccess,
    UiAuth,
    budget_name,
    ecr_repository_name,
    is_available,
    key_fields,
    known_keys,
    stack_scoped_name,
)
from .values import repeated

REGION_KEY = "aws:region"
OTHER_NAMESPACES = ("pulumi",)
"""Config namespaces this program leaves alone."""


class ConfigError(pulumi.RunError):
    """A user's config mistake: Pulumi prints the message without a Python traceback."""


def config_error(problems: list[str]) -> ConfigError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return ConfigError(f"Invalid stack configuration:\n{lines}")


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
        raise config_error([f"{REGION_KEY} is not set: run `pulumi config set aws:region us-east-1` (or your region)"])
    return str(region)


FORMAT_EXAMPLES = {
    "aws:region": "a region name such as us-east-1 or eu-west-1",
    "aws:assumeRoles.roleArn": "an IAM role ARN such as arn:aws:iam::123456789012:role/deployer",
    "aws:allowedAccountIds": "12-digit account ids such as 123456789012",
    "aws:forbiddenAccountIds": "12-digit account ids such as 123456789012",
    "metaflow:prefix": "lowercase letters, digits and single hyphens, starting with a letter, e.g. team-a",
    "network:vpcId": "a VPC id such as vpc-0123456789abcdef0",
    "datastore:kmsKey": "a KMS key ARN such as arn:aws:kms:us-east-1:123456789012:key/<key id>, or create",
    "db:backupWindow": "a daily UTC window such as 03:00-03:30",
    "db:maintenanceWindow": "a weekly UTC window such as sun:04:00-sun:04:30",
    "alerts:email": "an email address such as ops@example.com",
    "budget:email": "an email address such as ops@example.com",
    "ui:certificateArn": "an ACM certificate ARN such as arn:aws:acm:us-east-1:123456789012:certificate/<id>",
    "ui:domain": "a lowercase DNS name such as metaflow.example.com",
    "ui:hostedZoneId": "a Route 53 zone id such as Z0123456789ABCDEFGHIJ",
    "ui:oidc": "https:// URLs for the issuer and endpoints",
    "ecr:imageTag": "an image tag such as py311 (letters, digits, '_', '.', '-'; up to 128)",
}
"""What a valid value looks like, for keys checked against a format: users see this, never a regex."""


def _format_example(path: str) -> str:
    """`path` is a key with nested fields but no list indexes (`aws:assumeRoles.roleArn`)."""
    for candidate in (path, path.rsplit(".", 1)[0], path.split(".", 1)[0]):
        if candidate in FORMAT_EXAMPLES:
            return FORMAT_EXAMPLES[candidate]
    return "a value in the documented format (see the README's configuration table)"


def _describe_error(error: Any, given: Mapping[str, Any]) -> str:
    """One pydantic error in the user's terms: the key, the value as given (`given`: the merged config,
    before parsing turned it into something else) and what is accepted."""
    loc = [str(part) for part in error["loc"]]
    namespace = loc[0] if loc else ""
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be ", "accepted: ")
    if error.get("type") == "string_type":
        message = 'accepted: a string (in JSON, quote it: "1", not 1)'
    if error.get("type") == "string_pattern_mismatch" and len(loc) >= 2:
        path = f"{namespace}:{loc[1]}" + "".join(f".{part}" for part in loc[2:] if not part.isdigit())
        message = f"not in the expected format; accepted: {_format_example(path)}"
    if len(loc) < 2:  # a namespace-level check: its message names the keys
        return message
    key = f"{namespace}:{loc[1]}" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc[2:])
    if error.get("type") == "dict_type":
        message = (
            f'accepted: a map of strings, e.g. pulumi config set --path "{key}.team" ds, or the JSON {{"team": "ds"}}'
        )
    return f"{key} = {given.get(key, error['input'])!r}: {message}"


def _preset_name(raw: Mapping[str, Any], check_availability: bool) -> str:
    preset = str(raw.get("metaflow:preset", default_preset()))
    if preset not in presets():
        raise config_error([f"metaflow:preset = {preset!r} is not a preset; accepted: {', '.join(presets())}"])
    if check_availability and preset not in available_presets():
        raise config_error(
            [
                f"metaflow:preset = {preset!r} is {NOT_AVAILABLE} in this release (it needs features that have not "
                "landed). "
                f"Available presets: {', '.join(available_presets())}"
            ]
        )
    return preset


def _not_yet_available(settings: Settings) -> list[str]:
    """Keys of features that have not landed, set to anything but their default: refusing them
    beats a silent partial stack."""
    return [
        f"{key} is {NOT_AVAILABLE} in this release; leave it unset for now"
        for key, info in key_fields().items()
        if not is_available(info) and settings.value(key) != info.default
    ]


CPU, GPU, NEURON = "cpu", "gpu", "neuron"
FAMILY_KINDS = {CPU: "CPU", GPU: "GPU", NEURON: "Inferentia/Trainium"}
LIST_OF_KIND = {CPU: "compute:instanceTypes", GPU: "compute:gpuInstanceTypes", NEURON: "compute:neuronInstanceTypes"}
"""Where each kind of family belongs (a GPU family in the CPU list would run on an AMI without its driver)."""


def family_kind(spec: Mapping[str, Any]) -> str:
    """cpu, gpu (NVIDIA, `gpu = true` in the data) or neuron (Inferentia/Trainium, `neuron = true`)."""
    return GPU if spec.get("gpu") else NEURON if spec.get("neuron") else CPU


@cache  # asked for on every validation, of data that never changes
def families_of(kinds: tuple[str, ...], region: str | None = None) -> tuple[str, ...]:
    """The families of these kinds in the data, in its order; with `region`, those offered there."""
    return tuple(
        family
        for family, spec in instance_families().items()
        if family_kind(spec) in kinds and (region is None or "*" in spec["regions"] or region in spec["regions"])
    )


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'AEIOU' else 'a'} {noun}"


def _instance_type_problems(key: str, types: list[str], region: str, kinds: tuple[str, ...] = (CPU,)) -> list[str]:
    """Each entry a family or family.size of the kinds this list takes, offered in the region (or, for a list
    of CPU families, one of Batch's own words)."""
    families = instance_families()
    keywords = batch_instance_type_keywords() if CPU in kinds else ()
    accepted = " or ".join(FAMILY_KINDS[kind] for kind in kinds)
    words = f", or one of Batch's words ({', '.join(keywords)})" if keywords else ""
    problems = []
    for entry in types:
        if entry in batch_instance_type_keywords() and not keywords:
            problems.append(
                f"{key}: {entry!r} lets Batch pick CPU instances (C, M and R families) and this list takes "
                f"{accepted} families; name them ({', '.join(families_of(kinds))})"
            )
            continue
        if entry in keywords:  # Batch picks the types itself
            if entry.endswith("arm64") and len(types) > 1:
                problems.append(
                    f"{key}: {entry!r} picks ARM instances and cannot share an environment with "
                    "x86 families or types; give it alone"
                )
            continue
        family, _, size = entry.partition(".")
        spec = families.get(family)
        if spec is not None and family_kind(spec) not in kinds:
            kind = family_kind(spec)
            where = (
                f"{FAMILY_KINDS[kind]} families go in {LIST_OF_KIND[kind]}"
                if kind != CPU
                else f"it has no {accepted} device, so its jobs could not use one"
            )
            problems.append(
                f"{key}: {entry!r} is {_a(FAMILY_KINDS[kind])} family and this list takes {accepted} families "
                f"({', '.join(families_of(kinds))}); {where}"
            )
        elif spec is None or (size and size not in spec["sizes"]):
            example = f"{families_of(kinds)[0]}.{families[families_of(kinds)[0]]['sizes'][0]}"
            problems.append(
                f"{key}: {entry!r} is not a known instance type; accepted: {_a(accepted)} family "
                f"({', '.join(families_of(kinds))}), family.size, e.g. {example}{words}"
            )
        elif "*" not in spec["regions"] and region not in spec["regions"]:
            offered = families_of(kinds, region)
            problems.append(
                f"{key}: {family} is not offered in {region}; {accepted} families offered there: "
                f"{', '.join(offered) if offered else 'none known'}"
            )
    if not types:
        problems.append(f"{key} is empty: name at least one instance family or type")
    return problems


DEFAULT_FAMILY_LISTS = ("compute:instanceTypes", "compute:gpuInstanceTypes", "compute:multiNodeInstanceTypes")
"""Family lists whose default (or preset) value is cut down to the families offered in the stack's region."""
ACCELERATOR_SWITCHES = {
    "compute:gpuInstanceTypes": "compute:gpu",
    "compute:gpuMaxVcpus": "compute:gpu",
    "compute:neuronMaxVcpus": "compute:neuronInstanceTypes",
    "compute:multiNodeInstanceTypes": "compute:multiNode",
    "compute:multiNodeMaxVcpus": "compute:multiNode",
}
"""Keys that mean nothing while the key that turns their environment on is off (false or empty)."""


def _accelerator_problems(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    """The GPU, Inferentia/Trainium and multi-node environments: their lists checked when on, their keys
    refused when off, multi-node refused where its containers could not reach the metadata service."""
    compute = settings.compute
    problems = [
        f"{key} has no effect while {switch} is {'empty' if switch.endswith('Types') else 'false'}; "
        f"{'name families in' if switch.endswith('Types') else 'set'} {switch}"
        f"{'' if switch.endswith('Types') else ' true'} or unset {key}"
        for key, switch in ACCELERATOR_SWITCHES.items()
        if key in raw and not settings.value(switch)
    ]
    region = settings.region
    if compute.gpu and not compute.gpu_instance_types and "compute:gpuInstanceTypes" not in raw:
        default = key_fields()["compute:gpuInstanceTypes"].default
        offered = families_of((GPU,), region)
        problems.append(
            f"compute:gpu = true: none of the default GPU families ({', '.join(default)}) is known to be offered "
            f"in {region}; name GPU families offered there in compute:gpuInstanceTypes "
            f"({', '.join(offered) if offered else 'none known'})"
        )
    elif compute.gpu:
        problems += _instance_type_problems("compute:gpuInstanceTypes", compute.gpu_instance_types, region, (GPU,))
    if compute.neuron_instance_types:
        problems += _instance_type_problems(
            "compute:neuronInstanceTypes", compute.neuron_instance_types, region, (NEURON,)
        )
    if compute.multi_node:
        problems += _instance_type_problems(
            "compute:multiNodeInstanceTypes", compute.multi_node_instance_types, region, (CPU, GPU)
        )
        network = settings.network
        if settings.metadata.enabled and network.vpc_id is None and not network.private_subnets:
            problems.append(
                "compute:multiNode = true cannot reach the metadata service from this stack's public subnets: "
                "Batch runs multi-node containers in awsvpc mode, with a network interface of their own and no "
                "public IP address, so they reach S3 (through the gateway endpoint the stack adds) but not the "
                "service's HTTPS endpoint. Give network:vpcId and network:subnetIds of subnets behind a NAT "
                "gateway, or run without the metadata service (metadata:enabled false)"
            )
    return problems


def _db_problems(db: DbSettings, today: datetime.date) -> list[str]:
    calendar = postgres_end_of_standard_support()
    if db.engine_version not in calendar:
        return [
            f"db:engineVersion = {db.engine_version}: not an RDS PostgreSQL major version; accepted: "
            f"{', '.join(map(str, calendar))}"
        ]
    end = calendar[db.engine_version]
    if end < today and not db.allow_extended_support:
        current = [str(v) for v, e in calendar.items() if e >= today]
        return [
            f"db:engineVersion = {db.engine_version}: PostgreSQL {db.engine_version} left RDS standard support on "
            f"{end.isoformat()} and is billed as RDS Extended Support (about $0.10-0.20 per vCPU-hour on top of the "
            f"instance). Choose one of {', '.join(current)}, or set db:allowExtendedSupport true to pay for it"
        ]
    return []


def _db_window_problems(db: DbSettings) -> list[str]:
    """With only one window set, the other is RDS's pick and may meet it, so they come together."""
    backup, maintenance = db.backup_window, db.maintenance_window
    if (backup is None) != (maintenance is None):
        given, missing = (
            ("db:backupWindow", "db:maintenanceWindow") if backup else ("db:maintenanceWindow", "db:backupWindow")
        )
        return [f"{given} needs {missing} as well: RDS refuses windows that overlap, and would pick the other one"]
    if backup is None or maintenance is None:
        return []
    return rds_window_problems(backup, maintenance)


def _image_problems(metadata: MetadataSettings) -> list[str]:
    """A valid reference, pinned: by a release tag no older than the first TLS-capable one, or a digest."""
    key, image = "metadata:image", metadata.image
    problems = image_reference_problems(key, image)
    if problems:
        return problems
    tag, digest = image_pin(image)
    floor = ".".join(map(str, MINIMUM_SERVICE_VERSION))
    release = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", tag or "")
    if release is None:
        if digest is None:
            return [
                f"{key} = {image!r} is not pinned to a release: use a tag like v2.5.1 (v{floor} or later) or "
                "an @sha256 digest, so every task runs the same code"
            ]
        return []
    if tuple(int(part) for part in release.groups()) < MINIMUM_SERVICE_VERSION:
        return [
            f"{key} = {image!r} is older than v{floor}: earlier releases cannot speak TLS to PostgreSQL 15+ "
            "(rds.force_ssl) or migrate the schema non-interactively; use v2.5.1 or later"
        ]
    return []


def _conflicting_keys(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    """Keys the user set that the chosen compute type would silently ignore (a preset's value that does
    not apply to the type is documented as such and left alone)."""
    compute, problems = settings.compute, []
    kind = compute.type.value
    if "compute:instanceTypes" in raw and compute.type.is_fargate:
        problems.append(f"compute:instanceTypes does not apply to Fargate compute (compute:type {kind}); unset it")
    if "compute:minVcpus" in raw and compute.min_vcpus > 0 and compute.type.is_fargate:
        problems.append(
            f"compute:minVcpus = {compute.min_vcpus}: Fargate keeps nothing running (compute:type {kind}); unset it"
        )
    if "compute:onDemandFallback" in raw and compute.on_demand_fallback and kind in ("ec2", "fargate"):
        problems.append(
            f"compute:onDemandFallback = true: compute:type {kind} is already on-demand, there is nothing "
            "to fall back from; unset it, or use spot / fargate_spot"
        )
    return problems


UI_MODE_KEYS = {
    "ui:certificateArn": (UiAccess.ALLOW_LIST, UiAccess.PUBLIC),
    "ui:allowedCidrs": (UiAccess.ALLOW_LIST,),
    "ui:auth": (UiAccess.PUBLIC,),
    "ui:oidc": (UiAccess.PUBLIC,),
    "ui:domain": (UiAccess.ALLOW_LIST, UiAccess.PUBLIC),
    "ui:hostedZoneId": (UiAccess.ALLOW_LIST, UiAccess.PUBLIC),
}
"""UI keys and the access modes they mean something in."""


def _ui_problems(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    """The UI's keys fit together: nothing unsafe, nothing incomplete, nothing ignored."""
    ui, problems = settings.ui, []
    set_keys = [key for key in raw if key.startswith("ui:") and key != "ui:enabled"]
    if not ui.enabled:
        return [f"{key} has no effect while ui:enabled is false; set ui:enabled true or unset it" for key in set_keys]
    if not settings.metadata.enabled:
        problems.append(
            "ui:enabled needs the metadata service and its database: set metadata:enabled true (the dev preset has it)"
        )
    mode = ui.access.value
    for key, modes in UI_MODE_KEYS.items():
        if key in raw and ui.access not in modes:
            problems.append(
                f"{key} does not apply to ui:access {mode}; it is for {' or '.join(m.value for m in modes)}: unset it"
            )
    if ui.access is UiAccess.ALLOW_LIST:
        if not ui.allowed_cidrs:
            problems.append(
                "ui:access allowList needs ui:allowedCidrs: the networks that may reach the UI, "
                "e.g. pulumi config set ui:allowedCidrs '[\"203.0.113.0/24\"]'"
            )
        twice = repeated(ui.allowed_cidrs or [])
        if twice:
            problems.append(
                f"ui:allowedCidrs lists {', '.join(twice)} more than once: EC2 refuses a repeated rule; list each once"
            )
        ipv6 = [cidr for cidr in ui.allowed_cidrs or [] if ":" in cidr]
        if ipv6:
            problems.append(
                f"ui:allowedCidrs {', '.join(ipv6)}: the load balancer has IPv4 addresses only, so an IPv6 network "
                "could never reach it; give IPv4 networks (e.g. 203.0.113.0/24)"
            )
        everyone = [cidr for cidr in ui.allowed_cidrs or [] if cidr.endswith("/0")]
        if everyone:
            problems.append(
                f"ui:allowedCidrs {', '.join(everyone)} lets everyone in without signing in: use "
                "ui:access public (HTTPS and sign-in) instead, or name your networks"
            )
    if ui.access is UiAccess.PUBLIC:
        if ui.certificate_arn is None or ui.domain is None:
            problems.append(
                "ui:access public needs ui:certificateArn and ui:domain (the name the certificate is "
                "for): a public UI is served over HTTPS only, behind sign-in"
            )
        if ui.auth is UiAuth.OIDC and ui.oidc is None:
            problems.append(
                "ui:auth oidc needs ui:oidc: {issuer, authorizationEndpoint, tokenEndpoint, "
                "userInfoEndpoint, clientId, clientSecret} (pulumi config set --secret --path ...)"
            )
        if ui.auth is UiAuth.COGNITO and ui.oidc is not None:
            problems.append("ui:oidc does not apply to ui:auth cognito: set ui:auth oidc or unset ui:oidc")
        partition = service_missing_in("cognito-idp", settings.region)
        if ui.auth is UiAuth.COGNITO and partition:
            problems.append(
                f"ui:auth cognito: Amazon Cognito is not offered in the {partition} partition ({settings.region}); "
                "use ui:auth oidc with your own identity provider"
            )
    if ui.certificate_arn is not None:
        problems += arn_partition_problems("ui:certificateArn", ui.certificate_arn, settings.region)
    if ui.certificate_arn is not None and ui.certificate_arn.split(":")[3] != settings.region:
        problems.append(
            f"ui:certificateArn is in {ui.certificate_arn.split(':')[3]}: a load balancer in "
            f"{settings.region} needs a certificate from ACM in {settings.region}"
        )
    if ui.hosted_zone_id is not None and ui.domain is None:
        problems.append("ui:hostedZoneId needs ui:domain: the record to create in it")
    return problems


SCALE_TO_ZERO_FIXED = {
    "db:instanceClass": "Aurora Serverless v2 sizes itself (0 to 2 ACUs), there is no instance class",
    "db:allocatedStorageGb": "Aurora storage grows by itself and bills what it holds",
    "db:multiAz": "a standby would never pause",
    "db:performanceInsights": "it is not set up for the Aurora database of this mode",
    "db:allowExtendedSupport": "Extended Support is not priced for Aurora here; choose a version in standard support",
    "metadata:tasks": "the waker starts exactly one task",
    "alerts:enabled": "the no-service-task alarm would fire whenever the service sleeps",
}
"""Keys that must keep their default with metadata:scaleToZero, and why."""


def _scale_to_zero_problems(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    """Scale to zero means one pausable Aurora database and one task that only runs when asked for: refuse
    every setting that would keep something running, or that would be ignored."""
    metadata = settings.metadata
    if not metadata.scale_to_zero:
        return [
            "metadata:idleMinutes has no effect while metadata:scaleToZero is false; set metadata:scaleToZero true "
            "or unset it"
        ] * ("metadata:idleMinutes" in raw)
    if not metadata.enabled:
        return ["metadata:scaleToZero needs the metadata service: set metadata:enabled true (the dev preset has it)"]
    preset = settings.metaflow.preset
    problems = [
        f"{key} = {settings.value(key)!r} does not apply with metadata:scaleToZero: {why}; "
        + ("unset it" if key in raw else f"the {preset} preset sets it: set it to {key_fields()[key].default!r}")
        for key, why in SCALE_TO_ZERO_FIXED.items()
        if key in raw or settings.value(key) != key_fields()[key].default
    ]
    if settings.db.backup_retention_days < 1:
        problems.append(
            "db:backupRetentionDays = 0 does not apply with metadata:scaleToZero: Aurora keeps automated backups "
            "for at least 1 day (1-35)"
        )
    if "metadata:spot" in raw and metadata.spot:
        problems.append(
            "metadata:spot = true does not apply with metadata:scaleToZero: the service runs only while used, so "
            "Spot would save about a cent an hour and interrupt exactly the people using it; unset it"
        )
    if settings.db.engine_version not in aurora_pause_versions():
        problems.append(
            f"db:engineVersion = {settings.db.engine_version}: no Aurora PostgreSQL {settings.db.engine_version} "
            f"pauses at 0 ACU; accepted with metadata:scaleToZero: {', '.join(map(str, aurora_pause_versions()))}"
        )
    if settings.ui.enabled and settings.ui.access is not UiAccess.PRIVATE:
        problems.append(
            f"ui:access {settings.ui.access.value} keeps a UI task connected to the database, which then never "
            "pauses: use ui:access private with metadata:scaleToZero (the UI runs only while someone has it open)"
        )
    return problems


def _without_spot_for_scale_to_zero(settings: Settings) -> Settings:
    """A preset's metadata:spot gives way to on-demand in scale-to-zero mode (set by hand, it is refused)."""
    if not settings.metadata.scale_to_zero or not settings.metadata.spot:
        return settings
    return settings.model_copy(update={"metadata": settings.metadata.model_copy(update={"spot": False})})


SWITCHED_NAMESPACES = ("ecr", "stepFunctions", "alerts")
"""Namespaces whose other keys mean nothing while their `enabled` switch is off."""


def _switched_off_keys(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} has no effect while {namespace}:enabled is false; set {namespace}:enabled true or unset it"
        for namespace in SWITCHED_NAMESPACES
        if not settings.value(f"{namespace}:enabled")
        for key in raw
        if key.startswith(f"{namespace}:") and key != f"{namespace}:enabled"
    ]


def _network_problems(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    """Private subnets always have a way out: Batch instances without one never join ECS (jobs stay
    RUNNABLE), and Metaflow's containers pip-install from PyPI at start."""
    network, problems = settings.network, []
    existing = network.vpc_id is not None
    if existing:
        problems += [
            f"{key} applies to the VPC this program creates; with network:vpcId your VPC's own routes and "
            "endpoints are used: unset it"
            for key in ("network:natGateways", "network:interfaceEndpoints")
            if key in raw
        ]
        if network.private_subnets and settings.ui.enabled and settings.ui.access is not UiAccess.PRIVATE:
            problems.append(
                f"ui:access {settings.ui.access.value} puts an internet-facing load balancer in network:subnetIds, "
                "which network:privateSubnets says are private: use ui:access private (a tunnel, no load balancer)"
            )
        return problems
    twice = repeated(endpoint.value for endpoint in network.interface_endpoints)
    if twice:
        problems.append(
            f"network:interfaceEndpoints lists {', '.join(twice)} more than once: one endpoint per service and "
            "subnet is all AWS allows; list each once"
        )
    if network.private_subnets and network.nat_gateways == 0:
        problems.append(
            "network:privateSubnets = true needs network:natGateways of 1 or more: without NAT, Batch instances "
            "cannot reach ECS, ECR or PyPI (jobs would stay RUNNABLE) and the metadata service cannot pull its image"
        )
    if not network.private_subnets:
        problems += [
            f"{key} has no effect while network:privateSubnets is false; set network:privateSubnets true or unset it"
            for key in ("network:natGateways", "network:interfaceEndpoints")
            if key in raw and settings.value(key)
        ]
    return problems


def _datastore_and_alert_problems(settings: Settings) -> list[str]:
    """A key S3 can use (in the bucket's region); a budget someone hears about."""
    key, problems = settings.datastore.kms_key, []
    if key is not None and key != CREATE_KEY:
        problems += arn_partition_problems("datastore:kmsKey", key, settings.region)
    if key is not None and key != CREATE_KEY and key.split(":")[3] != settings.region:
        problems.append(
            f"datastore:kmsKey is in {key.split(':')[3]}: S3 encrypts a bucket in {settings.region} only with a "
            f"KMS key in {settings.region}; give one there, or `create`"
        )
    budget = settings.budget
    partition = service_missing_in("budgets", settings.region)
    if budget.monthly_usd is not None and partition:
        problems.append(
            f"budget:monthlyUsd: AWS Budgets is not offered in the {partition} partition ({settings.region}); unset it"
        )
    if budget.monthly_usd is None and budget.email is not None:
        problems.append("budget:email has no effect without budget:monthlyUsd; set one or unset it")
    if budget.monthly_usd is not None and budget.email is None and settings.alerts.email is None:
        either = " (or alerts:email)" if settings.alerts.enabled else ""
        problems.append(f"budget:monthlyUsd = {budget.monthly_usd} needs someone to tell: set budget:email{either}")
    return problems


def _aws_value_problems(settings: Settings) -> list[str]:
    """Values AWS's own rules refuse (data in aws_rules.toml)."""
    problems = region_problems(REGION_KEY, settings.region)
    prefix = settings.metaflow.prefix
    problems += bucket_prefix_problems("metaflow:prefix", prefix)
    repositories = {
        key: ecr_repository_name(prefix, settings.stack, purpose)
        for key, purpose, created in (
            ("ecr:enabled", REGISTRY_REPOSITORY, settings.ecr.enabled),
            ("metadata:scaleToZero", MIRROR_REPOSITORY, settings.metadata.enabled and settings.metadata.scale_to_zero),
        )
        if created
    }
    problems += stack_name_problems(
        settings.stack,
        stack_scoped_name(prefix, settings.stack),
        repositories=repositories,
        budget_name=budget_name(prefix, settings.stack) if settings.budget.monthly_usd is not None else None,
        namespace=settings.metadata.enabled,
    )
    for index, role in enumerate(settings.aws.assume_roles or []):
        problems += arn_partition_problems(f"aws:assumeRoles[{index}].roleArn", role.role_arn, settings.region)
    problems += tag_problems(settings.metaflow.tags, {"metaflow:stack": settings.stack, "Name": settings.stack})
    problems += account_id_problems(settings.aws.allowed_account_ids, settings.aws.forbidden_account_ids)
    if settings.network.vpc_id is None:
        problems += vpc_cidr_problems("network:vpcCidr", settings.network.vpc_cidr)
    if settings.metadata.enabled and not settings.metadata.scale_to_zero:
        problems += db_instance_class_problems(
            "db:instanceClass", settings.db.instance_class, settings.db.engine_version, settings.region
        )
        problems += _image_problems(settings.metadata)
    return problems


def ignored_key_warnings(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    """Keys set in the config that change nothing in this stack, each with why: accepted (they may be
    set ahead of a switch, and are harmless), but never silently. Keys that are certainly a mistake
    are refused by `load_settings` instead."""
    compute, network, warnings = settings.compute, settings.network, []
    if not settings.metadata.enabled:
        warnings += [
            f"{key} has no effect while metadata:enabled is false ({settings.metaflow.preset} preset): this stack "
            "has no metadata service and no database"
            + (
                "; to let a deployed database go, set it while the metadata service is still on and `pulumi up`"
                if key in ("db:deletionProtection", "db:skipFinalSnapshot")
                else ""
            )
            for key in raw
            if key.startswith("db:") or (key.startswith("metadata:") and key != "metadata:enabled")
        ]
    if compute.type.is_fargate and "compute:minVcpus" in raw and compute.min_vcpus == 0:
        warnings.append(
            f"compute:minVcpus has no effect with Fargate compute (compute:type {compute.type.value}): Fargate "
            "keeps nothing running"
        )
    on_demand = compute.type in (ComputeType.EC2, ComputeType.FARGATE)
    if "compute:onDemandFallback" in raw and not compute.on_demand_fallback and on_demand:
        warnings.append(
            f"compute:onDemandFallback has no effect with compute:type {compute.type.value}: it is already on-demand"
        )
    if network.vpc_id is not None and "network:vpcCidr" in raw:
        warnings.append(
            "network:vpcCidr has no effect with network:vpcId: it sizes the VPC this program creates, "
            "and your VPC keeps its own ranges"
        )
    if not network.private_subnets and network.vpc_id is None:
        warnings += [
            f"{key} has no effect while network:privateSubnets is false: only private subnets use it"
            for key in ("network:natGateways", "network:interfaceEndpoints")
            if key in raw and not settings.value(key)
        ]
    if "datastore:noncurrentVersionDays" in raw and not settings.datastore.versioning:
        warnings.append(
            "datastore:noncurrentVersionDays has no effect while datastore:versioning is false: without "
            "versioning no replaced version is kept"
        )
    return warnings


def limit_warnings(settings: Settings) -> list[str]:
    """Values only an account whose AWS limit was raised takes: accepted, with a warning, since this
    program cannot see the account's limits."""
    warnings = []
    reservable = max_reserved_concurrency()
    if settings.metadata.enabled and settings.metadata.authorizer_concurrency > reservable:
        warnings.append(
            f"metadata:authorizerConcurrency = {settings.metadata.authorizer_concurrency}: Lambda keeps part of an "
            f"account's concurrency unreserved, so at its default limit at most {reservable} can be reserved, and "
            "pulumi up fails unless your account's limit is raised; the authorizer needs far fewer (default 5)"
        )
    return warnings


def config_warnings(settings: Settings, raw: Mapping[str, Any]) -> list[str]:
    """Everything `pulumi up` and `plan` warn of before declaring anything."""
    return ignored_key_warnings(settings, raw) + limit_warnings(settings)


def load_settings(
    raw: Mapping[str, Any], stack: str, today: datetime.date | None = None, check_availability: bool = True
) -> Settings:
    """Validate `namespace:key` config over its preset; raise one ConfigError listing every problem.
    `check_availability=False` lets cost comparisons price presets and switches not deployable yet."""
    today = today or datetime.date.today()
    region = _region(raw)
    preset = _preset_name(raw, check_availability)
    problems = _unknown_key_problems(raw)
    if problems:
        raise config_error(problems)

    merged: dict[str, Any] = {**presets()[preset], **raw, "metaflow:preset": preset, REGION_KEY: region}
    for types_key in DEFAULT_FAMILY_LISTS:  # a preset's list keeps only the families the region offers
        if types_key not in raw:
            default_types = merged.get(types_key, key_fields()[types_key].default)
            merged[types_key] = [f for f in default_types if f in families_of((CPU, GPU), region)]
    nested: dict[str, dict[str, Any]] = {namespace: {} for namespace in NAMESPACES}
    for key, value in merged.items():
        namespace, _, name = key.partition(":")
        if namespace in nested:
            nested[namespace][name] = value
    try:
        settings = Settings.model_validate({"stack": stack, **nested})
    except ValidationError as err:
        raise config_error([_describe_error(e, merged) for e in err.errors()]) from None

    problems = (_not_yet_available(settings) if check_availability else []) + _db_problems(settings.db, today)
    problems += _db_window_problems(settings.db)
    problems += _instance_type_problems("compute:instanceTypes", settings.compute.instance_types, region)
    problems += _accelerator_problems(settings, raw)
    problems += _conflicting_keys(settings, raw) + _ui_problems(settings, raw) + _switched_off_keys(settings, raw)
    problems += _network_problems(settings, raw) + _datastore_and_alert_problems(settings)
    problems += _aws_value_problems(settings) + _scale_to_zero_problems(settings, raw)
    if problems:
        raise config_error(problems)
    return _without_spot_for_scale_to_zero(settings)


def raw_config_from_pulumi() -> dict[str, Any]:
    """Every config value Pulumi passed to this program, keyed `namespace:key`."""
    return {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
