"""AWS's own rules for the values the settings pass to it, so a value AWS would refuse at
`pulumi up` is refused before anything is deployed.

The rules are data, in `metaflow_infra/data/aws_rules.toml` (each with its source and the day it was
read); this module only reads them. Every `*_problems` function is pure and returns a list of
problems, each naming the config key, the bad value and what is accepted (empty: the value is fine).
This module does not import botocore: botocore is a test-only dependency, used by the tests to check
the data against AWS's own models.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from .values import daily_minutes, weekly_minutes, windows_overlap

RULES_FILE = "aws_rules.toml"


@cache
def rules() -> dict[str, Any]:
    """The whole rules file, parsed once."""
    text = resources.files("metaflow_infra").joinpath("data", RULES_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _listing(values: Iterable[str]) -> str:
    return ", ".join(values)


# --- Regions ---------------------------------------------------------------------------------------


def regions_by_partition() -> dict[str, tuple[str, ...]]:
    """Region names per AWS partition (aws, aws-cn, aws-us-gov)."""
    return {partition: tuple(names) for partition, names in rules()["regions"]["partitions"].items()}


@cache
def known_regions() -> tuple[str, ...]:
    """Every region of the partitions the rules include, commercial ones first."""
    return tuple(region for names in regions_by_partition().values() for region in names)


def partition_of(region: str) -> str | None:
    """The partition a known region belongs to (`aws`, `aws-cn`, `aws-us-gov`), else None."""
    return next((partition for partition, names in regions_by_partition().items() if region in names), None)


def region_problems(key: str, region: str) -> list[str]:
    """The region must exist (commercial, China or GovCloud partition)."""
    known = known_regions()
    if region in known:
        return []
    close = difflib.get_close_matches(region, known, n=3, cutoff=0.75)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return [f"{key} = {region!r}: not an AWS region{hint}; accepted: {_listing(known)}"]


# --- Tags ------------------------------------------------------------------------------------------


def tag_character_allowed(character: str) -> bool:
    """AWS's tag character class `[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]`: a Unicode letter, separator
    (spaces) or number, or one of `_ . : / = + - @`."""
    spec = rules()["tags"]
    return unicodedata.category(character)[0] in spec["unicode_categories"] or character in spec["extra_characters"]


def _refused_characters(text: str) -> str:
    refused = sorted({character for character in text if not tag_character_allowed(character)})
    return " ".join(repr(character) for character in refused)


def tag_problems(tags: Mapping[str, str], reserved: Mapping[str, str], key: str = "metaflow:tags") -> list[str]:
    """User tags that some AWS resource would refuse. `reserved` are the tags this program adds
    itself (e.g. `metaflow:stack`, and the `Name` some resources carry): they count toward the
    per-resource limit, and a user tag may not reuse their keys."""
    spec = rules()["tags"]
    prefix: str = spec["reserved_prefix"]
    prefix_in_values: bool = spec["reserved_prefix_in_values"]["refused"]
    characters = f"letters, numbers and spaces (Unicode categories L, N, Z) and {' '.join(spec['extra_characters'])}"
    problems: list[str] = []
    for name, value in tags.items():
        label = f"{key}[{name!r}] = {value!r}"
        if name in reserved:
            problems.append(
                f"{label}: this program sets the tag {name!r} itself; accepted: any key except "
                f"{_listing(repr(reserved_key) for reserved_key in sorted(reserved))}"
            )
        if not spec["key_min_length"] <= len(name) <= spec["key_max_length"]:
            problems.append(
                f"{label}: the key has {len(name)} characters; accepted: "
                f"{spec['key_min_length']} to {spec['key_max_length']}"
            )
        if name.lower().startswith(prefix):
            problems.append(
                f"{label}: keys starting with {prefix!r} (any case) are reserved for AWS; accepted: any other key"
            )
        if refused := _refused_characters(name):
            problems.append(f"{label}: the key has characters AWS refuses in tags ({refused}); accepted: {characters}")
        if not isinstance(value, str):
            problems.append(
                f"{label}: tag values are strings; accepted: a string of at most {spec['value_max_length']} characters"
            )
            continue
        if len(value) > spec["value_max_length"]:
            problems.append(
                f"{label}: the value has {len(value)} characters; accepted: at most {spec['value_max_length']}"
            )
        if prefix_in_values and value.lower().startswith(prefix):
            problems.append(
                f"{label}: values starting with {prefix!r} (any case) are reserved for AWS (Batch, ECS); "
                "accepted: any other value"
            )
        if refused := _refused_characters(value):
            problems.append(
                f"{label}: the value has characters AWS refuses in tags ({refused}); accepted: {characters}"
            )
    total = len(set(tags) | set(reserved))
    if total > spec["max_tags_per_resource"]:
        problems.append(
            f"{key}: {len(tags)} tags, with the {len(reserved)} this program adds "
            f"({_listing(sorted(reserved))}), make {total} on one resource; accepted: at most "
            f"{spec['max_tags_per_resource']} per resource, so at most "
            f"{spec['max_tags_per_resource'] - len(reserved)} of your own"
        )
    return problems


# --- Container image references --------------------------------------------------------------------


def _split_reference(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of a reference, without judging them. The tag is what follows the last
    ':' after the last '/'; the digest what follows the first '@'."""
    name_and_tag, at, digest = image.partition("@")
    name, colon, tag = name_and_tag.rpartition(":")
    if not colon or "/" in tag:
        return name_and_tag, None, digest if at else None
    return name, tag, digest if at else None


def image_pin(image: str) -> tuple[str | None, str | None]:
    """(tag, digest) of an image reference, each None when absent: `img:v2.5.1@sha256:…` gives
    ('v2.5.1', 'sha256:…'); `img` gives (None, None). Check the syntax with
    `image_reference_problems` first: this only splits the string."""
    _name, tag, digest = _split_reference(image)
    return tag, digest


def _domain_problem(domain: str) -> str | None:
    spec = rules()["image_reference"]
    host, port = domain, None
    if not domain.endswith("]") and ":" in domain:
        host, _, port = domain.rpartition(":")
    if port is not None and not re.fullmatch(spec["port"], port):
        return f"the registry port {port!r} is not a number"
    if re.fullmatch(spec["ipv6_host"], host):
        return None
    if all(re.fullmatch(spec["domain_component"], part) for part in host.split(".")):
        return None
    return (
        f"the registry host {host!r} is not a host name (letters, digits and inner hyphens, "
        "dot-separated) or a bracketed IPv6 address"
    )


def image_reference_problems(key: str, image: str) -> list[str]:
    """The image must be a container image reference Docker and ECS accept:
    `[registry[:port]/]path[:tag][@sha256:<64 hex>]`. Judges syntax only: whether a version is
    pinned is the caller's rule (see `image_pin`)."""
    spec = rules()["image_reference"]
    ecs = spec["ecs"]
    accepted = (
        "accepted: [registry[:port]/]path[:tag][@sha256:<64 lowercase hex>], path components of lowercase "
        "letters and digits joined by '.', '_', '__' or '-', a tag of up to 128 letters, digits, '_', '.', "
        f"'-' (not starting with '.' or '-'), at most {ecs['max_length_before_digest']} characters before any '@'"
    )
    label = f"{key} = {image!r}"
    if not image:
        return [f"{label}: empty; {accepted}"]
    if image != image.strip() or any(character.isspace() for character in image):
        return [f"{label}: contains whitespace; {accepted}"]
    name, tag, digest = _split_reference(image)
    problems: list[str] = []
    if digest is not None and not re.fullmatch(ecs["digest_pattern"], digest):
        problems.append(f"{label}: the digest {digest!r} is not sha256:<64 lowercase hex>; {accepted}")
    if tag is not None and not re.fullmatch(spec["tag"], tag):
        what = "is empty" if not tag else f"{tag!r} is not a valid tag"
        problems.append(f"{label}: the tag {what}; {accepted}")
    before_digest = image.partition("@")[0]
    if len(before_digest) > ecs["max_length_before_digest"]:
        problems.append(f"{label}: {len(before_digest)} characters before any '@'; {accepted}")
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        if problem := _domain_problem(first):
            problems.append(f"{label}: {problem}; {accepted}")
        components = components[1:]
    for component in components:
        if re.fullmatch(spec["path_component"], component):
            continue
        if re.fullmatch(spec["path_component"], component.lower()):
            reason = (
                f"the repository path component {component!r} has uppercase letters (repository names are lowercase)"
            )
        elif not component:
            reason = "the repository path has an empty component"
        else:
            reason = (
                f"the repository path component {component!r} is not lowercase letters and digits joined by "
                "'.', '_', '__' or '-'"
            )
        problems.append(f"{label}: {reason}; {accepted}")
    return problems


# --- VPC CIDR blocks -------------------------------------------------------------------------------


def vpc_cidr_problems(key: str, cidr: str) -> list[str]:
    """What AWS refuses for a VPC's IPv4 block (/16 to /28), what this stack cannot use (ranges
    outside RFC 1918 and 100.64.0.0/10, special-purpose ranges, Docker's 172.17.0.0/16) and, as a
    separate problem with its reason, the /16 to /20 this program needs for its subnets."""
    spec = rules()["vpc_cidr"]
    stack = spec["stack"]
    label = f"{key} = {cidr!r}"
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return [f"{label}: not an IPv4 network in CIDR form; accepted: e.g. 10.0.0.0/16"]
    if not isinstance(network, ipaddress.IPv4Network):
        return [f"{label}: a VPC's primary block is IPv4; accepted: an IPv4 block such as 10.0.0.0/16"]
    problems: list[str] = []
    if str(network) != cidr:
        problems.append(f"{label}: host bits are set or the form is not canonical; accepted: {network}")
    if not spec["min_prefix"] <= network.prefixlen <= spec["max_prefix"]:
        problems.append(
            f"{label}: AWS accepts VPC blocks from /{spec['min_prefix']} to /{spec['max_prefix']} only; "
            f"accepted: a prefix length from {spec['min_prefix']} to {spec['max_prefix']}"
        )
    if not stack["min_prefix"] <= network.prefixlen <= stack["max_prefix"]:
        problems.append(
            f"{label}: {stack['reason']}; accepted: a prefix length from {stack['min_prefix']} to {stack['max_prefix']}"
        )
    overlapping = [entry for entry in spec["refused"] if network.overlaps(ipaddress.IPv4Network(entry["cidr"]))]
    for entry in overlapping:
        problems.append(
            f"{label}: overlaps {entry['cidr']}, {entry['reason']}; accepted: a block outside {entry['cidr']}"
        )
    inside = [entry for entry in spec["accepted"] if network.subnet_of(ipaddress.IPv4Network(entry["cidr"]))]
    if not inside and not overlapping:
        ranges = _listing(f"{entry['cidr']} ({entry['name']})" for entry in spec["accepted"])
        problems.append(
            f"{label}: outside the private ranges; AWS allows publicly routable blocks, but the VPC's local "
            f"route would hide those internet addresses from the stack; accepted: a block inside {ranges}"
        )
    return problems


# --- RDS for PostgreSQL instance classes -----------------------------------------------------------


def postgres_instance_classes(engine_version: int | None = None) -> tuple[str, ...]:
    """Every RDS for PostgreSQL instance class in the rules (for one major version, if given)."""
    families: dict[str, dict[str, Any]] = rules()["rds_postgres_instance_classes"]["families"]
    return tuple(
        f"db.{family}.{size}"
        for family, spec in families.items()
        if engine_version is None or _supports(spec, engine_version)
        for size in spec["sizes"]
    )


def _supports(family: Mapping[str, Any], engine_version: int) -> bool:
    return family["min_major"] <= engine_version <= family.get("max_major", engine_version)


def db_instance_class_problems(key: str, instance_class: str, engine_version: int, region: str) -> list[str]:
    """The class must be one RDS offers for PostgreSQL at `engine_version` (a major version).

    `region` is not used yet: AWS documents per-Region class availability only through the console,
    the pricing pages and `describe-orderable-db-instance-options` (which needs credentials), so a
    class missing from one Region still fails at `pulumi up`. The parameter stays so callers pass it
    already when the rules learn Regions."""
    del region
    spec = rules()["rds_postgres_instance_classes"]
    families: dict[str, dict[str, Any]] = spec["families"]
    label = f"{key} = {instance_class!r}"
    examples = _listing(spec["examples"])
    family_names = _listing(f"db.{family}" for family in families)
    match = re.fullmatch(r"db\.([a-z0-9]+)\.([a-z0-9]+)", instance_class)
    if match is None:
        return [
            f"{label}: not an RDS for PostgreSQL instance class (db.<family>.<size>); accepted: e.g. {examples} "
            f"(families: {family_names})"
        ]
    family, size = match.groups()
    if family in spec["previous_generation"]:
        return [
            f"{label}: a previous-generation class RDS no longer offers for PostgreSQL; accepted: e.g. {examples} "
            f"(families: {family_names})"
        ]
    if family not in families:
        return [
            f"{label}: not an RDS for PostgreSQL instance class; accepted: e.g. {examples} (families: {family_names})"
        ]
    details = families[family]
    if size not in details["sizes"]:
        return [
            f"{label}: db.{family} has no size {size!r} for RDS for PostgreSQL; accepted: "
            f"{_listing(f'db.{family}.{known}' for known in details['sizes'])}"
        ]
    if not _supports(details, engine_version):
        newest = details.get("max_major")
        versions = f"{details['min_major']} to {newest}" if newest else f"{details['min_major']} or later"
        offered = postgres_instance_classes(engine_version)
        suggestions = [example for example in spec["examples"] if example in offered] or list(offered[:5])
        return [
            f"{label}: RDS offers db.{family} for PostgreSQL {versions}, not {engine_version}; accepted for "
            f"PostgreSQL {engine_version}: e.g. {_listing(suggestions)}"
        ]
    return []


# --- Account ids -----------------------------------------------------------------------------------


def account_id_problems(
    allowed: Sequence[str] | None,
    forbidden: Sequence[str] | None,
    allowed_key: str = "aws:allowedAccountIds",
    forbidden_key: str = "aws:forbiddenAccountIds",
) -> list[str]:
    """Account ids are exactly 12 ASCII digits (as strings: a leading 0 is part of the id), and no id
    may be both allowed and forbidden."""
    pattern: str = rules()["account_id"]["pattern"]
    problems: list[str] = []
    for key, ids in ((allowed_key, allowed), (forbidden_key, forbidden)):
        for account in ids or ():
            if not isinstance(account, str) or not re.fullmatch(pattern, account):
                problems.append(
                    f"{key}: {account!r} is not an AWS account id; accepted: exactly 12 digits, as a string"
                )
    both = sorted(set(allowed or ()) & set(forbidden or ()), key=str)
    if both:
        problems.append(
            f"{allowed_key} and {forbidden_key} both list {_listing(repr(account) for account in both)}; "
            "accepted: an id in at most one of them"
        )
    return problems


# --- AWS Batch -------------------------------------------------------------------------------------


def batch_instance_type_keywords() -> tuple[str, ...]:
    """Words Batch accepts in `instanceTypes` in place of instance families or types."""
    return tuple(rules()["batch_instance_type_keywords"]["keywords"])


def rds_window_problems(backup: str, maintenance: str) -> list[str]:
    """What RDS refuses in a backup window and a maintenance window given together: either under the minimum
    length, or the two meeting (on any day, around midnight and the week's end too)."""
    minimum: int = rules()["rds_windows"]["min_minutes"]
    problems = [
        f"{key} = {window!r} lasts {length} minutes: RDS needs {minimum} or more"
        for key, window, length in (
            ("db:backupWindow", backup, daily_minutes(backup)[1]),
            ("db:maintenanceWindow", maintenance, weekly_minutes(maintenance)[1]),
        )
        if length < minimum
    ]
    if not problems and windows_overlap(maintenance, backup):
        problems.append(f"db:maintenanceWindow {maintenance} overlaps db:backupWindow {backup}: RDS refuses that")
    return problems


# --- Names -----------------------------------------------------------------------------------------


def bucket_prefix_problems(key: str, prefix: str) -> list[str]:
    """The bucket is named `<prefix>-…`: it must not start with a prefix S3 reserves."""
    reserved: list[str] = rules()["s3_bucket_names"]["reserved_prefixes"]
    hits = [name for name in reserved if f"{prefix}-".startswith(name)]
    return [
        f"{key} = {prefix!r} would name the bucket {prefix}-…, and S3 reserves bucket names starting with "
        f"{_listing(repr(name) for name in reserved)}; choose another prefix"
    ] * bool(hits)


def stack_name_problems(
    stack: str, scoped: str, *, repositories: Mapping[str, str], budget_name: str | None, namespace: bool
) -> list[str]:
    """The names this program derives from the stack's name, for the features that create them, as AWS
    accepts them: `scoped` is `<prefix>-<stack>` as a DNS label (the Cloud Map namespace); `repositories` the
    ECR repositories' names by the key that creates each."""
    spec = rules()["derived_names"]
    label = f"the stack name {stack!r}"
    problems = []
    # (Pulumi's 100-character stack names keep repository names far below ECR's 256.)
    for key, repository in repositories.items():
        if not re.fullmatch(spec["ecr_repository_pattern"], repository):
            problems.append(
                f"{label} makes the ECR repository name {repository!r} ({key}), which ECR refuses: use a stack "
                "whose name has letters and digits joined by single '-', '.' or '_'"
            )
    if budget_name is not None and len(budget_name) > spec["budget_name_max_length"]:
        problems.append(
            f"{label} makes the budget name {budget_name!r} (budget:monthlyUsd) {len(budget_name)} characters long; "
            f"AWS Budgets takes at most {spec['budget_name_max_length']}: use a shorter stack name or metaflow:prefix"
        )
    if namespace and len(scoped) > spec["dns_label_max_length"]:
        problems.append(
            f"{label} makes the metadata service's DNS namespace label {scoped!r} {len(scoped)} characters long; "
            f"a DNS label takes at most {spec['dns_label_max_length']}: use a shorter stack name or metaflow:prefix"
        )
    return problems


# --- Partitions ------------------------------------------------------------------------------------


def arn_partition_problems(key: str, arn: str, region: str) -> list[str]:
    """An ARN of the stack's partition (`arn:aws-cn:…` in China, `arn:aws-us-gov:…` in GovCloud): AWS
    resolves no ARN across partitions."""
    partition = partition_of(region)
    given = arn.split(":")[1]  # the callers' patterns have made it an ARN
    if partition is None or given == partition:
        return []
    return [f"{key} is an ARN of the {given} partition; a stack in {region} ({partition}) needs arn:{partition}:…"]


def service_missing_in(service: str, region: str) -> str | None:
    """The partition of `region` when `service` (an endpoint prefix) is offered nowhere in it, else None."""
    partition = partition_of(region)
    missing: dict[str, list[str]] = rules()["partition_services"]["missing"]
    return partition if partition in missing.get(service, []) else None


# --- Lambda ----------------------------------------------------------------------------------------


def max_reserved_concurrency() -> int:
    """The most concurrency one function may reserve in an account at Lambda's default limit."""
    spec = rules()["lambda_concurrency"]
    return spec["default_account_limit"] - spec["min_unreserved"]
