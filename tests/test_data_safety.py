"""No config change deletes data: across each change a user may make to a running `dev` stack, the
bucket and the database keep their identity (URN, and physical-name inputs or an ignore on them),
or their deletion is refused (Pulumi `protect` plus RDS deletion protection), by name."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import offline

from metaflow_infra.changes import successor
from metaflow_infra.offline import DeclaredResource, OfflineRun

BUCKET = "aws:s3/bucket:Bucket"
DATABASE = "aws:rds/instance:Instance"
PHYSICAL_NAMES = {BUCKET: ("bucket", "bucketPrefix"), DATABASE: ("identifier", "identifierPrefix")}
CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    "a new prefix": ("dev", {"metaflow:prefix": "team-a"}),
    "the minimal preset": ("minimal", {}),
    "metadata off": ("dev", {"metadata:enabled": False}),
    "fargate compute": ("dev", {"compute:type": "fargate"}),
    "new tags": ("dev", {"metaflow:tags": {"team": "ds"}}),
    "a bigger database": ("dev", {"db:instanceClass": "db.t4g.small", "db:allocatedStorageGb": 40}),
    "versioning on": ("dev", {"datastore:versioning": True}),
    "the production preset": ("production", {}),
    "private subnets": ("dev", {"network:privateSubnets": True, "network:natGateways": 1}),
    "a KMS key of the stack": ("dev", {"datastore:kmsKey": "create"}),
    "two service tasks and alarms": ("dev", {"metadata:tasks": 2, "alerts:enabled": True}),
    "scale to zero": ("dev", {"metadata:scaleToZero": True}),
}


def fate(before: OfflineRun, after: OfflineRun, type_: str) -> str:
    """`kept`, `refused` (deletion stopped by protection) or why the data would be lost."""
    [resource] = before.of_type(type_)
    following = successor(after, before, resource)
    if following is None:
        if resource.protect:
            return "refused"
        if resource.retain_on_delete:
            return "kept outside the stack"
        return "deleted"
    for name in PHYSICAL_NAMES[type_]:
        if resource.inputs.get(name) != following.inputs.get(name) and name not in following.ignore_changes:
            return f"replaced: {name} changes"
    return "kept"


@pytest.fixture(scope="module")
def dev() -> OfflineRun:
    return offline("dev")


@pytest.mark.parametrize("change", CHANGES)
def test_the_bucket_survives_every_config_change(dev: OfflineRun, change: str) -> None:
    preset, overrides = CHANGES[change]
    assert fate(dev, offline(preset, overrides), BUCKET) == "kept"


@pytest.mark.parametrize("change", CHANGES)
def test_the_database_is_kept_or_its_deletion_refused(dev: OfflineRun, change: str) -> None:
    preset, overrides = CHANGES[change]
    assert fate(dev, offline(preset, overrides), DATABASE) in ("kept", "refused")


def test_turning_the_service_off_is_refused_by_rds_too(dev: OfflineRun) -> None:
    assert fate(dev, offline("dev", {"metadata:enabled": False}), DATABASE) == "refused"
    assert dev.one(DATABASE).inputs["deletionProtection"] is True


def test_only_the_documented_switches_let_the_data_go() -> None:
    unprotected = offline("dev", {"db:deletionProtection": False, "datastore:forceDestroy": True})
    database, bucket = unprotected.one(DATABASE), unprotected.one(BUCKET)
    assert not database.protect and database.inputs["deletionProtection"] is False
    assert database.inputs["skipFinalSnapshot"] is False, "a deleted database still leaves a final snapshot"
    assert not bucket.retain_on_delete and bucket.inputs["forceDestroy"] is True


def test_the_judge_sees_a_renamed_bucket() -> None:
    """The check above would catch a bucket whose logical name changed without an alias."""
    before, after = offline("dev"), offline("dev", {"metaflow:prefix": "team-a"})
    [bucket] = before.of_type(BUCKET)
    renamed = DeclaredResource(
        **{
            **bucket.__dict__,
            "protect": False,
            "retain_on_delete": False,
            "name": "metaflow-old-artifacts",
            "urn": bucket.urn.replace("metaflow-artifacts", "metaflow-old-artifacts"),
        }
    )
    before.resources[before.resources.index(bucket)] = renamed
    assert fate(before, after, BUCKET) == "deleted"


def test_switching_a_running_dev_stack_to_scale_to_zero_is_refused_not_a_silent_new_database(dev: OfflineRun) -> None:
    """An RDS instance cannot become an Aurora cluster: the program would delete it and create an empty
    cluster. Pulumi's protect refuses the deletion (in the preview, before anything changes) and RDS
    deletion protection refuses it again."""
    after = offline("dev", {"metadata:scaleToZero": True})
    assert fate(dev, after, DATABASE) == "refused"
    assert dev.one(DATABASE).inputs["deletionProtection"] is True
    cluster = after.one("aws:rds/cluster:Cluster")
    assert cluster.protect and cluster.inputs["deletionProtection"] is True
