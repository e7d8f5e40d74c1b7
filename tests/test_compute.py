"""Compute: Batch environments of the configured type, scaled to zero, IMDSv2, least-privilege roles."""

from __future__ import annotations

import json

import botocore.session
import pytest

from conftest import offline, policy_of
from metaflow_infra.offline import ACCOUNT_ID, OfflineRun

ENVIRONMENT = "aws:batch/computeEnvironment:ComputeEnvironment"
QUEUE = "aws:batch/jobQueue:JobQueue"
ROLE = "aws:iam/role:Role"


def role(run: OfflineRun, name: str) -> dict:
    [found] = [r for r in run.of_type(ROLE) if r.name.endswith(name)]
    return found.state


def attachments(run: OfflineRun, role_name: str) -> list[str]:
    return [a.inputs["policyArn"] for a in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
            if a.inputs["role"] == role_name]


def test_spot_environment_uses_price_capacity_optimized_and_scales_to_zero(minimal: OfflineRun) -> None:
    [environment] = minimal.of_type(ENVIRONMENT)
    resources = environment.inputs["computeResources"]
    assert environment.inputs["type"] == "MANAGED"
    assert resources["type"] == "SPOT"
    assert resources["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert resources["minVcpus"] == 0 and resources["maxVcpus"] == 32
    assert "desiredVcpus" not in resources
    assert resources["instanceTypes"] == ["c6i", "m6i", "r6i", "c5", "m5", "r5"]
    assert resources["ec2Configurations"] == [{"imageType": "ECS_AL2023"}]
    assert "spotIamFleetRole" not in resources


def test_environment_runs_in_the_network_with_the_batch_group(minimal: OfflineRun) -> None:
    resources = minimal.one(ENVIRONMENT).inputs["computeResources"]
    subnets = {f"{s.state['name']}-id" for s in minimal.of_type("aws:ec2/subnet:Subnet")}
    assert set(resources["subnets"]) == subnets
    group = minimal.one("aws:ec2/securityGroup:SecurityGroup")
    assert resources["securityGroupIds"] == [f"{group.state['name']}-id"]


def test_ec2_environment_uses_best_fit_progressive() -> None:
    resources = offline("minimal", {"compute:type": "ec2"}).one(ENVIRONMENT).inputs["computeResources"]
    assert resources["type"] == "EC2" and resources["allocationStrategy"] == "BEST_FIT_PROGRESSIVE"


@pytest.mark.parametrize("kind, batch_type", [("fargate", "FARGATE"), ("fargate_spot", "FARGATE_SPOT")])
def test_fargate_environments_have_no_instances_and_an_execution_role(kind: str, batch_type: str) -> None:
    run = offline("minimal", {"compute:type": kind})
    resources = run.one(ENVIRONMENT).inputs["computeResources"]
    assert resources["type"] == batch_type
    for ec2_only in ("instanceTypes", "allocationStrategy", "minVcpus", "instanceRole", "launchTemplate"):
        assert ec2_only not in resources
    assert not run.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    execution = role(run, "batch-execution")
    assert policy_of(execution, "assumeRolePolicy")["Statement"][0]["Principal"] == {
        "Service": "ecs-tasks.amazonaws.com"}
    assert attachments(run, execution["name"]) == [
        "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"]
    assert run.outputs["metaflowProfile"]["METAFLOW_ECS_FARGATE_EXECUTION_ROLE"] == execution["arn"]


def test_spot_with_fallback_queues_on_demand_behind_spot() -> None:
    run = offline("minimal", {"compute:onDemandFallback": True})
    environments = {e.state["arn"]: e.inputs["computeResources"]["type"] for e in run.of_type(ENVIRONMENT)}
    orders = sorted(run.one(QUEUE).inputs["computeEnvironmentOrders"], key=lambda o: o["order"])
    assert [environments[o["computeEnvironment"]] for o in orders] == ["SPOT", "EC2"]


def test_kept_running_vcpus_belong_to_the_first_environment_only() -> None:
    run = offline("minimal", {"compute:onDemandFallback": True, "compute:minVcpus": 4})
    minimums = {e.inputs["computeResources"]["type"]: e.inputs["computeResources"]["minVcpus"]
                for e in run.of_type(ENVIRONMENT)}
    assert minimums == {"SPOT": 4, "EC2": 0}


def test_queue_is_enabled_and_tries_the_environment(minimal: OfflineRun) -> None:
    queue = minimal.one(QUEUE).inputs
    environment = minimal.one(ENVIRONMENT)
    assert queue["state"] == "ENABLED"
    assert queue["computeEnvironmentOrders"] == [{"order": 1, "computeEnvironment": environment.state["arn"]}]


def test_launch_template_requires_imdsv2_and_encrypts_the_root_volume(minimal: OfflineRun) -> None:
    template = minimal.one("aws:ec2/launchTemplate:LaunchTemplate")
    metadata = template.inputs["metadataOptions"]
    assert metadata["httpTokens"] == "required" and metadata["httpEndpoint"] == "enabled"
    assert metadata["httpPutResponseHopLimit"] == 2
    [root] = template.inputs["blockDeviceMappings"]
    assert root["ebs"]["encrypted"] == "true" and root["ebs"]["volumeType"] == "gp3"
    environment = minimal.one(ENVIRONMENT).inputs["computeResources"]["launchTemplate"]
    assert environment == {"launchTemplateId": f"{template.state['name']}-id", "version": "1"}


def test_instances_get_the_ecs_instance_role_through_a_profile(minimal: OfflineRun) -> None:
    instance = role(minimal, "batch-instance")
    assert policy_of(instance, "assumeRolePolicy")["Statement"][0] == {
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    assert attachments(minimal, instance["name"]) == [
        "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"]
    profile = minimal.one("aws:iam/instanceProfile:InstanceProfile")
    assert profile.inputs["role"] == instance["name"]
    assert minimal.one(ENVIRONMENT).inputs["computeResources"]["instanceRole"] == profile.state["arn"]


@pytest.mark.parametrize("kind", ["spot", "fargate"])
def test_batch_uses_its_service_linked_role_so_environments_update_in_place(kind: str) -> None:
    run = offline("minimal", {"compute:type": kind})
    assert "serviceRole" not in run.one(ENVIRONMENT).inputs
    trusted = [json.loads(r.inputs["assumeRolePolicy"])["Statement"][0]["Principal"]["Service"]
               for r in run.of_type(ROLE)]
    assert "batch.amazonaws.com" not in trusted


def test_task_role_is_trusted_by_ecs_tasks_for_this_account_only(minimal: OfflineRun) -> None:
    assert policy_of(role(minimal, "batch-task"), "assumeRolePolicy")["Statement"][0] == {
        "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}}


def test_task_role_can_use_this_bucket_and_no_other(minimal: OfflineRun) -> None:
    task = role(minimal, "batch-task")
    assert policy_of(task, "assumeRolePolicy")["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    [inline] = [p for p in minimal.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == f"{task['name']}-id"]
    bucket_arn = minimal.one("aws:s3/bucket:Bucket").state["arn"]
    statements = policy_of(inline.inputs)["Statement"]
    granted = {(action, resource) for s in statements for action in s["Action"] for resource in s["Resource"]}
    assert granted == {
        ("s3:ListBucket", bucket_arn),
        ("s3:GetObject", f"{bucket_arn}/*"),
        ("s3:PutObject", f"{bucket_arn}/*"),
        ("s3:DeleteObject", f"{bucket_arn}/*"),
    }
    assert all(s["Effect"] == "Allow" for s in statements)
    assert not attachments(minimal, task["name"])


@pytest.fixture(scope="module")
def batch_model():  # type: ignore[no-untyped-def]
    return botocore.session.get_session().get_service_model("batch")


@pytest.mark.parametrize("kind", ["spot", "ec2", "fargate", "fargate_spot"])
def test_declared_batch_values_are_valid_aws_enums(kind: str, batch_model) -> None:  # type: ignore[no-untyped-def]
    fallback = {"compute:onDemandFallback": True} if kind in ("spot", "fargate_spot") else {}
    for environment in offline("minimal", {"compute:type": kind, **fallback}).of_type(ENVIRONMENT):
        resources = environment.inputs["computeResources"]
        assert environment.inputs["type"] in batch_model.shape_for("CEType").enum
        assert resources["type"] in batch_model.shape_for("CRType").enum
        if "allocationStrategy" in resources:
            assert resources["allocationStrategy"] in batch_model.shape_for("CRAllocationStrategy").enum
        for configuration in resources.get("ec2Configurations", []):
            assert configuration["imageType"] in ("ECS_AL2023", "ECS_AL2023_NVIDIA")


def test_launch_template_values_are_valid_ec2_enums(minimal: OfflineRun) -> None:
    ec2 = botocore.session.get_session().get_service_model("ec2")
    template = minimal.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert template["metadataOptions"]["httpTokens"] in ec2.shape_for("LaunchTemplateHttpTokensState").enum
    assert template["blockDeviceMappings"][0]["ebs"]["volumeType"] in ec2.shape_for("VolumeType").enum
