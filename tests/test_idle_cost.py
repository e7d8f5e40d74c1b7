"""The minimal preset bills nothing while no job runs."""

from __future__ import annotations

from metaflow_infra.offline import OfflineRun

ALWAYS_ON_TYPES = {
    "aws:ec2/natGateway:NatGateway",
    "aws:ec2/eip:Eip",
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:alb/loadBalancer:LoadBalancer",
    "aws:rds/instance:Instance",
    "aws:rds/cluster:Cluster",
    "aws:ecs/service:Service",
    "aws:ec2/instance:Instance",
    "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:kms/key:Key",
    "aws:secretsmanager/secret:Secret",
    "aws:route53/zone:Zone",
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace",
}


def test_minimal_declares_nothing_that_bills_while_idle(minimal: OfflineRun) -> None:
    assert [r.type for r in minimal.resources if r.type in ALWAYS_ON_TYPES] == []


def test_minimal_keeps_no_vcpus_running(minimal: OfflineRun) -> None:
    for environment in minimal.of_type("aws:batch/computeEnvironment:ComputeEnvironment"):
        resources = environment.inputs["computeResources"]
        assert resources.get("minVcpus", 0) == 0 and resources.get("desiredVcpus", 0) == 0
