"""GPU, Inferentia/Trainium and multi-node (@parallel) queues: what each switch declares, what it refuses,
that AWS's models accept it, that metaflow's own Batch client can use each queue, and that none bills idle."""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import botocore.session
import pulumi
import pytest
from botocore.stub import Stubber
from conftest import TODAY, offline, stack_config

from metaflow_infra.compute import NEURON_AMI_PARAMETER
from metaflow_infra.costs import BILLED_WHILE_IDLE, estimate_monthly_cost
from metaflow_infra.offline import DeclaredResource, OfflineRun, SubnetFixture
from metaflow_infra.settings import ConfigError, load_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # metaflow's vendored yaml imports PyYAML's old `_yaml`
    from metaflow.plugins.aws.batch.batch_client import BatchJob, BatchJobException

ENVIRONMENT = "aws:batch/computeEnvironment:ComputeEnvironment"
QUEUE = "aws:batch/jobQueue:JobQueue"
PLACEMENT_GROUP = "aws:ec2/placementGroup:PlacementGroup"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"

ALL_ON = {
    "compute:gpu": True,
    "compute:neuronInstanceTypes": ["inf2", "trn1"],
    "compute:multiNode": True,
    "compute:onDemandFallback": True,
}
QUEUE_OUTPUTS = ("jobQueueArn", "gpuJobQueue", "neuronJobQueue", "multiNodeJobQueue")
VPC = "vpc-0123456789abcdef0"


def subnets_behind(target: str) -> dict[str, SubnetFixture]:
    return {
        "subnet-0123456789abcdef0": SubnetFixture(VPC, "us-east-1b", "use1-az1", default_route_target=target),
        "subnet-0123456789abcdef1": SubnetFixture(VPC, "us-east-1c", "use1-az2", default_route_target=target),
    }


NAT_SUBNETS = subnets_behind("nat-0123456789abcdef0")
EXISTING_NETWORK = {"network:vpcId": VPC, "network:subnetIds": list(NAT_SUBNETS)}


@pytest.fixture(scope="module")
def spot() -> OfflineRun:
    """Every switch on, spot with the on-demand fallback, tagged."""
    return offline("minimal", {**ALL_ON, "metaflow:tags": {"team": "ds"}})


@pytest.fixture(scope="module")
def fargate_spot() -> OfflineRun:
    return offline("minimal", {**ALL_ON, "compute:type": "fargate_spot"})


@pytest.fixture(scope="module")
def on_demand() -> OfflineRun:
    return offline("minimal", {"compute:type": "ec2", "compute:gpu": True, "compute:neuronInstanceTypes": ["inf2"]})


@pytest.fixture(scope="module")
def behind_nat() -> OfflineRun:
    """The dev preset (metadata service) with multi-node jobs in the user's subnets behind NAT."""
    return offline("dev", {**EXISTING_NETWORK, "compute:multiNode": True}, subnets=NAT_SUBNETS)


def queue_environments(run: OfflineRun, output: str) -> list[DeclaredResource]:
    """The environments of the queue behind a stack output, in the order Batch tries them."""
    [queue] = [q for q in run.of_type(QUEUE) if q.state["arn"] == run.outputs[output]]
    by_arn = {e.state["arn"]: e for e in run.of_type(ENVIRONMENT)}
    orders = sorted(queue.inputs["computeEnvironmentOrders"], key=lambda o: o["order"])
    return [by_arn[o["computeEnvironment"]] for o in orders]


def batch_types(run: OfflineRun, output: str) -> list[str]:
    return [e.inputs["computeResources"]["type"] for e in queue_environments(run, output)]


def error_for(overrides: dict[str, Any], preset: str = "minimal", region: str = "us-east-1") -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(stack_config(preset, overrides, region), stack="dev", today=TODAY)
    return str(raised.value)


# --- Queues and their environments ------------------------------------------------------------------------------


def test_accelerators_are_off_by_default(minimal: OfflineRun) -> None:
    assert [r.name for r in minimal.of_type(QUEUE)] == ["metaflow-queue"]
    assert not minimal.of_type(PLACEMENT_GROUP) and not minimal.of_type(ENDPOINT)
    assert not {"gpuJobQueue", "neuronJobQueue", "multiNodeJobQueue"} & set(minimal.outputs)


@pytest.mark.parametrize(
    "output, expected",
    [
        ("jobQueueArn", ["SPOT", "EC2"]),
        ("gpuJobQueue", ["SPOT", "EC2"]),
        ("neuronJobQueue", ["SPOT", "EC2"]),
        ("multiNodeJobQueue", ["EC2"]),
    ],
)
def test_each_queue_tries_spot_then_its_on_demand_fallback_except_multi_node(
    spot: OfflineRun, output: str, expected: list[str]
) -> None:
    assert batch_types(spot, output) == expected


@pytest.mark.parametrize(
    "output, expected",
    [
        ("jobQueueArn", ["FARGATE_SPOT", "FARGATE"]),
        ("gpuJobQueue", ["SPOT", "EC2"]),
        ("neuronJobQueue", ["SPOT", "EC2"]),
        ("multiNodeJobQueue", ["EC2"]),
    ],
)
def test_a_fargate_stack_runs_its_accelerators_and_multi_node_jobs_on_instances(
    fargate_spot: OfflineRun, output: str, expected: list[str]
) -> None:
    """Fargate has no GPUs, no Neuron devices and no multi-node jobs: those queues run on instances."""
    assert batch_types(fargate_spot, output) == expected


def test_an_on_demand_stack_buys_its_accelerators_on_demand(on_demand: OfflineRun) -> None:
    assert batch_types(on_demand, "gpuJobQueue") == batch_types(on_demand, "neuronJobQueue") == ["EC2"]
    for environment in on_demand.of_type(ENVIRONMENT):
        assert environment.inputs["computeResources"]["allocationStrategy"] == "BEST_FIT_PROGRESSIVE"


def test_every_queue_is_a_stack_output_of_its_own(spot: OfflineRun) -> None:
    arns = [spot.outputs[name] for name in QUEUE_OUTPUTS]
    assert sorted(arns) == sorted(q.state["arn"] for q in spot.of_type(QUEUE))
    assert spot.outputs["metaflowProfile"]["METAFLOW_BATCH_JOB_QUEUE"] == spot.outputs["jobQueueArn"]


def test_gpu_environments_run_the_nvidia_image_on_the_gpu_families(spot: OfflineRun) -> None:
    for environment in queue_environments(spot, "gpuJobQueue"):
        resources = environment.inputs["computeResources"]
        assert resources["ec2Configurations"] == [{"imageType": "ECS_AL2023_NVIDIA"}]
        assert resources["instanceTypes"] == ["g4dn", "g5"] and resources["maxVcpus"] == 16


def test_neuron_environments_run_the_ecs_neuron_ami_read_from_its_public_parameter(spot: OfflineRun) -> None:
    assert NEURON_AMI_PARAMETER == "/aws/service/ecs/optimized-ami/amazon-linux-2023/neuron/recommended/image_id"
    for environment in queue_environments(spot, "neuronJobQueue"):
        resources = environment.inputs["computeResources"]
        [image] = resources["ec2Configurations"]
        assert image["imageType"] == "ECS_AL2023" and re.fullmatch(r"ami-[0-9a-f]{17}", image["imageIdOverride"])
        assert resources["instanceTypes"] == ["inf2", "trn1"]


@pytest.mark.parametrize("run_name", ["spot", "fargate_spot", "on_demand", "behind_nat"])
def test_no_environment_keeps_anything_running(run_name: str, request: pytest.FixtureRequest) -> None:
    run: OfflineRun = request.getfixturevalue(run_name)
    for environment in run.of_type(ENVIRONMENT):
        resources = environment.inputs["computeResources"]
        assert resources.get("minVcpus", 0) == 0 and "desiredVcpus" not in resources
        if "minVcpus" in resources:
            assert environment.ignore_changes == ["computeResources.desiredVcpus"]


@pytest.mark.parametrize("run_name, count", [("spot", 7), ("fargate_spot", 5)])
def test_every_instance_environment_shares_one_profile_and_one_launch_template(
    run_name: str, count: int, request: pytest.FixtureRequest
) -> None:
    """The IMDS rule, the encrypted root volume and the stack's tags reach every instance, GPU, Neuron and
    multi-node ones included, from the one template."""
    run: OfflineRun = request.getfixturevalue(run_name)
    template, profile = run.one(TEMPLATE), run.one(PROFILE)
    on_instances = [e for e in run.of_type(ENVIRONMENT) if "instanceRole" in e.inputs["computeResources"]]
    assert len(on_instances) == count  # CPU (unless Fargate), GPU and Neuron with their fallbacks, multi-node
    for environment in on_instances:
        resources = environment.inputs["computeResources"]
        assert resources["launchTemplate"] == {"launchTemplateId": f"{template.state['name']}-id", "version": "1"}
        assert resources["instanceRole"] == profile.state["arn"]
        assert "tags" not in resources


def test_instances_of_every_environment_carry_the_stack_tags(spot: OfflineRun) -> None:
    specifications = spot.one(TEMPLATE).inputs["tagSpecifications"]
    assert {s["resourceType"]: s["tags"] for s in specifications} == {
        "instance": {"team": "ds", "metaflow:stack": "dev"},
        "volume": {"team": "ds", "metaflow:stack": "dev"},
    }


def test_the_user_policy_lets_people_submit_to_every_queue(spot: OfflineRun) -> None:
    [policy] = [p for p in spot.of_type("aws:iam/policy:Policy") if p.name == "metaflow-user"]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    [submit] = [s for s in statements if "batch:SubmitJob" in s["Action"]]
    assert {spot.outputs[name] for name in QUEUE_OUTPUTS} <= set(submit["Resource"])


# --- Multi-node -------------------------------------------------------------------------------------------------


def multi_node_environment(run: OfflineRun) -> dict[str, Any]:
    [environment] = queue_environments(run, "multiNodeJobQueue")
    return environment.inputs["computeResources"]


def test_multi_node_runs_on_demand_in_a_cluster_placement_group_in_one_subnet(spot: OfflineRun) -> None:
    resources = multi_node_environment(spot)
    group = spot.one(PLACEMENT_GROUP)
    assert group.inputs["strategy"] == "cluster"
    assert resources["placementGroup"] == group.state["name"]
    assert resources["type"] == "EC2" and resources["allocationStrategy"] == "BEST_FIT_PROGRESSIVE"
    assert resources["minVcpus"] == 0 and resources["maxVcpus"] == 64
    subnets = {f"{s.state['name']}-id" for s in spot.of_type("aws:ec2/subnet:Subnet")}
    assert len(resources["subnets"]) == 1 and set(resources["subnets"]) <= subnets
    assert resources["ec2Configurations"] == [{"imageType": "ECS_AL2023"}]


def test_multi_node_nodes_reach_each_other_on_every_port_and_nothing_else_gets_in(spot: OfflineRun) -> None:
    groups = {f"{g.state['name']}-id": g.name for g in spot.of_type(SECURITY_GROUP)}
    resources = multi_node_environment(spot)
    assert [groups[g] for g in resources["securityGroupIds"]] == ["metaflow-batch", "metaflow-batch-multinode"]
    nodes = resources["securityGroupIds"][1]
    for rule_type in (INGRESS, EGRESS):
        [rule] = [r for r in spot.of_type(rule_type) if r.inputs["securityGroupId"] == nodes]
        assert rule.inputs["referencedSecurityGroupId"] == nodes and rule.inputs["ipProtocol"] == "-1"
        assert "cidrIpv4" not in rule.inputs and "cidrIpv6" not in rule.inputs
    # The single-node environments keep the Batch group only, which admits nothing.
    for environment in spot.of_type(ENVIRONMENT):
        if environment.inputs["computeResources"] is not resources:
            assert [groups[g] for g in environment.inputs["computeResources"]["securityGroupIds"]] == ["metaflow-batch"]
    batch = resources["securityGroupIds"][0]
    assert not [r for r in spot.of_type(INGRESS) if r.inputs["securityGroupId"] == batch]


def test_multi_node_containers_reach_s3_through_a_free_gateway_endpoint(spot: OfflineRun) -> None:
    """Their own network interfaces get no public IP (awsvpc on EC2): S3 comes through the route table."""
    endpoint = spot.one(ENDPOINT).inputs
    assert endpoint["vpcEndpointType"] == "Gateway" and endpoint["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert endpoint["routeTableIds"] == [f"{spot.one('aws:ec2/routeTable:RouteTable').state['name']}-id"]
    assert endpoint["vpcId"] == f"{spot.one('aws:ec2/vpc:Vpc').state['name']}-id"


def test_multi_node_in_subnets_behind_nat_works_with_the_metadata_service(behind_nat: OfflineRun) -> None:
    resources = multi_node_environment(behind_nat)
    assert resources["subnets"] == ["subnet-0123456789abcdef0"]
    assert not behind_nat.of_type(ENDPOINT), "the user's VPC and routes are left alone"
    assert behind_nat.settings.metadata.enabled and "serviceUrl" in behind_nat.outputs


def test_multi_node_refuses_subnets_whose_containers_would_have_no_way_out() -> None:
    public = subnets_behind("igw-0123456789abcdef0")
    with pytest.raises(pulumi.RunError, match="compute:multiNode = true needs network:subnetIds behind a NAT"):
        offline(
            "minimal",
            {"network:vpcId": VPC, "network:subnetIds": list(public), "compute:multiNode": True},
            subnets=public,
        )


def test_multi_node_with_gpu_families_gets_the_nvidia_image_for_them() -> None:
    run = offline("minimal", {"compute:multiNode": True, "compute:multiNodeInstanceTypes": ["c6i", "g5"]})
    assert multi_node_environment(run)["ec2Configurations"] == [
        {"imageType": "ECS_AL2023"},
        {"imageType": "ECS_AL2023_NVIDIA"},
    ]


# --- Refused configurations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, preset, region, expected",
    [
        (
            {"compute:gpu": True, "compute:gpuInstanceTypes": ["g5", "c6i"]},
            "minimal",
            "us-east-1",
            "compute:gpuInstanceTypes: 'c6i' is a CPU family and this list takes GPU families",
        ),
        (
            {"compute:gpu": True, "compute:gpuInstanceTypes": ["optimal"]},
            "minimal",
            "us-east-1",
            "compute:gpuInstanceTypes: 'optimal' lets Batch pick CPU instances",
        ),
        (
            {"compute:gpu": True, "compute:gpuInstanceTypes": ["g6e"]},
            "minimal",
            "eu-west-1",
            "compute:gpuInstanceTypes: g6e is not offered in eu-west-1; GPU families offered there: g4dn, g5, p4d",
        ),
        (
            {"compute:instanceTypes": ["c6i", "g5.xlarge"]},
            "minimal",
            "us-east-1",
            "'g5.xlarge' is a GPU family and this list takes CPU families (c5, m5, r5, c6i, m6i, r6i, c7i, m7i, r7i); "
            "GPU families go in compute:gpuInstanceTypes",
        ),
        (
            {"compute:instanceTypes": ["inf2"]},
            "minimal",
            "us-east-1",
            "'inf2' is an Inferentia/Trainium family and this list takes CPU families",
        ),
        (
            {"compute:neuronInstanceTypes": ["trn1"]},
            "minimal",
            "eu-west-1",
            "compute:neuronInstanceTypes: trn1 is not offered in eu-west-1; Inferentia/Trainium families offered "
            "there: inf2",
        ),
        (
            {"compute:neuronInstanceTypes": ["inf2", "g5"]},
            "minimal",
            "us-east-1",
            "compute:neuronInstanceTypes: 'g5' is a GPU family",
        ),
        (
            {"compute:neuronInstanceTypes": ["inf1"]},
            "minimal",
            "us-east-1",
            "compute:neuronInstanceTypes: 'inf1' is not a known instance type; accepted: an Inferentia/Trainium "
            "family (inf2, trn1, trn1n)",
        ),
        (
            {"compute:multiNode": True, "compute:multiNodeInstanceTypes": ["c6i", "trn1"]},
            "minimal",
            "us-east-1",
            "compute:multiNodeInstanceTypes: 'trn1' is an Inferentia/Trainium family and this list takes CPU or GPU",
        ),
        (
            {"compute:gpu": True},
            "minimal",
            "sa-east-1",
            "compute:gpu = true: none of the default GPU families (g4dn, g5) is known to be offered in sa-east-1",
        ),
        (
            {"compute:gpuInstanceTypes": ["g5"]},
            "minimal",
            "us-east-1",
            "compute:gpuInstanceTypes has no effect while compute:gpu is false",
        ),
        (
            {"compute:gpuMaxVcpus": 64},
            "minimal",
            "us-east-1",
            "compute:gpuMaxVcpus has no effect while compute:gpu is false",
        ),
        (
            {"compute:neuronMaxVcpus": 64},
            "minimal",
            "us-east-1",
            "compute:neuronMaxVcpus has no effect while compute:neuronInstanceTypes is empty",
        ),
        (
            {"compute:multiNodeMaxVcpus": 128},
            "minimal",
            "us-east-1",
            "compute:multiNodeMaxVcpus has no effect while compute:multiNode is false",
        ),
        (
            {"compute:multiNode": True},
            "dev",
            "us-east-1",
            "compute:multiNode = true cannot reach the metadata service from this stack's public subnets",
        ),
        (
            {"compute:gpu": True, "compute:gpuMaxVcpus": 0},
            "minimal",
            "us-east-1",
            "compute:gpuMaxVcpus = '0'",
        ),
    ],
)
def test_bad_accelerator_config_is_refused_by_name(
    overrides: dict[str, Any], preset: str, region: str, expected: str
) -> None:
    assert expected in error_for(overrides, preset, region)


def test_the_default_gpu_families_are_cut_to_those_the_region_offers() -> None:
    settings = load_settings(stack_config("minimal", {"compute:gpu": True}, "ap-southeast-1"), "dev", today=TODAY)
    assert settings.compute.gpu_instance_types == ["g4dn"]


# --- AWS's models and metaflow's Batch client judge what is declared ---------------------------------------------


@functools.cache
def botocore_session() -> botocore.session.Session:
    """One session for the module's models and clients: each new session loads them again from disk."""
    return botocore.session.get_session()


@pytest.fixture(scope="module")
def batch_model():  # type: ignore[no-untyped-def]
    return botocore_session().get_service_model("batch")


def ecs_image_types(batch_model) -> set[str]:  # type: ignore[no-untyped-def]
    """The ECS image types botocore's Batch model documents (imageType is a plain string there)."""
    doc = batch_model.shape_for("Ec2Configuration").members["imageType"].documentation
    ecs = doc[doc.index("<dt>ECS</dt>") : doc.index("<dt>EKS</dt>")]
    return set(re.findall(r"<dt>(ECS_[A-Z0-9_]+)</dt>", ecs))


@pytest.mark.parametrize("run_name", ["spot", "fargate_spot", "on_demand", "behind_nat"])
def test_declared_batch_and_ec2_values_are_valid_aws_enums(
    run_name: str,
    request: pytest.FixtureRequest,
    batch_model,  # type: ignore[no-untyped-def]
) -> None:
    run: OfflineRun = request.getfixturevalue(run_name)
    ec2 = botocore_session().get_service_model("ec2")
    assert {"ECS_AL2023", "ECS_AL2023_NVIDIA"} <= ecs_image_types(batch_model)
    for environment in run.of_type(ENVIRONMENT):
        resources = environment.inputs["computeResources"]
        assert environment.inputs["type"] in batch_model.shape_for("CEType").enum
        assert resources["type"] in batch_model.shape_for("CRType").enum
        if "allocationStrategy" in resources:
            assert resources["allocationStrategy"] in batch_model.shape_for("CRAllocationStrategy").enum
        for configuration in resources.get("ec2Configurations", []):
            assert configuration["imageType"] in ecs_image_types(batch_model)
            assert not configuration["imageType"].startswith("ECS_AL2_"), "Batch blocks new AL2 environments"
    for group in run.of_type(PLACEMENT_GROUP):
        assert group.inputs["strategy"] in ec2.shape_for("PlacementStrategy").enum
    for endpoint in run.of_type(ENDPOINT):
        assert endpoint.inputs["vpcEndpointType"] in ec2.shape_for("VpcEndpointType").enum


def stubbed_batch(run: OfflineRun) -> Iterator[tuple[Any, Stubber, list[dict[str, Any]]]]:
    client = botocore_session().create_client(
        "batch", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    registered: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.batch.RegisterJobDefinition", lambda params, **_: registered.append(params)
    )
    with Stubber(client) as stubber:
        yield client, stubber, registered


def register_like_metaflow(run: OfflineRun, output: str, **step: Any) -> dict[str, Any]:
    """What metaflow registers for a step sent to this queue: it reads the queue's first environment's type
    (`batch_client.py` `_register_job_definition`) and builds the job definition for that platform. The
    stubbed client checks every request against botocore's Batch model."""
    queue_arn = run.outputs[output]
    [first, *_] = queue_environments(run, output)
    resources = first.inputs["computeResources"]
    for client, stubber, registered in stubbed_batch(run):
        stubber.add_response(
            "describe_job_queues",
            {
                "jobQueues": [
                    {
                        "jobQueueName": queue_arn.rsplit("/", 1)[1],
                        "jobQueueArn": queue_arn,
                        "state": "ENABLED",
                        "priority": 1,
                        "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": first.state["arn"]}],
                    }
                ]
            },
            {"jobQueues": [queue_arn]},
        )
        stubber.add_response(
            "describe_compute_environments",
            {
                "computeEnvironments": [
                    {
                        "computeEnvironmentName": first.state["name"],
                        "computeEnvironmentArn": first.state["arn"],
                        "computeResources": {"type": resources["type"], "maxvCpus": int(resources["maxVcpus"])},
                    }
                ]
            },
            {"computeEnvironments": [first.state["arn"]]},
        )
        stubber.add_response("describe_job_definitions", {"jobDefinitions": []})
        stubber.add_response(
            "register_job_definition", {"jobDefinitionName": "metaflow_x", "jobDefinitionArn": "arn:x", "revision": 1}
        )
        defaults = {
            "image": "python:3.11",
            "job_role": "arn:aws:iam::123456789012:role/metaflow-batch-task",
            "job_queue": queue_arn,
            "execution_role": run.outputs["metaflowProfile"].get("METAFLOW_ECS_FARGATE_EXECUTION_ROLE"),
            "shared_memory": None,
            "max_swap": None,
            "swappiness": None,
            "inferentia": None,
            "efa": None,
            "memory": 4096,
            "host_volumes": None,
            "efs_volumes": None,
            "use_tmpfs": False,
            "tmpfs_tempdir": True,
            "tmpfs_size": None,
            "tmpfs_path": "/metaflow_temp",
            "num_parallel": 0,
            "ephemeral_storage": None,
            "log_driver": None,
            "log_options": None,
            "privileged": False,
        }
        BatchJob(client)._register_job_definition(**{**defaults, **step})
        stubber.assert_no_pending_responses()
        [definition] = registered
        return definition
    raise AssertionError("unreachable")


@pytest.mark.parametrize("run_name", ["spot", "fargate_spot"])
def test_metaflow_registers_an_instance_job_for_a_gpu_step(run_name: str, request: pytest.FixtureRequest) -> None:
    """`@batch(gpu=1, queue=<gpuJobQueue>)`: an EC2 job definition even on a Fargate stack."""
    definition = register_like_metaflow(request.getfixturevalue(run_name), "gpuJobQueue")
    assert definition["type"] == "container" and "platformCapabilities" not in definition


def test_metaflow_maps_the_neuron_devices_of_an_inferentia_step(spot: OfflineRun) -> None:
    """`@batch(inferentia=2, queue=<neuronJobQueue>)`: the devices the Neuron AMI exposes, in the container."""
    definition = register_like_metaflow(spot, "neuronJobQueue", inferentia=2)
    devices = definition["containerProperties"]["linuxParameters"]["devices"]
    assert [d["hostPath"] for d in devices] == ["/dev/neuron0", "/dev/neuron1"]


@pytest.mark.parametrize("run_name", ["spot", "fargate_spot", "behind_nat"])
def test_metaflow_registers_a_multinode_job_for_a_parallel_step(run_name: str, request: pytest.FixtureRequest) -> None:
    """`@parallel` with `num_parallel=3` on the multi-node queue: one multinode job definition, three nodes."""
    definition = register_like_metaflow(request.getfixturevalue(run_name), "multiNodeJobQueue", num_parallel=3)
    assert definition["type"] == "multinode"
    assert definition["nodeProperties"]["numNodes"] == 3 and definition["nodeProperties"]["mainNode"] == 0


def test_metaflow_itself_refuses_a_parallel_step_on_a_fargate_queue(fargate_spot: OfflineRun) -> None:
    """Why the multi-node queue is on instances whatever compute:type says."""
    with pytest.raises(BatchJobException, match="Fargate does not support multinode jobs"):
        register_like_metaflow(fargate_spot, "jobQueueArn", num_parallel=2)


# --- Cost: every switch bills nothing while idle ------------------------------------------------------------------


def bills_while_idle(resource: DeclaredResource) -> bool:
    if resource.type not in BILLED_WHILE_IDLE:
        return False
    if resource.type == ENVIRONMENT:
        return resource.inputs["computeResources"].get("minVcpus", 0) > 0
    if resource.type == ENDPOINT:
        return resource.inputs["vpcEndpointType"] != "Gateway"  # S3 gateway endpoints are free
    return True


@pytest.mark.parametrize("run_name", ["spot", "fargate_spot", "on_demand"])
def test_each_switch_costs_nothing_while_idle(run_name: str, request: pytest.FixtureRequest) -> None:
    run: OfflineRun = request.getfixturevalue(run_name)
    assert [r.name for r in run.resources if bills_while_idle(r)] == []
    assert estimate_monthly_cost(run.settings, today=TODAY).lines == []
