"""Reading config into `Settings`: merge over the preset, validate, then the checks that span keys
or need the catalog. Every problem is collected and reported in one `ConfigError`."""

from __future__ import annotations

import datetime
import difflib
import os
from typing import Any, Mapping, Optional

import pulumi
from pydantic import ValidationError

from .catalog import (
    available_presets,
    default_preset,
    instance_families,
    offered_families,
    postgres_end_of_standard_support,
    presets,
)
from .models import NAMESPACES, NOT_AVAILABLE, DbSettings, Settings, is_available, key_fields, known_keys

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


def _describe_error(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    namespace = loc[0] if loc else ""
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be ", "accepted: ")
    if len(loc) < 2:  # a namespace-level check: its message names the keys
        return message
    key = f"{namespace}:{loc[1]}" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc[2:])
    return f"{key} = {error['input']!r}: {message}"


def _preset_name(raw: Mapping[str, Any], check_availability: bool) -> str:
    preset = str(raw.get("metaflow:preset", default_preset()))
    if preset not in presets():
        raise config_error([f"metaflow:preset = {preset!r} is not a preset; accepted: {', '.join(presets())}"])
    if check_availability and preset not in available_presets():
        raise config_error([
            f"metaflow:preset = {preset!r} is {NOT_AVAILABLE} in this release (it needs features that have not "
            f"landed: private subnets with NAT, Step Functions). Available presets: {', '.join(available_presets())}"
        ])
    return preset


def _not_yet_available(settings: Settings) -> list[str]:
    """Keys of features that have not landed, set to anything but their default: refusing them
    beats a silent partial stack."""
    return [
        f"{key} is {NOT_AVAILABLE} in this release; leave it unset for now"
        for key, info in key_fields().items()
        if not is_available(info) and settings.value(key) != info.default
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
        raise config_error(problems)

    merged: dict[str, Any] = {**presets()[preset], **raw, "metaflow:preset": preset, REGION_KEY: region}
    user_set_instance_types = "compute:instanceTypes" in raw
    if not user_set_instance_types:
        default_types = merged.get("compute:instanceTypes", key_fields()["compute:instanceTypes"].default)
        merged["compute:instanceTypes"] = [f for f in default_types if f in offered_families(region)]
    nested: dict[str, dict[str, Any]] = {namespace: {} for namespace in NAMESPACES}
    for key, value in merged.items():
        namespace, _, name = key.partition(":")
        if namespace in nested:
            nested[namespace][name] = value
    try:
        settings = Settings.model_validate({"stack": stack, **nested})
    except ValidationError as err:
        raise config_error([_describe_error(e) for e in err.errors()]) from None

    problems = (_not_yet_available(settings) if check_availability else []) + _db_problems(settings.db, today)
    problems += _instance_type_problems("compute:instanceTypes", settings.compute.instance_types, region, want_gpu=False)
    if settings.compute.type.is_fargate and user_set_instance_types:
        problems.append("compute:instanceTypes does not apply to Fargate compute (compute:type "
                        f"{settings.compute.type.value}); unset it")
    if problems:
        raise config_error(problems)
    return settings


def raw_config_from_pulumi() -> dict[str, Any]:
    """Every config value Pulumi passed to this program, keyed `namespace:key`."""
    return {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
