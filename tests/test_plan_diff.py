"""`plan` as a user's everyday tool: the properties that matter, `--diff` against the stack's own config
(with every replacement or deletion of the bucket or the database marked loudly), every flag honoured or
refused, the `--set` path form, placeholders labelled."""

from __future__ import annotations

import contextlib
import io
import json
from functools import cache
from typing import Any

import pytest
from test_docs import README

from metaflow_infra.__main__ import main
from metaflow_infra.changes import diff_runs
from metaflow_infra.offline import ACCOUNT_ID, OfflineRun, run_offline
from metaflow_infra.plan import (
    comparison_document,
    diff_document,
    plan_document,
    render_comparison,
    render_diff,
    render_plan,
    stack_config,
)

PROJECT = README.parent


@cache
def cli(*args: str) -> tuple[int, str, str]:
    """`python -m metaflow_infra plan ARGS` on the project's dev stack, run once per distinct ARGS."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["plan", "--dir", str(PROJECT), *args])
    return code, out.getvalue(), err.getvalue()


@cache
def run(*sets: str) -> OfflineRun:
    """The project's dev stack with `--set` overrides, offline, once per distinct overrides (what `plan` runs)."""
    return run_offline(stack_config("dev", PROJECT, sets), stack="dev")


def diff(*sets: str) -> dict[str, Any]:
    """What `plan --diff --json --set ...` prints, the stack's own run shared between diffs."""
    return json.loads(json.dumps(diff_document(run(), run(*sets), sets)))


def plan(*sets: str) -> dict[str, Any]:
    """What `plan --json --set ...` prints."""
    return json.loads(json.dumps(plan_document(run(*sets))))


def changed(document: dict[str, Any], type_: str, name: str) -> dict[str, tuple[str, str]]:
    [change] = [c for c in document["changes"] if c["type"] == type_ and c["name"] == name]
    assert change["change"] == "changed"
    return {p["path"]: (p["before"], p["after"]) for p in change["properties"]}


def test_a_count_changes_in_place_by_value() -> None:
    document = diff("metadata:tasks=2")
    service = changed(document, "aws:ecs/service:Service", "metaflow-metadata")
    assert service["desiredCount"] == ("1", "2")
    assert document["summary"]["added"] == document["summary"]["removed"] == document["summary"]["replaced"] == 0
    assert document["monthlyIdleUsd"]["after"] > document["monthlyIdleUsd"]["before"]
    assert not document["dataAtRisk"]


def test_max_vcpus_shows_on_every_compute_environment() -> None:
    document = diff("compute:maxVcpus=128")
    environments = [c for c in document["changes"] if c["type"] == "aws:batch/computeEnvironment:ComputeEnvironment"]
    assert len(environments) == 2  # spot and its on-demand fallback
    for environment in environments:
        properties = {p["path"]: (p["before"], p["after"]) for p in environment["properties"]}
        assert properties == {"computeResources.maxVcpus": ("64", "128")}


def test_a_tag_set_by_path_reaches_the_provider_and_the_instances() -> None:
    document = diff("metaflow:tags.team=data-science")
    provider = changed(document, "pulumi:providers:aws", "metaflow-aws")
    assert provider == {"defaultTags.tags.team": ("unset", "data-science")}
    template = changed(document, "aws:ec2/launchTemplate:LaunchTemplate", "metaflow-batch")
    assert set(template.values()) == {("unset", "data-science")} and len(template) == 2  # instances and volumes


def test_moving_region_replaces_everything_and_says_so_loudly_for_the_data() -> None:
    document = diff("aws:region=eu-west-1")
    loud = [line for line in render_diff(document).splitlines() if line.startswith("!!!")]
    assert any("the database (metaflow-db) would be replaced" in line and "refused" in line for line in loud)
    assert any("the artifacts bucket" in line and "stays in AWS" in line for line in loud)
    assert document["region"] == "eu-west-1" and document["summary"]["changed"] == 1
    assert changed(document, "pulumi:providers:aws", "metaflow-aws")["region"] == ("us-east-1", "eu-west-1")
    kinds = {c["change"] for c in document["changes"] if not c["type"].startswith(("pulumi:", "random:"))}
    assert kinds == {"replaced"}
    assert document["dataAtRisk"] == []  # the database is protected, the old bucket kept


def test_deleting_an_unprotected_database_is_marked_as_data_loss() -> None:
    before = run("db:deletionProtection=false")
    after = run("db:deletionProtection=false", "metadata:enabled=false")
    [database] = [c for c in diff_runs(before, after) if c.type == "aws:rds/instance:Instance"]
    assert database.kind == "removed" and database.loses_data
    assert database.reason == "deleted (RDS keeps a final snapshot)"
    lines = render_diff(diff_document(before, after, ["metadata:enabled=false"])).splitlines()
    loud = (
        "!!! DATA LOSS: the database (aws:rds/instance:Instance metaflow-db): removed, deleted (RDS keeps a final "
        "snapshot): its contents would be gone !!!"
    )
    assert lines.index(loud) < min(i for i, line in enumerate(lines) if line.startswith("  -  removed"))


def test_the_diff_text_puts_data_loss_first_and_loud() -> None:
    code, out, _ = cli("--diff", "--set", "metaflow:preset=minimal")
    assert code == 0
    lines = out.splitlines()
    assert lines[2].startswith("!!! the database (metaflow-db) would be removed: its deletion is refused")
    assert "-  removed  Database         aws:rds/instance:Instance metaflow-db" in out


def test_no_change_is_said_to_be_none() -> None:
    document = diff("compute:maxVcpus=64")  # the dev preset's own value
    assert document["changes"] == [] and document["summary"] == dict.fromkeys(document["summary"], 0)


def test_plan_shows_the_properties_that_matter() -> None:
    document = plan("compute:maxVcpus=128", "metaflow:tags.team=ds")
    assert document["tags"] == {"metaflow:stack": "dev", "team": "ds"}
    compute = {item["name"]: item for item in document["resources"]["Compute"]}
    assert compute["metaflow-spot"]["properties"]["maxVcpus"] == "128"
    assert compute["metaflow-spot"]["properties"]["type"] == "SPOT"
    [database] = document["resources"]["Database"][:1]
    assert database["properties"]["engineVersion"] == "17" and database["properties"]["multiAz"] == "false"
    assert database["protect"] is True
    [bucket] = [item for item in document["resources"]["Datastore"] if item["type"] == "aws:s3/bucket:Bucket"]
    assert bucket["retainOnDelete"] is True
    zones = [
        item["properties"]["availabilityZone"] for item in document["resources"]["Network"] if "Subnet" in item["type"]
    ]
    assert zones == ["us-east-1b", "us-east-1c", "us-east-1d"]


def test_plan_text_shows_tags_sizes_and_protection() -> None:
    out = render_plan(plan("compute:maxVcpus=128", "metaflow:tags.team=ds"))
    assert (
        "Tags on every resource that takes them (the AWS provider's default tags): metaflow:stack=dev, team=ds" in out
    )
    assert "maxVcpus=128" in out
    [database] = [line for line in out.splitlines() if "aws:rds/instance:Instance" in line]
    assert "instanceClass=db.t4g.micro" in database and database.endswith("[protected]")


def test_placeholders_from_the_mock_runtime_are_labelled() -> None:
    document = plan()
    labelled = set(document["placeholders"]["profileKeys"])
    profile = document["metaflowProfile"]
    assert {"METAFLOW_DATASTORE_SYSROOT_S3", "METAFLOW_BATCH_JOB_QUEUE", "METAFLOW_SERVICE_URL"} <= labelled
    assert all(key in labelled for key, value in profile.items() if ACCOUNT_ID in value)
    assert not labelled & {"METAFLOW_DEFAULT_DATASTORE", "METAFLOW_SERVICE_RETRY_COUNT", "METAFLOW_BATCH_DEFAULT_TAGS"}
    text = render_plan(document)
    assert f"METAFLOW_SERVICE_URL = {profile['METAFLOW_SERVICE_URL']}  (placeholder)" in text
    assert "METAFLOW_DEFAULT_DATASTORE = s3\n" in text


def test_region_without_compare_plans_that_region_with_a_named_stand_in_for_its_prices() -> None:
    code, out, _ = cli("--json", "--region", "eu-central-1")
    document = json.loads(out)
    assert code == 0 and document["region"] == "eu-central-1"
    subnets = [item for item in document["resources"]["Network"] if item["type"] == "aws:ec2/subnet:Subnet"]
    assert {item["properties"]["availabilityZone"][:-1] for item in subnets} == {"eu-central-1"}
    cost = document["estimatedMonthlyCost"]
    assert cost["region"] == "eu-central-1" and cost["pricedWith"] == "eu-west-1" and cost["totalUsd"] > 0
    assert (
        "ESTIMATE: the price table has no figures for eu-central-1 yet; every price in this estimate is eu-west-1's"
        in render_plan(document)
    )
    comparison = render_comparison(comparison_document("sa-east-1"))
    assert comparison.splitlines()[1].startswith("ESTIMATE: the price table has no figures for sa-east-1 yet")


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--compare", "--set", "metadata:spot=false"), "--compare prices every preset's defaults and takes no --set"),
        (("--compare", "--diff"), "takes no --diff"),
        (("--compare", "--summary"), "takes no --summary"),
        (("--diff", "--summary", "--set", "metadata:tasks=2"), "--diff ends with its own summary"),
        (("--diff",), "--diff compares the stack with changes: give them with --set"),
        (("--region", "eu-west-1", "--set", "aws:region=us-west-2"), "disagree: give one"),
        (("--set", "metaflow:tags..team=x"), "is not a path; accepted: .name, [index]"),
        (("--set", "metaflow:preset.x=y"), "metaflow:preset holds 'dev', not a map or a list; set it whole"),
    ],
)
def test_flag_combinations_that_would_be_ignored_are_refused(args: tuple[str, ...], expected: str) -> None:
    code, out, err = cli(*args)
    assert code == 2 and out == "" and expected in err


def test_compare_honours_region_and_reads_the_stack_region_otherwise() -> None:
    code, out, _ = cli("--compare", "--region", "eu-west-1")
    assert code == 0 and out.startswith("Monthly idle cost in eu-west-1")
    _, default, _ = cli("--compare")
    assert default.startswith("Monthly idle cost in us-east-1")


def test_the_path_form_is_the_json_form() -> None:
    by_path = stack_config("dev", PROJECT, ["metaflow:tags.team=ds"])
    assert by_path == stack_config("dev", PROJECT, ['metaflow:tags={"team": "ds"}'])


def test_a_path_reaches_into_lists_and_quoted_names_like_pulumi_config_set_path() -> None:
    raw = stack_config(
        "dev",
        PROJECT,
        ["aws:assumeRoles[0].roleArn=arn:aws:iam::123456789012:role/deployer", 'metaflow:tags["cost.center"]=42'],
    )
    assert json.loads(raw["aws:assumeRoles"]) == [{"roleArn": "arn:aws:iam::123456789012:role/deployer"}]
    assert json.loads(raw["metaflow:tags"]) == {"cost.center": "42"}  # stored as a string, as Pulumi does


def test_the_summary_is_what_make_up_shows_before_deploying() -> None:
    code, out, _ = cli("--summary", "--set", "metaflow:preset=minimal", "--set", "db:multiAz=true")
    assert code == 0
    assert out.startswith("Stack dev (minimal preset) in us-east-1: `pulumi up` would create ")
    assert "warning: db:multiAz has no effect" in out
    assert out.splitlines()[-2].split() == ["total", "0.00"]
    assert "METAFLOW_" not in out and "aws:s3/bucket:Bucket" not in out


def test_a_new_prefix_keeps_the_names_aws_gave_the_bucket_and_the_database() -> None:
    """Their name inputs are ignored after creation, so what is built from their names does not change either,
    though the offline run makes up new names from the new prefix."""
    document = diff("metaflow:prefix=team-a")
    assert not [c for c in document["changes"] if c["type"].startswith("aws:s3/")]
    assert changed(document, "aws:rds/instance:Instance", "metaflow-db") == {
        "finalSnapshotIdentifier": ("metaflow-db-final-c3cd3bd", "team-a-db-final-c3cd3bd")
    }
    [replaced] = [c for c in document["changes"] if c["change"] == "replaced"]
    assert (replaced["type"], replaced["reason"]) == (
        "aws:ecs/taskDefinition:TaskDefinition",
        "family changes its physical name",
    )
    assert not document["dataAtRisk"]
