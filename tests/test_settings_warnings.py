"""Keys that change nothing in a stack say so (a warning naming the key and why), and every kind of
value refused is explained in words with an example, never with a regular expression."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import TODAY, stack_config

from metaflow_infra.settings import ConfigError, ignored_key_warnings, load_settings


def warnings_for(preset: str, overrides: dict[str, Any]) -> list[str]:
    raw = stack_config(preset, overrides)
    return ignored_key_warnings(load_settings(raw, stack="dev", today=TODAY), raw)


@pytest.mark.parametrize(
    "preset, overrides, expected",
    [
        ("minimal", {"db:multiAz": True}, "db:multiAz has no effect while metadata:enabled is false (minimal preset)"),
        ("minimal", {"metadata:spot": False}, "metadata:spot has no effect while metadata:enabled is false"),
        ("minimal", {"db:deletionProtection": False}, "set it while the metadata service is still on and `pulumi up`"),
        ("dev", {"metadata:enabled": False, "db:instanceClass": "db.t4g.small"}, "db:instanceClass has no effect"),
        ("minimal", {"compute:type": "fargate", "compute:minVcpus": 0}, "compute:minVcpus has no effect with Fargate"),
        ("minimal", {"compute:type": "ec2", "compute:onDemandFallback": False}, "already on-demand"),
        ("minimal", {"compute:type": "fargate", "compute:onDemandFallback": False}, "compute:type fargate: it is"),
        ("minimal", {"network:natGateways": 0}, "network:natGateways has no effect while network:privateSubnets"),
        ("minimal", {"network:interfaceEndpoints": []}, "network:interfaceEndpoints has no effect while"),
        (
            "minimal",
            {
                "network:vpcId": "vpc-0123456789abcdef0",
                "network:subnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                "network:vpcCidr": "10.1.0.0/16",
            },
            "network:vpcCidr has no effect with network:vpcId",
        ),
        ("minimal", {"datastore:noncurrentVersionDays": 7}, "datastore:noncurrentVersionDays has no effect while"),
    ],
)
def test_a_key_without_effect_is_warned_about_by_name(preset: str, overrides: dict[str, Any], expected: str) -> None:
    found = warnings_for(preset, overrides)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("dev", {"db:multiAz": True, "metadata:spot": False}),
        ("minimal", {"compute:type": "spot", "compute:minVcpus": 0, "compute:onDemandFallback": False}),
        ("minimal", {"datastore:versioning": True, "datastore:noncurrentVersionDays": 7}),
        ("production", {"network:natGateways": 3}),
        ("minimal", {"metadata:enabled": False}),
    ],
)
def test_keys_that_take_effect_are_not_warned_about(preset: str, overrides: dict[str, Any]) -> None:
    assert warnings_for(preset, overrides) == []


def test_the_preset_own_values_are_never_warned_about() -> None:
    """Presets set keys that do not apply to them (minimal's database defaults): only what the user set counts."""
    for preset in ("minimal", "dev", "production"):
        assert warnings_for(preset, {}) == []


REGEX_SYNTAX = re.compile(r"\^|\$'|\\[dws]|\[a-z|\(\?|\{\d+,?\d*\}|should match pattern")
BAD_VALUE_PER_TYPE = {
    "bool": ("ui:enabled", "yes please"),
    "whole number": ("compute:maxVcpus", "1.5"),
    "number in a range": ("network:natGateways", "9"),
    "choice": ("compute:type", "gpu"),
    "string in a format": ("aws:region", "mars-1"),
    "string of a length": ("metaflow:prefix", "a" * 30),
    "network": ("network:vpcCidr", "10.0.0.0/33"),
    "list of networks": ("ui:allowedCidrs", "not-a-network"),
    "list of choices": ("network:interfaceEndpoints", '["s4"]'),
    "map of strings": ("metaflow:tags", '{"team": 1}'),
    "JSON": ("metaflow:tags", "{team"),
    "list of ids in a format": ("aws:allowedAccountIds", "1234"),
    "nested field in a format": ("aws:assumeRoles", '[{"roleArn": "role"}]'),
    "ARN or a word": ("datastore:kmsKey", "my-key"),
    "weekly window": ("db:maintenanceWindow", "sunday 4am"),
    "image reference": ("metadata:image", "UPPER/case"),
}


@pytest.mark.parametrize("kind", BAD_VALUE_PER_TYPE)
def test_a_refused_value_of_each_type_is_explained_without_regular_expressions(kind: str) -> None:
    key, value = BAD_VALUE_PER_TYPE[kind]
    preset = "dev" if key.startswith(("db:", "metadata:")) else "minimal"
    with pytest.raises(ConfigError) as refused:
        load_settings({**stack_config(preset), key: value}, stack="dev", today=TODAY)
    message = str(refused.value)
    assert key in message, message
    assert not REGEX_SYNTAX.search(message), message


@pytest.mark.parametrize(
    "value, example",
    [('{"team": 1}', 'accepted: a string (in JSON, quote it: "1", not 1)'), ("{team", 'e.g. {"team": "data-science"}')],
)
def test_a_structured_value_that_is_not_accepted_shows_one_that_is(value: str, example: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(example)):
        load_settings({**stack_config("minimal"), "metaflow:tags": value}, stack="dev", today=TODAY)
