"""The value types of config keys at their edges: AWS's 32-bit whole numbers, account ids, ARNs,
JSON or comma-separated lists, CIDRs."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from metaflow_infra.settings import DatastoreSettings
from metaflow_infra.settings.values import (
    ARN_PATTERN,
    INT32_MAX,
    AccountIds,
    Cidr,
    Int,
    NonNegativeInt,
    PositiveInt,
    StrList,
    parse_bool,
    parse_int,
    parse_json,
)


def accepts(kind: Any, value: Any) -> bool:
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return False
    return True


def test_int32_max_is_awss_largest_whole_number() -> None:
    assert INT32_MAX == 2147483647


@pytest.mark.parametrize(
    "kind, lowest, highest",
    [(Int, -(2**31), 2**31 - 1), (NonNegativeInt, 0, 2**31 - 1), (PositiveInt, 1, 2**31 - 1)],
    ids=["Int", "NonNegativeInt", "PositiveInt"],
)
def test_whole_numbers_are_bounded_to_what_aws_apis_take(kind: Any, lowest: int, highest: int) -> None:
    assert TypeAdapter(kind).validate_python(str(lowest)) == lowest
    assert TypeAdapter(kind).validate_python(highest) == highest
    assert not accepts(kind, lowest - 1)
    assert not accepts(kind, str(highest + 1))


def test_booleans_are_returned_as_booleans_not_echoed() -> None:
    assert parse_bool(False) is False
    assert parse_bool("false") is False and parse_bool("true") is True


def test_whole_numbers_are_returned_as_numbers() -> None:
    assert parse_int(0) == 0 and parse_int(-7) == -7
    assert parse_int("0") == 0 and isinstance(parse_int("42"), int)


def test_a_whole_number_in_text_must_be_all_digits_around_an_optional_minus() -> None:
    for text in ("4 2", "--4", "+4", "4-", "0x10", "4e2"):
        with pytest.raises(ValueError, match="whole number"):
            parse_int(text)


def test_structured_values_that_are_already_parsed_pass_through() -> None:
    value = {"a": ["b"]}
    assert parse_json(value) is value


def test_json_lists_and_objects_are_parsed_and_anything_else_is_a_comma_list() -> None:
    assert parse_json(' ["a, b", "c"] ') == ["a, b", "c"]
    assert parse_json('{"k": [1]}') == {"k": [1]}
    assert parse_json("single") == ["single"]
    assert parse_json("") == []
    with pytest.raises(ValueError, match="is not valid JSON"):
        parse_json("{a: 1}")


def test_a_string_list_accepts_json_or_commas() -> None:
    assert TypeAdapter(StrList).validate_python("c5, m5") == ["c5", "m5"]
    assert TypeAdapter(StrList).validate_python('["c5"]') == ["c5"]


def test_a_cidr_is_returned_in_canonical_form() -> None:
    assert TypeAdapter(Cidr).validate_python("2001:DB8::/32") == "2001:db8::/32"
    assert not accepts(Cidr, "10.0.0.1/16")


@pytest.mark.parametrize(
    "ids, accepted",
    [
        (["123456789012"], True),
        (["012345678901", "999999999999"], True),
        (["12345678901"], False),
        (["1234567890123"], False),
        (["x123456789012"], False),
        (["123456789012x"], False),
        (["123456789012\n"], False),
    ],
)
def test_account_ids_are_exactly_twelve_digits(ids: list[str], accepted: bool) -> None:
    assert accepts(AccountIds, ids) is accepted


@pytest.mark.parametrize(
    "arn, accepted",
    [
        ("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
        ("arn:aws-us-gov:kms:us-gov-west-1:123456789012:alias/a", True),
        ("arn:aws:s3:::bucket", False),
        ("xarn:aws:kms:us-east-1:123456789012:key/k", False),
        ("arn:aws:kms:us-east-1:123456789012:", False),
        ("arn:aws:kms:us-east-1:123456789012:key/k\n", False),
    ],
)
def test_arns_name_a_partition_service_region_account_and_resource(arn: str, accepted: bool) -> None:
    assert accepts(Annotated[str, Field(pattern=ARN_PATTERN)], arn) is accepted


@pytest.mark.parametrize(
    "key, accepted",
    [
        ("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
        ("arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab", True),
        ("create", True),
        # An alias ARN would encrypt, but IAM grants kms:Decrypt on the key ARN, never on an alias.
        ("arn:aws:kms:us-east-1:123456789012:alias/metaflow", False),
        ("arn:aws:s3:::bucket", False),
        ("Create", False),
        ("arn:aws:kms:us-east-1:123456789012:key/k\n", False),
    ],
)
def test_the_datastore_key_is_a_key_arn_or_create(key: str, accepted: bool) -> None:
    assert accepts(DatastoreSettings, {"kmsKey": key}) is accepted
