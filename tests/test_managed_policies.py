"""The AWS managed policies the program attaches pass parliament too, apart from findings accepted
here one by one; each is linted from a stored copy of its default version (tests/managed_policies/),
and every policy the program attaches has one."""

from __future__ import annotations

import copy
import datetime
import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import offline
from parliament import analyze_policy_string

from metaflow_infra.settings.models import ComputeType

STORED_DIR = Path(__file__).resolve().parent / "managed_policies"
STORED: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text()) for path in sorted(STORED_DIR.glob("*.json"))
}
"""Policy name -> {"arn", "version", "source", "read_on", "document"}: the default version `source` shows."""

ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
RUNS = [("minimal", {}), ("dev", {})] + [("minimal", {"compute:type": t.value}) for t in ComputeType]
"""Both presets, and every compute type: EC2 and Fargate attach different managed policies."""

Finding = tuple[str, str]
"""(parliament issue, one item of its detail: for RESOURCE_STAR, one action granted on "*")."""

# Why these are accepted: AWS writes its managed policies once for every account, so they cannot name
# an account's repositories, log groups or Batch-made clusters; parliament already leaves out actions
# that take only "*" (ecr:GetAuthorizationToken, ecs:DiscoverPollEndpoint, ec2:DescribeTags).
# Anything not listed here fails, and so does an entry here parliament no longer reports.
ACCEPTED_FINDINGS: dict[str, dict[Finding, str]] = {
    # Fargate jobs: the execution role the Fargate agent uses to pull the image and ship logs.
    "AmazonECSTaskExecutionRolePolicy": {
        ("RESOURCE_STAR", "ecr:BatchCheckLayerAvailability"): "image pull from whatever ECR repository a flow names",
        ("RESOURCE_STAR", "ecr:GetDownloadUrlForLayer"): "image pull from whatever ECR repository a flow names",
        ("RESOURCE_STAR", "ecr:BatchGetImage"): "image pull from whatever ECR repository a flow names",
        ("RESOURCE_STAR", "logs:CreateLogStream"): "awslogs stream in Batch's own log group, per account",
        ("RESOURCE_STAR", "logs:PutLogEvents"): "awslogs stream in Batch's own log group, per account",
    },
    # EC2/spot jobs: the instance role the ECS agent on Batch-launched instances runs as.
    "AmazonEC2ContainerServiceforEC2Role": {
        ("RESOURCE_STAR", "ecr:BatchCheckLayerAvailability"): "image pull from whatever ECR repository a flow names",
        ("RESOURCE_STAR", "ecr:GetDownloadUrlForLayer"): "image pull from whatever ECR repository a flow names",
        ("RESOURCE_STAR", "ecr:BatchGetImage"): "image pull from whatever ECR repository a flow names",
        ("RESOURCE_STAR", "logs:CreateLogStream"): "awslogs stream in Batch's own log group, per account",
        ("RESOURCE_STAR", "logs:PutLogEvents"): "awslogs stream in Batch's own log group, per account",
        ("RESOURCE_STAR", "ecs:CreateCluster"): "agent's fallback when no cluster is configured; Batch sets one",
        ("RESOURCE_STAR", "ecs:RegisterContainerInstance"): "agent joins the cluster Batch made, named at random",
        ("RESOURCE_STAR", "ecs:DeregisterContainerInstance"): "agent leaves the cluster Batch created",
        ("RESOURCE_STAR", "ecs:Poll"): "agent polls for tasks as its own instance, ARN not known ahead",
        ("RESOURCE_STAR", "ecs:StartTelemetrySession"): "agent metrics, as a container instance not known in advance",
        ("RESOURCE_STAR", "ecs:UpdateContainerInstancesState"): "agent drains its own instance, ARN not known ahead",
        # The three below are what parliament expands the policy's "ecs:Submit*" to.
        ("RESOURCE_STAR", "ecs:SubmitAttachmentStateChanges"): "agent reports state to the Batch-made cluster",
        ("RESOURCE_STAR", "ecs:SubmitContainerStateChange"): "agent reports state to the Batch-made cluster",
        ("RESOURCE_STAR", "ecs:SubmitTaskStateChange"): "agent reports state to the Batch-made cluster",
    },
}


@cache
def attached_managed_policy_arns() -> frozenset[str]:
    return frozenset(
        attachment.inputs["policyArn"]
        for preset, overrides in RUNS
        for attachment in offline(preset, overrides).of_type(ATTACHMENT)
    )


def findings(document: Mapping[str, Any]) -> set[Finding]:
    found: set[Finding] = set()
    for finding in analyze_policy_string(json.dumps(document)).findings:
        items = finding.detail if isinstance(finding.detail, list) else [finding.detail]
        found |= {
            (finding.issue, item if isinstance(item, str) else json.dumps(item, sort_keys=True)) for item in items
        }
    return found


def judge(document: Mapping[str, Any], accepted: Mapping[Finding, str]) -> tuple[set[Finding], set[Finding]]:
    """(findings nobody accepted, accepted findings parliament no longer reports): both must be empty."""
    found = findings(document)
    return found - set(accepted), set(accepted) - found


def test_every_attached_managed_policy_has_a_stored_copy_and_no_other_is_stored() -> None:
    attached = attached_managed_policy_arns()
    stored = {policy["arn"] for policy in STORED.values()}
    assert attached, "no managed policy attachments found"
    assert not attached - stored, f"attached without a copy in {STORED_DIR.name}/: {sorted(attached - stored)}"
    assert not stored - attached, f"stored but no longer attached: {sorted(stored - attached)}"
    assert set(ACCEPTED_FINDINGS) == set(STORED), "accepted findings must be listed per stored policy"


@pytest.mark.parametrize("name", sorted(STORED))
def test_each_stored_copy_says_which_default_version_it_is_and_where_it_was_read(name: str) -> None:
    policy = STORED[name]
    assert set(policy) == {"arn", "version", "source", "read_on", "document"}
    assert re.fullmatch(rf"arn:aws:iam::aws:policy/(?:[\w+=,.@-]+/)*{re.escape(name)}", policy["arn"])
    assert re.fullmatch(r"v[1-9]\d*", policy["version"])
    assert policy["source"].startswith("https://")
    datetime.date.fromisoformat(policy["read_on"])
    assert policy["document"]["Version"] == "2012-10-17" and policy["document"]["Statement"]


@pytest.mark.parametrize("name", sorted(STORED))
def test_managed_policy_findings_are_exactly_the_accepted_ones(name: str) -> None:
    unexpected, stale = judge(STORED[name]["document"], ACCEPTED_FINDINGS.get(name, {}))
    assert not unexpected, f"{name} {STORED[name]['version']}: findings nobody accepted: {sorted(unexpected)}"
    assert not stale, f"{name} {STORED[name]['version']}: accepted but no longer found, drop them: {sorted(stale)}"


def test_every_accepted_finding_gives_a_one_line_reason() -> None:
    for name, accepted in ACCEPTED_FINDINGS.items():
        for finding, reason in accepted.items():
            assert reason.strip() and "\n" not in reason, f"{name} {finding}"


def test_the_judge_rejects_a_planted_bad_document_and_a_stale_acceptance() -> None:
    """The judge is awake: a scopable action on "*" and a misspelt action are reported, and so is an
    accepted finding whose statement is gone."""
    name = "AmazonECSTaskExecutionRolePolicy"
    bad = copy.deepcopy(STORED[name]["document"])
    bad["Statement"] += [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
        {"Effect": "Allow", "Action": "ecr:BatchGetImages", "Resource": "*"},
    ]
    unexpected, stale = judge(bad, ACCEPTED_FINDINGS[name])
    assert ("RESOURCE_STAR", "s3:GetObject") in unexpected
    assert any(issue == "UNKNOWN_ACTION" for issue, _ in unexpected)
    assert not stale

    trimmed = copy.deepcopy(STORED[name]["document"])
    trimmed["Statement"][0]["Action"] = [a for a in trimmed["Statement"][0]["Action"] if not a.startswith("logs:")]
    unexpected, stale = judge(trimmed, ACCEPTED_FINDINGS[name])
    assert not unexpected
    assert stale == {("RESOURCE_STAR", "logs:CreateLogStream"), ("RESOURCE_STAR", "logs:PutLogEvents")}
