"""Network: public subnets that really reach the internet, no NAT, and a Batch group with no ingress."""

from __future__ import annotations

import ipaddress

import pulumi
import pytest
from conftest import offline

from metaflow_infra.network import SubnetFacts, subnet_cidrs, subnet_egress_problem
from metaflow_infra.offline import OfflineRun, SubnetFixture

VPC = "vpc-0123456789abcdef0"
SUBNETS = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]


def test_new_vpc_has_dns_and_the_configured_cidr(minimal: OfflineRun) -> None:
    vpc = minimal.one("aws:ec2/vpc:Vpc").inputs
    assert vpc["cidrBlock"] == "10.0.0.0/16"
    assert vpc["enableDnsHostnames"] is True and vpc["enableDnsSupport"] is True


def test_public_subnets_span_distinct_azs_and_give_public_ips(minimal: OfflineRun) -> None:
    subnets = [s.inputs for s in minimal.of_type("aws:ec2/subnet:Subnet")]
    assert len(subnets) >= 2
    assert len({s["availabilityZone"] for s in subnets}) == len(subnets)
    assert all(s["mapPublicIpOnLaunch"] is True for s in subnets)
    blocks = [ipaddress.ip_network(s["cidrBlock"]) for s in subnets]
    assert all(b.subnet_of(ipaddress.ip_network("10.0.0.0/16")) for b in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])


def test_every_subnet_routes_the_internet_through_the_gateway(minimal: OfflineRun) -> None:
    gateway = minimal.one("aws:ec2/internetGateway:InternetGateway")
    route = minimal.one("aws:ec2/route:Route").inputs
    assert route["destinationCidrBlock"] == "0.0.0.0/0"
    assert route["gatewayId"] == f"{gateway.state['name']}-id"
    table_id = route["routeTableId"]
    associations = minimal.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    subnet_ids = {f"{s.state['name']}-id" for s in minimal.of_type("aws:ec2/subnet:Subnet")}
    assert {a.inputs["subnetId"] for a in associations} == subnet_ids
    assert all(a.inputs["routeTableId"] == table_id for a in associations)


def test_no_nat_gateway_or_elastic_ip(minimal: OfflineRun) -> None:
    assert not minimal.of_type("aws:ec2/natGateway:NatGateway")
    assert not minimal.of_type("aws:ec2/eip:Eip")


def test_batch_security_group_has_no_ingress_and_open_egress(minimal: OfflineRun) -> None:
    group = minimal.one("aws:ec2/securityGroup:SecurityGroup")
    assert not group.inputs.get("ingress")
    assert not minimal.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    egress = minimal.one("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule").inputs
    assert egress["securityGroupId"] == f"{group.state['name']}-id"
    assert egress["cidrIpv4"] == "0.0.0.0/0" and egress["ipProtocol"] == "-1"


def test_subnet_cidrs_leave_room_for_more_tiers() -> None:
    assert subnet_cidrs("10.0.0.0/16", 3) == ["10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20"]


def test_vpc_cidr_override_is_used() -> None:
    run = offline("minimal", {"network:vpcCidr": "172.20.0.0/18"})
    assert run.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"] == "172.20.0.0/18"
    assert {s.inputs["cidrBlock"] for s in run.of_type("aws:ec2/subnet:Subnet")} == {
        "172.20.0.0/22",
        "172.20.4.0/22",
        "172.20.8.0/22",
    }


ZONES = [("us-east-1b", "use1-az1"), ("us-east-1c", "use1-az2")]


def existing(
    preset: str = "minimal",
    zones: list[tuple[str, str]] = ZONES,
    routes: tuple[str | None, ...] = ("igw-0123456789abcdef0",) * 2,
    public_ip: bool = True,
) -> OfflineRun:
    fixtures = {
        subnet: SubnetFixture(VPC, zone, zone_id, public_ip, route)
        for subnet, (zone, zone_id), route in zip(SUBNETS, zones, routes, strict=True)
    }
    return offline(preset, {"network:vpcId": VPC, "network:subnetIds": SUBNETS}, subnets=fixtures)


def test_existing_vpc_and_subnets_are_used_instead_of_creating_one() -> None:
    run = existing()
    assert not run.of_type("aws:ec2/vpc:Vpc") and not run.of_type("aws:ec2/subnet:Subnet")
    assert run.one("aws:ec2/securityGroup:SecurityGroup").inputs["vpcId"] == VPC
    environment = run.one("aws:batch/computeEnvironment:ComputeEnvironment").inputs
    assert environment["computeResources"]["subnets"] == SUBNETS


def test_existing_subnet_without_public_ip_is_refused() -> None:
    with pytest.raises(pulumi.RunError, match="does not give instances a public IP"):
        existing(public_ip=False)


def test_existing_subnet_without_default_route_is_refused() -> None:
    with pytest.raises(pulumi.RunError, match="no default route"):
        existing(routes=(None, None))


def test_existing_private_subnet_behind_nat_is_accepted() -> None:
    run = existing(public_ip=False, routes=("nat-0123456789abcdef0",) * 2)
    assert run.one("aws:batch/jobQueue:JobQueue")


def test_existing_subnets_in_one_zone_are_refused() -> None:
    with pytest.raises(pulumi.RunError, match="all in one availability zone"):
        existing(zones=[ZONES[0], ZONES[0]])


def test_existing_subnets_mixing_gateway_and_nat_are_refused() -> None:
    with pytest.raises(pulumi.RunError, match="mix subnets"):
        existing(routes=("igw-0123456789abcdef0", "nat-0123456789abcdef0"))


def test_existing_subnet_where_vpc_links_do_not_run_is_refused_for_the_metadata_service() -> None:
    zones = [("us-east-1a", "use1-az3"), ZONES[1]]
    with pytest.raises(pulumi.RunError, match="subnet-0123456789abcdef0 is in use1-az3"):
        existing("dev", zones=zones)
    assert existing("minimal", zones=zones).one("aws:batch/jobQueue:JobQueue")  # Batch alone may use it


def test_the_new_vpc_leaves_out_zones_where_vpc_links_or_fargate_do_not_run(minimal: OfflineRun) -> None:
    subnets = sorted(minimal.of_type("aws:ec2/subnet:Subnet"), key=lambda subnet: subnet.name)
    zones = [s.inputs["availabilityZone"] for s in subnets]
    assert "us-east-1a" not in zones  # use1-az3 in the mocked account
    assert zones == ["us-east-1b", "us-east-1c", "us-east-1d"]


def test_subnet_in_another_vpc_is_refused() -> None:
    facts = SubnetFacts("subnet-1", "vpc-other", True, ["igw-1"])
    assert "not in network:vpcId" in (subnet_egress_problem(facts, VPC) or "")
