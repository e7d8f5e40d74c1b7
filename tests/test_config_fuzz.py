"""Every key, any value: the program either accepts it, or stops with a ConfigError that names the
key. Never another exception, and never an accepted value that AWS's own models refuse."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.loaders import Loader
from conftest import TODAY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaflow_infra.settings import (
    ConfigError,
    EndpointService,
    Settings,
    ignored_key_warnings,
    key_fields,
    load_settings,
    provider_settings,
)
from metaflow_infra.settings.values import daily_minutes, weekly_minutes, windows_overlap

KEYS = sorted({*key_fields(), *(f"aws:{key}" for key in provider_settings())})
SESSION = botocore.session.get_session()
EC2_TYPES = set(SESSION.get_service_model("ec2").shape_for("InstanceType").enum)
REGIONS = {region for partition in Loader().load_data("endpoints")["partitions"] for region in partition["regions"]}

EDGES = [0, 1, -1, 2**31 - 1, 2**31, 2**63, 10**6]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from(EDGES),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "true", "0", "-1", "1e3", "[]", "{}", "[", "a,b"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=8,
)


def as_pulumi_hands_it_over(value: Any) -> str:
    """Pulumi passes every config value as a string: plain for strings, JSON for structured values."""
    return value if isinstance(value, str) else json.dumps(value)


def aws_model_problems(loaded: Settings) -> list[str]:
    """What AWS's own models (botocore) would refuse among the accepted values."""
    problems = []
    if loaded.region not in REGIONS:
        problems.append(f"region {loaded.region}")
    for entry in loaded.compute.instance_types:
        if "." in entry and entry not in EC2_TYPES:
            problems.append(f"instance type {entry}")
    tags = {**loaded.tags}
    if len(tags) > 50 or any(not 1 <= len(k) <= 128 or len(v) > 256 for k, v in tags.items()):
        problems.append("tags")
    if not 0 <= loaded.compute.max_vcpus < 2**31 or not 0 <= loaded.compute.min_vcpus < 2**31:
        problems.append("vCPUs beyond a 32-bit integer")
    return problems


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_any_value_is_accepted_or_refused_by_name(key: str, value: Any) -> None:
    raw = {"aws:region": "us-east-1", "metaflow:preset": "dev", key: as_pulumi_hands_it_over(value)}
    try:
        loaded = load_settings(raw, stack="dev", today=TODAY)
    except ConfigError as err:
        assert key in str(err), f"the error does not name {key}: {err}"
        assert "should match pattern" not in str(err), f"a regex reached the user: {err}"
        return
    assert not aws_model_problems(loaded), (key, value)
    assert all(warning.startswith(f"{key} has no effect") for warning in ignored_key_warnings(loaded, raw))


@pytest.mark.parametrize(
    "key, value",
    [
        ("aws:region", "mars-1"),
        ("metaflow:prefix", "Team"),
        ("network:vpcId", "vpc-x"),
        ("ui:domain", "Bad_Domain"),
        ("aws:allowedAccountIds", '["12"]'),
        ("ecr:imageTag", ".bad"),
    ],
)
def test_a_value_in_the_wrong_format_is_explained_with_an_example(key: str, value: str) -> None:
    raw = {"aws:region": "us-east-1", "metaflow:preset": "dev", "ui:enabled": "true", "ecr:enabled": "true", key: value}
    with pytest.raises(ConfigError) as raised:
        load_settings(raw, stack="dev", today=TODAY)
    message = str(raised.value)
    assert "accepted: " in message and ("such as" in message or "e.g." in message)
    assert "pattern" not in message and "^" not in message


PRODUCTION_KEYS = {
    "network:natGateways": st.one_of(st.integers(-1, 5), scalars),
    "network:interfaceEndpoints": st.lists(
        st.sampled_from([*(service.value for service in EndpointService), "s3", "ECR", ""]), max_size=4
    ),
    "datastore:kmsKey": st.one_of(
        st.sampled_from(["create", "Create", ""]),
        st.builds(
            "arn:aws:kms:{}:123456789012:{}".format,
            st.sampled_from(["us-east-1", "eu-west-1", "mars-1"]),
            st.sampled_from(["key/1234abcd-12ab-34cd", "key/mrk-1234abcd", "alias/metaflow", "key/"]),
        ),
    ),
    "datastore:noncurrentVersionDays": st.one_of(st.integers(-1, 40000), scalars),
    "metadata:tasks": st.one_of(st.integers(-1, 12), scalars),
    "db:performanceInsights": st.one_of(st.booleans(), scalars),
    "alerts:enabled": st.one_of(st.booleans(), scalars),
    "alerts:email": st.one_of(st.emails(), st.text(max_size=20)),
    "budget:monthlyUsd": st.one_of(st.integers(-5, 10**10), scalars),
    "budget:email": st.one_of(st.emails(), st.text(max_size=20)),
    "db:backupWindow": st.builds("{:02d}:{:02d}-{:02d}:{:02d}".format, *[st.integers(0, 25), st.integers(0, 61)] * 2),
    "db:maintenanceWindow": st.builds(
        "{}:{:02d}:{:02d}-{}:{:02d}:{:02d}".format,
        *[st.sampled_from(["sun", "mon", "Sat", "x"]), st.integers(0, 25), st.integers(0, 61)] * 2,
    ),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({}, optional=PRODUCTION_KEYS))
def test_the_production_keys_together_are_consistent_or_refused_by_name(values: dict[str, Any]) -> None:
    raw = {"aws:region": "us-east-1", "metaflow:preset": "production"}
    raw |= {key: as_pulumi_hands_it_over(value) for key, value in values.items()}
    try:
        loaded = load_settings(raw, stack="dev", today=TODAY)
    except ConfigError as err:
        assert any(key in str(err) for key in values), f"the error names none of {list(values)}: {err}"
        assert "should match pattern" not in str(err), f"a regex reached the user: {err}"
        return
    network, key, budget = loaded.network, loaded.datastore.kms_key, loaded.budget
    assert network.private_subnets and 1 <= network.nat_gateways <= 3  # private subnets always have a way out
    assert key is None or key == "create" or (key.split(":")[3] == loaded.region and ":key/" in key)
    assert 1 <= loaded.metadata.tasks <= 10 and 1 <= loaded.datastore.noncurrent_version_days <= 36500
    db = loaded.db
    if db.backup_window is not None and db.maintenance_window is not None:  # what RDS accepts
        assert daily_minutes(db.backup_window)[1] >= 30 and weekly_minutes(db.maintenance_window)[1] >= 30
        assert not windows_overlap(db.maintenance_window, db.backup_window)
    else:
        assert db.backup_window is db.maintenance_window is None
    if budget.monthly_usd is not None:  # someone hears about it, and AWS Budgets takes the amount
        assert budget.monthly_usd > 0 and (budget.email or loaded.alerts.email)
    assert not aws_model_problems(loaded), values
