"""API Gateway (HTTP API) Lambda authorizer: admit a request only if its `x-api-key` header
equals the key kept in Secrets Manager. Runs on AWS Lambda's Python runtime (boto3 included)."""

import hmac
import os

_expected_key = None


def _api_key():
    global _expected_key
    if _expected_key is None:
        import boto3

        secrets = boto3.client("secretsmanager")
        _expected_key = secrets.get_secret_value(SecretId=os.environ["API_KEY_SECRET_ARN"])["SecretString"]
    return _expected_key


def is_authorized(presented, expected):
    return bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())


def handler(event, context):
    """Payload format 2.0 with simple responses: {"isAuthorized": bool}."""
    headers = event.get("headers") or {}
    presented = next((v for k, v in headers.items() if k.lower() == "x-api-key"), "")
    return {"isAuthorized": is_authorized(presented, _api_key())}
