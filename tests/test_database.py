"""The dev database: PostgreSQL 17, single-AZ, gp3, encrypted, private, TLS-only, no extended support."""

from __future__ import annotations

import json

import pytest
from conftest import offline
from test_settings import error_for

from metaflow_infra.offline import OfflineRun

DB = "aws:rds/instance:Instance"


@pytest.fixture(scope="module")
def dev() -> OfflineRun:
    return offline("dev")


def test_dev_database_properties(dev: OfflineRun) -> None:
    db = dev.one(DB).inputs
    assert db["engine"] == "postgres" and db["engineVersion"] == "17"
    assert db["instanceClass"] == "db.t4g.micro"
    assert db["multiAz"] is False
    assert db["storageType"] == "gp3" and db["allocatedStorage"] == 20
    assert db["storageEncrypted"] is True
    assert db["publiclyAccessible"] is False
    assert db["engineLifecycleSupport"] == "open-source-rds-extended-support-disabled"
    assert db["backupRetentionPeriod"] == 1 and db["deletionProtection"] is True
    assert db["dbName"] == "metaflow" and db["username"] == "metaflow"


def test_database_requires_tls_through_its_parameter_group(dev: OfflineRun) -> None:
    group = dev.one("aws:rds/parameterGroup:ParameterGroup")
    assert group.inputs["family"] == "postgres17"
    assert {"name": "rds.force_ssl", "value": "1", "applyMethod": "immediate"} in group.inputs["parameters"]
    assert dev.one(DB).inputs["parameterGroupName"] == group.state["name"]


def test_database_is_reachable_only_from_the_metadata_service(dev: OfflineRun) -> None:
    groups = {
        g.name.removeprefix("metaflow-"): f"{g.state['name']}-id"
        for g in dev.of_type("aws:ec2/securityGroup:SecurityGroup")
    }
    assert dev.one(DB).inputs["vpcSecurityGroupIds"] == [groups["database"]]
    into_database = [
        r.inputs
        for r in dev.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == groups["database"]
    ]
    assert into_database == [
        {
            "securityGroupId": groups["database"],
            "referencedSecurityGroupId": groups["metadata"],
            "ipProtocol": "tcp",
            "fromPort": 5432,
            "toPort": 5432,
            "description": "metadata-to-database",
        }
    ]
    assert not [
        r
        for r in dev.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.inputs["securityGroupId"] == groups["database"]
    ]


def test_password_is_generated_and_kept_in_secrets_manager(dev: OfflineRun) -> None:
    [password] = [p for p in dev.of_type("random:index/randomPassword:RandomPassword") if "db" in p.name]
    assert password.inputs["length"] >= 32
    value = password.state["result"]
    assert dev.one(DB).inputs["password"] == value and "password" in dev.one(DB).secret_inputs
    [version] = [v for v in dev.of_type("aws:secretsmanager/secretVersion:SecretVersion") if "db" in v.name]
    assert version.inputs["secretString"] == value
    assert value not in json.dumps(dev.outputs)


def test_a_deleted_database_leaves_a_final_snapshot_named_after_the_prefix(dev: OfflineRun) -> None:
    db = dev.one(DB).inputs
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"].startswith("metaflow-db-final-")
    other = offline("dev", {"metaflow:prefix": "team"}).one(DB).inputs
    assert other["finalSnapshotIdentifier"].startswith("team-db-final-")


def test_only_skip_final_snapshot_lets_the_database_go_without_one() -> None:
    kept = offline("dev", {"datastore:forceDestroy": True}).one(DB).inputs
    assert kept["skipFinalSnapshot"] is False, "the bucket's switch must not decide the database's snapshot"
    gone = offline("dev", {"db:skipFinalSnapshot": True}).one(DB).inputs
    assert gone["skipFinalSnapshot"] is True and "finalSnapshotIdentifier" not in gone


def test_overrides_change_the_database() -> None:
    run = offline(
        "dev",
        {
            "db:engineVersion": 16,
            "db:instanceClass": "db.t4g.small",
            "db:multiAz": True,
            "db:allocatedStorageGb": 50,
            "db:backupRetentionDays": 7,
            "db:deletionProtection": False,
        },
    )
    db = run.one(DB).inputs
    assert (db["engineVersion"], db["instanceClass"], db["multiAz"]) == ("16", "db.t4g.small", True)
    assert (db["allocatedStorage"], db["backupRetentionPeriod"], db["deletionProtection"]) == (50, 7, False)
    assert run.one(DB).protect is False
    assert run.one("aws:rds/parameterGroup:ParameterGroup").inputs["family"] == "postgres16"


def test_extended_support_version_is_billed_only_when_allowed() -> None:
    db = offline("dev", {"db:engineVersion": 13, "db:allowExtendedSupport": True}).one(DB).inputs
    assert db["engineVersion"] == "13"
    assert db["engineLifecycleSupport"] == "open-source-rds-extended-support"


@pytest.mark.parametrize("version", [11, 12, 13])
def test_versions_in_extended_support_are_refused(version: int) -> None:
    message = error_for({"db:engineVersion": version}, preset="dev")
    assert f"db:engineVersion = {version}" in message and "Extended Support" in message
    assert "db:allowExtendedSupport" in message and "14, 15, 16, 17" in message


@pytest.mark.parametrize("version", [10, 19])
def test_unknown_versions_are_refused(version: int) -> None:
    assert "not an RDS PostgreSQL major version" in error_for({"db:engineVersion": version}, preset="dev")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"db:allocatedStorageGb": 10}, "db:allocatedStorageGb = '10'"),
        ({"db:backupRetentionDays": 40}, "db:backupRetentionDays = '40'"),
        ({"db:instanceClass": "db.t2.small"}, "previous-generation"),
        ({"db:instanceClass": "t4g.micro"}, "db:instanceClass = 't4g.micro'"),
        ({"metadata:cpu": 300}, "metadata:cpu 300 is not a Fargate size"),
        ({"metadata:memory": 8192}, "metadata:memory 8192 does not fit metadata:cpu 256"),
        ({"metadata:image": "netflixoss/metaflow_metadata_service:latest"}, "metadata:image = "),
    ],
)
def test_bad_database_and_service_sizing_is_refused(overrides: dict, expected: str) -> None:
    assert expected in error_for(overrides, preset="dev")
