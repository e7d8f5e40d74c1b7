"""Network: a VPC with public subnets (no NAT gateway), or with private subnets behind NAT as well
(`network:privateSubnets`), or the user's own VPC and subnets, plus the security groups of every tier,
each admitting only the hops that exist."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .base import Component
from .settings import MAX_AZS, ConfigError, NetworkSettings, unsupported_zone_ids

METADATA_PORT = 8080
HTTPS_PORT = 443
POSTGRES_PORT = 5432
ANYWHERE_V4 = "0.0.0.0/0"


PRIVATE_SLOTS_FROM = 8
"""Private subnets take the VPC's blocks from the ninth on: the public ones keep the first, unchanged."""


def subnet_cidrs(vpc_cidr: str, count: int, first: int = 0) -> list[str]:
    """`count` /(n+4) blocks of the VPC from block `first`: 16 slots, public subnets first, private from the ninth."""
    blocks = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=4))
    return [str(block) for block in blocks[first : first + count]]


def nat_for_zone(zone_index: int, nat_gateways: int) -> int:
    """The NAT gateway a private subnet goes out through: its own AZ's where there is one, else the first."""
    return zone_index if zone_index < nat_gateways else 0


@dataclass(frozen=True)
class SubnetFacts:
    """What decides whether instances in an existing subnet can reach ECS, ECR, S3 and PyPI."""

    subnet_id: str
    vpc_id: str
    map_public_ip_on_launch: bool
    default_route_targets: Sequence[str]
    """Targets (igw-…, nat-…, tgw-…, eni-…) of the subnet's 0.0.0.0/0 route, if any."""
    availability_zone: str = ""
    zone_id: str = ""

    @property
    def through_internet_gateway(self) -> bool:
        return any(t.startswith("igw-") for t in self.default_route_targets)


def subnet_set_problems(subnets: Sequence[SubnetFacts], unsupported_zones: Sequence[str]) -> list[str]:
    """What the subnets together lack: two AZs, one kind of way out, zones the service can use."""
    problems = []
    if len({s.availability_zone for s in subnets}) < 2:
        problems.append(
            "network:subnetIds are all in one availability zone; give subnets in at least two "
            "(the database's subnet group needs two)"
        )
    if len({s.through_internet_gateway for s in subnets}) > 1:
        problems.append(
            "network:subnetIds mix subnets that reach the internet through an internet gateway "
            "with subnets behind NAT: give subnets of one kind"
        )
    for subnet in subnets:
        if subnet.zone_id in unsupported_zones:
            problems.append(
                f"{subnet.subnet_id} is in {subnet.zone_id}, where HTTP API VPC links or Fargate "
                "do not run; use subnets in other zones"
            )
    return problems


ENDPOINT_SERVICE_DOMAINS = ("com.amazonaws", "cn.com.amazonaws")
"""Where AWS names its endpoint services: China's regions use the second for most interface endpoints."""


def one_subnet_per_zone(subnets: Sequence[SubnetFacts]) -> list[str]:
    """The first subnet of each AZ, in the given order: a load balancer takes at most one per AZ."""
    chosen: dict[str, str] = {}
    for subnet in subnets:
        chosen.setdefault(subnet.availability_zone, subnet.subnet_id)
    return list(chosen.values())


def subnet_egress_problem(facts: SubnetFacts, expected_vpc: str) -> str | None:
    """Why Batch jobs would wait in RUNNABLE forever in this subnet, or None if it has a way out."""
    if facts.vpc_id != expected_vpc:
        return f"{facts.subnet_id} is in {facts.vpc_id}, not in network:vpcId {expected_vpc}"
    targets = facts.default_route_targets
    via_internet_gateway = facts.through_internet_gateway
    via_other = any(t.startswith(("nat-", "tgw-", "eni-", "pcx-", "vpce-")) for t in targets)
    if via_internet_gateway and not facts.map_public_ip_on_launch:
        return (
            f"{facts.subnet_id} routes to an internet gateway but does not give instances a public IP "
            "(map_public_ip_on_launch is off): Batch instances could not reach ECS, ECR, S3 or PyPI"
        )
    if not via_internet_gateway and not via_other:
        return (
            f"{facts.subnet_id} has no default route (0.0.0.0/0) to an internet gateway or NAT gateway: "
            "Batch instances could not reach ECS, ECR, S3 or PyPI and jobs would stay RUNNABLE"
        )
    return None


UI_PORT = 8083
MULTI_NODE_PUBLIC_SUBNETS = (
    "compute:multiNode = true needs network:subnetIds behind a NAT gateway: these reach the internet through an "
    "internet gateway, and Batch runs multi-node containers in awsvpc mode, with a network interface of their "
    "own that gets no public IP address, so they could reach neither S3 nor the metadata service"
)


@dataclass(frozen=True)
class UiIngress:
    """Who may open the UI: no one from outside (a tunnel only), or these networks through a load balancer."""

    load_balancer_cidrs: Sequence[str] = ()
    """Empty: no load balancer, no ingress at all (the private UI)."""
    ports: Sequence[int] = ()
    """The load balancer's listener ports."""


@dataclass(frozen=True)
class UiGroups:
    vpc_id: pulumi.Output[str]
    task: pulumi.Output[str]
    load_balancer: pulumi.Output[str] | None


@dataclass(frozen=True)
class ServiceGroups:
    """Security groups of the metadata service's hops: endpoint -> service -> database (and of the UI)."""

    endpoint: pulumi.Output[str]
    service: pulumi.Output[str]
    database: pulumi.Output[str]
    ui: UiGroups | None = None


class Network(Component):
    vpc_id: pulumi.Output[str]
    subnet_ids: pulumi.Output[list[str]]
    """Where the database, the services and Batch run: the private subnets when there are some."""
    public_subnet_ids: pulumi.Output[list[str]]
    """Where an internet-facing load balancer goes (the same as subnet_ids without private subnets)."""
    public_subnets: bool
    """True when the subnets reach the internet through an internet gateway (so hosts need public IPs)."""
    batch_security_group_id: pulumi.Output[str]
    service_groups: ServiceGroups | None = None
    multi_node_security_group_id: pulumi.Output[str] | None = None
    """With multi_node: the group whose members reach each other on every port (the nodes of @parallel jobs)."""

    def __init__(
        self,
        name: str,
        settings: NetworkSettings,
        region: str,
        with_metadata_service: bool,
        opts: pulumi.ResourceOptions | None = None,
        ui: UiIngress | None = None,
        multi_node: bool = False,
    ) -> None:
        """`multi_node`: the nodes of Batch multi-node jobs talk to each other through their own network
        interfaces (awsvpc mode), which get no public IP: add their security group, and S3 through a gateway
        endpoint in a VPC this program creates."""
        super().__init__("Network", name, opts)
        # Zones where VPC links or Fargate do not run: left out, or refused for the service.
        self._unsupported_zones = unsupported_zone_ids(region)
        if settings.vpc_id is not None and settings.subnet_ids is not None:
            facts = self._check_existing_subnets(
                settings.vpc_id, settings.subnet_ids, with_metadata_service, settings.private_subnets
            )
            self.public_subnets = facts[0].through_internet_gateway
            self.vpc_id = pulumi.Output.from_input(settings.vpc_id)
            self.subnet_ids = pulumi.Output.from_input(list(settings.subnet_ids))
            self.public_subnet_ids = pulumi.Output.from_input(one_subnet_per_zone(facts))
            if multi_node and self.public_subnets:
                raise ConfigError(MULTI_NODE_PUBLIC_SUBNETS)
        else:
            zones = self._create_vpc(settings.vpc_cidr)
            self.public_subnet_ids = self.subnet_ids
            self.public_subnets = not settings.private_subnets
            # Where hosts go without a public IP, S3 takes a gateway endpoint: multi-node nodes in the public
            # subnets, and everything in private ones (S3 traffic through NAT would bill by the GB).
            if settings.private_subnets:
                gateway_tables = self._create_private_subnets(settings, zones)
            else:
                gateway_tables = [self._public_routes.id] if multi_node else []
            if gateway_tables:
                self._s3_gateway_endpoint(region, gateway_tables)
            if settings.interface_endpoints:
                self._interface_endpoints(settings, region)
        self._create_security_groups(with_metadata_service, ui)
        if multi_node:
            self.multi_node_security_group_id = self._multi_node_group()
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "subnetIds": self.subnet_ids,
                "batchSecurityGroupId": self.batch_security_group_id,
            }
        )

    def _create_vpc(self, cidr: str) -> list[str]:
        """The VPC, its internet gateway and one public subnet per AZ; returns the AZs."""
        zones = aws.get_availability_zones(
            state="available",
            exclude_zone_ids=self._unsupported_zones,
            filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
            opts=pulumi.InvokeOptions(parent=self),
        ).names[:MAX_AZS]
        if len(zones) < 2:
            raise ConfigError(
                f"the region offers {len(zones)} availability zone(s); Batch needs subnets in at least two"
            )
        vpc = aws.ec2.Vpc(
            self.named("vpc"),
            cidr_block=cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": self.labelled("vpc")},
            opts=self.child(),
        )
        gateway = aws.ec2.InternetGateway(self.named("igw"), vpc_id=vpc.id, opts=self.child())
        routes = aws.ec2.RouteTable(self.named("public"), vpc_id=vpc.id, opts=self.child())
        self._public_routes = routes
        # Without this route (and public IPs) instances never join ECS and jobs wait in RUNNABLE.
        aws.ec2.Route(
            self.named("public-default"),
            route_table_id=routes.id,
            destination_cidr_block=ANYWHERE_V4,
            gateway_id=gateway.id,
            opts=self.child(),
        )
        subnets = []
        for index, (zone, block) in enumerate(zip(zones, subnet_cidrs(cidr, len(zones)), strict=True)):
            subnet = aws.ec2.Subnet(
                self.named(f"public-{index}"),
                vpc_id=vpc.id,
                cidr_block=block,
                availability_zone=zone,
                map_public_ip_on_launch=True,
                tags={"Name": self.labelled(f"public-{zone}")},
                opts=self.child(),
            )
            aws.ec2.RouteTableAssociation(
                self.named(f"public-{index}"), subnet_id=subnet.id, route_table_id=routes.id, opts=self.child()
            )
            subnets.append(subnet)
        self._vpc_cidr = cidr
        self._public_subnets = subnets
        self.vpc_id = vpc.id
        self.subnet_ids = pulumi.Output.all(*[subnet.id for subnet in subnets]).apply(list)
        return list(zones)

    def _create_private_subnets(self, settings: NetworkSettings, zones: list[str]) -> list[pulumi.Output[str]]:
        """One private subnet per AZ, no public IPs, each out through a NAT gateway (its AZ's, or the first):
        without that default route Batch instances never join ECS and jobs wait in RUNNABLE. Returns the
        private route tables."""
        if settings.nat_gateways > len(zones):
            raise ConfigError(
                f"network:natGateways = {settings.nat_gateways}, but this account has {len(zones)} availability zones "
                f"this stack can use in the region ({', '.join(zones)}): set it to {len(zones)} or fewer"
            )
        nats = []
        for index in range(settings.nat_gateways):
            address = aws.ec2.Eip(
                self.named(f"nat-{index}"),
                domain="vpc",
                tags={"Name": self.labelled(f"nat-{zones[index]}")},
                opts=self.child(),
            )
            nats.append(
                aws.ec2.NatGateway(
                    self.named(f"nat-{index}"),
                    allocation_id=address.id,
                    subnet_id=self._public_subnets[index].id,
                    connectivity_type="public",
                    tags={"Name": self.labelled(f"nat-{zones[index]}")},
                    opts=self.child(),
                )
            )
        subnets, tables = [], []
        blocks = subnet_cidrs(settings.vpc_cidr, len(zones), first=PRIVATE_SLOTS_FROM)
        for index, (zone, block) in enumerate(zip(zones, blocks, strict=True)):
            subnet = aws.ec2.Subnet(
                self.named(f"private-{index}"),
                vpc_id=self.vpc_id,
                cidr_block=block,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={"Name": self.labelled(f"private-{zone}")},
                opts=self.child(),
            )
            routes = aws.ec2.RouteTable(
                self.named(f"private-{index}"),
                vpc_id=self.vpc_id,
                tags={"Name": self.labelled(f"private-{zone}")},
                opts=self.child(),
            )
            aws.ec2.Route(
                self.named(f"private-{index}-default"),
                route_table_id=routes.id,
                destination_cidr_block=ANYWHERE_V4,
                nat_gateway_id=nats[nat_for_zone(index, len(nats))].id,
                opts=self.child(),
            )
            aws.ec2.RouteTableAssociation(
                self.named(f"private-{index}"), subnet_id=subnet.id, route_table_id=routes.id, opts=self.child()
            )
            subnets.append(subnet.id)
            tables.append(routes.id)
        self.subnet_ids = pulumi.Output.all(*subnets).apply(list)
        return tables

    def _interface_endpoints(self, settings: NetworkSettings, region: str) -> None:
        """Interface endpoints in every private subnet, answering the services' usual names (private DNS), open
        on HTTPS to the VPC only."""
        group = self._security_group("endpoints", "Metaflow interface VPC endpoints: HTTPS from the VPC")
        aws.vpc.SecurityGroupIngressRule(
            self.named("endpoints-in"),
            security_group_id=group.id,
            cidr_ipv4=self._vpc_cidr,
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            description="AWS APIs from the VPC",
            opts=self.child(),
        )
        for choice in settings.interface_endpoints:
            for service in choice.aws_services:
                aws.ec2.VpcEndpoint(
                    self.named(f"endpoint-{service}"),
                    vpc_id=self.vpc_id,
                    service_name=self._endpoint_service(region, service, "Interface"),
                    vpc_endpoint_type="Interface",
                    subnet_ids=self.subnet_ids,
                    security_group_ids=[group.id],
                    private_dns_enabled=True,
                    tags={"Name": self.labelled(service)},
                    opts=self.child(),
                )

    def _endpoint_service(self, region: str, service: str, kind: str) -> str:
        """The region's name of an AWS service's endpoint service, as EC2 lists it: `com.amazonaws.<region>.<x>`,
        or in China mostly `cn.com.amazonaws.…` (the provider's `service` argument assumes the first)."""
        names = [f"{domain}.{region}.{service}" for domain in ENDPOINT_SERVICE_DOMAINS]
        found = aws.ec2.get_vpc_endpoint_service(
            service_type=kind,
            filters=[aws.ec2.GetVpcEndpointServiceFilterArgs(name="service-name", values=names)],
            opts=pulumi.InvokeOptions(parent=self),
        )
        return found.service_name

    def _check_existing_subnets(
        self, vpc_id: str, subnet_ids: Sequence[str], with_metadata_service: bool, private: bool
    ) -> list[SubnetFacts]:
        """Refuse subnets Batch jobs could not get out of, or public ones where `private` asks for private
        ones; return what decided it."""
        invoke = pulumi.InvokeOptions(parent=self)
        problems = []
        facts = []
        for subnet_id in subnet_ids:
            subnet = aws.ec2.get_subnet(id=subnet_id, opts=invoke)
            tables = aws.ec2.get_route_tables(
                filters=[aws.ec2.GetRouteTablesFilterArgs(name="association.subnet-id", values=[subnet_id])],
                opts=invoke,
            ).ids
            if not tables:  # no explicit association: the VPC's main route table applies
                tables = aws.ec2.get_route_tables(
                    vpc_id=subnet.vpc_id,
                    filters=[aws.ec2.GetRouteTablesFilterArgs(name="association.main", values=["true"])],
                    opts=invoke,
                ).ids
            targets: list[str] = []
            for table_id in tables:
                for route in aws.ec2.get_route_table(route_table_id=table_id, opts=invoke).routes:
                    if route.cidr_block == ANYWHERE_V4:
                        targets += [
                            t
                            for t in (
                                route.gateway_id,
                                route.nat_gateway_id,
                                route.transit_gateway_id,
                                route.network_interface_id,
                                route.vpc_peering_connection_id,
                            )
                            if t
                        ]
            facts.append(
                SubnetFacts(
                    subnet_id,
                    subnet.vpc_id,
                    subnet.map_public_ip_on_launch,
                    targets,
                    subnet.availability_zone,
                    subnet.availability_zone_id,
                )
            )
            problem = subnet_egress_problem(facts[-1], vpc_id)
            if problem:
                problems.append(problem)
            elif private and facts[-1].through_internet_gateway:
                problems.append(
                    f"{subnet_id} routes to an internet gateway, and network:privateSubnets is true: give private "
                    "subnets (a default route to a NAT gateway), or set network:privateSubnets false"
                )
        problems += subnet_set_problems(facts, self._unsupported_zones if with_metadata_service else [])
        if problems:
            raise ConfigError("network:subnetIds cannot host this stack:\n" + "\n".join(f"  - {p}" for p in problems))
        return facts

    def _security_group(self, tier: str, description: str) -> aws.ec2.SecurityGroup:
        return aws.ec2.SecurityGroup(
            self.named(tier),
            description=description,
            vpc_id=self.vpc_id,
            tags={"Name": self.labelled(tier)},
            opts=self.child(),
        )

    def _egress_anywhere(self, tier: str, group: aws.ec2.SecurityGroup, why: str, port: int | None = None) -> None:
        """Outbound to the internet: every protocol, or one TCP port."""
        aws.vpc.SecurityGroupEgressRule(
            self.named(f"{tier}-egress"),
            security_group_id=group.id,
            cidr_ipv4=ANYWHERE_V4,
            ip_protocol="-1" if port is None else "tcp",
            from_port=port,
            to_port=port,
            description=why,
            opts=self.child(),
        )

    def _hop(self, source: aws.ec2.SecurityGroup, target: aws.ec2.SecurityGroup, port: int, rule: str) -> None:
        """Let `source` reach `target` on one TCP port: egress on one side, ingress on the other."""
        aws.vpc.SecurityGroupEgressRule(
            self.named(f"{rule}-out"),
            security_group_id=source.id,
            referenced_security_group_id=target.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=rule,
            opts=self.child(),
        )
        aws.vpc.SecurityGroupIngressRule(
            self.named(f"{rule}-in"),
            security_group_id=target.id,
            referenced_security_group_id=source.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=rule,
            opts=self.child(),
        )

    def _s3_gateway_endpoint(self, region: str, route_table_ids: list[pulumi.Output[str]]) -> None:
        """S3 for containers without a public IP (multi-node jobs) and for everything in private subnets,
        off NAT (billed per GB): a gateway endpoint on those route tables. Gateway endpoints for S3 cost
        nothing (Amazon VPC pricing; only interface endpoints bill)."""
        aws.ec2.VpcEndpoint(
            self.named("s3"),
            vpc_id=self.vpc_id,
            service_name=self._endpoint_service(region, "s3", "Gateway"),
            vpc_endpoint_type="Gateway",
            route_table_ids=route_table_ids,
            tags={"Name": self.labelled("s3")},
            opts=self.child(),
        )

    def _multi_node_group(self) -> pulumi.Output[str]:
        """The nodes of a multi-node job reach each other on every port and protocol (MPI, NCCL, torchrun pick
        their own), and nothing else gets in: ingress and egress referencing the group itself. Nodes also carry
        the Batch group, whose egress reaches S3 and the rest."""
        tier = "batch-multinode"
        group = self._security_group(tier, "Metaflow multi-node jobs: the nodes of a job reach each other")
        why = "nodes of a multi-node job, on every port"
        aws.vpc.SecurityGroupIngressRule(
            self.named(f"{tier}-in"),
            security_group_id=group.id,
            referenced_security_group_id=group.id,
            ip_protocol="-1",
            description=why,
            opts=self.child(),
        )
        aws.vpc.SecurityGroupEgressRule(
            self.named(f"{tier}-out"),
            security_group_id=group.id,
            referenced_security_group_id=group.id,
            ip_protocol="-1",
            description=why,
            opts=self.child(),
        )
        return group.id

    def _create_security_groups(self, with_metadata_service: bool, ui: UiIngress | None) -> None:
        batch = self._security_group("batch", "Metaflow Batch jobs: no ingress, egress to AWS APIs and PyPI")
        self._egress_anywhere("batch", batch, "ECS, ECR, S3, PyPI and the metadata service")
        self.batch_security_group_id = batch.id
        if not with_metadata_service:
            return
        endpoint = self._security_group("endpoint", "Metaflow API endpoint (VPC link) to the metadata service")
        metadata = self._security_group("metadata", "Metaflow metadata service tasks")
        database = self._security_group("database", "Metaflow PostgreSQL: only the metadata service")
        self._egress_anywhere("metadata", metadata, "image pull, Secrets Manager, logs", port=HTTPS_PORT)
        self._hop(endpoint, metadata, METADATA_PORT, "endpoint-to-metadata")
        self._hop(metadata, database, POSTGRES_PORT, "metadata-to-database")
        self.service_groups = ServiceGroups(
            endpoint=endpoint.id,
            service=metadata.id,
            database=database.id,
            ui=self._ui_groups(ui, database) if ui is not None else None,
        )

    def _ui_groups(self, ui: UiIngress, database: aws.ec2.SecurityGroup) -> UiGroups:
        """The UI task reaches the database and AWS APIs; only its load balancer, if any, reaches it."""
        task = self._security_group("ui", "Metaflow UI task")
        self._egress_anywhere("ui", task, "image pull, S3, Secrets Manager, logs, Session Manager", port=HTTPS_PORT)
        self._hop(task, database, POSTGRES_PORT, "ui-to-database")
        if not ui.load_balancer_cidrs:
            return UiGroups(vpc_id=self.vpc_id, task=task.id, load_balancer=None)
        balancer = self._security_group("ui-lb", "Metaflow UI load balancer: only the allowed networks")
        for port in ui.ports:
            for index, cidr in enumerate(ui.load_balancer_cidrs):
                aws.vpc.SecurityGroupIngressRule(
                    self.named(f"ui-lb-in-{port}-{index}"),
                    security_group_id=balancer.id,
                    cidr_ipv4=cidr if ":" not in cidr else None,
                    cidr_ipv6=cidr if ":" in cidr else None,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    description=f"UI from {cidr}",
                    opts=self.child(),
                )
        self._hop(balancer, task, UI_PORT, "ui-lb-to-ui")
        return UiGroups(vpc_id=self.vpc_id, task=task.id, load_balancer=balancer.id)
