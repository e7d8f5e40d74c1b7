"""The Lambda authorizer against a fake Secrets Manager (moto): exact key match, rotation with a
grace period, and a bounded refresh. Time is a fake clock; nothing sleeps."""

from __future__ import annotations

import hmac
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from metaflow_infra.lambdas import authorizer

KEY = "k3y-Secret"
REGION = "us-east-1"


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Secret:
    admin: Any  # the operator's client: creates and rotates the secret
    arn: str
    clock: Clock
    calls: list[str]  # Secrets Manager operations the authorizer made

    def rotate(self, new_key: str) -> float:
        """put-secret-value, as an operator rotates; returns the new version's CreatedDate."""
        self.admin.put_secret_value(SecretId=self.arn, SecretString=new_key)
        return self.admin.get_secret_value(SecretId=self.arn)["CreatedDate"].timestamp()


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[Any, Any, list[str]]]:
    """One fake AWS for the module (clients are slow to build): the operator's client, the
    authorizer's client, and the Secrets Manager operations the latter makes."""
    with mock_aws():
        calls: list[str] = []
        client = boto3.client("secretsmanager", region_name=REGION)
        client.meta.events.register("before-call.secretsmanager.*", lambda model, **_: calls.append(model.name))
        yield boto3.client("secretsmanager", region_name=REGION), client, calls


@pytest.fixture
def secret(clients: tuple[Any, Any, list[str]], monkeypatch: pytest.MonkeyPatch,
           request: pytest.FixtureRequest) -> Secret:
    admin, client, calls = clients
    arn = admin.create_secret(Name=request.node.name[:60], SecretString=KEY)["ARN"]
    monkeypatch.setenv("API_KEY_SECRET_ARN", arn)
    calls.clear()
    monkeypatch.setattr(authorizer, "_client", client)
    monkeypatch.setattr(authorizer, "_cache", authorizer._Cache())
    # Whole seconds, like moto's CreatedDate: boundary arithmetic stays exact.
    clock = Clock(float(int(time.time())))
    monkeypatch.setattr(authorizer, "clock", clock)
    monkeypatch.setattr(authorizer, "GRACE_SECONDS", 3600.0)
    monkeypatch.setattr(authorizer, "REFRESH_SECONDS", 60.0)
    monkeypatch.setattr(authorizer, "MAX_AGE_SECONDS", 900.0)
    return Secret(admin, arn, clock, calls)


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


def test_rotated_key_is_admitted_right_after_rotation_even_on_a_warm_cache(secret: Secret) -> None:
    assert admits(KEY)  # warms the cache
    secret.clock.now += authorizer.REFRESH_SECONDS  # cache still fresh (max age 900 s)
    secret.rotate("n3w-Secret")
    assert admits("n3w-Secret")  # the mismatch triggered a refresh
    assert admits(KEY)  # and the old key, now AWSPREVIOUS, is in its grace period


def test_old_key_is_admitted_during_the_grace_period_and_refused_after_it(secret: Secret) -> None:
    created = secret.rotate("n3w-Secret")
    secret.clock.now = created + authorizer.GRACE_SECONDS - 1
    assert admits(KEY)
    assert admits("n3w-Secret")
    secret.clock.now = created + authorizer.GRACE_SECONDS  # the grace period is over, to the second
    assert not admits(KEY)
    assert admits("n3w-Secret")


def test_old_key_is_refused_on_a_cold_start_after_the_grace_period(secret: Secret) -> None:
    created = secret.rotate("n3w-Secret")
    secret.clock.now = created + authorizer.GRACE_SECONDS
    assert not admits(KEY)
    assert admits("n3w-Secret")
    assert secret.calls == ["GetSecretValue"]  # AWSPREVIOUS is not even read


def test_flood_of_wrong_keys_makes_at_most_one_secrets_manager_call_per_refresh_interval(
        secret: Secret) -> None:
    assert admits(KEY)  # cold start: one read of AWSCURRENT, one of AWSPREVIOUS (none yet)
    cold = len(secret.calls)
    start = secret.clock.now
    for offset in (0, 1, 30, authorizer.REFRESH_SECONDS - 1):
        secret.clock.now = start + offset
        for _ in range(50):
            assert not admits("wrong")
    assert len(secret.calls) == cold
    secret.clock.now = start + authorizer.REFRESH_SECONDS
    for _ in range(50):
        assert not admits("wrong")
    assert len(secret.calls) == cold + 1
    assert admits(KEY)  # the right key is still admitted from the cache
    assert len(secret.calls) == cold + 1


def test_cache_is_refreshed_after_its_max_age_even_without_mismatches(
        secret: Secret, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authorizer, "GRACE_SECONDS", 0.0)  # the old key dies with the rotation
    assert admits(KEY)
    start, cold = secret.clock.now, len(secret.calls)
    secret.rotate("n3w-Secret")
    secret.clock.now = start + authorizer.MAX_AGE_SECONDS - 1
    assert admits(KEY)  # served from the cache: no mismatch, not yet too old
    assert len(secret.calls) == cold
    secret.clock.now = start + authorizer.MAX_AGE_SECONDS
    assert not admits(KEY)  # the cache was re-read and the old key is gone
    assert len(secret.calls) == cold + 1


def test_failed_refresh_keeps_judging_by_the_cached_keys(secret: Secret) -> None:
    assert admits(KEY)
    secret.admin.delete_secret(SecretId=secret.arn, ForceDeleteWithoutRecovery=True)
    secret.clock.now += authorizer.MAX_AGE_SECONDS
    calls = len(secret.calls)
    assert admits(KEY)
    assert not admits("wrong")
    assert len(secret.calls) == calls + 1  # the failure is rate-limited like any refresh


def test_secret_is_read_with_a_client_of_its_own_on_a_cold_start(
        secret: Secret, monkeypatch: pytest.MonkeyPatch) -> None:
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
