"""Stack settings: every config key read once, merged over its preset, validated by pydantic.

`load_settings(raw)` is pure: it takes a flat mapping of `namespace:key` to values (strings as
Pulumi hands them over, or native values) and returns a frozen `Settings`, or raises one
`pulumi.RunError` naming every bad key, its value and what is accepted. Components receive the
typed result and never read `pulumi.Config` themselves.

- `values`: value types and their strict parsers;
- `catalog`: the AWS and preset data settings are checked against (also used by `costs`);
- `models`: one model per namespace, the availability marker, `Settings`;
- `loading`: merging over the preset, cross-key and catalog checks, the one error.
"""

from .catalog import (
    FARGATE_MEMORY_BY_CPU,
    MINIMUM_SERVICE_VERSION,
    aurora_pause_versions,
    available_presets,
    data_api_regions,
    default_preset,
    instance_families,
    offered_families,
    postgres_end_of_standard_support,
    preset_summary,
    presets,
    provider_settings,
    unsupported_zone_ids,
)
from .loading import (
    REGION_KEY,
    ConfigError,
    config_error,
    config_warnings,
    ignored_key_warnings,
    load_settings,
    raw_config_from_pulumi,
)
from .models import (
    CREATE_KEY,
    MAX_AZS,
    NAMESPACES,
    NOT_AVAILABLE,
    SECRET_PROVIDER_SETTINGS,
    AlertsSettings,
    AwsSettings,
    BudgetSettings,
    ComputeSettings,
    ComputeType,
    DatastoreSettings,
    DbSettings,
    EcrSettings,
    EndpointService,
    MetadataSettings,
    MetaflowSettings,
    NetworkSettings,
    Settings,
    UiAccess,
    UiAuth,
    UiSettings,
    documented_meaning,
    is_available,
    key_fields,
    known_keys,
    stack_scoped_name,
)

__all__ = [
    "CREATE_KEY",
    "FARGATE_MEMORY_BY_CPU",
    "MAX_AZS",
    "MINIMUM_SERVICE_VERSION",
    "NAMESPACES",
    "NOT_AVAILABLE",
    "REGION_KEY",
    "SECRET_PROVIDER_SETTINGS",
    "AlertsSettings",
    "AwsSettings",
    "BudgetSettings",
    "ComputeSettings",
    "ComputeType",
    "ConfigError",
    "DatastoreSettings",
    "DbSettings",
    "EcrSettings",
    "EndpointService",
    "MetadataSettings",
    "MetaflowSettings",
    "NetworkSettings",
    "Settings",
    "UiAccess",
    "UiAuth",
    "UiSettings",
    "aurora_pause_versions",
    "available_presets",
    "config_error",
    "config_warnings",
    "data_api_regions",
    "default_preset",
    "documented_meaning",
    "ignored_key_warnings",
    "instance_families",
    "is_available",
    "key_fields",
    "known_keys",
    "load_settings",
    "offered_families",
    "postgres_end_of_standard_support",
    "preset_summary",
    "presets",
    "provider_settings",
    "raw_config_from_pulumi",
    "stack_scoped_name",
    "unsupported_zone_ids",
]
