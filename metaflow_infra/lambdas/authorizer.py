"""API Gateway (HTTP API) Lambda authorizer: admit a request only if its `x-api-key` header
equals the key kept in Secrets Manager. Runs on AWS Lambda's Python runtime (boto3 included).

Secret: Pulumi writes it as the JSON document {"current": "<key>", "previous": "<key> or null"}.
Rotation: `pulumi config set metadata:apiKeyRotation <n+1>`, then `pulumi up`: Pulumi generates
a new key, writes the secret as a new version (the old key moves to "previous") and puts the new
key in the stack's `metaflowProfile` output. Do not rotate with `put-secret-value`: the profile
would keep the old key. The current key is always admitted; the previous one only for
GRACE_SECONDS after the current version was created (that is, rotated in), so clients can switch
over without an outage. After that only the current key works.

Refresh bound: the keys are cached in memory and re-read from Secrets Manager when a presented
key matches neither (it may be a freshly rotated key) or when the cache is older than
MAX_AGE_SECONDS (so a rotation is seen even if no one sends a new key) — but at most once per
REFRESH_SECONDS, so a flood of wrong keys costs one `GetSecretValue` call per interval and warm
instance. Every read is exactly one `GetSecretValue` call (AWSCURRENT).

Latency: API Gateway caches each decision per key value for 300 s. So the old key can work for
up to max(GRACE_SECONDS, MAX_AGE_SECONDS) + 300 s after rotation, and a new key first tried
within REFRESH_SECONDS of the authorizer's last read may be refused for up to
REFRESH_SECONDS + 300 s: switch clients over a few minutes after rotating, within the grace.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Settings, set on the function by the Pulumi component. Grace: one hour is long enough to roll
# the new key out to profiles and CI secrets (and for most running flows, whose tasks carry the
# key they were launched with, to finish), short enough that a leaked old key, the usual reason
# to rotate, stops working within the hour. It must well exceed REFRESH_SECONDS + 300 s.
GRACE_SECONDS = float(os.environ.get("API_KEY_GRACE_SECONDS", "3600"))
REFRESH_SECONDS = float(os.environ.get("API_KEY_REFRESH_SECONDS", "60"))
MAX_AGE_SECONDS = float(os.environ.get("API_KEY_MAX_AGE_SECONDS", "900"))
HEADER = "x-api-key"

clock: Callable[[], float] = time.time  # replaced in tests
_log = logging.getLogger(__name__)
_client: Any = None  # boto3 Secrets Manager client, created on first use


@dataclass(frozen=True)
class _Keys:
    current: bytes
    created: float  # CreatedDate of AWSCURRENT, epoch seconds: the rotation, so the grace period starts here
    previous: bytes | None


@dataclass
class _Cache:
    keys: _Keys | None = None
    fetched_at: float = -math.inf
    attempted_at: float = -math.inf


_cache = _Cache()


def _secrets() -> Any:
    global _client
    if _client is None:
        import boto3  # in the Lambda runtime, not in this project's requirements

        _client = boto3.client("secretsmanager")
    return _client


def _refresh(now: float) -> None:
    # Stamp the attempt first: a failing Secrets Manager is then also asked once per interval.
    _cache.attempted_at = now
    secret = _secrets().get_secret_value(SecretId=os.environ["API_KEY_SECRET_ARN"])
    current, previous = _parse(secret["SecretString"])
    _cache.keys = _Keys(current, secret["CreatedDate"].timestamp(), previous)
    _cache.fetched_at = now


def _parse(value: str) -> tuple[bytes, bytes | None]:
    """The current and previous keys from the secret's value, {"current": ..., "previous": ...}."""
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("current"), str) or not document["current"]:
        # Stacks deployed before this format hold the bare key until their next `pulumi up` rewrites it.
        return value.encode(), None
    previous = document.get("previous")
    return document["current"].encode(), previous.encode() if isinstance(previous, str) and previous else None


def _admits(keys: _Keys | None, presented: bytes, now: float) -> bool:
    if keys is None:
        return False
    if hmac.compare_digest(presented, keys.current):
        return True
    in_grace = now - keys.created < GRACE_SECONDS
    return in_grace and keys.previous is not None and hmac.compare_digest(presented, keys.previous)


def is_authorized(presented: str) -> bool:
    if not presented:
        return False
    now, key = clock(), presented.encode()
    if now - _cache.fetched_at < MAX_AGE_SECONDS and _admits(_cache.keys, key, now):
        return True
    if now - _cache.attempted_at >= REFRESH_SECONDS:
        try:
            _refresh(now)
        except Exception:
            if _cache.keys is None:
                raise  # nothing to judge by: fail the invocation (API Gateway answers 500)
            _log.warning("Secrets Manager read failed; judging by the cached keys", exc_info=True)
    return _admits(_cache.keys, key, now)


def handler(event: dict[str, Any], context: object) -> dict[str, bool]:
    """Payload format 2.0 with simple responses: {"isAuthorized": bool}."""
    headers = event.get("headers") or {}
    # HTTP header names are case-insensitive (HTTP APIs lower-case them, but do not rely on it).
    presented = next((v for k, v in headers.items() if k.lower() == HEADER), "")
    return {"isAuthorized": is_authorized(presented)}
