"""Secrets this stack generates and keeps in Secrets Manager (the database password, the API key)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

SECRET_RECOVERY_DAYS = 7
"""A deleted secret can be restored for this long (the shortest window AWS allows besides none)."""


def stored_secret(
    name: str, description: str, value: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> pulumi.Output[str]:
    """A Secrets Manager secret holding `value`; both resources take `opts` (parent, aliases). Returns the
    secret's ARN once the value is stored: whatever reads it (a task definition, a function) then waits for a
    changed value, instead of starting a task that reads the secret before the new value is in place."""
    secret = aws.secretsmanager.Secret(
        name, description=description, recovery_window_in_days=SECRET_RECOVERY_DAYS, opts=opts
    )
    version = aws.secretsmanager.SecretVersion(name, secret_id=secret.id, secret_string=value, opts=opts)
    return pulumi.Output.all(secret.arn, version.id).apply(lambda values: values[0])
