"""`python -m metaflow_infra plan`: what `pulumi up` would create, the Metaflow profile and the
monthly bill — offline, from the stack's YAML, with nothing installed but Python."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .costs import CostEstimate, estimate_monthly_cost, scale_to_zero_comparison, terraform_defaults_estimate
from .offline import OfflineRun, run_offline
from .profile import SECRET_KEYS
from .settings import ConfigError, available_presets, load_settings, presets

MASK = "[secret]"


def stack_config(stack: str, directory: Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Config of `Pulumi.<stack>.yaml` as Pulumi hands it to the program, plus `ns:key=value` overrides."""
    path = directory / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise ConfigError(f"no {path.name} in {directory}: create it, or pick a stack with --stack")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path.name} is not valid YAML: {err}") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(config or {}, dict):
        raise ConfigError(f"{path.name}: expected a mapping with a `config:` mapping of namespace:key values")
    raw: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise ConfigError(f"{key} is an encrypted secret; `plan` cannot read it offline")
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    for assignment in overrides:
        key, separator, value = assignment.partition("=")
        if not separator or ":" not in key:
            raise ConfigError(f"--set {assignment!r}: expected namespace:key=value, e.g. compute:maxVcpus=128")
        raw[key] = value
    return raw


def masked_profile(profile: Mapping[str, str]) -> dict[str, str]:
    return {key: MASK if key in SECRET_KEYS else value for key, value in profile.items()}


def resources_by_component(run: OfflineRun) -> dict[str, list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for resource in run.resources:
        if resource.is_component or resource.type.startswith("pulumi:"):
            continue
        component = run.component_of(resource)
        label = component.type.removeprefix("metaflow:infra:") if component else "(stack)"
        groups[label].append({"type": resource.type, "name": resource.name})
    # Registration order is asynchronous: sort, so the same config always prints the same plan.
    return {
        label: sorted(items, key=lambda item: (item["type"], item["name"])) for label, items in sorted(groups.items())
    }


def plan_document(run: OfflineRun) -> dict[str, Any]:
    return {
        "stack": run.settings.stack,
        "region": run.settings.region,
        "preset": run.settings.metaflow.preset,
        "resources": resources_by_component(run),
        "metaflowProfile": masked_profile(run.outputs["metaflowProfile"]),
        "estimatedMonthlyCost": run.outputs["estimatedMonthlyCost"],
        "uncheckedSubnets": run.unchecked_subnets,
    }


def _cost_rows(estimate: Mapping[str, Any]) -> list[str]:
    if estimate.get("error"):
        return [f"  cost estimate unavailable: {estimate['error']}"]
    rows = [f"  {'item':<74} {'quantity':>9} {'unit':<14} {'unit $':>9} {'$/month':>9}"]
    for line in estimate["lines"]:
        rows.append(
            f"  {line['item']:<74} {line['quantity']:>9g} {line['unit']:<14} "
            f"{line['unitUsd']:>9.4f} {line['monthlyUsd']:>9.2f}"
        )
    rows.append(f"  {'total':<74} {'':>9} {'':<14} {'':>9} {estimate['totalUsd']:>9.2f}")
    if estimate["estimatedItems"]:
        rows.append(
            f"  estimated from {estimate['region']}'s ratio to us-east-1: {', '.join(estimate['estimatedItems'])}"
        )
    rows.append("  not included (usage-based): " + "; ".join(estimate["notIncluded"]))
    return rows


def render_plan(document: Mapping[str, Any]) -> str:
    resources = document["resources"]
    total = sum(len(items) for items in resources.values())
    out = [
        f"Stack {document['stack']} ({document['preset']} preset) in {document['region']}: "
        f"`pulumi up` would create {total} resources",
        "",
    ]
    for component, items in resources.items():
        out.append(f"  {component} ({len(items)})")
        out += [f"    {item['type']:<70} {item['name']}" for item in items]
    if document.get("uncheckedSubnets"):
        out += [
            "",
            f"  Not checked offline: {', '.join(document['uncheckedSubnets'])} (taken as having a way out to "
            "the internet; `pulumi up` checks their routes and public IPs before declaring anything)",
        ]
    out += ["", "Metaflow profile (metaflowProfile output; secrets masked):"]
    out += [f"  {key} = {value}" for key, value in document["metaflowProfile"].items()]
    cost = document["estimatedMonthlyCost"]
    out += [
        "",
        f"Always-on monthly cost (estimatedMonthlyCost; 730 h; prices read on {cost.get('pricesReadOn', '?')}):",
    ]
    out += _cost_rows(cost)
    return "\n".join(out)


def preset_estimates(region: str) -> dict[str, CostEstimate]:
    """Idle cost of each preset's defaults in a region (presets not deployable yet are priced too)."""
    estimates = {}
    for preset in presets():
        settings = load_settings(
            {"aws:region": region, "metaflow:preset": preset}, stack="compare", check_availability=False
        )
        estimates[preset] = estimate_monthly_cost(settings)
    return estimates


UI_VARIANTS = {
    "`dev` + private UI": {"ui:enabled": "true"},
    "`dev` + allow-listed UI": {"ui:enabled": "true", "ui:access": "allowList", "ui:allowedCidrs": "203.0.113.0/24"},
}
"""The UI's modes, priced on the dev preset (public prices like allowList: the sign-in bills per user)."""


SCALE_TO_ZERO = "`dev` + scale to zero"


def scale_to_zero_document(region: str) -> dict[str, Any]:
    """The dev preset with metadata:scaleToZero: idle, itemized, plus what being awake costs next to dev."""
    comparison = scale_to_zero_comparison(
        load_settings({"aws:region": region, "metadata:scaleToZero": "true"}, stack="compare")
    )
    return {
        **comparison.idle.as_output(),
        "awakeHour": [{"item": line.item, "usd": line.usd, "source": line.source} for line in comparison.awake_hour],
        "awakeHourUsd": comparison.awake_hour_usd,
        "devHourUsd": comparison.always_on_hour_usd,
        "devMonthlyUsd": comparison.always_on.total_usd,
        "wakeTailUsd": comparison.wake_tail_usd,
        "idleMinutes": comparison.idle_minutes,
        "breakEvenAwakeHours": comparison.break_even_awake_hours,
    }


def comparison_document(region: str) -> dict[str, Any]:
    columns = {**preset_estimates(region), "terraform-aws-metaflow defaults": terraform_defaults_estimate(region)}
    for name, overrides in UI_VARIANTS.items():
        settings = load_settings({"aws:region": region, **overrides}, stack="compare")
        columns[name] = estimate_monthly_cost(settings)
    columns["terraform-aws-metaflow UI alone"] = terraform_defaults_estimate(region, section="ui_items")
    return {
        **{name: estimate.as_output() for name, estimate in columns.items()},
        SCALE_TO_ZERO: scale_to_zero_document(region),
    }


def render_scale_to_zero(estimate: Mapping[str, Any]) -> list[str]:
    awake = "; ".join(f"{line['item']} ${line['usd']:.4f}" for line in estimate["awakeHour"])
    return [
        "",
        f"{SCALE_TO_ZERO} (`metadata:scaleToZero true`): ${estimate['totalUsd']:.2f} a month while idle. Each hour "
        f"awake adds ${estimate['awakeHourUsd']:.4f} ({awake}); `dev` bills ${estimate['devHourUsd']:.4f} every hour "
        f"(${estimate['devMonthlyUsd']:.2f} a month). After the last request the service stays up "
        f"{estimate['idleMinutes']} minutes and the database 5 more: ${estimate['wakeTailUsd']:.4f} a wake. It costs "
        f"as much as `dev` at {estimate['breakEvenAwakeHours']:.0f} awake hours a month.",
    ]


def render_comparison(document: Mapping[str, Mapping[str, Any]]) -> str:
    region = next(iter(document.values()))["region"]
    out = [
        f"Monthly idle cost in {region} (730 h; always-on resources only)",
        "",
        "| setup | $/month | what bills while idle |",
        "|---|---:|---|",
    ]
    for name, estimate in document.items():
        items = "; ".join(f"{line['item']} ${line['monthlyUsd']:.2f}" for line in estimate["lines"]) or "nothing"
        label = f"`{name}` preset" if name in presets() else name
        if name in presets() and name not in available_presets():
            label += " (preview: not deployable yet)"
        out.append(f"| {label} | {estimate['totalUsd']:.2f} | {items} |")
    if SCALE_TO_ZERO in document:
        out += render_scale_to_zero(document[SCALE_TO_ZERO])
    return "\n".join(out)


def run_plan(stack: str, directory: Path, overrides: Iterable[str] = (), as_json: bool = False) -> str:
    run = run_offline(stack_config(stack, directory, overrides), stack=stack)
    document = plan_document(run)
    return json.dumps(document, indent=2) if as_json else render_plan(document)


def run_compare(region: str, as_json: bool = False) -> str:
    document = comparison_document(region)
    return json.dumps(document, indent=2) if as_json else render_comparison(document)
