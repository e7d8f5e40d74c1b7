"""The catalog of AWS and product data the settings are checked against (and costs priced by):
presets, instance families and their regions, zones, PostgreSQL support dates, Fargate sizes.
All of it lives in `metaflow_infra/data/`; this module only reads it."""

from __future__ import annotations

import datetime
import inspect
import tomllib
import typing
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import pulumi_aws
from pydantic.alias_generators import to_camel


def data_file(name: str) -> dict[str, Any]:
    return tomllib.loads(resources.files("metaflow_infra").joinpath("data", name).read_text())


@cache
def preset_catalog() -> dict[str, Any]:
    return data_file("presets.toml")


def presets() -> dict[str, dict[str, Any]]:
    """Each preset's config values, keyed like stack config, in the order the docs show them."""
    return {name: dict(spec["config"]) for name, spec in preset_catalog()["presets"].items()}


def default_preset() -> str:
    return str(preset_catalog()["default"])


def available_presets() -> tuple[str, ...]:
    return tuple(name for name, spec in preset_catalog()["presets"].items() if spec["available"])


def preset_summary(name: str) -> str:
    return str(preset_catalog()["presets"][name]["summary"])


PROVIDER_SETTINGS_SET_HERE = frozenset({"region", "default_tags"})
"""The program sets these itself: the region from aws:region, the tags from metaflow:tags."""


@cache
def provider_settings() -> dict[str, tuple[str, str]]:
    """Every setting the AWS provider accepts, as its `aws:` config key -> (ProviderArgs parameter,
    kind: str, bool, int, strings, objects (a list of them) or object). Read from pulumi-aws itself,
    so none is ever missing."""
    settings = {}
    for name, parameter in list(inspect.signature(pulumi_aws.ProviderArgs.__init__).parameters.items())[1:]:
        if name in PROVIDER_SETTINGS_SET_HERE:
            continue
        first = typing.get_args(parameter.annotation)[0]
        origin = typing.get_origin(first) or first
        kind = {str: "str", bool: "bool", int: "int"}.get(origin, "object")
        if origin is Sequence:
            kind = "strings" if typing.get_args(typing.get_args(first)[0])[0] is str else "objects"
        settings[to_camel(name)] = (name, kind)
    return settings


@cache
def instance_families() -> dict[str, dict[str, Any]]:
    return data_file("instance_types.toml")["families"]


def offered_families(region: str, gpu: bool = False) -> list[str]:
    """CPU (or, with `gpu`, GPU) families offered in `region`; Neuron families are neither."""
    return [
        family
        for family, spec in instance_families().items()
        if bool(spec.get("gpu")) == gpu
        and not spec.get("neuron")
        and ("*" in spec["regions"] or region in spec["regions"])
    ]


@cache
def unsupported_zone_ids(region: str) -> list[str]:
    """Zone IDs where HTTP API VPC links or Fargate do not run."""
    return list(data_file("zones.toml")["unsupported_zone_ids"].get(region, []))


@cache
def postgres_end_of_standard_support() -> dict[int, datetime.date]:
    return {int(k): v for k, v in data_file("postgres.toml")["end_of_standard_support"].items()}


@cache
def aurora_pause_versions() -> dict[int, str]:
    """Aurora PostgreSQL major -> the version the stack creates, the first that pauses at 0 ACU."""
    return {int(k): str(v) for k, v in data_file("postgres.toml")["aurora_pause_versions"].items()}


@cache
def data_api_regions() -> frozenset[str]:
    """Regions where Aurora PostgreSQL Serverless v2 offers the RDS Data API, as far as we have read."""
    return frozenset(data_file("postgres.toml")["data_api"]["regions"])


FARGATE_MEMORY_BY_CPU: dict[int, range | tuple[int, ...]] = {
    256: (512, 1024, 2048),
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
