"""`python -m metaflow_infra plan`: what `pulumi up` would create, the Metaflow profile and the
monthly bill — offline, from the stack's YAML, with nothing installed but Python."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .changes import SECRET, component_label, diff_runs, key_properties
from .costs import (
    CostEstimate,
    estimate_monthly_cost,
    scale_to_zero_comparison,
    terraform_defaults_estimate,
    unpriced_partition,
)
from .offline import ACCOUNT_ID, OfflineRun, run_offline
from .profile import SECRET_KEYS, SERVICE_RETRY_SECONDS
from .settings import ConfigError, available_presets, data_api_regions, load_settings, presets
from .wake import WAKE_GOAL_SECONDS, best_wake_seconds, worst_first_answer_seconds, worst_wake_seconds


def stack_config(stack: str, directory: Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Config of `Pulumi.<stack>.yaml` as Pulumi hands it to the program, plus `ns:key=value` overrides
    (or `ns:key.path=value`, as `pulumi config set --path` takes it)."""
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
        target, separator, value = assignment.partition("=")
        key, steps = _config_path(target) if separator else ("", [])
        if not separator or ":" not in key:
            raise ConfigError(
                f"--set {assignment!r}: expected namespace:key=value, e.g. compute:maxVcpus=128 "
                "(or a path into a structured key, e.g. metaflow:tags.team=data-science)"
            )
        raw[key] = _set_at_path(key, raw.get(key), steps, value) if steps else value
    return raw


PATH_STEP = re.compile(r'\.([^.\[\]"]+)|\[(\d+)\]|\["([^"]+)"\]')
"""One step of a `pulumi config set --path` path: `.name`, `[0]` or `["name.with.dots"]`."""


def _config_path(target: str) -> tuple[str, list[str | int]]:
    """`metaflow:tags.team` -> (`metaflow:tags`, ["team"]); `aws:assumeRoles[0].roleArn` -> (…, [0, "roleArn"])."""
    cut = min((i for i in (target.find("."), target.find("[")) if i >= 0), default=len(target))
    key, rest = target[:cut], target[cut:]
    steps: list[str | int] = []
    while rest:
        step = PATH_STEP.match(rest)
        if step is None:
            raise ConfigError(
                f'--set {target!r}: {rest!r} is not a path; accepted: .name, [index] or ["name"] steps, '
                'e.g. metaflow:tags.team or metaflow:tags["cost.center"]'
            )
        name, index, quoted = step.groups()
        steps.append(int(index) if index is not None else name or quoted)
        rest = rest[step.end() :]
    return key, steps


def _set_at_path(key: str, current: str | None, steps: list[str | int], value: str) -> str:
    """The key's structured value with `value` (a string, as `pulumi config set --path` stores it) at the path."""
    try:
        root: Any = json.loads(current) if current is not None else None
    except ValueError:
        root = current
    if root is None:
        root = [] if isinstance(steps[0], int) else {}
    if not isinstance(root, dict | list):
        raise ConfigError(
            f"--set {key}...: {key} holds {current!r}, not a map or a list; set it whole, e.g. --set '{key}=<JSON>'"
        )
    node: Any = root
    for step, following in zip(steps, [*steps[1:], None], strict=True):
        fresh: Any = value if following is None else [] if isinstance(following, int) else {}
        if isinstance(step, int):
            if not isinstance(node, list) or step > len(node):
                raise ConfigError(f"--set {key}: index [{step}] is past the end of the list (or not a list there)")
            if step == len(node):
                node.append(fresh)
            elif following is None:
                node[step] = value
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: .{step} names a field, but there is a list there; use [index]")
            node[step] = value if following is None else node.get(step, fresh)
            node = node[step]
    return json.dumps(root)


def masked_profile(profile: Mapping[str, str]) -> dict[str, str]:
    return {key: SECRET if key in SECRET_KEYS else value for key, value in profile.items()}


KEY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("availabilityZone", "cidrBlock", "mapPublicIpOnLaunch"),
    "aws:ec2/natGateway:NatGateway": ("connectivityType",),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName", "vpcEndpointType"),
    "aws:s3/bucket:Bucket": ("bucket", "bucketPrefix", "forceDestroy"),
    "aws:s3/bucketVersioning:BucketVersioning": ("versioningConfiguration.status",),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "rules[0].applyServerSideEncryptionByDefault.sseAlgorithm",
    ),
    "aws:kms/key:Key": ("enableKeyRotation",),
    "aws:batch/computeEnvironment:ComputeEnvironment": (
        "computeResources.type",
        "computeResources.minVcpus",
        "computeResources.maxVcpus",
        "computeResources.instanceTypes",
        "computeResources.allocationStrategy",
    ),
    "aws:batch/jobQueue:JobQueue": ("priority", "state"),
    "aws:ec2/launchTemplate:LaunchTemplate": (
        "metadataOptions.httpTokens",
        "blockDeviceMappings[0].ebs.volumeSize",
        "blockDeviceMappings[0].ebs.volumeType",
    ),
    "aws:rds/instance:Instance": (
        "engine",
        "engineVersion",
        "instanceClass",
        "allocatedStorage",
        "storageType",
        "multiAz",
        "publiclyAccessible",
        "deletionProtection",
        "backupRetentionPeriod",
        "performanceInsightsEnabled",
    ),
    "aws:ecs/service:Service": (
        "desiredCount",
        "capacityProviderStrategies[0].capacityProvider",
        "networkConfiguration.assignPublicIp",
    ),
    "aws:ecs/taskDefinition:TaskDefinition": ("cpu", "memory"),
    "aws:lb/loadBalancer:LoadBalancer": ("loadBalancerType", "internal"),
    "aws:cloudwatch/logGroup:LogGroup": ("retentionInDays",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName", "threshold"),
    "aws:ecr/repository:Repository": ("imageTagMutability",),
    "aws:lambda/function:Function": ("runtime", "memorySize", "reservedConcurrentExecutions"),
    "aws:dynamodb/table:Table": ("billingMode",),
    "aws:budgets/budget:Budget": ("limitAmount", "limitUnit"),
}
"""Per resource type, the inputs a person deciding on a setting wants to see: sizes, counts, engine and
version, AZs, public or private. The diff shows every input; this is the plan's short view."""
PROVIDER_TYPE = "pulumi:providers:aws"
PLACEHOLDER_NOTE = (
    "values marked (placeholder) were made up offline (the account id {account}, generated names and ids, "
    "URLs built from them); `pulumi up` shows the real ones"
)


def default_tags(run: OfflineRun) -> dict[str, str]:
    """The tags the program's AWS provider puts on every resource that takes tags."""
    providers = [r for r in run.resources if r.type == PROVIDER_TYPE]
    tags = json.loads(providers[0].inputs.get("defaultTags", "{}")).get("tags", {}) if providers else {}
    return dict(sorted(tags.items()))


def resources_by_component(run: OfflineRun) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for resource in run.resources:
        if resource.is_component or resource.type.startswith("pulumi:"):
            continue
        item: dict[str, Any] = {"type": resource.type, "name": resource.name}
        properties = key_properties(resource, KEY_PROPERTIES.get(resource.type, ()))
        item |= {"properties": properties} if properties else {}
        item |= {"protect": True} if resource.protect else {}
        item |= {"retainOnDelete": True} if resource.retain_on_delete else {}
        groups[component_label(run, resource)].append(item)
    # Registration order is asynchronous: sort, so the same config always prints the same plan.
    return {
        label: sorted(items, key=lambda item: (item["type"], item["name"])) for label, items in sorted(groups.items())
    }


def plan_document(run: OfflineRun) -> dict[str, Any]:
    profile = masked_profile(run.outputs["metaflowProfile"])
    return {
        "stack": run.settings.stack,
        "region": run.settings.region,
        "preset": run.settings.metaflow.preset,
        "warnings": run.config_warnings,
        "tags": default_tags(run),
        "resources": resources_by_component(run),
        "metaflowProfile": profile,
        "placeholders": {
            "note": PLACEHOLDER_NOTE.format(account=ACCOUNT_ID),
            "profileKeys": [key for key, value in profile.items() if run.is_placeholder(value)],
        },
        "estimatedMonthlyCost": run.outputs["estimatedMonthlyCost"],
        "uncheckedSubnets": run.unchecked_subnets,
    }


def priced_with_note(region: str, stand_in: str) -> str:
    return (
        f"ESTIMATE: the price table has no figures for {region} yet; every price in this estimate is {stand_in}'s, "
        f"the nearest priced region (prices in {region} may differ)"
    )


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
    if "awakeHourUsd" in estimate:  # scale to zero: what each hour the service is awake adds
        awake = "; ".join(f"{line['item']} ${line['usd']:.4f}" for line in estimate["awakeHour"])
        rows.append(f"  each hour awake (scale to zero) adds ${estimate['awakeHourUsd']:.4f}: {awake}")
    if estimate.get("pricedWith"):
        rows.append("  " + priced_with_note(estimate["region"], estimate["pricedWith"]))
    elif estimate["estimatedItems"]:
        rows.append(
            f"  estimated from {estimate['region']}'s ratio to us-east-1: {', '.join(estimate['estimatedItems'])}"
        )
    rows.append("  not included (usage-based): " + "; ".join(estimate["notIncluded"]))
    return rows


def _resource_row(item: Mapping[str, Any]) -> str:
    details = " ".join(f"{key}={value}" for key, value in item.get("properties", {}).items())
    guards = [
        label for flag, label in (("protect", "protected"), ("retainOnDelete", "kept on delete")) if item.get(flag)
    ]
    details += f" [{', '.join(guards)}]" if guards else ""
    return f"    {item['type']:<70} {item['name']:<32} {details}".rstrip()


def _warning_rows(warnings: list[str]) -> list[str]:
    return ["Keys that change nothing here:", *(f"  warning: {w}" for w in warnings), ""] if warnings else []


def render_plan(document: Mapping[str, Any]) -> str:
    resources = document["resources"]
    total = sum(len(items) for items in resources.values())
    out = [
        f"Stack {document['stack']} ({document['preset']} preset) in {document['region']}: "
        f"`pulumi up` would create {total} resources",
        "",
        *_warning_rows(document["warnings"]),
        "Tags on every resource that takes them (the AWS provider's default tags): "
        + ", ".join(f"{key}={value}" for key, value in document["tags"].items()),
        "",
    ]
    for component, items in resources.items():
        out.append(f"  {component} ({len(items)})")
        out += [_resource_row(item) for item in items]
    if document.get("uncheckedSubnets"):
        out += [
            "",
            f"  Not checked offline: {', '.join(document['uncheckedSubnets'])} (taken as having a way out to "
            "the internet; `pulumi up` checks their routes and public IPs before declaring anything)",
        ]
    placeholders = document["placeholders"]
    out += ["", f"Metaflow profile (metaflowProfile output; secrets masked; {placeholders['note']}):"]
    out += [
        f"  {key} = {value}" + ("  (placeholder)" if key in placeholders["profileKeys"] else "")
        for key, value in document["metaflowProfile"].items()
    ]
    cost = document["estimatedMonthlyCost"]
    # An estimate that failed read no prices: its error line below says why.
    read_on = f"; prices read on {cost['pricesReadOn']}" if "pricesReadOn" in cost else ""
    out += ["", f"Always-on monthly cost (estimatedMonthlyCost; 730 h{read_on}):"]
    out += _cost_rows(cost)
    return "\n".join(out)


def summary_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The plan without its resources and profile: what is about to be deployed and what it costs idle."""
    keys = ("stack", "region", "preset", "warnings", "estimatedMonthlyCost")
    return {key: document[key] for key in keys} | {
        "resourceCount": sum(len(items) for items in document["resources"].values())
    }


def render_summary(summary: Mapping[str, Any]) -> str:
    return "\n".join(
        [
            f"Stack {summary['stack']} ({summary['preset']} preset) in {summary['region']}: `pulumi up` would "
            f"create {summary['resourceCount']} resources",
            "",
            *_warning_rows(summary["warnings"]),
            "Always-on monthly cost (730 h; what bills while no job runs):",
            *_cost_rows(summary["estimatedMonthlyCost"]),
        ]
    )


def diff_document(before: OfflineRun, after: OfflineRun, overrides: Iterable[str]) -> dict[str, Any]:
    changes = diff_runs(before, after)
    costs = [run.outputs["estimatedMonthlyCost"].get("totalUsd") for run in (before, after)]
    return {
        "stack": after.settings.stack,
        "region": after.settings.region,
        "preset": after.settings.metaflow.preset,
        "overrides": list(overrides),
        "warnings": after.config_warnings,
        "changes": [change.as_output() for change in changes],
        "dataAtRisk": [f"{c.data} ({c.type} {c.name}): {c.kind}, {c.reason}" for c in changes if c.loses_data],
        "summary": {kind: sum(c.kind == kind for c in changes) for kind in ("added", "removed", "replaced", "changed")},
        "monthlyIdleUsd": {"before": costs[0], "after": costs[1]},
        "note": "replacements the AWS provider forces for other inputs show in `pulumi preview`, not here",
    }


DIFF_MARKS = {"added": "+", "removed": "-", "replaced": "+-", "changed": "~"}


def render_diff(document: Mapping[str, Any]) -> str:
    out = [
        f"Stack {document['stack']} ({document['preset']} preset) in {document['region']}, against its own "
        f"config, with {' '.join(f'--set {o}' for o in document['overrides']) or 'no change'}:",
        "",
        *_warning_rows(document["warnings"]),
    ]
    for risk in document["dataAtRisk"]:
        out.append(f"!!! DATA LOSS: {risk}: its contents would be gone !!!")
    for change in document["changes"]:
        if change.get("data") and change["change"] in ("replaced", "removed") and not change["losesData"]:
            out.append(f"!!! {change['data']} ({change['name']}) would be {change['change']}: {change['reason']} !!!")
    out += [""] if len(out) > 2 and out[-1] else []
    if not document["changes"]:
        out.append("  no resource changes")
    for change in document["changes"]:
        reason = f"  ({change['reason']})" if change.get("reason") else ""
        mark = DIFF_MARKS[change["change"]]
        out.append(
            f"  {mark:<2} {change['change']:<8} {change['component']:<16} {change['type']} {change['name']}{reason}"
        )
        out += [f"        {p['path']}: {p['before']} -> {p['after']}" for p in change.get("properties", [])]
    summary, cost = document["summary"], document["monthlyIdleUsd"]
    before, after = (f"${v:.2f}" if v is not None else "unavailable" for v in (cost["before"], cost["after"]))
    out += [
        "",
        ", ".join(f"{count} {kind}" for kind, count in summary.items()) + f"; idle cost {before} -> {after} a month",
        f"Not shown: {document['note']}.",
    ]
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
        "idleGoalUsd": IDLE_GOAL_USD,
        "wake": wake_document(region in data_api_regions()),
    }


IDLE_GOAL_USD = 2.0
"""Issue 17's goal for the idle month in us-east-1."""


def wake_document(data_api: bool) -> dict[str, Any]:
    """When the service is reachable after idle and when the client that woke it gets its first answer, by the
    documented stage ranges (wake.py), the latter against the goal; and what the profile's retries outlast."""
    return {
        "dataApi": data_api,
        "bestSeconds": best_wake_seconds(data_api),
        "worstSeconds": worst_wake_seconds(data_api),
        "worstFirstAnswerSeconds": worst_first_answer_seconds(data_api),
        "goalSeconds": WAKE_GOAL_SECONDS,
        "retriesOutlastSeconds": SERVICE_RETRY_SECONDS,
        # The awake route is dev's own integration and authorizer, input for input (tests/test_scale_to_zero_stack.py).
        "warmRequestAddedMs": 0,
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
        "",
        _render_goals(estimate),
    ]


def _render_goals(estimate: Mapping[str, Any]) -> str:
    wake, idle, idle_goal = estimate["wake"], estimate["totalUsd"], estimate["idleGoalUsd"]
    worst, goal = wake["worstFirstAnswerSeconds"], wake["goalSeconds"]
    if worst is None:  # the documented range reaches past the profile's last attempt
        verdict, answered = "missed: its retries may run out first", "never"
    else:
        verdict = f"met, {goal - worst:g} s to spare" if worst <= goal else f"missed by {worst - goal:g} s"
        answered = f"by {worst:g} s"
    where = (
        ""
        if wake["dataApi"]
        else " (this region's RDS Data API is not confirmed: the database resumes after the task starts)"
    )
    return (
        f"Goals: idle ${idle:.2f} against ${idle_goal:.2f} ({'met' if idle <= idle_goal else 'missed'}); after idle "
        f"the service is reachable in {wake['bestSeconds']:g}-{wake['worstSeconds']:g} s by the documented stage "
        f"ranges{where}, and the client whose request woke it, held by the waker, has its first answer {answered}, "
        f"against {goal} s at worst ({verdict}; the profile retries for {wake['retriesOutlastSeconds']} s unheld); "
        f"warm requests take today's path, {wake['warmRequestAddedMs']} ms added (docs/scale-to-zero.md)."
    )


def render_comparison(document: Mapping[str, Mapping[str, Any]]) -> str:
    first = next(iter(document.values()))
    region = first["region"]
    out = [
        f"Monthly idle cost in {region} (730 h; always-on resources only)",
        *([priced_with_note(region, first["pricedWith"])] if first.get("pricedWith") else []),
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


def run_plan(
    stack: str,
    directory: Path,
    overrides: Iterable[str] = (),
    as_json: bool = False,
    diff: bool = False,
    summary: bool = False,
) -> str:
    """The plan of the stack with the overrides; with `diff`, what the overrides change against the
    stack's own config; with `summary`, only the resource count, the warnings and the idle cost."""
    run = run_offline(stack_config(stack, directory, overrides), stack=stack)
    if diff:
        base = run_offline(stack_config(stack, directory), stack=stack)
        document = diff_document(base, run, overrides)
        return json.dumps(document, indent=2) if as_json else render_diff(document)
    document = plan_document(run)
    if summary:
        short = summary_document(document)
        return json.dumps(short, indent=2) if as_json else render_summary(short)
    return json.dumps(document, indent=2) if as_json else render_plan(document)


def run_compare(region: str, as_json: bool = False) -> str:
    if other_partition := unpriced_partition(region):
        raise ConfigError(
            f"--compare has no prices for {region}: {other_partition}. Compare a commercial region "
            f"(e.g. --region us-east-1); `plan --region {region}` still lists what would be created"
        )
    document = comparison_document(region)
    return json.dumps(document, indent=2) if as_json else render_comparison(document)
