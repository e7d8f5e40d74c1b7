"""AWS's rules as data: each checker refuses what AWS would refuse at `pulumi up`, and the data is
checked against AWS's own models in botocore wherever botocore carries the same fact."""

from __future__ import annotations

import ast
import datetime
import importlib.util
import ipaddress
import re
import unicodedata
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.loaders import Loader

from metaflow_infra.settings import aws_rules
from metaflow_infra.settings.aws_rules import (
    account_id_problems,
    batch_instance_type_keywords,
    db_instance_class_problems,
    image_pin,
    image_reference_problems,
    known_regions,
    max_reserved_concurrency,
    partition_of,
    postgres_instance_classes,
    region_problems,
    regions_by_partition,
    rules,
    tag_problems,
    vpc_cidr_problems,
)
from metaflow_infra.settings.values import WEEKDAYS

FIRST_READ = datetime.date(2026, 12, 1)
"""The day the first rules were read: none can have been read earlier."""
DIGEST = "sha256:" + "0123456789abcdef" * 4
PROGRAM_TAGS = {"metaflow:stack": "dev", "Name": "metaflow-vpc"}


@pytest.fixture(scope="module")
def boto() -> botocore.session.Session:
    return botocore.session.get_session()


def _doc(shape: Any) -> str:
    return re.sub(r"<[^>]+>", "", shape.documentation)


# --- The data file itself --------------------------------------------------------------------------


def test_every_rule_names_its_source_and_the_day_it_was_read() -> None:
    data = rules()
    tables: list[tuple[str, dict[str, Any]]] = [(name, table) for name, table in data.items()]
    tables += [
        ("tags.reserved_prefix_in_values", data["tags"]["reserved_prefix_in_values"]),
        ("image_reference.ecs", data["image_reference"]["ecs"]),
        ("vpc_cidr.stack", data["vpc_cidr"]["stack"]),
    ]
    tables += [
        (f"vpc_cidr.{kind}[{entry['cidr']}]", entry)
        for kind in ("accepted", "refused")
        for entry in data["vpc_cidr"][kind]
    ]
    for name, table in tables:
        assert table.get("source"), f"{name} has no source"
        read_on = datetime.date.fromisoformat(table.get("read_on", ""))
        assert FIRST_READ <= read_on <= datetime.date.today(), f"{name} has no plausible read_on"


def test_the_runtime_module_does_not_import_botocore() -> None:
    tree = ast.parse(Path(aws_rules.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "botocore" for name in imported)


# --- Regions ---------------------------------------------------------------------------------------


def test_region_data_equals_botocores_endpoints_for_the_included_partitions() -> None:
    endpoints = Loader().load_data("endpoints")
    botocore_regions = {partition["partition"]: sorted(partition["regions"]) for partition in endpoints["partitions"]}
    ours = regions_by_partition()
    assert set(ours) == {"aws", "aws-cn", "aws-us-gov"}
    for partition, names in ours.items():
        assert sorted(names) == botocore_regions[partition], partition


@pytest.mark.parametrize(
    "region", ["us-east-1", "eu-west-3", "ap-southeast-7", "mx-central-1", "cn-north-1", "us-gov-west-1"]
)
def test_existing_regions_pass(region: str) -> None:
    assert region_problems("aws:region", region) == []


def test_a_made_up_region_is_refused_naming_key_value_near_matches_and_accepted_regions() -> None:
    [problem] = region_problems("aws:region", "us-east-9")
    assert problem.startswith("aws:region = 'us-east-9': not an AWS region")
    assert "did you mean" in problem and "us-east-1" in problem.split("accepted:")[0]
    assert problem.split("accepted: ")[1].split(", ") == list(known_regions())


@pytest.mark.parametrize(
    ("typo", "hint"),
    [
        ("ap-south", "(did you mean ap-south-2 or ap-south-1 or af-south-1?)"),  # at most three
        ("uswest", "(did you mean us-west-2 or us-west-1?)"),  # only close ones
        ("euw1", "not an AWS region; accepted"),  # nothing close enough to suggest
    ],
)
def test_a_region_typo_suggests_at_most_three_close_regions(typo: str, hint: str) -> None:
    [problem] = region_problems("aws:region", typo)
    assert f"{typo!r}: not an AWS region" in problem and hint in problem.split("accepted:")[0] + "accepted"


@pytest.mark.parametrize(
    ("region", "partition"),
    [("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov"), ("mars-1", None)],
)
def test_each_region_belongs_to_its_own_partition(region: str, partition: str | None) -> None:
    assert partition_of(region) == partition


@pytest.mark.parametrize("region", ["", "US-EAST-1", "us-east-1 ", "us-iso-east-1", "eu-west"])
def test_malformed_and_isolated_partition_regions_are_refused(region: str) -> None:
    assert len(region_problems("aws:region", region)) == 1


# --- Tags ------------------------------------------------------------------------------------------


def test_tag_limits_and_characters_match_the_ecs_api_model(boto: botocore.session.Session) -> None:
    ecs = boto.get_service_model("ecs")
    spec = rules()["tags"]
    key, value, tags = (
        ecs.shape_for("TagKey").metadata,
        ecs.shape_for("TagValue").metadata,
        ecs.shape_for("Tags").metadata,
    )
    assert (key["min"], key["max"]) == (spec["key_min_length"], spec["key_max_length"])
    assert value["max"] == spec["value_max_length"]
    assert tags["max"] == spec["max_tags_per_resource"]
    assert f"^{key['pattern']}$" == spec["pattern"] == f"^{value['pattern']}$"


def test_the_character_rule_the_checker_uses_is_the_aws_pattern() -> None:
    spec = rules()["tags"]
    body = re.fullmatch(r"\^\(\[(.*)\]\*\)\$", spec["pattern"])
    assert body is not None
    classes = re.findall(r"\\p\{(\w)\}", body.group(1))
    literals = re.sub(r"\\p\{\w\}", "", body.group(1)).replace("\\", "")
    assert sorted(classes) == sorted(spec["unicode_categories"])
    assert sorted(literals) == sorted(spec["extra_characters"])


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"team": "data-science", "cost-center": "4711"},
        {"équipe": "données", "owner": "jane.doe@example.com", "path": "a/b:c=d+e_f"},
        {"Environment": ""},
        {"k" * 128: "v" * 256},
        {"name": "lowercase name is another key than Name"},
    ],
)
def test_ordinary_tags_pass(tags: dict[str, str]) -> None:
    assert tag_problems(tags, PROGRAM_TAGS) == []


@pytest.mark.parametrize("key", ["aws:team", "AWS:team", "Aws:Team", "aWs:x"])
def test_keys_starting_with_aws_prefix_in_any_case_are_refused(key: str) -> None:
    [problem] = tag_problems({key: "x"}, PROGRAM_TAGS)
    assert problem.startswith(f"metaflow:tags[{key!r}] = 'x': keys starting with 'aws:'")


def test_values_starting_with_aws_prefix_are_refused() -> None:
    [problem] = tag_problems({"source": "AWS:console"}, PROGRAM_TAGS)
    assert "values starting with 'aws:'" in problem


@pytest.mark.parametrize(
    ("tags", "fragment"),
    [
        ({"": "x"}, "the key has 0 characters; accepted: 1 to 128"),
        ({"k" * 129: "x"}, "the key has 129 characters; accepted: 1 to 128"),
        ({"k": "v" * 257}, "the value has 257 characters; accepted: at most 256"),
        ({"team#1": "x"}, "the key has characters AWS refuses in tags ('#')"),
        ({"team": "a!b"}, "the value has characters AWS refuses in tags ('!')"),
        ({"team": "#a!b#"}, "the value has characters AWS refuses in tags ('!' '#'); accepted"),
        ({"team": "line\nbreak"}, "('\\n')"),
        ({"team": "party 🎉"}, "('🎉')"),
        ({"team": "tab\there"}, "('\\t')"),
    ],
)
def test_tags_aws_refuses_are_refused_with_the_reason(tags: dict[str, str], fragment: str) -> None:
    problems = tag_problems(tags, PROGRAM_TAGS)
    assert len(problems) == 1 and fragment in problems[0], problems


@pytest.mark.parametrize("key", ["metaflow:stack", "Name"])
def test_a_user_tag_may_not_reuse_a_key_the_program_sets(key: str) -> None:
    [problem] = tag_problems({key: "mine"}, PROGRAM_TAGS)
    assert f"this program sets the tag {key!r} itself" in problem


def test_the_programs_own_tags_count_toward_the_fifty_per_resource() -> None:
    fits = {f"tag{number}": "x" for number in range(48)}
    assert tag_problems(fits, PROGRAM_TAGS) == []
    [problem] = tag_problems({**fits, "one-more": "x"}, PROGRAM_TAGS)
    assert "49 tags, with the 2 this program adds" in problem and "make 51" in problem
    assert "at most 48 of your own" in problem


# --- Container image references --------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "netflixoss/metaflow_metadata_service:v2.5.1",
        "public.ecr.aws/x/y:v2.5.1",
        "registry.example.com:5000/team/img:v2.5.1",
        f"img@{DIGEST}",
        f"img:v2.5.1@{DIGEST}",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/metaflow/service:v2.5.1",
        "localhost:5000/img:dev",
        "localhost/img",
        "[::1]:5000/team/img:TAG_1.0-rc",
        "ubuntu",
        "my__repo/with.dots-and--dashes:latest",
    ],
)
def test_valid_image_references_pass(image: str) -> None:
    assert image_reference_problems("metadata:image", image) == []


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("Netflixoss/img:v1", "'Netflixoss' has uppercase letters"),
        ("netflixoss/Img:v1", "'Img' has uppercase letters"),
        ("img:", "the tag is empty"),
        ("img:.hidden", "'.hidden' is not a valid tag"),
        ("img:" + "t" * 129, "is not a valid tag"),
        ("img@sha256:abc", "is not sha256:<64 lowercase hex>"),
        ("img@" + DIGEST.upper().replace("SHA256", "sha256"), "is not sha256:<64 lowercase hex>"),
        ("img@sha512:" + "a" * 128, "is not sha256:<64 lowercase hex>"),
        ("img@", "is not sha256"),
        ("", "empty"),
        ("img :v1", "contains whitespace"),
        ("team//img", "an empty component"),
        ("-team/img", "'-team' is not lowercase letters and digits"),
        ("team/img-", "'img-' is not lowercase letters and digits"),
        ("host.example.com:port/img", "the registry port 'port' is not a number"),
        ("bad_host.example.com/img", "is not a host name"),
        ("img:v1:v2", "'img:v1' is not lowercase letters and digits"),
        ("a/" * 127 + "ab:v1", "characters before any '@'"),
    ],
)
def test_invalid_image_references_are_refused_with_the_reason(image: str, fragment: str) -> None:
    problems = image_reference_problems("metadata:image", image)
    assert problems and any(fragment in problem for problem in problems), problems
    assert all(problem.startswith(f"metadata:image = {image!r}: ") and "accepted: " in problem for problem in problems)


@pytest.mark.parametrize(
    ("image", "pin"),
    [
        ("netflixoss/metaflow_metadata_service:v2.5.1", ("v2.5.1", None)),
        ("registry.example.com:5000/team/img", (None, None)),
        ("registry.example.com:5000/team/img:v1", ("v1", None)),
        (f"img@{DIGEST}", (None, DIGEST)),
        (f"img:v2.5.1@{DIGEST}", ("v2.5.1", DIGEST)),
        ("img", (None, None)),
    ],
)
def test_image_pin_splits_out_tag_and_digest(image: str, pin: tuple[str | None, str | None]) -> None:
    assert image_pin(image) == pin


def test_an_empty_image_reference_is_refused_once_as_empty() -> None:
    [problem] = image_reference_problems("metadata:image", "")
    assert problem.startswith("metadata:image = '': empty; accepted: ")


def test_image_rules_agree_with_the_ecs_api_documentation(boto: botocore.session.Session) -> None:
    doc = _doc(boto.get_service_model("ecs").shape_for("ContainerDefinition").members["image"])
    ecs = rules()["image_reference"]["ecs"]
    assert f"up to {ecs['max_length_before_digest']} characters" in doc
    assert "The only supported hash function is sha256" in doc and "exactly 64 characters" in doc


# --- VPC CIDR blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cidr",
    [
        "10.0.0.0/16",
        "10.200.16.0/20",
        "172.16.0.0/16",
        "172.31.0.0/16",
        "192.168.0.0/16",
        "192.168.16.0/20",
        "100.64.0.0/16",
    ],
)
def test_private_blocks_from_16_to_20_pass(cidr: str) -> None:
    assert vpc_cidr_problems("network:vpcCidr", cidr) == []


@pytest.mark.parametrize("cidr", ["10.0.0.0/21", "10.0.0.0/24", "192.168.1.0/28"])
def test_blocks_aws_accepts_but_the_program_cannot_split_get_only_the_program_reason(cidr: str) -> None:
    [problem] = vpc_cidr_problems("network:vpcCidr", cidr)
    assert "splits the VPC into 16 equal subnets" in problem and "prefix length from 16 to 20" in problem


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "10.0.0.0/15", "10.0.0.0/29", "10.0.0.0/32"])
def test_blocks_outside_16_to_28_are_refused_as_aws_would_and_as_the_program_needs(cidr: str) -> None:
    problems = vpc_cidr_problems("network:vpcCidr", cidr)
    assert any("AWS accepts VPC blocks from /16 to /28 only" in problem for problem in problems)
    assert any("16 equal subnets" in problem for problem in problems)


@pytest.mark.parametrize(
    ("cidr", "range_"),
    [
        ("0.0.0.0/16", "0.0.0.0/8"),
        ("127.0.0.0/16", "127.0.0.0/8"),
        ("169.254.0.0/16", "169.254.0.0/16"),
        ("224.0.0.0/16", "224.0.0.0/4"),
        ("240.0.0.0/16", "240.0.0.0/4"),
        ("255.255.255.255/32", "240.0.0.0/4"),
        ("172.17.0.0/16", "172.17.0.0/16"),
        ("172.17.32.0/20", "172.17.0.0/16"),
    ],
)
def test_special_purpose_and_docker_bridge_ranges_are_refused(cidr: str, range_: str) -> None:
    problems = vpc_cidr_problems("network:vpcCidr", cidr)
    assert any(f"overlaps {range_}" in problem for problem in problems), problems
    assert not any("outside the private ranges" in problem for problem in problems)


def test_the_docker_bridge_refusal_says_why() -> None:
    [problem] = vpc_cidr_problems("network:vpcCidr", "172.17.0.0/16")
    assert "Docker's default bridge" in problem and "AWS Batch" in problem


@pytest.mark.parametrize("cidr", ["8.8.0.0/16", "198.19.0.0/16", "52.0.0.0/16", "100.128.0.0/16"])
def test_publicly_routable_blocks_are_refused(cidr: str) -> None:
    [problem] = vpc_cidr_problems("network:vpcCidr", cidr)
    assert "outside the private ranges" in problem and "10.0.0.0/8" in problem and "100.64.0.0/10" in problem


@pytest.mark.parametrize(
    ("cidr", "fragment"),
    [
        ("10.0.0.1/16", "accepted: 10.0.0.0/16"),
        ("10.0.0.0/255.255.0.0", "accepted: 10.0.0.0/16"),
        ("fd00::/56", "a VPC's primary block is IPv4"),
        ("ten-dot-oh", "not an IPv4 network in CIDR form"),
        ("", "not an IPv4 network in CIDR form"),
    ],
)
def test_malformed_or_non_canonical_blocks_are_refused(cidr: str, fragment: str) -> None:
    problems = vpc_cidr_problems("network:vpcCidr", cidr)
    assert any(fragment in problem for problem in problems), problems


def test_vpc_rules_agree_with_the_refused_and_accepted_ranges_not_overlapping() -> None:
    spec = rules()["vpc_cidr"]
    accepted = [ipaddress.IPv4Network(entry["cidr"]) for entry in spec["accepted"]]
    refused = [ipaddress.IPv4Network(entry["cidr"]) for entry in spec["refused"]]
    # Only Docker's bridge is refused inside an accepted range; the rest lie outside all of them.
    inside = [str(block) for block in refused if any(block.subnet_of(range_) for range_ in accepted)]
    assert inside == ["172.17.0.0/16"]


# --- RDS for PostgreSQL instance classes -----------------------------------------------------------


@pytest.mark.parametrize(
    "instance_class",
    [
        "db.t4g.micro",
        "db.t4g.medium",
        "db.m7g.large",
        "db.t3.micro",
        "db.r8g.48xlarge",
        "db.m7i.large",
        "db.r6idn.32xlarge",
    ],
)
@pytest.mark.parametrize("engine_version", [16, 17])
def test_current_classes_pass(instance_class: str, engine_version: int) -> None:
    assert db_instance_class_problems("db:instanceClass", instance_class, engine_version, "us-east-1") == []


@pytest.mark.parametrize(
    ("instance_class", "fragment"),
    [
        ("db.t2.micro", "previous-generation class"),
        ("db.m4.large", "previous-generation class"),
        ("db.x9.huge", "not an RDS for PostgreSQL instance class; accepted: e.g. db.t4g.micro"),
        ("db.t4g.nano", "db.t4g has no size 'nano'"),
        ("db.t3.nano", "db.t3 has no size 'nano'"),
        ("db.r6idn.large", "db.r6idn has no size 'large'"),
        ("db.m7g.24xlarge", "db.m7g has no size '24xlarge'"),
        ("db.c6gd.large", "not an RDS for PostgreSQL instance class"),
        ("db.z1d.large", "not an RDS for PostgreSQL instance class"),
        ("db.m7i.metal-24xl", "(db.<family>.<size>)"),
        ("t4g.micro", "(db.<family>.<size>)"),
        ("DB.T4G.MICRO", "(db.<family>.<size>)"),
    ],
)
def test_classes_rds_does_not_offer_for_postgresql_are_refused(instance_class: str, fragment: str) -> None:
    [problem] = db_instance_class_problems("db:instanceClass", instance_class, 17, "us-east-1")
    assert problem.startswith(f"db:instanceClass = {instance_class!r}: ") and fragment in problem
    assert "accepted: " in problem


@pytest.mark.parametrize(
    ("instance_class", "engine_version", "fragment"),
    [
        ("db.x2idn.16xlarge", 17, "PostgreSQL 13 to 15, not 17"),
        ("db.m8g.large", 12, "PostgreSQL 13 or later, not 12"),
        ("db.t4g.micro", 11, "PostgreSQL 12 or later, not 11"),
    ],
)
def test_classes_are_refused_for_postgresql_versions_rds_does_not_pair_them_with(
    instance_class: str, engine_version: int, fragment: str
) -> None:
    [problem] = db_instance_class_problems("db:instanceClass", instance_class, engine_version, "us-east-1")
    assert fragment in problem and f"accepted for PostgreSQL {engine_version}: e.g. db." in problem
    assert db_instance_class_problems("db:instanceClass", "db.x2idn.16xlarge", 15, "us-east-1") == []


def test_every_postgres_class_is_an_ec2_instance_type_botocore_knows(boto: botocore.session.Session) -> None:
    ec2_types = set(boto.get_service_model("ec2").shape_for("InstanceType").enum)
    families = rules()["rds_postgres_instance_classes"]["families"]
    unknown = [
        f"db.{family}.{size}"
        for family, spec in families.items()
        for size in spec["sizes"]
        if f"{spec.get('ec2_family', family)}.{size}" not in ec2_types
    ]
    assert unknown == []
    assert len(postgres_instance_classes()) == sum(len(spec["sizes"]) for spec in families.values())


def test_pulumi_aws_instance_types_of_the_listed_families_are_all_listed() -> None:
    from pulumi_aws.rds import InstanceType

    spec = rules()["rds_postgres_instance_classes"]
    ours = set(postgres_instance_classes())
    for member in InstanceType:
        family = member.value.split(".")[1]
        if family in spec["families"]:
            assert member.value in ours, member.value
        elif family in spec["previous_generation"]:
            assert db_instance_class_problems("db:instanceClass", member.value, 17, "us-east-1"), member.value


def test_the_examples_offered_in_problems_are_themselves_accepted() -> None:
    for example in rules()["rds_postgres_instance_classes"]["examples"]:
        assert db_instance_class_problems("db:instanceClass", example, 17, "us-east-1") == []


# --- Account ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "forbidden"),
    [
        (None, None),
        (["123456789012"], None),
        (None, ["000000000000"]),
        (["123456789012", "012345678901"], ["999999999999"]),
        ([], []),
    ],
)
def test_twelve_digit_ids_in_one_list_each_pass(allowed: list[str] | None, forbidden: list[str] | None) -> None:
    assert account_id_problems(allowed, forbidden) == []


@pytest.mark.parametrize(
    "account",
    [
        "12345678901",
        "1234567890123",
        "12345678901a",
        " 123456789012",
        "１２３４５６７８９０１２",
        "123456789012\n",
        123456789012,
    ],
)
def test_ids_that_are_not_exactly_twelve_ascii_digits_are_refused(account: Any) -> None:
    [problem] = account_id_problems([account], None)
    assert problem.startswith(f"aws:allowedAccountIds: {account!r} is not an AWS account id")
    [problem] = account_id_problems(None, [account])
    assert problem.startswith("aws:forbiddenAccountIds: ")


def test_an_id_both_allowed_and_forbidden_is_refused() -> None:
    [problem] = account_id_problems(["123456789012", "111111111111"], ["123456789012"])
    assert problem == (
        "aws:allowedAccountIds and aws:forbiddenAccountIds both list '123456789012'; "
        "accepted: an id in at most one of them"
    )


# --- AWS Batch -------------------------------------------------------------------------------------


def test_batch_instance_type_keywords_are_the_ones_the_batch_api_documents(boto: botocore.session.Session) -> None:
    compute_resource = boto.get_service_model("batch").shape_for("ComputeResource")
    doc = _doc(compute_resource.members["instanceTypes"])
    keywords = batch_instance_type_keywords()
    assert keywords == ("optimal", "default_x86_64", "default_arm64")
    for keyword in keywords:
        assert re.search(rf"\b{keyword}\b", doc), keyword
    spec = rules()["batch_instance_type_keywords"]
    assert sorted(spec["x86_64"] + spec["arm64"]) == sorted(keywords)


def test_batch_documents_no_upper_bound_for_max_vcpus(boto: botocore.session.Session) -> None:
    """If botocore's model ever gains a bound, add a max_vcpus check and flip the data."""
    batch = boto.get_service_model("batch")
    for structure in ("ComputeResource", "ComputeResourceUpdate"):
        shape = batch.shape_for(structure).members["maxvCpus"]
        assert "max" not in shape.metadata, structure
    assert rules()["batch_max_vcpus"]["documented_upper_bound"] is False


# --- Properties ------------------------------------------------------------------------------------

# Property tests run where hypothesis (a test-only dependency) is installed.
if importlib.util.find_spec("hypothesis") is not None:
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    FAST = settings(max_examples=100, deadline=None)
    TAG_CHARACTERS = st.characters(categories=["L", "N", "Zs"]) | st.sampled_from(
        sorted(rules()["tags"]["extra_characters"])
    )
    TAG_KEYS = st.text(TAG_CHARACTERS, min_size=1, max_size=128).filter(
        lambda key: not key.lower().startswith("aws:") and key not in PROGRAM_TAGS
    )
    TAG_VALUES = st.text(TAG_CHARACTERS, max_size=256).filter(lambda value: not value.lower().startswith("aws:"))

    @FAST
    @given(st.dictionaries(TAG_KEYS, TAG_VALUES, max_size=48))
    def test_property_tags_within_the_aws_rules_pass(tags: dict[str, str]) -> None:
        assert tag_problems(tags, PROGRAM_TAGS) == []

    @FAST
    @given(
        TAG_KEYS,
        st.characters(codec="utf-8").filter(
            lambda character: unicodedata.category(character)[0] not in "LNZ" and character not in "_.:/=+-@"
        ),
    )
    def test_property_any_character_outside_the_class_is_refused(key: str, character: str) -> None:
        assert tag_problems({key: f"x{character}"}, PROGRAM_TAGS)

    @FAST
    @given(st.integers(min_value=16, max_value=20), st.integers(min_value=0, max_value=2**24 - 1))
    def test_property_every_block_of_10_slash_8_from_16_to_20_passes(prefix: int, offset: int) -> None:
        network = ipaddress.IPv4Network((int(ipaddress.IPv4Address("10.0.0.0")) + offset, 32), strict=False)
        block = network.supernet(new_prefix=prefix)
        assert vpc_cidr_problems("network:vpcCidr", str(block)) == []

    @FAST
    @given(st.integers(min_value=0, max_value=32).filter(lambda prefix: not 16 <= prefix <= 28))
    def test_property_prefixes_aws_refuses_are_always_refused(prefix: int) -> None:
        block = ipaddress.IPv4Network(("10.0.0.0", prefix), strict=False)
        assert any("/16 to /28" in problem for problem in vpc_cidr_problems("network:vpcCidr", str(block)))

    ALNUM = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
    SEPARATORS = st.sampled_from([".", "_", "__", "-", "--"])
    COMPONENT = st.builds(
        lambda first, rest: first + "".join(sep + part for sep, part in rest),
        ALNUM,
        st.lists(st.tuples(SEPARATORS, ALNUM), max_size=2),
    )
    HOSTS = st.sampled_from(["", "registry.example.com/", "localhost:5000/", "public.ecr.aws/", "10.0.0.1:443/"])
    TAGS = st.none() | st.builds(
        lambda first, rest: first + rest, st.sampled_from("Az9_"), st.text("abcXYZ019_.-", max_size=20)
    )
    DIGESTS = st.none() | st.binary(min_size=32, max_size=32).map(lambda raw: f"sha256:{raw.hex()}")

    @FAST
    @given(HOSTS, st.lists(COMPONENT, min_size=1, max_size=3), TAGS, DIGESTS)
    def test_property_references_built_from_the_grammar_pass_and_pin_round_trips(
        host: str, path: list[str], tag: str | None, digest: str | None
    ) -> None:
        # Without a registry, a first component with a '.' would be read as a registry host.
        assume(host or len(path) == 1 or "." not in path[0])
        image = host + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
        assert image_reference_problems("metadata:image", image) == []
        assert image_pin(image) == (tag or None, digest)

    @FAST
    @given(st.text(max_size=20).filter(lambda name: name not in known_regions()))
    def test_property_any_unknown_region_is_refused(region: str) -> None:
        assert len(region_problems("aws:region", region)) == 1


def test_database_window_rules_are_the_ones_the_rds_api_documents(boto: botocore.session.Session) -> None:
    members = boto.get_service_model("rds").operation_model("ModifyDBInstance").input_shape.members
    backup, maintenance = (_doc(members[name]) for name in ("PreferredBackupWindow", "PreferredMaintenanceWindow"))
    minimum = aws_rules.rules()["rds_windows"]["min_minutes"]
    for doc in (backup, maintenance):
        assert f"Must be at least {minimum} minutes" in doc and "Universal Coordinated Time (UTC)" in doc
    assert "hh24:mi-hh24:mi" in backup and "Must not conflict with the preferred maintenance window" in backup
    assert "ddd:hh24:mi-ddd:hh24:mi" in maintenance
    assert f"The day values must be {' | '.join(WEEKDAYS)}" in " ".join(maintenance.split())


# --- Names and partitions ------------------------------------------------------------------------------


def test_derived_name_rules_are_botocores(boto: botocore.session.Session) -> None:
    spec = rules()["derived_names"]
    repository = boto.get_service_model("ecr").shape_for("RepositoryName").metadata
    assert spec["ecr_repository_pattern"] == repository["pattern"]
    assert spec["budget_name_max_length"] == boto.get_service_model("budgets").shape_for("BudgetName").metadata["max"]


def test_services_missing_from_a_partition_are_botocores() -> None:
    """Where botocore lists the service in a partition, it lists it in every region (or as a global
    endpoint), so the partition alone decides; and it lists it in none of those the data names."""
    endpoints = Loader().load_data("endpoints")
    missing: dict[str, list[str]] = rules()["partition_services"]["missing"]
    included = set(rules()["regions"]["partitions"])
    for service, partitions in missing.items():
        absent = []
        for partition in (p for p in endpoints["partitions"] if p["partition"] in included):
            entry = partition["services"].get(service)
            if entry is None or not entry.get("endpoints"):
                absent.append(partition["partition"])
            elif "partitionEndpoint" not in entry:
                assert set(partition["regions"]) <= set(entry["endpoints"]), (service, partition["partition"])
        assert sorted(absent) == sorted(partitions), service


def test_the_reservable_authorizer_concurrency_leaves_lambda_its_unreserved_hundred() -> None:
    assert max_reserved_concurrency() == 900
