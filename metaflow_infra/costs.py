"""The always-on monthly cost of a stack: a pure function of validated settings and the dated
price table shipped in `data/prices.json`.

Only what bills while no job runs is itemized (730 hours a month). Usage-based costs — S3
storage and requests, Batch instance hours, API requests, Lambda, logs, data transfer — are
listed as not included. A region without a figure for an item uses the us-east-1 figure times
that region's cited ratio, and the line says so; a commercial region without figures of its own
is estimated with those of the nearest priced region (`priced_like` in the data), named in the
estimate (`pricedWith`); a region without data at all (China and GovCloud: the table holds the
commercial partition's prices only) is an error, never a silent wrong number.
"""

from __future__ import annotations

import datetime
import json
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from .alerts import service_alarm_specs
from .settings import (
    CREATE_KEY,
    MAX_AZS,
    ComputeType,
    Settings,
    UiAccess,
    instance_families,
    postgres_end_of_standard_support,
)
from .settings.aws_rules import partition_of

BASE_REGION = "us-east-1"
BILLED_WHILE_IDLE = frozenset(
    {
        "aws:batch/computeEnvironment:ComputeEnvironment",  # only with compute:minVcpus > 0
        "aws:rds/instance:Instance",
        "aws:rds/cluster:Cluster",
        "aws:ecs/service:Service",
        "aws:ec2/instance:Instance",
        "aws:ec2/natGateway:NatGateway",
        "aws:ec2/eip:Eip",
        "aws:lb/loadBalancer:LoadBalancer",
        "aws:alb/loadBalancer:LoadBalancer",
        "aws:ec2/vpcEndpoint:VpcEndpoint",
        "aws:kms/key:Key",
        "aws:secretsmanager/secret:Secret",
        "aws:route53/zone:Zone",
        "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:scheduler/schedule:Schedule",  # the scale-to-zero waker's check, every minute
        "aws:ecr/repository:Repository",  # the scale-to-zero image copy (a steps registry bills what people push)
    }
)
"""Resource types that bill by the hour or month whether or not a job runs."""
SECRETS_WITH_METADATA_SERVICE = 2
"""The database password and the API key."""
EXTENDED_SUPPORT_YEAR_3_AFTER_DAYS = 2 * 365
UI_LOAD_BALANCER_AZS = 2
"""The UI's load balancer spans two AZs (ui.LOAD_BALANCER_SUBNETS): one public address each."""
AURORA_STORED_GB = 1
"""What a scale-to-zero database holds, for the estimate: a small team's run history is megabytes."""
AURORA_AWAKE_ACU = 0.5
"""Aurora Serverless v2's least capacity while not paused."""
AURORA_PAUSE_MINUTES = 5
"""database.AURORA_PAUSE_SECONDS: Aurora pauses this long after the service's connections close."""
MIRRORED_IMAGE_GB = 0.33
"""The metadata-service image's compressed size, copied into the stack's ECR repository with scale to zero:
v2.5.1 rebuilt layer by layer from its Dockerfile without Docker, ~326 MB (300-355; docs/scale-to-zero.md).
`pulumi up` warns if the copy is larger than the image the wake timing was measured with."""
WAKER_RUN_SECONDS = 0.2
"""An idle check: two AWS API calls from a warm 128 MB function (an estimate: Lambda bills by the ms)."""
WAKER_MEMORY_GB = 128 / 1024
TICKS_PER_HOUR = 60

USAGE_NOT_INCLUDED = (
    "S3 storage, requests and data transfer",
    "Batch instance or Fargate hours while jobs run (and their public IPv4 addresses)",
    "API Gateway requests ($1.00 per million) and Lambda authorizer invocations",
    "CloudWatch Logs ingestion and storage",
    "RDS backup storage beyond the database size",
    "Cloud Map registered instances and lookups",
    "the private UI's task while someone has it open (Fargate, $0.01-0.04 an hour with its address)",
    "load balancer capacity units (LCUs) of the UI's load balancer",
    "Step Functions state transitions and the foreach table's DynamoDB on-demand requests and storage",
)


class PriceDataError(ValueError):
    """No price data for what was asked (region or item)."""


PRICED_PARTITION = "aws"


def unpriced_partition(region: str) -> str | None:
    """Why a region of another partition (aws-cn, aws-us-gov) has no prices, else None: the table holds
    the commercial partition's prices only, and those partitions are billed apart (China in CNY)."""
    partition = partition_of(region)
    if partition in (None, PRICED_PARTITION):
        return None
    return f"prices cover the commercial partition ({PRICED_PARTITION}) only, and {region} is in {partition}"


@dataclass(frozen=True)
class Price:
    usd: float
    source: str
    estimated_from: str | None = None
    """Set when the figure is the base region's times a ratio: says how it was derived."""


@dataclass(frozen=True)
class CostLine:
    item: str
    resource_type: str
    """The Pulumi type token of the resource this line prices."""
    resources: int
    """How many declared resources of that type this line accounts for (0 for a resource's second line)."""
    quantity: float
    unit: str
    unit_usd: float
    monthly_usd: float
    source: str


@dataclass(frozen=True)
class CostEstimate:
    region: str
    lines: list[CostLine]
    prices_read_on: str
    estimated_items: list[str] = field(default_factory=list)
    not_included: tuple[str, ...] = USAGE_NOT_INCLUDED
    priced_with: str | None = None
    """The region whose prices stand in for this region's, which has none of its own in the table."""

    @property
    def total_usd(self) -> float:
        return round(sum(line.monthly_usd for line in self.lines), 2)

    def as_output(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "currency": "USD",
            "hoursPerMonth": HOURS_PER_MONTH,
            "totalUsd": self.total_usd,
            "pricesReadOn": self.prices_read_on,
            "lines": [
                {
                    "item": line.item,
                    "quantity": line.quantity,
                    "unit": line.unit,
                    "unitUsd": line.unit_usd,
                    "monthlyUsd": line.monthly_usd,
                    "source": line.source,
                }
                for line in self.lines
            ],
            "estimatedItems": self.estimated_items,
            "notIncluded": list(self.not_included),
        } | ({"pricedWith": self.priced_with} if self.priced_with else {})


HOURS_PER_MONTH = 730


class PriceTable:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def regions(self) -> list[str]:
        return sorted(self.data["regions"])

    @property
    def read_on(self) -> str:
        return max(source["read_on"] for source in self.data["sources"].values())

    def _lookup(self, region: str, path: tuple[str, ...]) -> dict[str, Any] | None:
        node: Any = self.data["regions"].get(region, {})
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node if isinstance(node, dict) and "usd" in node else None

    @property
    def stand_ins(self) -> dict[str, str]:
        """Regions without figures of their own -> the priced region whose figures estimate theirs."""
        return dict(self.data.get("priced_like", {}).get("regions", {}))

    def priced_with(self, region: str) -> str | None:
        """The region whose figures stand in for `region`'s, or None when it has its own (or none at all)."""
        return None if region in self.data["regions"] else self.stand_ins.get(region)

    def price(self, region: str, *path: str) -> Price:
        stand_in = self.priced_with(region)
        if stand_in is not None:
            found = self.price(stand_in, *path)
            derived = f"{stand_in}'s price" + (f", {found.estimated_from}" if found.estimated_from else "")
            return Price(found.usd, found.source, estimated_from=derived)
        if region not in self.data["regions"]:
            if other_partition := unpriced_partition(region):
                raise PriceDataError(f"no price data for region {region}: {other_partition}")
            estimated = (
                f" and estimates {', '.join(sorted(self.stand_ins))} with the nearest of them" if self.stand_ins else ""
            )
            raise PriceDataError(
                f"no price data for region {region}; the table (read on {self.read_on}) covers "
                f"{', '.join(self.regions)}{estimated}. Add the region to metaflow_infra/data/prices.json"
            )
        found = self._lookup(region, path)
        if found is not None:
            return Price(found["usd"], found["source"])
        base = self._lookup(BASE_REGION, path)
        factor = self._lookup(region, ("estimate_factor",))
        if base is None or factor is None:
            raise PriceDataError(f"no price for {'.'.join(path)} in {region} (nor a way to estimate it)")
        return Price(
            round(base["usd"] * factor["usd"], 6), base["source"], estimated_from=f"{BASE_REGION} x {factor['usd']:.3f}"
        )

    def vcpus(self, table: str, instance_type: str) -> int:
        return int(self.data[table][instance_type])


@cache
def price_table() -> PriceTable:
    return PriceTable(json.loads(resources.files("metaflow_infra").joinpath("data", "prices.json").read_text()))


class _Lines:
    """Collects cost lines for one region."""

    def __init__(self, table: PriceTable, region: str) -> None:
        self.table, self.region = table, region
        self.lines: list[CostLine] = []
        self.estimated: list[str] = []

    def add(
        self,
        item: str,
        resource_type: str,
        resources: int,
        quantity: float,
        unit: str,
        price: Price,
        multiplier: float = 1.0,
    ) -> None:
        unit_usd = round(price.usd * multiplier, 6)
        source = price.source
        if price.estimated_from:
            source = f"estimate: {price.estimated_from} ({price.source})"
            self.estimated.append(item)
        self.lines.append(
            CostLine(item, resource_type, resources, quantity, unit, unit_usd, round(quantity * unit_usd, 2), source)
        )

    def hourly(
        self,
        item: str,
        resource_type: str,
        resources: int,
        count: float,
        price: Price,
        unit: str = "hour",
        multiplier: float = 1.0,
    ) -> None:
        self.add(item, resource_type, resources, count * HOURS_PER_MONTH, unit, price, multiplier)


def _extended_support_rate(settings: Settings, today: datetime.date) -> str | None:
    end = postgres_end_of_standard_support()[settings.db.engine_version]
    if today <= end:
        return None
    return "year_3" if (today - end).days > EXTENDED_SUPPORT_YEAR_3_AFTER_DAYS else "year_1_2"


def _cheapest_on_demand_vcpu_hour(table: PriceTable, region: str, families: list[str]) -> tuple[str, Price]:
    """The lowest on-demand per-vCPU price among the allowed families' `.large` types we price."""
    candidates = []
    for entry in families:
        family = entry.partition(".")[0]
        instance = entry if "." in entry else f"{family}.{instance_families()[family]['sizes'][0]}"
        try:
            price = table.price(region, "ec2_instance_hour", instance)
        except PriceDataError:
            continue
        per_vcpu = Price(price.usd / table.vcpus("ec2_instance_vcpus", instance), price.source, price.estimated_from)
        candidates.append((per_vcpu.usd, instance, per_vcpu))
    if not candidates:
        raise PriceDataError(f"no EC2 price for any of {families} in {region}")
    _, instance, price = min(candidates)
    return instance, price


def estimate_monthly_cost(
    settings: Settings,
    public_subnets: bool = True,
    today: datetime.date | None = None,
    table: PriceTable | None = None,
) -> CostEstimate:
    """Itemized always-on monthly cost of the stack these settings declare. `public_subnets`: the
    services run in subnets that reach the internet through an internet gateway (public IPv4s)."""
    table = table or price_table()
    today = today or datetime.date.today()
    region = settings.region
    lines = _Lines(table, region)

    compute = settings.compute
    if compute.min_vcpus > 0 and not compute.type.is_fargate:
        instance, per_vcpu = _cheapest_on_demand_vcpu_hour(table, region, compute.instance_types)
        rate = f"on-demand rate of {instance}" + (
            "; spot usually costs less" if compute.type is ComputeType.SPOT else ""
        )
        # Only the first environment keeps vCPUs running (the on-demand fallback starts from zero).
        lines.hourly(
            f"Batch: {compute.min_vcpus} vCPUs kept running ({rate})",
            "aws:batch/computeEnvironment:ComputeEnvironment",
            1,
            compute.min_vcpus,
            per_vcpu,
            unit="vCPU-hour",
        )

    # NAT and interface endpoints come with the VPC this program creates; an existing VPC brings its own.
    network = settings.network if settings.network.vpc_id is None else None
    if network is not None and network.nat_gateways > 0:
        count = network.nat_gateways
        lines.hourly(
            "NAT gateway", "aws:ec2/natGateway:NatGateway", count, count, table.price(region, "nat_gateway_hour")
        )
        lines.hourly(
            "NAT gateway Elastic IP (public IPv4)",
            "aws:ec2/eip:Eip",
            count,
            count,
            table.price(region, "public_ipv4_hour"),
        )

    choices = network.interface_endpoints if network is not None else []
    endpoints = sum(len(choice.aws_services) for choice in choices)
    if endpoints:
        names = ", ".join(service for choice in choices for service in choice.aws_services)
        lines.hourly(
            f"Interface VPC endpoints ({names}) in {MAX_AZS} AZs",
            "aws:ec2/vpcEndpoint:VpcEndpoint",
            endpoints,
            endpoints * MAX_AZS,
            table.price(region, "interface_endpoint_az_hour"),
            unit="endpoint-AZ-hour",
        )

    if settings.datastore.kms_key == CREATE_KEY:
        lines.add(
            "KMS key of the datastore (SSE-KMS; requests mostly absorbed by the S3 bucket key)",
            "aws:kms/key:Key",
            1,
            1,
            "key-month",
            table.price(region, "kms_key_month"),
        )

    if settings.metadata.enabled:
        public_ip = public_subnets and not settings.network.private_subnets
        if settings.metadata.scale_to_zero:
            _asleep_lines(lines)
        else:
            _database_lines(lines, settings, today)
            _fargate_task_lines(
                lines,
                "Metadata service",
                settings.metadata.cpu,
                settings.metadata.memory,
                settings.metadata.spot,
                public_ip,
                tasks=settings.metadata.tasks,
            )
        _metadata_service_lines(lines)
        if settings.ui.enabled:
            _ui_lines(lines, settings, public_ip=public_ip)
        if settings.alerts.enabled:  # the failed-jobs rule and the topic bill nothing while idle
            alarms = len(service_alarm_specs(settings.db.allocated_storage_gb))
            lines.add(
                "CloudWatch alarms: endpoint 5xx, no service task, database CPU, storage, connections",
                "aws:cloudwatch/metricAlarm:MetricAlarm",
                alarms,
                alarms,
                "alarm-month",
                table.price(region, "cloudwatch_alarm_month"),
            )

    usage = USAGE_NOT_INCLUDED + _usage_of(settings, public_subnets, table)
    return CostEstimate(region, lines.lines, table.read_on, lines.estimated, usage, table.priced_with(region))


def _usage_of(settings: Settings, public_subnets: bool, table: PriceTable) -> tuple[str, ...]:
    """Usage charges only some stacks have: what NAT, interface endpoints and SSE-KMS bill per GB or request."""
    usage = []
    if settings.network.vpc_id is None and settings.network.nat_gateways > 0:
        usage.append(
            "NAT gateway data processing (about $0.045/GB: PyPI installs, image pulls and AWS API calls from the "
            "private subnets; S3 traffic takes the free gateway endpoint instead)"
        )
    if settings.network.interface_endpoints:
        usage.append("interface VPC endpoint data processing (about $0.01/GB)")
    if settings.datastore.kms_key is not None:
        usage.append("KMS requests of the datastore key (few: the S3 bucket key absorbs most)")
    if settings.metadata.enabled and settings.metadata.scale_to_zero:
        awake = sum(line.usd for line in awake_hour(settings, public_subnets, table))
        usage.append(
            f"scale to zero while awake: Aurora from {AURORA_AWAKE_ACU:g} ACU, the on-demand service task and its "
            f"address (about ${awake:.2f} an hour in {settings.region}; `plan --compare`), Aurora I/O requests, and "
            "the waker's runs during a wake"
        )
    return tuple(usage)


def _database_lines(lines: _Lines, settings: Settings, today: datetime.date) -> None:
    db, table, region = settings.db, lines.table, lines.region
    # Multi-AZ bills instance, storage and Extended Support for the standby too (data: the factor).
    copies = table.price(region, "rds_multi_az_factor").usd if db.multi_az else 1
    deployment = "multi-AZ" if db.multi_az else "single-AZ"
    instance = table.price(region, "rds_instance_hour", db.instance_class)
    lines.hourly(
        f"RDS PostgreSQL {db.engine_version} {db.instance_class} ({deployment})",
        "aws:rds/instance:Instance",
        1,
        copies,
        instance,
        unit="instance-hour",
    )
    storage = table.price(region, "rds_storage_gb_month", "gp3")
    lines.add(
        f"RDS gp3 storage ({deployment})",
        "aws:rds/instance:Instance",
        0,
        db.allocated_storage_gb * copies,
        "GB-month",
        storage,
    )
    band = _extended_support_rate(settings, today)
    if band:
        vcpus = table.vcpus("rds_instance_vcpus", db.instance_class) * copies
        lines.hourly(
            f"RDS Extended Support for PostgreSQL {db.engine_version} ({band.replace('_', ' ')})",
            "aws:rds/instance:Instance",
            0,
            vcpus,
            table.price(region, "rds_extended_support_vcpu_hour", band),
            unit="vCPU-hour",
        )


def _fargate_task_lines(
    lines: _Lines, label: str, cpu: int, memory: int, spot: bool, public_ip: bool, tasks: int = 1
) -> None:
    """Always-running Fargate tasks: their vCPUs, their memory and, in public subnets, their addresses."""
    table, region = lines.table, lines.region
    discount, kind = 1.0, "Fargate"
    if spot:
        spot_discount = table.price(region, "fargate", "spot_discount")
        discount, kind = 1.0 - spot_discount.usd, f"Fargate Spot (~{spot_discount.usd:.0%} below on-demand)"
    vcpus, gigabytes = cpu / 1024, memory / 1024
    each = f"{tasks} tasks of " if tasks > 1 else ""
    for item, counted, quantity, price, unit in (
        (f"{label}: {kind}, {each}{vcpus:g} vCPU", 1, vcpus * tasks, "x86_vcpu_hour", "vCPU-hour"),
        (f"{label}: {kind}, {each}{gigabytes:g} GB", 0, gigabytes * tasks, "x86_gb_hour", "GB-hour"),
    ):
        lines.hourly(
            item,
            "aws:ecs/service:Service",
            counted,
            quantity,
            table.price(region, "fargate", price),
            unit=unit,
            multiplier=discount,
        )
    if public_ip:
        lines.hourly(
            f"{label} task's public IPv4 address (to pull its image; no NAT)"
            if tasks == 1
            else f"{label} tasks' {tasks} public IPv4 addresses (to pull their image; no NAT)",
            "aws:ecs/service:Service",
            0,
            tasks,
            table.price(region, "public_ipv4_hour"),
        )


def _ui_lines(lines: _Lines, settings: Settings, public_ip: bool) -> None:
    """The private UI bills nothing at rest (no task, no load balancer); the other modes keep a task
    and an application load balancer, with one public address per AZ it spans."""
    ui, table, region = settings.ui, lines.table, lines.region
    if ui.access is UiAccess.PRIVATE:
        return
    _fargate_task_lines(lines, "UI", ui.cpu, ui.memory, settings.metadata.spot, public_ip)
    lines.hourly(
        "UI application load balancer",
        "aws:lb/loadBalancer:LoadBalancer",
        1,
        1,
        table.price(region, "load_balancer_hour", "application"),
        unit="LB-hour",
    )
    lines.hourly(
        f"UI load balancer's public IPv4 addresses ({UI_LOAD_BALANCER_AZS} AZs)",
        "aws:lb/loadBalancer:LoadBalancer",
        0,
        UI_LOAD_BALANCER_AZS,
        table.price(region, "public_ipv4_hour"),
    )


def _asleep_lines(lines: _Lines) -> None:
    """Scale to zero at rest: Aurora paused at 0 ACU (its storage bills), no task, the waker's check a minute."""
    table, region = lines.table, lines.region
    lines.add(
        "Aurora Serverless v2 compute: 0 ACU while paused",
        "aws:rds/cluster:Cluster",
        0,
        0,
        "ACU-hour",
        table.price(region, "aurora_serverless_v2_acu_hour"),
    )
    lines.add(
        f"Aurora storage ({AURORA_STORED_GB} GB assumed: billed on what the database holds)",
        "aws:rds/cluster:Cluster",
        1,
        AURORA_STORED_GB,
        "GB-month",
        table.price(region, "aurora_storage_gb_month"),
    )
    lines.add(
        f"ECR copy of the metadata-service image (~{MIRRORED_IMAGE_GB:g} GB compressed, estimated)",
        "aws:ecr/repository:Repository",
        1,
        MIRRORED_IMAGE_GB,
        "GB-month",
        table.price(region, "ecr_storage_gb_month"),
    )
    request = table.price(region, "lambda_arm_request")
    compute = table.price(region, "lambda_arm_gb_second")
    schedule = table.price(region, "scheduler_invocation")
    runs = Price(  # per thousand: one run's price is below the table's 6-decimal precision
        1000 * (request.usd + compute.usd * WAKER_RUN_SECONDS * WAKER_MEMORY_GB + schedule.usd),
        f"{request.source}; {schedule.source}",
        request.estimated_from or compute.estimated_from or schedule.estimated_from,
    )
    lines.add(
        f"Waker's idle check every minute (Lambda, ~{WAKER_RUN_SECONDS:g} s at 128 MB arm64; EventBridge Scheduler "
        "free under 14 million runs)",
        "aws:scheduler/schedule:Schedule",
        1,
        TICKS_PER_HOUR * HOURS_PER_MONTH / 1000,
        "1,000 runs",
        runs,
    )


@dataclass(frozen=True)
class HourLine:
    item: str
    usd: float
    """Per awake hour, unrounded."""
    source: str


def awake_hour(settings: Settings, public_subnets: bool = True, table: PriceTable | None = None) -> list[HourLine]:
    """What one hour with the scale-to-zero service awake adds to its idle cost: Aurora at its least capacity,
    the on-demand task (and its address in public subnets), the waker's request counting."""
    table, region, service = table or price_table(), settings.region, settings.metadata
    acu = table.price(region, "aurora_serverless_v2_acu_hour")
    vcpu, memory = table.price(region, "fargate", "x86_vcpu_hour"), table.price(region, "fargate", "x86_gb_hour")
    counting = table.price(region, "cloudwatch_api_request")
    hour = [
        HourLine(f"Aurora Serverless v2 at {AURORA_AWAKE_ACU:g} ACU", AURORA_AWAKE_ACU * acu.usd, acu.source),
        HourLine(f"Metadata service: Fargate, {service.cpu / 1024:g} vCPU", service.cpu / 1024 * vcpu.usd, vcpu.source),
        HourLine(
            f"Metadata service: Fargate, {service.memory / 1024:g} GB",
            service.memory / 1024 * memory.usd,
            memory.source,
        ),
    ]
    if public_subnets and not settings.network.private_subnets:
        address = table.price(region, "public_ipv4_hour")
        hour.append(HourLine("Metadata service task's public IPv4 address", address.usd, address.source))
    hour.append(
        HourLine(
            "Waker's request count (CloudWatch GetMetricStatistics once a minute)",
            TICKS_PER_HOUR * counting.usd,
            counting.source,
        )
    )
    return hour


@dataclass(frozen=True)
class ScaleToZeroComparison:
    """Scale to zero next to the same settings without it, in one region."""

    idle: CostEstimate
    always_on: CostEstimate
    awake_hour: list[HourLine]
    idle_minutes: int

    @property
    def awake_hour_usd(self) -> float:
        return sum(line.usd for line in self.awake_hour)

    @property
    def always_on_hour_usd(self) -> float:
        """The always-on stack bills the same every hour, used or not."""
        return self.always_on.total_usd / HOURS_PER_MONTH

    @property
    def wake_tail_usd(self) -> float:
        """After the last request the service stays up idle_minutes, Aurora AURORA_PAUSE_MINUTES more."""
        aurora = next(line.usd for line in self.awake_hour if line.item.startswith("Aurora"))
        return (self.awake_hour_usd - aurora) * self.idle_minutes / 60 + aurora * (
            self.idle_minutes + AURORA_PAUSE_MINUTES
        ) / 60

    @property
    def break_even_awake_hours(self) -> float:
        """Awake hours a month (count each wake's idle tail as awake time) at which scale to zero costs as much as
        always on."""
        return (self.always_on.total_usd - self.idle.total_usd) / self.awake_hour_usd


def scale_to_zero_comparison(settings: Settings, table: PriceTable | None = None) -> ScaleToZeroComparison:
    """`settings` with metadata:scaleToZero, against the same stack always on with dev's Fargate Spot service."""
    always_on = settings.model_copy(
        update={"metadata": settings.metadata.model_copy(update={"scale_to_zero": False, "spot": True})}
    )
    return ScaleToZeroComparison(
        idle=estimate_monthly_cost(settings, table=table),
        always_on=estimate_monthly_cost(always_on, table=table),
        awake_hour=awake_hour(settings, table=table),
        idle_minutes=settings.metadata.idle_minutes,
    )


def _metadata_service_lines(lines: _Lines) -> None:
    table, region = lines.table, lines.region
    lines.add(
        "Secrets Manager: database password and API key",
        "aws:secretsmanager/secret:Secret",
        SECRETS_WITH_METADATA_SERVICE,
        SECRETS_WITH_METADATA_SERVICE,
        "secret-month",
        table.price(region, "secrets_manager_secret_month"),
    )
    lines.add(
        "Cloud Map private DNS namespace (a Route 53 hosted zone)",
        "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace",
        1,
        1,
        "zone-month",
        table.price(region, "route53_hosted_zone_month"),
    )


def terraform_defaults_estimate(region: str, table: PriceTable | None = None, section: str = "items") -> CostEstimate:
    """The Terraform module's default always-on resources (`section` "ui_items": its UI's), priced with
    the same table."""
    table = table or price_table()
    inventory = tomllib.loads(resources.files("metaflow_infra").joinpath("data", "terraform_defaults.toml").read_text())
    lines = _Lines(table, region)
    for entry in inventory[section]:
        price = table.price(region, *entry["price"])
        if entry.get("monthly"):
            lines.add(entry["item"], "terraform", 0, entry["quantity"], entry["unit"], price)
        else:
            lines.hourly(entry["item"], "terraform", 0, entry["quantity"], price, unit=entry["unit"])
    return CostEstimate(region, lines.lines, table.read_on, lines.estimated, priced_with=table.priced_with(region))


def estimate_output(settings: Settings, public_subnets: bool) -> dict[str, Any]:
    """The `estimatedMonthlyCost` stack output; an explicit error instead of a guess when data is missing."""
    try:
        output = estimate_monthly_cost(settings, public_subnets).as_output()
        if settings.metadata.enabled and settings.metadata.scale_to_zero:
            hour = awake_hour(settings, public_subnets)
            output["awakeHourUsd"] = round(sum(line.usd for line in hour), 4)
            output["awakeHour"] = [
                {"item": line.item, "usd": round(line.usd, 6), "source": line.source} for line in hour
            ]
        return output
    except PriceDataError as err:
        return {"region": settings.region, "error": str(err), "totalUsd": None}
