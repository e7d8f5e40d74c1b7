"""Compute: Batch environments of the configured type, scaled to zero, IMDSv2, least-privilege roles."""

from __future__ import annotations

import base64
import email
import json
import re
import shlex
import subprocess

import botocore.session
import pytest
from conftest import offline, policy_of

from metaflow_infra.compute import instance_user_data
from metaflow_infra.offline import ACCOUNT_ID, OfflineRun

ENVIRONMENT = "aws:batch/computeEnvironment:ComputeEnvironment"
QUEUE = "aws:batch/jobQueue:JobQueue"
ROLE = "aws:iam/role:Role"


def role(run: OfflineRun, name: str) -> dict:
    [found] = [r for r in run.of_type(ROLE) if r.name.endswith(name)]
    return found.state


def attachments(run: OfflineRun, role_name: str) -> list[str]:
    return [
        a.inputs["policyArn"]
        for a in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == role_name
    ]


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
        "Service": "ecs-tasks.amazonaws.com"
    }
    assert attachments(run, execution["name"]) == [
        "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
    ]
    assert run.outputs["metaflowProfile"]["METAFLOW_ECS_FARGATE_EXECUTION_ROLE"] == execution["arn"]


def test_spot_with_fallback_queues_on_demand_behind_spot() -> None:
    run = offline("minimal", {"compute:onDemandFallback": True, "compute:gpu": True})
    environments = {e.state["arn"]: e.inputs["computeResources"]["type"] for e in run.of_type(ENVIRONMENT)}
    for queue in run.of_type(QUEUE):  # the CPU queue and the GPU queue alike
        orders = sorted(queue.inputs["computeEnvironmentOrders"], key=lambda o: o["order"])
        assert [environments[o["computeEnvironment"]] for o in orders] == ["SPOT", "EC2"]
    assert len(run.of_type(QUEUE)) == 2


def test_kept_running_vcpus_belong_to_the_first_environment_only() -> None:
    run = offline("minimal", {"compute:onDemandFallback": True, "compute:minVcpus": 4, "compute:gpu": True})
    minimums = {e.name: e.inputs["computeResources"]["minVcpus"] for e in run.of_type(ENVIRONMENT)}
    assert minimums == {"metaflow-spot": 4, "metaflow-ec2": 0, "metaflow-gpu-spot": 0, "metaflow-gpu-ec2": 0}


def test_queue_is_enabled_and_tries_the_environment(minimal: OfflineRun) -> None:
    queue = minimal.one(QUEUE).inputs
    environment = minimal.one(ENVIRONMENT)
    assert queue["state"] == "ENABLED"
    assert queue["computeEnvironmentOrders"] == [{"order": 1, "computeEnvironment": environment.state["arn"]}]


def test_launch_template_requires_imdsv2_and_encrypts_the_root_volume(minimal: OfflineRun) -> None:
    template = minimal.one("aws:ec2/launchTemplate:LaunchTemplate")
    metadata = template.inputs["metadataOptions"]
    assert metadata["httpTokens"] == "required" and metadata["httpEndpoint"] == "enabled"
    [root] = template.inputs["blockDeviceMappings"]
    assert root["ebs"]["encrypted"] == "true" and root["ebs"]["volumeType"] == "gp3"
    environment = minimal.one(ENVIRONMENT).inputs["computeResources"]["launchTemplate"]
    assert environment == {"launchTemplateId": f"{template.state['name']}-id", "version": "1"}


def test_an_imdsv2_token_cannot_reach_a_container(minimal: OfflineRun) -> None:
    """Second layer behind the REJECT rule: the token's response dies one hop out, and no IPv6 path."""
    metadata = minimal.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["metadataOptions"]
    assert metadata["httpPutResponseHopLimit"] == 1
    assert metadata["httpProtocolIpv6"] == "disabled"


def user_data_parts(run: OfflineRun) -> list[email.message.Message]:
    encoded = run.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["userData"]
    archive = email.message_from_bytes(base64.b64decode(encoded, validate=True))
    assert archive.is_multipart() and archive.get_content_type() == "multipart/mixed"
    assert archive["MIME-Version"] == "1.0"
    return [part for part in archive.get_payload() if isinstance(part, email.message.Message)]


def boothook_commands(run: OfflineRun) -> list[list[str]]:
    [boothook] = user_data_parts(run)
    assert boothook.get_content_type() == "text/cloud-boothook"
    script = boothook.get_payload(decode=True).decode("ascii")
    assert script.startswith("#cloud-boothook\n#!/bin/bash\n")
    joined = script.replace("\\\n", " ")
    return [
        [word for word in shlex.split(command) if word != "2>/dev/null"]
        for line in joined.splitlines()
        if not line.startswith("#")
        for command in line.split("||")
    ]


def test_instance_user_data_is_a_mime_multipart_archive_batch_can_merge_into(minimal: OfflineRun) -> None:
    [part] = user_data_parts(minimal)
    assert part.get_content_charset() == "us-ascii"
    assert base64.b64decode(minimal.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["userData"]).decode() == (
        instance_user_data()
    )


def test_the_boothook_is_valid_bash(minimal: OfflineRun) -> None:
    [boothook] = user_data_parts(minimal)
    script = boothook.get_payload(decode=True).decode("ascii").removeprefix("#cloud-boothook\n")
    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_containers_are_refused_the_instance_metadata_service(minimal: OfflineRun) -> None:
    inserts = [c for c in boothook_commands(minimal) if c[:4] == ["iptables", "--wait", "--insert", "DOCKER-USER"]]
    [rule] = inserts
    assert rule[4] == "1", "the rule must come before anything else in DOCKER-USER"
    options = dict(zip(rule[5::2], rule[6::2], strict=True))
    assert options["--destination"] == "169.254.169.254/32"
    assert options["--jump"] == "REJECT", "DROP would make each IMDS probe of a task wait for its timeout"
    assert options["--protocol"] == "tcp" and options["--reject-with"] == "tcp-reset"
    assert "--in-interface" not in options, "DOCKER-USER sees forwarded traffic only: every container network"


def test_the_task_credentials_endpoint_stays_reachable(minimal: OfflineRun) -> None:
    """Tasks get their own role from 169.254.170.2; nothing in the user data may touch it."""
    commands = boothook_commands(minimal)
    assert all("169.254.170.2" not in " ".join(command) for command in commands)
    rejected = [c[c.index("--destination") + 1] for c in commands if "--destination" in c]
    assert set(rejected) == {"169.254.169.254/32"}


def test_the_metadata_rule_is_added_once_even_when_docker_made_the_chain_first(minimal: OfflineRun) -> None:
    commands = boothook_commands(minimal)
    check = next(c for c in commands if "--check" in c)
    insert = next(c for c in commands if "--insert" in c)
    assert check[check.index("DOCKER-USER") + 1 :] == insert[insert.index("DOCKER-USER") + 2 :]
    assert ["iptables", "--wait", "--new-chain", "DOCKER-USER"] in commands


def test_awsvpc_tasks_are_refused_the_instance_metadata_service_by_the_agent(minimal: OfflineRun) -> None:
    commands = boothook_commands(minimal)
    appended = [c for c in commands if c[:1] == ["echo"]]
    assert appended == [["echo", "ECS_AWSVPC_BLOCK_IMDS=true", ">>", "/etc/ecs/ecs.config"]]


def test_instances_and_their_volumes_carry_the_stack_tags() -> None:
    run = offline("minimal", {"metaflow:tags": {"team": "ds"}})
    specifications = run.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["tagSpecifications"]
    assert {s["resourceType"]: s["tags"] for s in specifications} == {
        "instance": {"team": "ds", "metaflow:stack": "dev"},
        "volume": {"team": "ds", "metaflow:stack": "dev"},
    }
    # Not through the environments' compute resources: a launch template version updates them in place.
    assert all("tags" not in e.inputs["computeResources"] for e in run.of_type(ENVIRONMENT))


def test_instances_get_the_ecs_instance_role_through_a_profile(minimal: OfflineRun) -> None:
    instance = role(minimal, "batch-instance")
    assert policy_of(instance, "assumeRolePolicy")["Statement"][0] == {
        "Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    assert attachments(minimal, instance["name"]) == [
        "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
    ]
    profile = minimal.one("aws:iam/instanceProfile:InstanceProfile")
    assert profile.inputs["role"] == instance["name"]
    assert minimal.one(ENVIRONMENT).inputs["computeResources"]["instanceRole"] == profile.state["arn"]


@pytest.mark.parametrize("kind", ["spot", "fargate"])
def test_batch_uses_its_service_linked_role_so_environments_update_in_place(kind: str) -> None:
    run = offline("minimal", {"compute:type": kind})
    assert "serviceRole" not in run.one(ENVIRONMENT).inputs
    trusted = [
        json.loads(r.inputs["assumeRolePolicy"])["Statement"][0]["Principal"]["Service"] for r in run.of_type(ROLE)
    ]
    assert "batch.amazonaws.com" not in trusted


def test_task_role_is_trusted_by_ecs_tasks_for_this_account_only(minimal: OfflineRun) -> None:
    assert policy_of(role(minimal, "batch-task"), "assumeRolePolicy")["Statement"][0] == {
        "Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}},
    }


def test_task_role_can_read_write_and_list_this_bucket_and_delete_nothing(minimal: OfflineRun) -> None:
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
        ("s3:AbortMultipartUpload", f"{bucket_arn}/*"),
    }
    assert all(s["Effect"] == "Allow" for s in statements)
    assert not attachments(minimal, task["name"])


@pytest.fixture(scope="module")
def batch_model():  # type: ignore[no-untyped-def]
    return botocore.session.get_session().get_service_model("batch")


def documented_ecs_image_types(batch_model) -> set[str]:  # type: ignore[no-untyped-def]
    """imageType is a plain string in botocore's Batch model; its documentation lists the ECS values."""
    doc = batch_model.shape_for("Ec2Configuration").members["imageType"].documentation
    return set(re.findall(r"<dt>(ECS_[A-Z0-9_]+)</dt>", doc))


@pytest.mark.parametrize("kind", ["spot", "ec2", "fargate", "fargate_spot"])
def test_declared_batch_values_are_valid_aws_enums(kind: str, batch_model) -> None:  # type: ignore[no-untyped-def]
    fallback = {"compute:onDemandFallback": True} if kind in ("spot", "fargate_spot") else {}
    accelerators = {"compute:gpu": True, "compute:neuronInstanceTypes": ["inf2"], "compute:multiNode": True}
    for environment in offline("minimal", {"compute:type": kind, **fallback, **accelerators}).of_type(ENVIRONMENT):
        resources = environment.inputs["computeResources"]
        assert environment.inputs["type"] in batch_model.shape_for("CEType").enum
        assert resources["type"] in batch_model.shape_for("CRType").enum
        if "allocationStrategy" in resources:
            assert resources["allocationStrategy"] in batch_model.shape_for("CRAllocationStrategy").enum
        for configuration in resources.get("ec2Configurations", []):
            assert configuration["imageType"] in documented_ecs_image_types(batch_model)
            assert configuration["imageType"] in ("ECS_AL2023", "ECS_AL2023_NVIDIA"), "no AL2: Batch blocks it"


def test_launch_template_values_are_valid_ec2_enums(minimal: OfflineRun) -> None:
    ec2 = botocore.session.get_session().get_service_model("ec2")
    template = minimal.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert template["metadataOptions"]["httpTokens"] in ec2.shape_for("LaunchTemplateHttpTokensState").enum
    assert (
        template["metadataOptions"]["httpProtocolIpv6"]
        in ec2.shape_for("LaunchTemplateInstanceMetadataProtocolIpv6").enum
    )
    for specification in template["tagSpecifications"]:
        assert specification["resourceType"] in ec2.shape_for("ResourceType").enum
    assert template["blockDeviceMappings"][0]["ebs"]["volumeType"] in ec2.shape_for("VolumeType").enum
