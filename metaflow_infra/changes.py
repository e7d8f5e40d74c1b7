"""What a config change does to the declared stack: two offline runs compared resource by resource.

Pure functions over `OfflineRun`s. A resource is the same resource after the change when the engine
would adopt its state: the same identity (URN without stack and project) or an alias to it. It is
replaced when an input that names it physically changes (and is not ignored); otherwise its changed
inputs are listed property by property. Replacements the AWS provider forces for other inputs (a
database's `engine`, say) are the provider's knowledge, not the program's: `pulumi preview` shows them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .offline import DeclaredResource, OfflineRun

PHYSICAL_NAME_INPUTS = (
    "name",
    "namePrefix",
    "bucket",
    "bucketPrefix",
    "identifier",
    "identifierPrefix",
    "clusterIdentifierPrefix",
    "family",
)
"""Inputs that set a physical name: changing one replaces the resource."""
DATA_RESOURCES = {
    "aws:s3/bucket:Bucket": "the artifacts bucket",
    "aws:rds/instance:Instance": "the database",
    "aws:rds/cluster:Cluster": "the database",
}
"""Resources holding the user's data: their replacement or deletion is what a diff must shout about."""
SECRET = "[secret]"


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Inputs as `path -> value`, nested objects (and JSON documents held in strings, such as policies)
    opened up; a list of plain values stays one value, a list of objects is indexed."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            return {path: value}
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= flatten(item, f"{path}.{key}" if path else str(key))
        return flat or {path: {}}
    if isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        flat = {}
        for index, item in enumerate(value):
            flat |= flatten(item, f"{path}[{index}]")
        return flat
    if isinstance(value, bool | int | float | str | list) or value is None:
        return {path: value}
    return {path: f"<{type(value).__name__}>"}  # assets (the authorizer's code) are not config


def visible_inputs(resource: DeclaredResource, renames: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flattened inputs with every secret input masked, and names the mocks made up anew replaced by the
    ones the resource keeps (`renames`, see `kept_names`)."""
    flat = flatten(resource.inputs)
    return {
        path: SECRET
        if any(path == s or path.startswith(f"{s}.") for s in resource.secret_inputs)
        else _renamed(value, renames or {})
        for path, value in flat.items()
    }


def _renamed(value: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        return [_renamed(item, renames) for item in value]
    if isinstance(value, str):
        for new, old in renames.items():
            value = value.replace(new, old)
    return value


NAME_STATES = ("bucket", "identifier", "clusterIdentifier", "name")
"""State attributes holding a resource's physical name (the mocks' invention when only a prefix is given)."""


def kept_names(before: OfflineRun, after: OfflineRun) -> dict[str, str]:
    """Physical names an offline run makes up anew although the resource keeps its old one: a resource
    whose name inputs are ignored after creation (the bucket, the database) keeps the name AWS gave it,
    so everything built from it (ARNs, endpoints) keeps it too. Maps the new name to the kept one."""
    renames = {}
    for resource in before.resources:
        following = successor(after, before, resource)
        if following is None or not set(PHYSICAL_NAME_INPUTS) & set(following.ignore_changes):
            continue
        for attribute in NAME_STATES:
            old, new = resource.state.get(attribute), following.state.get(attribute)
            if isinstance(old, str) and isinstance(new, str) and old != new:
                renames[new] = old
                break
    return renames


def render_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(render_value(item) for item in value) + "]"
    if value is None:
        return "unset"
    return str(value)


@dataclass
class Change:
    """One resource's fate: `added`, `removed`, `replaced` or `changed`."""

    kind: str
    type: str
    name: str
    component: str
    properties: list[tuple[str, str, str]] = field(default_factory=list)
    """(path, before, after) of each input that differs."""
    reason: str = ""
    data: str = ""
    """Which data the resource holds (DATA_RESOURCES), or empty."""
    spared: bool = False
    """Its deletion is refused (protect) or leaves it in AWS (retainOnDelete)."""

    @property
    def loses_data(self) -> bool:
        """A data resource deleted or re-created empty (a refused deletion or one leaving it in AWS loses nothing)."""
        return bool(self.data) and self.kind in ("replaced", "removed") and not self.spared

    def as_output(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "change": self.kind,
            "type": self.type,
            "name": self.name,
            "component": self.component,
        }
        if self.reason:
            document["reason"] = self.reason
        if self.properties:
            document["properties"] = [{"path": p, "before": b, "after": a} for p, b, a in self.properties]
        if self.data:
            document["data"] = self.data
            document["losesData"] = self.loses_data
        return document


def component_label(run: OfflineRun, resource: DeclaredResource) -> str:
    component = run.component_of(resource)
    return component.type.removeprefix("metaflow:infra:") if component else "(stack)"


def successor(after: OfflineRun, before: OfflineRun, resource: DeclaredResource) -> DeclaredResource | None:
    """The resource of `after` whose state is `resource`'s (same identity, or an alias to it)."""
    identity = before.identity(resource)
    found = [r for r in after.of_type(resource.type) if identity in after.earlier_identities(r)]
    return found[0] if found else None


def _guards(resource: DeclaredResource) -> dict[str, Any]:
    return {"(protect)": resource.protect, "(retainOnDelete)": resource.retain_on_delete}


def _compare(
    before: DeclaredResource, after: DeclaredResource, renames: Mapping[str, str]
) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The physical-name inputs that change (each replaces the resource), and every input that differs."""
    old, new = visible_inputs(before), visible_inputs(after, renames)
    renamed = [
        name for name in PHYSICAL_NAME_INPUTS if old.get(name) != new.get(name) and name not in after.ignore_changes
    ]
    differing = [
        (path, render_value(old.get(path)), render_value(new.get(path)))
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path) and path.split(".")[0].split("[")[0] not in after.ignore_changes
    ]
    guards_old, guards_new = _guards(before), _guards(after)
    differing += [
        (guard, render_value(guards_old[guard]), render_value(guards_new[guard]))
        for guard in guards_old
        if guards_old[guard] != guards_new[guard]
    ]
    return renamed, differing


def _removal_reason(resource: DeclaredResource) -> str:
    if resource.protect:
        return "its deletion is refused: it is protected (Pulumi stops before touching it)"
    if resource.retain_on_delete:
        return "removed from the stack, kept in AWS (retainOnDelete)"
    if resource.inputs.get("skipFinalSnapshot") is False:
        return "deleted (RDS keeps a final snapshot)"
    return "deleted"


def _moved_providers(before: OfflineRun, after: OfflineRun) -> dict[str, str]:
    """AWS providers whose region changes, by URN, with what changes: a provider in another region is a new
    provider, and every resource it manages is replaced."""
    regions = {
        run_index: {r.urn: r.inputs.get("region") for r in run.resources if r.type == "pulumi:providers:aws"}
        for run_index, run in enumerate((before, after))
    }
    return {
        urn: f"the AWS provider's region changes ({region} -> {regions[1][urn]})"
        for urn, region in regions[0].items()
        if urn in regions[1] and regions[1][urn] != region
    }


def diff_runs(before: OfflineRun, after: OfflineRun) -> list[Change]:
    """Every resource added, removed, replaced or changed from `before` to `after` (components left
    out: they hold no AWS state)."""
    changes: list[Change] = []
    matched: set[str] = set()
    moved = _moved_providers(before, after)
    renames = kept_names(before, after)
    for resource in before.resources:
        if resource.is_component:
            continue
        data = DATA_RESOURCES.get(resource.type, "")
        component = component_label(before, resource)
        following = successor(after, before, resource)
        provider_urn = resource.provider.rpartition("::")[0]
        if following is not None and provider_urn in moved:
            matched.add(following.urn)
            reason = f"{moved[provider_urn]}: created anew there"
            if resource.protect:
                reason += "; refused: it is protected (Pulumi stops before touching it)"
            elif resource.retain_on_delete:
                reason += "; the old one stays in AWS (retainOnDelete), outside the stack"
            spared = resource.protect or resource.retain_on_delete
            changes.append(Change("replaced", resource.type, resource.name, component, [], reason, data, spared))
            continue
        if following is None:
            spared = resource.protect or resource.retain_on_delete
            reason = _removal_reason(resource)
            changes.append(Change("removed", resource.type, resource.name, component, [], reason, data, spared))
            continue
        matched.add(following.urn)
        renamed, properties = _compare(resource, following, renames)
        if renamed:
            reason = f"{', '.join(renamed)} changes its physical name"
            if resource.protect:
                reason += "; refused: it is protected (Pulumi stops before touching it)"
            changes.append(
                Change("replaced", resource.type, resource.name, component, properties, reason, data, resource.protect)
            )
        elif properties:
            changes.append(Change("changed", resource.type, following.name, component, properties, data=data))
    for resource in after.resources:
        if not resource.is_component and resource.urn not in matched:
            data = DATA_RESOURCES.get(resource.type, "")
            changes.append(Change("added", resource.type, resource.name, component_label(after, resource), data=data))
    order = {"replaced": 0, "removed": 1, "added": 2, "changed": 3}
    return sorted(changes, key=lambda c: (not c.loses_data, order[c.kind], c.component, c.type, c.name))


def key_properties(resource: DeclaredResource, paths: tuple[str, ...]) -> dict[str, str]:
    """The named inputs of a resource that are set, rendered (`computeResources.maxVcpus` -> `128`)."""
    shown = {}
    for path in paths:
        value: Any = resource.inputs
        for part in path.replace("[", ".[").split("."):
            if part.startswith("["):
                index = int(part[1:-1])
                value = value[index] if isinstance(value, list) and len(value) > index else None
            else:
                value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            shown[path.rsplit(".", 1)[-1].split("[")[0]] = render_value(value)
    return shown
