"""The minimal preset bills nothing while no job runs."""

from __future__ import annotations

from collections import Counter

from conftest import offline

from metaflow_infra.costs import BILLED_WHILE_IDLE
from metaflow_infra.offline import OfflineRun


def test_minimal_declares_nothing_that_bills_while_idle(minimal: OfflineRun) -> None:
    billed = [r for r in minimal.resources if r.type in BILLED_WHILE_IDLE]
    assert [r.type for r in billed if r.type != "aws:batch/computeEnvironment:ComputeEnvironment"] == []


def test_minimal_keeps_no_vcpus_running(minimal: OfflineRun) -> None:
    for environment in minimal.of_type("aws:batch/computeEnvironment:ComputeEnvironment"):
        resources = environment.inputs["computeResources"]
        assert resources.get("minVcpus", 0) == 0 and resources.get("desiredVcpus", 0) == 0


def test_dev_always_on_resources_are_exactly_the_database_the_service_and_their_small_change() -> None:
    always_on = Counter(
        r.type
        for r in offline("dev").resources
        if r.type in BILLED_WHILE_IDLE and r.type != "aws:batch/computeEnvironment:ComputeEnvironment"
    )
    assert always_on == Counter(
        {
            "aws:rds/instance:Instance": 1,  # db.t4g.micro, single-AZ
            "aws:ecs/service:Service": 1,  # one Fargate Spot task (and its public IPv4)
            "aws:secretsmanager/secret:Secret": 2,  # DB password, API key
            "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": 1,  # one Route 53 zone
        }
    )


def test_dev_keeps_no_vcpus_running_either() -> None:
    for environment in offline("dev").of_type("aws:batch/computeEnvironment:ComputeEnvironment"):
        assert environment.inputs["computeResources"]["minVcpus"] == 0


def test_dev_with_scale_to_zero_keeps_only_storage_secrets_the_namespace_a_schedule_and_the_image() -> None:
    run = offline("dev", {"metadata:scaleToZero": True})
    always_on = Counter(
        r.type
        for r in run.resources
        if r.type in BILLED_WHILE_IDLE
        and r.type != "aws:batch/computeEnvironment:ComputeEnvironment"
        and not (r.type == "aws:ecs/service:Service" and r.inputs["desiredCount"] == 0)
    )
    assert always_on == Counter(
        {
            "aws:rds/cluster:Cluster": 1,  # paused at 0 ACU: its storage bills
            "aws:scheduler/schedule:Schedule": 1,  # the waker's check every minute
            "aws:secretsmanager/secret:Secret": 2,  # DB password, API key
            "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": 1,  # one Route 53 zone
            "aws:ecr/repository:Repository": 1,  # the in-region copy of the service's image
        }
    )
