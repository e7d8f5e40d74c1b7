"""The Lambda authorizer against a fake Secrets Manager (moto): exact key match, rotation with a
grace period (the secret written as Pulumi writes it), the bare key of older stacks, and a bounded
refresh of one `GetSecretValue` call. Time is a fake clock; nothing sleeps."""

from __future__ import annotations

import dataclasses
import hmac
import importlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from metaflow_infra.lambdas import authorizer

KEY = "k3y-Secret"
NEW = "n3w-Secret"
REGION = "us-east-1"


def pulumi_value(current: str, previous: str | None) -> str:
    """The secret's value as Pulumi writes it."""
    return json.dumps({"current": current, "previous": previous})


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Secret:
    admin: Any  # the operator's client: creates and writes the secret, as `pulumi up` does
    arn: str
    clock: Clock
    calls: list[str]  # Secrets Manager operations the authorizer made
    requests: list[dict[str, Any]]  # and their parameters
    key: str = KEY  # the current key

    def write(self, value: str) -> float:
        """A new AWSCURRENT version with this value; returns its CreatedDate."""
        self.admin.put_secret_value(SecretId=self.arn, SecretString=value)
        return self.admin.get_secret_value(SecretId=self.arn)["CreatedDate"].timestamp()

    def rotate(self, new_key: str) -> float:
        """As `pulumi up` after `apiKeyRotation` n+1: the new key current, the old one previous."""
        created = self.write(pulumi_value(new_key, self.key))
        self.key = new_key
        return created


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[Any, Any, list[str], list[dict[str, Any]]]]:
    """One fake AWS for the module (clients are slow to build): the operator's client, the
    authorizer's client, and the Secrets Manager operations the latter makes, with parameters."""
    # One boto3 session for every test: a new one reloads botocore's service models (most of the setup).
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        calls: list[str] = []
        requests: list[dict[str, Any]] = []

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            calls.append(model.name)
            requests.append(dict(params))

        client = boto3.client("secretsmanager", region_name=REGION)
        client.meta.events.register("before-parameter-build.secretsmanager.*", record)
        yield boto3.client("secretsmanager", region_name=REGION), client, calls, requests


_serial = itertools.count()  # secret names: parametrized test names share long prefixes


@pytest.fixture
def secret(
    clients: tuple[Any, Any, list[str], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Secret:
    admin, client, calls, requests = clients
    name = f"{next(_serial)}-{request.node.name}"[:60]
    # As Pulumi writes it before the first rotation.
    arn = admin.create_secret(Name=name, SecretString=pulumi_value(KEY, None))["ARN"]
    monkeypatch.setenv("API_KEY_SECRET_ARN", arn)
    calls.clear()
    requests.clear()
    monkeypatch.setattr(authorizer, "_client", client)
    monkeypatch.setattr(authorizer, "_cache", authorizer._Cache())
    # Whole seconds, like moto's CreatedDate: boundary arithmetic stays exact.
    clock = Clock(float(int(time.time())))
    monkeypatch.setattr(authorizer, "clock", clock)
    monkeypatch.setattr(authorizer, "GRACE_SECONDS", 3600.0)
    monkeypatch.setattr(authorizer, "REFRESH_SECONDS", 60.0)
    monkeypatch.setattr(authorizer, "MAX_AGE_SECONDS", 900.0)
    return Secret(admin, arn, clock, calls, requests)


def admits(key: str | None, header: str = "x-api-key") -> bool:
    headers = {} if key is None else {header: key}
    return authorizer.handler({"headers": headers}, None) == {"isAuthorized": True}


def test_right_key_is_admitted(secret: Secret) -> None:
    assert admits(KEY)


def test_right_key_under_a_differently_cased_header_name_is_admitted(secret: Secret) -> None:
    assert admits(KEY, header="X-Api-Key")
    assert admits(KEY, header="X-API-KEY")


def test_wrong_key_is_refused(secret: Secret) -> None:
    assert not admits("wrong")


def test_prefix_of_the_key_is_refused(secret: Secret) -> None:
    assert not admits(KEY[:-1])


def test_extension_of_the_key_is_refused(secret: Secret) -> None:
    assert not admits(KEY + "x")


def test_key_in_a_different_case_is_refused(secret: Secret) -> None:
    assert not admits(KEY.lower())
    assert not admits(KEY.upper())


def test_keys_are_compared_in_constant_time(secret: Secret, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert admits(KEY)
    assert compared == [(KEY.encode(), KEY.encode())]
    secret.rotate(NEW)
    secret.clock.now += authorizer.MAX_AGE_SECONDS  # re-read: KEY is now the previous key, in its grace
    compared.clear()
    assert admits(KEY)
    assert compared == [(KEY.encode(), NEW.encode()), (KEY.encode(), KEY.encode())]


def test_empty_header_is_refused(secret: Secret) -> None:
    assert not admits("")
    assert secret.calls == []  # without asking Secrets Manager


def test_missing_header_is_refused(secret: Secret) -> None:
    assert not admits(None)
    assert not admits(KEY, header="x-api-keys")  # a different header carrying the key
    assert secret.calls == []


def test_no_headers_at_all_is_refused(secret: Secret) -> None:
    assert authorizer.handler({"headers": None}, None) == {"isAuthorized": False}
    assert authorizer.handler({}, None) == {"isAuthorized": False}
    assert secret.calls == []


def test_each_read_is_one_get_secret_value_call_for_the_current_version(secret: Secret) -> None:
    assert admits(KEY)
    secret.clock.now += authorizer.REFRESH_SECONDS
    secret.rotate(NEW)
    assert admits(NEW)
    assert secret.calls == ["GetSecretValue", "GetSecretValue"]
    assert secret.requests == [{"SecretId": secret.arn}] * 2  # AWSCURRENT: no stage or version named


def test_rotated_key_is_admitted_right_after_rotation_even_on_a_warm_cache(secret: Secret) -> None:
    assert admits(KEY)  # warms the cache
    secret.clock.now += authorizer.REFRESH_SECONDS  # cache still fresh (max age 900 s)
    secret.rotate(NEW)
    assert admits(NEW)  # the mismatch triggered a refresh
    assert admits(KEY)  # and the old key, now previous, is in its grace period
    assert secret.calls == ["GetSecretValue", "GetSecretValue"]


def test_old_key_is_admitted_during_the_grace_period_and_refused_after_it(secret: Secret) -> None:
    created = secret.rotate(NEW)
    secret.clock.now = created + authorizer.GRACE_SECONDS - 1
    assert admits(KEY)
    assert admits(NEW)
    secret.clock.now = created + authorizer.GRACE_SECONDS  # the grace period is over, to the second
    assert not admits(KEY)
    assert admits(NEW)


def test_old_key_is_refused_on_a_cold_start_after_the_grace_period(secret: Secret) -> None:
    created = secret.rotate(NEW)
    secret.clock.now = created + authorizer.GRACE_SECONDS
    assert not admits(KEY)
    assert admits(NEW)
    assert secret.calls == ["GetSecretValue"]


def test_grace_period_counts_from_the_rotated_version_not_from_later_reads(secret: Secret) -> None:
    created = secret.rotate(NEW)
    secret.clock.now = created + 10
    assert admits(KEY)  # cold start: read at created + 10
    secret.clock.now = created + authorizer.GRACE_SECONDS - 1  # past the max age: read again
    assert admits(KEY)
    assert secret.calls == ["GetSecretValue", "GetSecretValue"]
    secret.clock.now = created + authorizer.GRACE_SECONDS  # the same version: the grace is not extended
    assert not admits(KEY)
    secret.clock.now = created + authorizer.GRACE_SECONDS + authorizer.REFRESH_SECONDS
    assert not admits(KEY)  # nor by a read after it ended
    assert admits(NEW)
    assert secret.calls == ["GetSecretValue"] * 3


def test_second_rotation_admits_the_latest_two_keys_only(secret: Secret) -> None:
    secret.rotate(NEW)
    assert admits(KEY)
    secret.clock.now += authorizer.REFRESH_SECONDS
    secret.rotate("thir3-Secret")
    assert admits("thir3-Secret")
    assert admits(NEW)
    assert not admits(KEY)


def test_previous_key_is_refused_when_previous_is_null(secret: Secret) -> None:
    secret.write(pulumi_value(NEW, None))  # a new key without a grace for the old one
    assert admits(NEW)
    assert not admits(KEY)
    assert not admits("None")
    assert not admits("null")


def test_previous_key_that_is_a_prefix_of_the_current_one_is_admitted_only_exactly(secret: Secret) -> None:
    created = secret.write(pulumi_value(KEY, KEY[:-3]))
    assert admits(KEY)
    assert admits(KEY[:-3])
    for near in (KEY[:-1], KEY[:-2], KEY[:-4], KEY[:-3] + "x", KEY[:1]):
        assert not admits(near), near
    secret.clock.now = created + authorizer.GRACE_SECONDS
    assert not admits(KEY[:-3])
    assert admits(KEY)


def test_bare_key_of_a_stack_deployed_before_the_json_format_is_admitted_alone(secret: Secret) -> None:
    secret.write("l3gacy-Secret")  # the value before this format: the key itself
    assert admits("l3gacy-Secret")
    for other in (KEY, "l3gacy-Secre", "l3gacy-Secretx", "L3GACY-SECRET", "current", "previous"):
        assert not admits(other), other
    assert secret.calls == ["GetSecretValue"]


@pytest.mark.parametrize(
    "value",
    [
        "12345",
        '"k3y"',
        "null",
        "[]",
        '{"previous": "k3y"}',
        '{"current": "", "previous": "k3y"}',
        '{"current": 7, "previous": "k3y"}',
        '{"current": "k3y"',
        "{not json",
    ],
    ids=["number", "string", "null", "list", "no-current", "empty-current", "number-current", "truncated", "not-json"],
)
def test_value_without_a_current_key_is_taken_as_a_bare_key(secret: Secret, value: str) -> None:
    secret.write(value)
    assert admits(value)
    assert not admits("k3y")
    assert not admits(KEY)


def test_flood_of_wrong_keys_makes_at_most_one_secrets_manager_call_per_refresh_interval(secret: Secret) -> None:
    assert admits(KEY)  # cold start: one read
    assert secret.calls == ["GetSecretValue"]
    start = secret.clock.now
    for offset in (0, 1, 30, authorizer.REFRESH_SECONDS - 1):
        secret.clock.now = start + offset
        for _ in range(50):
            assert not admits("wrong")
    assert secret.calls == ["GetSecretValue"]
    secret.clock.now = start + authorizer.REFRESH_SECONDS
    for _ in range(50):
        assert not admits("wrong")
    assert secret.calls == ["GetSecretValue"] * 2
    assert admits(KEY)  # the right key is still admitted from the cache
    assert secret.calls == ["GetSecretValue"] * 2


def test_cache_is_refreshed_after_its_max_age_even_without_mismatches(
    secret: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authorizer, "GRACE_SECONDS", 0.0)  # the old key dies with the rotation
    assert admits(KEY)
    start = secret.clock.now
    secret.rotate(NEW)
    secret.clock.now = start + authorizer.MAX_AGE_SECONDS - 1
    assert admits(KEY)  # served from the cache: no mismatch, not yet too old
    assert secret.calls == ["GetSecretValue"]
    secret.clock.now = start + authorizer.MAX_AGE_SECONDS
    assert not admits(KEY)  # the cache was re-read and the old key is gone
    assert secret.calls == ["GetSecretValue"] * 2


def test_failed_refresh_keeps_judging_by_the_cached_keys(secret: Secret) -> None:
    assert admits(KEY)
    secret.admin.delete_secret(SecretId=secret.arn, ForceDeleteWithoutRecovery=True)
    secret.clock.now += authorizer.MAX_AGE_SECONDS
    assert admits(KEY)
    assert not admits("wrong")
    assert secret.calls == ["GetSecretValue"] * 2  # the failure is rate-limited like any refresh


def test_failed_read_on_a_cold_start_fails_the_invocation(secret: Secret) -> None:
    secret.admin.delete_secret(SecretId=secret.arn, ForceDeleteWithoutRecovery=True)
    with pytest.raises(Exception, match="ResourceNotFound"):
        admits(KEY)


def test_secret_is_read_with_a_client_of_its_own_on_a_cold_start(
    secret: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setattr(authorizer, "_client", None)
    assert admits(KEY)
    assert authorizer._client is not None


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY_GRACE_SECONDS", "7200")
    monkeypatch.setenv("API_KEY_REFRESH_SECONDS", "30")
    monkeypatch.setenv("API_KEY_MAX_AGE_SECONDS", "600")
    try:
        reloaded = importlib.reload(authorizer)
        assert (reloaded.GRACE_SECONDS, reloaded.REFRESH_SECONDS, reloaded.MAX_AGE_SECONDS) == (7200, 30, 600)
    finally:
        monkeypatch.undo()
        importlib.reload(authorizer)
    assert (authorizer.GRACE_SECONDS, authorizer.REFRESH_SECONDS, authorizer.MAX_AGE_SECONDS) == (3600, 60, 900)


def test_a_refusal_is_the_boolean_false_api_gateway_expects(secret: Secret) -> None:
    assert authorizer.handler({"headers": {"x-api-key": "wrong"}}, None) == {"isAuthorized": False}
    assert authorizer.handler({"headers": {"x-api-key": "wrong"}}, None)["isAuthorized"] is False


def test_after_a_failed_cold_start_read_requests_are_refused_until_the_next_read_is_due(secret: Secret) -> None:
    secret.admin.delete_secret(SecretId=secret.arn, ForceDeleteWithoutRecovery=True)
    with pytest.raises(Exception, match="ResourceNotFound"):
        admits(KEY)
    secret.clock.now += authorizer.REFRESH_SECONDS - 1
    assert authorizer.handler({"headers": {"x-api-key": KEY}}, None) == {"isAuthorized": False}
    assert secret.calls == ["GetSecretValue"]  # no keys to judge by, and not yet time to ask again


@pytest.mark.parametrize("previous", [7, ["k3y"], {"key": "k3y"}, True, ""])
def test_a_previous_key_that_is_not_a_non_empty_string_is_ignored(secret: Secret, previous: object) -> None:
    secret.write(json.dumps({"current": NEW, "previous": previous}))
    assert admits(NEW)
    assert not admits(KEY)
    assert authorizer._cache.keys is not None and authorizer._cache.keys.previous is None


def test_the_cached_keys_cannot_be_altered_in_place(secret: Secret) -> None:
    assert admits(KEY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        authorizer._cache.keys.current = b"other"  # type: ignore[misc, union-attr]
