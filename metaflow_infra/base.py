"""What every component shares: the `metaflow:infra:<Name>` type token, child options, the account
and partition it runs in, and the one builder of the IAM roles AWS services assume."""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from .policies import assume_role_policy, aws_managed_policy_arn

TYPE_PREFIX = "metaflow:infra:"
LOGICAL_BASE = "metaflow"
"""Every logical name starts with this, whatever `metaflow:prefix` says: Pulumi keys state by logical
name, so a prefix inside it would make a prefix change delete and re-create every resource, the
bucket and the database with them. The prefix names what users see (physical names, Name tags)."""


def legacy_aliases(name: str, prefix: str) -> list[pulumi.Alias]:
    """Until 2026-12 logical names started with the prefix: a stack deployed then with another prefix
    finds its resources under those names."""
    if prefix == LOGICAL_BASE or not (name == LOGICAL_BASE or name.startswith(f"{LOGICAL_BASE}-")):
        return []
    return [pulumi.Alias(name=prefix + name.removeprefix(LOGICAL_BASE))]


_LOOKUPS: weakref.WeakKeyDictionary[pulumi.ProviderResource, dict[str, str]] = weakref.WeakKeyDictionary()
"""The account and partition, looked up once per provider, which every component of the stack shares: in
a real run each lookup is a call to AWS."""


class Component(pulumi.ComponentResource):
    """A component of the stack. Its children are named `metaflow-<purpose>` and parented to it."""

    def __init__(self, kind: str, prefix: str, opts: pulumi.ResourceOptions | None = None) -> None:
        def alias_legacy_name(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
            aliases = legacy_aliases(args.name, prefix)
            return pulumi.ResourceTransformationResult(
                args.props, pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(aliases=aliases))
            )

        legacy = pulumi.ResourceOptions(transformations=[alias_legacy_name]) if prefix != LOGICAL_BASE else None
        super().__init__(f"{TYPE_PREFIX}{kind}", LOGICAL_BASE, None, pulumi.ResourceOptions.merge(opts, legacy))
        self.prefix = prefix
        providers = (opts.providers if opts else None) or []
        listed = providers.values() if isinstance(providers, Mapping) else providers
        provider = next((p for p in listed if isinstance(p, aws.Provider)), None)
        self._lookups = _LOOKUPS.setdefault(provider, {}) if provider is not None else {}
        self.role_policies: dict[str, aws.iam.RolePolicy] = {}
        """The inline policy of each role `service_role` made, by purpose: what must exist before a role is used
        at once (as by a function `pulumi up` invokes)."""

    def named(self, purpose: str) -> str:
        """The logical name of a child: fixed, so that no config change re-creates it."""
        return f"{LOGICAL_BASE}-{purpose}"

    def labelled(self, purpose: str) -> str:
        """A physical name or Name tag users see: `<metaflow:prefix>-<purpose>`."""
        return f"{self.prefix}-{purpose}"

    def child(self, *depends_on: pulumi.Resource, **options: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=list(depends_on), **options)

    @property
    def account(self) -> str:
        if "account" not in self._lookups:
            self._lookups["account"] = aws.get_caller_identity(opts=pulumi.InvokeOptions(parent=self)).account_id
        return self._lookups["account"]

    @property
    def partition(self) -> str:
        if "partition" not in self._lookups:
            self._lookups["partition"] = aws.get_partition(opts=pulumi.InvokeOptions(parent=self)).partition
        return self._lookups["partition"]

    def service_role(
        self,
        purpose: str,
        service: str,
        managed: Sequence[str] = (),
        inline: pulumi.Input[dict[str, Any]] | None = None,
        inline_purpose: str | None = None,
    ) -> aws.iam.Role:
        """A role `service` assumes (on this account's behalf where the service says so), with AWS
        managed policies by name (`service-role/...`) and one inline policy document of ours.

        The first managed policy's attachment carries the role's name, later ones add the policy's:
        appending a policy never renames (and so never re-creates) an existing attachment."""
        name = self.named(purpose)
        role = aws.iam.Role(
            name, assume_role_policy=json.dumps(assume_role_policy(service, self.account)), opts=self.child()
        )
        for index, policy in enumerate(managed):
            attachment = name if index == 0 else f"{name}-{policy.rsplit('/', 1)[-1]}"
            aws.iam.RolePolicyAttachment(
                attachment, role=role.name, policy_arn=aws_managed_policy_arn(self.partition, policy), opts=self.child()
            )
        if inline is not None:
            self.role_policies[purpose] = aws.iam.RolePolicy(
                self.named(inline_purpose or purpose),
                role=role.id,
                policy=pulumi.Output.from_input(inline).apply(json.dumps),
                opts=self.child(),
            )
        return role
