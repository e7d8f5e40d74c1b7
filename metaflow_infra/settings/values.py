"""Value types of config keys: Pulumi hands every value over as a string, these parse it strictly."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field


def parse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("expected true or false")


def parse_int(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError("expected a whole number")


def parse_json(value: Any) -> Any:
    """Structured keys arrive as JSON text from `pulumi config set`; lists may be comma-separated."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"is not valid JSON ({err.msg})") from None
    return [item.strip() for item in text.split(",") if item.strip()]


def check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 network in CIDR form, e.g. 10.0.0.0/16") from None


INT32_MAX = 2**31 - 1
"""AWS's APIs take whole numbers as 32-bit integers (botocore's `Integer` shapes)."""

Bool = Annotated[bool, BeforeValidator(parse_bool)]
Int = Annotated[int, BeforeValidator(parse_int), Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
NonNegativeInt = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=INT32_MAX)]
PositiveInt = Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=INT32_MAX)]
Cidr = Annotated[str, AfterValidator(check_cidr)]
StrList = Annotated[list[str], BeforeValidator(parse_json)]
CidrList = Annotated[list[Cidr], BeforeValidator(parse_json)]
AccountIds = Annotated[list[Annotated[str, Field(pattern=r"^\d{12}$")]], BeforeValidator(parse_json)]
ARN_PATTERN = r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:.+$"
