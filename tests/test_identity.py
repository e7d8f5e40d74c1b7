"""Resource identities: the committed snapshot every change is held to.

Pulumi keys state by URN (parent type chain and name); a resource whose URN changes is deleted and
created anew, and one whose physical name changes is replaced. The snapshot under `snapshots/`
lists both for each variant, with the earlier identities each resource answers to (`<-`, its
aliases). A change that alters it shows up in review. The data resources (the bucket, the database,
the service endpoint) must still answer to every identity they ever had: `data-identities.txt` is
that record, only ever appended to.

Regenerate after a deliberate change: `UPDATE_SNAPSHOTS=1 python -m pytest tests/test_identity.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import offline

from metaflow_infra.changes import PHYSICAL_NAME_INPUTS
from metaflow_infra.offline import OfflineRun, SubnetFixture

SNAPSHOTS = Path(__file__).parent / "snapshots"
VPC = "vpc-0123456789abcdef0"
EXISTING_SUBNETS = {
    "subnet-0123456789abcdef0": SubnetFixture(VPC, "us-east-1b", "use1-az1"),
    "subnet-0123456789abcdef1": SubnetFixture(VPC, "us-east-1c", "use1-az2"),
}
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "minimal": ("minimal", {}, {}),
    "dev-prefix-team": ("dev", {"metaflow:prefix": "team"}, {}),
    "dev-ui-private": ("dev", {"ui:enabled": True}, {}),
    "minimal-accelerators": (
        "minimal",
        {
            "compute:gpu": True,
            "compute:neuronInstanceTypes": ["inf2"],
            "compute:multiNode": True,
            "compute:onDemandFallback": True,
        },
        {},
    ),
    "dev-ui-public": (
        "dev",
        {
            "ui:enabled": True,
            "ui:access": "public",
            "ui:domain": "mf.example.com",
            "ui:certificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/1234abcd-12ab",
        },
        {},
    ),
    "dev": ("dev", {}, {}),
    "dev-scale-to-zero": ("dev", {"metadata:scaleToZero": True}, {}),
    "dev-fargate-compute": ("dev", {"compute:type": "fargate_spot"}, {}),
    "dev-existing-network": (
        "dev",
        {"network:vpcId": VPC, "network:subnetIds": list(EXISTING_SUBNETS)},
        {"subnets": EXISTING_SUBNETS},
    ),
    "production": ("production", {}, {}),
    "production-kms-budget": (
        "production",
        {"datastore:kmsKey": "create", "alerts:email": "ops@example.com", "budget:monthlyUsd": 200},
        {},
    ),
}
DATA_IDENTITIES = SNAPSHOTS / "data-identities.txt"
"""Every identity a bucket, database, service endpoint or datastore key of the stack has had, per variant: never
re-created by a refactoring, since they hold the user's data, are what their profile points at, or decrypt it."""


def identity_lines(run: OfflineRun) -> list[str]:
    lines = []
    for resource in run.resources:
        names = ", ".join(f"{key}={resource.inputs[key]}" for key in PHYSICAL_NAME_INPUTS if key in resource.inputs)
        identity = run.identity(resource)
        earlier = sorted(run.earlier_identities(resource) - {identity})
        guards = [
            flag for flag, on in (("protect", resource.protect), ("retainOnDelete", resource.retain_on_delete)) if on
        ]
        guards += [f"ignoreChanges={','.join(resource.ignore_changes)}"] if resource.ignore_changes else []
        lines.append(
            identity
            + (f"  [{names}]" if names else "")
            + (f"  {{{'; '.join(guards)}}}" if guards else "")
            + "".join(f"\n    <- {e}" for e in earlier)
        )
    return sorted(lines)


def _run(variant: str) -> OfflineRun:
    preset, overrides, kwargs = VARIANTS[variant]
    return offline(preset, overrides, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_resource_identities_match_the_committed_snapshot(variant: str) -> None:
    path = SNAPSHOTS / f"{variant}.txt"
    current = "\n".join(identity_lines(_run(variant))) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(current)
    assert path.exists(), f"no snapshot for {variant}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert current == path.read_text(), (
        f"resource identities of {variant} changed: a changed URN or physical name replaces the resource. "
        "Add an alias for a moved resource; if the change is deliberate, regenerate with UPDATE_SNAPSHOTS=1"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_data_resources_answer_to_every_identity_they_ever_had(variant: str) -> None:
    recorded = [
        line.split(" ", 1)[1] for line in DATA_IDENTITIES.read_text().splitlines() if line.startswith(f"{variant} ")
    ]
    assert recorded, f"{variant} has no recorded data identities"
    run = _run(variant)
    reachable = set().union(*(run.earlier_identities(r) for r in run.resources))
    lost = [identity for identity in recorded if identity not in reachable]
    assert not lost, f"these would be deleted and re-created empty: {lost}; add an alias to each"
