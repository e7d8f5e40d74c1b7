"""Every cost line, to the cent, against a small made-up price table: which resources are priced,
at which quantity and unit price, how a missing regional price is estimated, and what the stack
output carries. The real table's figures are checked by test_costs.py."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import re
from typing import Any

import pytest
from conftest import TODAY, stack_config

from metaflow_infra.costs import (
    BILLED_WHILE_IDLE,
    HOURS_PER_MONTH,
    CostEstimate,
    CostLine,
    Price,
    PriceDataError,
    PriceTable,
    estimate_monthly_cost,
    estimate_output,
    price_table,
    terraform_defaults_estimate,
)
from metaflow_infra.settings import ComputeType, Settings, load_settings, postgres_end_of_standard_support


def priced(usd: float, source: str = "book") -> dict[str, Any]:
    return {"usd": usd, "source": source}


TABLE = PriceTable(
    {
        "sources": {
            "book": {"read_on": "2026-03-04"},
            "old": {"read_on": "2025-12-31"},
            "new": {"read_on": "2026-05-06"},
        },
        "regions": {
            "us-east-1": {
                "rds_instance_hour": {"db.t4g.micro": priced(0.02), "db.t4g.small": priced(0.04)},
                "rds_multi_az_factor": priced(2.0),
                "rds_storage_gb_month": {"gp3": priced(0.1)},
                "rds_extended_support_vcpu_hour": {"year_1_2": priced(0.1), "year_3": priced(0.2)},
                "fargate": {
                    "x86_vcpu_hour": priced(0.0404855),
                    "x86_gb_hour": priced(0.004),
                    "spot_discount": priced(0.7),
                },
                "nat_gateway_hour": priced(0.0451, "new"),
                "public_ipv4_hour": priced(0.005),
                "secrets_manager_secret_month": priced(0.4),
                "route53_hosted_zone_month": priced(0.5),
                "load_balancer_hour": {"application": priced(0.0225)},
                "ec2_instance_hour": {
                    "c5.large": priced(0.1),
                    "c5.xlarge": priced(0.17),
                    "m5.large": priced(0.096),
                    "r5.large": priced(0.126),
                },
            },
            "eu-west-1": {
                "estimate_factor": priced(1.1111, "old"),
                "public_ipv4_hour": priced(0.006),
                "fargate": {"x86_vcpu_hour": priced(0.05)},
            },
            "sa-east-1": {"public_ipv4_hour": priced(0.007)},
        },
        "rds_instance_vcpus": {"db.t4g.micro": 2, "db.t4g.small": 2},
        "ec2_instance_vcpus": {"c5.large": 2, "c5.xlarge": 4, "m5.large": 2, "r5.large": 2},
    }
)
"""Made-up prices, chosen so each rounding and each factor shows in the result."""


def load(preset: str = "dev", overrides: dict[str, Any] | None = None, region: str = "us-east-1") -> Settings:
    return load_settings(stack_config(preset, overrides, region), stack="dev", today=TODAY)


def replace(settings: Settings, namespace: str, **values: Any) -> Settings:
    """Settings with some values changed past the config checks (states a preset could reach)."""
    group = getattr(settings, namespace)
    return settings.model_copy(update={namespace: group.model_copy(update=values)})


def lines_of(settings: Settings, **kwargs: Any) -> list[CostLine]:
    kwargs.setdefault("today", TODAY)
    return estimate_monthly_cost(settings, table=TABLE, **kwargs).lines


def line(item: str, resource_type: str, resources: int, quantity: float, unit: str, unit_usd: float, monthly: float):
    return CostLine(item, resource_type, resources, quantity, unit, unit_usd, monthly, "book")


# --- The price table -----------------------------------------------------------------------------------------


def test_a_price_listed_for_the_region_is_used_as_it_is() -> None:
    assert TABLE.price("eu-west-1", "public_ipv4_hour") == Price(0.006, "book")
    assert TABLE.price("us-east-1", "fargate", "x86_gb_hour") == Price(0.004, "book")


def test_a_price_missing_in_a_region_is_the_base_regions_times_the_regions_factor_and_says_so() -> None:
    assert TABLE.price("eu-west-1", "nat_gateway_hour") == Price(0.050111, "new", estimated_from="us-east-1 x 1.111")
    # A sibling of a listed price is estimated too.
    assert TABLE.price("eu-west-1", "fargate", "x86_gb_hour") == Price(0.004444, "book", "us-east-1 x 1.111")


def test_a_region_without_a_factor_gets_no_estimate() -> None:
    with pytest.raises(PriceDataError, match=r"no price for nat_gateway_hour in sa-east-1"):
        TABLE.price("sa-east-1", "nat_gateway_hour")


def test_an_item_the_base_region_lacks_cannot_be_estimated() -> None:
    with pytest.raises(PriceDataError, match=r"no price for rds_instance_hour\.db\.m7g\.large in eu-west-1"):
        TABLE.price("eu-west-1", "rds_instance_hour", "db.m7g.large")


def test_a_path_that_ends_before_a_price_or_runs_past_one_is_no_price() -> None:
    for path in (
        ("fargate",),
        ("public_ipv4_hour", "usd"),
        ("public_ipv4_hour", "usd", "more"),
        ("rds_instance_hour",),
    ):
        with pytest.raises(PriceDataError, match="no price for"):
            TABLE.price("us-east-1", *path)


def test_a_region_missing_from_the_table_is_an_error_naming_the_regions_covered_and_the_date() -> None:
    with pytest.raises(PriceDataError) as raised:
        TABLE.price("eu-north-1", "public_ipv4_hour")
    assert "no price data for region eu-north-1" in str(raised.value)
    assert "(read on 2026-05-06) covers eu-west-1, sa-east-1, us-east-1" in str(raised.value)


def test_the_table_is_as_recent_as_its_newest_source_and_lists_its_regions_sorted() -> None:
    assert TABLE.read_on == "2026-05-06"
    assert TABLE.regions == ["eu-west-1", "sa-east-1", "us-east-1"]


def test_vcpu_counts_are_whole_numbers() -> None:
    table = PriceTable({"ec2_instance_vcpus": {"c5.large": 2.0}})
    assert table.vcpus("ec2_instance_vcpus", "c5.large") == 2
    assert isinstance(table.vcpus("ec2_instance_vcpus", "c5.large"), int)


def test_the_shipped_table_is_read_from_the_package_data() -> None:
    table = price_table()
    assert isinstance(table, PriceTable)
    assert "us-east-1" in table.regions and table.price("us-east-1", "public_ipv4_hour").usd > 0


# --- Totals and the stack output -------------------------------------------------------------------------------


def test_the_total_is_the_sum_of_the_lines_rounded_to_cents() -> None:
    estimate = CostEstimate(
        "us-east-1", [line("a", "t", 1, 1, "hour", 1.004, 1.004), line("b", "t", 1, 1, "hour", 2.0, 2.0)], "2026-01-01"
    )
    assert estimate.total_usd == 3.0
    assert CostEstimate("us-east-1", [], "2026-01-01").total_usd == 0


def test_the_stack_output_carries_every_figure_of_the_estimate() -> None:
    estimate = CostEstimate(
        "eu-west-1",
        [CostLine("NAT gateway", "aws:ec2/natGateway:NatGateway", 1, 730, "hour", 0.05, 36.5, "src")],
        "2026-05-06",
        estimated_items=["NAT gateway"],
        not_included=("S3",),
    )
    assert estimate.as_output() == {
        "region": "eu-west-1",
        "currency": "USD",
        "hoursPerMonth": 730,
        "totalUsd": 36.5,
        "pricesReadOn": "2026-05-06",
        "lines": [
            {
                "item": "NAT gateway",
                "quantity": 730,
                "unit": "hour",
                "unitUsd": 0.05,
                "monthlyUsd": 36.5,
                "source": "src",
            }
        ],
        "estimatedItems": ["NAT gateway"],
        "notIncluded": ["S3"],
    }


def test_by_default_the_estimate_lists_every_usage_based_cost_it_leaves_out() -> None:
    not_included = " ".join(CostEstimate("us-east-1", [], "2026-01-01").not_included)
    for usage in (
        "S3 storage",
        "Batch instance",
        "API Gateway requests",
        "CloudWatch Logs",
        "RDS backup",
        "Cloud Map",
        "the private UI's task",
        "load balancer capacity units",
    ):
        assert usage in not_included


def test_estimates_and_their_lines_cannot_be_changed_once_made() -> None:
    estimate = estimate_monthly_cost(load(), table=TABLE, today=TODAY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimate.region = "eu-west-1"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimate.lines[0].monthly_usd = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLE.price("us-east-1", "public_ipv4_hour").usd = 0  # type: ignore[misc]


def test_the_output_of_a_priced_stack_is_its_estimate() -> None:
    settings = load("minimal", {"compute:minVcpus": 2})
    assert estimate_output(settings, public_subnets=True) == estimate_monthly_cost(settings).as_output()
    assert estimate_output(settings, public_subnets=True)["totalUsd"] > 0


def test_the_output_of_a_region_without_prices_is_an_explicit_error_instead_of_a_total() -> None:
    output = estimate_output(load("dev", region="us-gov-west-1"), public_subnets=True)
    assert output == {"region": "us-gov-west-1", "error": output["error"], "totalUsd": None}
    assert output["error"].startswith("no price data for region us-gov-west-1")


# --- Batch vCPUs kept running ----------------------------------------------------------------------------------


def test_vcpus_kept_running_are_priced_at_the_cheapest_allowed_on_demand_rate_per_vcpu() -> None:
    # Per vCPU: c5.large 0.05, c5.xlarge 0.0425, m5.large 0.048, r5.large 0.063.
    settings = load("minimal", {"compute:minVcpus": 3, "compute:instanceTypes": ["r5", "c5.xlarge", "m5"]})
    assert lines_of(settings) == [
        line(
            "Batch: 3 vCPUs kept running (on-demand rate of c5.xlarge; spot usually costs less)",
            "aws:batch/computeEnvironment:ComputeEnvironment",
            1,
            3 * HOURS_PER_MONTH,
            "vCPU-hour",
            0.0425,
            93.08,
        )
    ]


def test_a_family_is_priced_by_its_smallest_size_and_unpriced_families_are_skipped() -> None:
    # c6i has no price here; c5.large costs 0.05 per vCPU, m5.large 0.048.
    types = ["c6i", "c5", "m5"]
    settings = load("minimal", {"compute:minVcpus": 1, "compute:type": "ec2", "compute:instanceTypes": types})
    [batch] = lines_of(settings)
    assert batch.item == "Batch: 1 vCPUs kept running (on-demand rate of m5.large)"  # on-demand: no spot remark
    assert (batch.quantity, batch.unit_usd, batch.monthly_usd) == (HOURS_PER_MONTH, 0.048, 35.04)


def test_vcpus_kept_running_without_any_priced_type_are_an_error() -> None:
    settings = load("minimal", {"compute:minVcpus": 1, "compute:instanceTypes": ["c6i", "m6i.xlarge"]})
    with pytest.raises(PriceDataError, match=r"no EC2 price for any of \['c6i', 'm6i.xlarge'\] in us-east-1"):
        lines_of(settings)


def test_no_vcpus_kept_running_cost_nothing() -> None:
    assert lines_of(load("minimal", {"compute:minVcpus": 0})) == []


def test_fargate_keeps_nothing_running_whatever_min_vcpus_says() -> None:
    for kind in (ComputeType.FARGATE, ComputeType.FARGATE_SPOT):
        settings = replace(load("minimal"), "compute", type=kind, min_vcpus=4)
        assert lines_of(settings) == []


# --- NAT gateways ----------------------------------------------------------------------------------------------


def test_each_nat_gateway_bills_its_hours_and_its_elastic_ip() -> None:
    settings = replace(load("minimal"), "network", nat_gateways=2)
    assert lines_of(settings) == [
        CostLine("NAT gateway", "aws:ec2/natGateway:NatGateway", 2, 2 * HOURS_PER_MONTH, "hour", 0.0451, 65.85, "new"),
        line("NAT gateway Elastic IP (public IPv4)", "aws:ec2/eip:Eip", 2, 2 * HOURS_PER_MONTH, "hour", 0.005, 7.3),
    ]


def test_a_price_estimated_for_the_region_is_marked_in_its_line_and_listed() -> None:
    settings = replace(load("minimal", region="eu-west-1"), "network", nat_gateways=1)
    estimate = estimate_monthly_cost(settings, table=TABLE, today=TODAY)
    nat, eip = estimate.lines
    assert nat.source == "estimate: us-east-1 x 1.111 (new)"
    assert (nat.unit_usd, nat.monthly_usd) == (0.050111, 36.58)
    assert eip.source == "book"  # listed for the region
    assert estimate.estimated_items == ["NAT gateway"]
    assert estimate.region == "eu-west-1" and estimate.prices_read_on == "2026-05-06"


# --- The metadata service and its database ---------------------------------------------------------------------

DEV_SPOT_SERVICE = [
    line("Metadata service: Fargate Spot (~70% below on-demand), 0.25 vCPU", "aws:ecs/service:Service", 1, 182.5,
         "vCPU-hour", 0.012146, 2.22),
    line("Metadata service: Fargate Spot (~70% below on-demand), 1 GB", "aws:ecs/service:Service", 0, 730.0,
         "GB-hour", 0.0012, 0.88),
]  # fmt: skip
PUBLIC_IPV4 = line(
    "Metadata service task's public IPv4 address (to pull its image; no NAT)",
    "aws:ecs/service:Service",
    0,
    730,
    "hour",
    0.005,
    3.65,
)
SECRETS_AND_ZONE = [
    line("Secrets Manager: database password and API key", "aws:secretsmanager/secret:Secret", 2, 2, "secret-month",
         0.4, 0.8),
    line("Cloud Map private DNS namespace (a Route 53 hosted zone)",
         "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace", 1, 1, "zone-month", 0.5, 0.5),
]  # fmt: skip


def test_the_dev_stack_bills_its_database_its_spot_service_its_address_secrets_and_zone() -> None:
    assert lines_of(load("dev")) == [
        line("RDS PostgreSQL 17 db.t4g.micro (single-AZ)", "aws:rds/instance:Instance", 1, 730, "instance-hour",
             0.02, 14.6),
        line("RDS gp3 storage (single-AZ)", "aws:rds/instance:Instance", 0, 20, "GB-month", 0.1, 2.0),
        *DEV_SPOT_SERVICE,
        PUBLIC_IPV4,
        *SECRETS_AND_ZONE,
    ]  # fmt: skip


def test_the_public_subnets_are_assumed_unless_told_otherwise() -> None:
    assert PUBLIC_IPV4 in estimate_monthly_cost(load("dev"), table=TABLE, today=TODAY).lines


def test_a_service_without_a_public_address_bills_none() -> None:
    assert PUBLIC_IPV4 not in lines_of(load("dev"), public_subnets=False)
    assert PUBLIC_IPV4 not in lines_of(replace(load("dev"), "network", private_subnets=True))


def test_an_on_demand_service_bills_fargate_rates_for_its_size() -> None:
    settings = load("dev", {"metadata:spot": False, "metadata:cpu": 2048, "metadata:memory": 5120})
    service = [line for line in lines_of(settings) if line.item.startswith("Metadata service: ")]
    assert service == [
        line("Metadata service: Fargate, 2 vCPU", "aws:ecs/service:Service", 1, 1460, "vCPU-hour", 0.040486, 59.11),
        line("Metadata service: Fargate, 5 GB", "aws:ecs/service:Service", 0, 3650, "GB-hour", 0.004, 14.6),
    ]


def test_a_multi_az_database_bills_instance_and_storage_for_the_standby_too() -> None:
    settings = load("dev", {"db:multiAz": True, "db:instanceClass": "db.t4g.small", "db:allocatedStorageGb": 50})
    assert lines_of(settings)[:2] == [
        line("RDS PostgreSQL 17 db.t4g.small (multi-AZ)", "aws:rds/instance:Instance", 1, 1460, "instance-hour",
             0.04, 58.4),
        line("RDS gp3 storage (multi-AZ)", "aws:rds/instance:Instance", 0, 100, "GB-month", 0.1, 10.0),
    ]  # fmt: skip


def extended_support(settings: Settings, today: datetime.date) -> list[CostLine]:
    return [line for line in lines_of(settings, today=today) if "Extended Support" in line.item]


def test_extended_support_starts_the_day_after_standard_support_ends_and_doubles_after_two_years() -> None:
    settings = load("dev", {"db:engineVersion": 13, "db:allowExtendedSupport": True})
    end = postgres_end_of_standard_support()[13]
    assert extended_support(settings, end) == []
    first = line("RDS Extended Support for PostgreSQL 13 (year 1 2)", "aws:rds/instance:Instance", 0, 1460,
                 "vCPU-hour", 0.1, 146.0)  # fmt: skip
    for days in (1, 730):
        assert extended_support(settings, end + datetime.timedelta(days=days)) == [first]
    third = dataclasses.replace(
        first, item="RDS Extended Support for PostgreSQL 13 (year 3)", unit_usd=0.2, monthly_usd=292.0
    )
    assert extended_support(settings, end + datetime.timedelta(days=731)) == [third]


def test_extended_support_bills_the_standbys_vcpus_too() -> None:
    settings = load("dev", {"db:engineVersion": 13, "db:allowExtendedSupport": True, "db:multiAz": True})
    [support] = extended_support(settings, postgres_end_of_standard_support()[13] + datetime.timedelta(days=1))
    assert (support.quantity, support.monthly_usd) == (2 * 2 * HOURS_PER_MONTH, 292.0)


def test_without_a_date_the_estimate_is_for_today() -> None:
    settings = load("dev", {"db:engineVersion": 13, "db:allowExtendedSupport": True})
    assert estimate_monthly_cost(settings, table=TABLE).lines == lines_of(settings, today=datetime.date.today())


# --- The UI ---------------------------------------------------------------------------------------------------

UI = {"ui:enabled": True, "ui:access": "allowList", "ui:allowedCidrs": ["203.0.113.0/24"]}


def ui_lines(settings: Settings, **kwargs: Any) -> list[CostLine]:
    return [line for line in lines_of(settings, **kwargs) if line.item.startswith("UI")]


def test_a_private_ui_bills_nothing_at_rest() -> None:
    assert ui_lines(load("dev", {"ui:enabled": True})) == []
    assert lines_of(load("dev", {"ui:enabled": True})) == lines_of(load("dev"))


def test_a_load_balanced_ui_bills_its_task_its_address_the_load_balancer_and_one_address_per_az() -> None:
    assert ui_lines(load("dev", UI)) == [
        line("UI: Fargate Spot (~70% below on-demand), 0.5 vCPU", "aws:ecs/service:Service", 1, 365, "vCPU-hour",
             0.012146, 4.43),
        line("UI: Fargate Spot (~70% below on-demand), 2 GB", "aws:ecs/service:Service", 0, 1460, "GB-hour",
             0.0012, 1.75),
        line("UI task's public IPv4 address (to pull its image; no NAT)", "aws:ecs/service:Service", 0, 730, "hour",
             0.005, 3.65),
        line("UI application load balancer", "aws:lb/loadBalancer:LoadBalancer", 1, 730, "LB-hour", 0.0225, 16.43),
        line("UI load balancer's public IPv4 addresses (2 AZs)", "aws:lb/loadBalancer:LoadBalancer", 0, 1460, "hour",
             0.005, 7.3),
    ]  # fmt: skip


def test_the_ui_task_runs_on_demand_like_the_metadata_service_and_without_an_address_in_private_subnets() -> None:
    [vcpu, memory, balancer, addresses] = ui_lines(load("dev", {**UI, "metadata:spot": False}), public_subnets=False)
    assert (vcpu.item, vcpu.unit_usd) == ("UI: Fargate, 0.5 vCPU", 0.040486)
    assert (memory.item, memory.unit_usd) == ("UI: Fargate, 2 GB", 0.004)
    assert balancer.item == "UI application load balancer" and addresses.quantity == 2 * HOURS_PER_MONTH


# --- The Terraform module's defaults ---------------------------------------------------------------------------


def test_the_terraform_comparison_prices_hourly_and_monthly_items_and_claims_none_of_this_stacks_resources() -> None:
    estimate = terraform_defaults_estimate("us-east-1")
    table = price_table()
    by_item = {line.item: line for line in estimate.lines}
    storage = by_item["RDS gp2 storage 20 GB x 2 (multi-AZ)"]  # monthly = true: quantity as given
    assert (storage.quantity, storage.unit, storage.unit_usd) == (
        40,
        "GB-month",
        table.price("us-east-1", "rds_storage_gb_month", "gp2").usd,
    )
    vcpu = by_item["Metadata service: Fargate 0.5 vCPU"]  # hourly: 730 hours of the quantity
    assert (vcpu.quantity, vcpu.unit) == (0.5 * HOURS_PER_MONTH, "vCPU-hour")
    assert vcpu.unit_usd == table.price("us-east-1", "fargate", "x86_vcpu_hour").usd
    assert all(line.resources == 0 and line.resource_type == "terraform" for line in estimate.lines)
    assert estimate.region == "us-east-1" and estimate.prices_read_on == table.read_on


def test_the_terraform_comparison_uses_the_table_it_is_given() -> None:
    with pytest.raises(PriceDataError):
        terraform_defaults_estimate("us-east-1", table=TABLE)  # TABLE has no c4.2xlarge


# --- What bills while idle -------------------------------------------------------------------------------------


def test_every_resource_type_the_estimate_prices_is_one_that_bills_while_idle() -> None:
    settings = replace(load("dev", {"compute:minVcpus": 2, "compute:instanceTypes": ["c5"]}), "network", nat_gateways=1)
    priced_types = {line.resource_type for line in lines_of(settings)}
    assert len(priced_types) == 7
    assert priced_types <= BILLED_WHILE_IDLE


@pytest.mark.parametrize("token", sorted(BILLED_WHILE_IDLE))
def test_every_type_that_bills_while_idle_is_a_real_pulumi_aws_resource_type(token: str) -> None:
    """A misspelt type token would never match a declared resource, and its cost would go unchecked."""
    _, module, name = re.fullmatch(r"aws:([a-z0-9]+)/([A-Za-z0-9]+):([A-Za-z0-9]+)", token).group(0, 1, 3)
    resource = getattr(importlib.import_module(f"pulumi_aws.{module}"), name)
    assert f"'{token}'" in inspect.getsource(resource._internal_init)
