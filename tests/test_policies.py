"""Every policy document the program declares passes parliament; trust policies trust one service."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
from parliament import analyze_policy_string

from conftest import offline
from metaflow_infra.offline import OfflineRun

PERMISSION_POLICIES = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
}
ACCEPTED_FINDINGS: dict[str, str] = {}
"""Finding issue -> why it is justified. Empty: no exceptions are needed so far."""

VARIANTS = {
    "minimal": ("minimal", {}),
    "minimal-fargate": ("minimal", {"compute:type": "fargate_spot", "compute:onDemandFallback": True}),
    "minimal-versioned": ("minimal", {"datastore:versioning": True}),
    "dev": ("dev", {}),
    "dev-existing-settings": ("dev", {"metadata:spot": False, "db:multiAz": True, "compute:type": "ec2"}),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def run(request: pytest.FixtureRequest) -> OfflineRun:
    preset, overrides = VARIANTS[request.param]
    return offline(preset, overrides)


def permission_policies(run: OfflineRun) -> Iterator[tuple[str, str]]:
    for resource_type, key in PERMISSION_POLICIES.items():
        for resource in run.of_type(resource_type):
            yield resource.name, resource.inputs[key]


def test_every_permission_policy_passes_parliament(run: OfflineRun) -> None:
    documents = list(permission_policies(run))
    assert documents, "no policy documents found"
    for name, document in documents:
        findings = [(f.issue, f.detail) for f in analyze_policy_string(document).findings
                    if f.issue not in ACCEPTED_FINDINGS]
        assert not findings, f"{name}: {findings}"


def test_no_allow_statement_grants_every_resource(run: OfflineRun) -> None:
    for name, document in permission_policies(run):
        for statement in json.loads(document)["Statement"]:
            if statement["Effect"] == "Allow":
                assert "*" not in statement["Resource"], f"{name} allows {statement['Action']} on *"


def test_trust_policies_trust_exactly_one_aws_service(run: OfflineRun) -> None:
    # parliament lints permission policies only (a trust policy has no Resource), so check these here.
    for role in run.of_type("aws:iam/role:Role"):
        [statement] = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
        assert list(statement["Principal"]) == ["Service"]
        assert statement["Principal"]["Service"].endswith(".amazonaws.com")


def test_parliament_does_flag_a_bad_policy() -> None:
    """The judge is awake: a misspelt action is reported."""
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObjekt", "Resource": "*"}]}
    assert analyze_policy_string(json.dumps(bad)).findings
