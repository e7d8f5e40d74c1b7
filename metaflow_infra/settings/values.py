"""Value types of config keys: Pulumi hands every value over as a string, these parse it strictly."""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable
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
            raise ValueError(
                f'is not valid JSON ({err.msg}); e.g. {{"team": "data-science"}} or ["c6i", "m6i"]'
            ) from None
    return [item.strip() for item in text.split(",") if item.strip()]


def repeated(values: Iterable[str]) -> list[str]:
    """The values a list holds more than once, sorted: AWS takes each rule, endpoint or subnet once."""
    seen = Counter(values)
    return sorted(value for value, count in seen.items() if count > 1)


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


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK = r"(?:[01]\d|2[0-3]):[0-5]\d"
DAILY_WINDOW = rf"^{CLOCK}-{CLOCK}$"
WEEKLY_WINDOW = rf"^(?:{'|'.join(WEEKDAYS)}):{CLOCK}-(?:{'|'.join(WEEKDAYS)}):{CLOCK}$"
MINUTES_PER_WEEK = 7 * 24 * 60


def _minute_of_day(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def weekly_minutes(window: str) -> tuple[int, int]:
    """A weekly window `ddd:hh:mi-ddd:hh:mi` as (start, length) in minutes from Monday 00:00 UTC."""
    start, end = (WEEKDAYS.index(part[:3]) * 24 * 60 + _minute_of_day(part[4:]) for part in window.split("-"))
    return start, (end - start) % MINUTES_PER_WEEK


def daily_minutes(window: str) -> tuple[int, int]:
    """A daily window `hh:mi-hh:mi` as (start, length) in minutes from 00:00 UTC."""
    start, end = (_minute_of_day(part) for part in window.split("-"))
    return start, (end - start) % (24 * 60)


def windows_overlap(weekly: str, daily: str) -> bool:
    """Whether a weekly window meets any day's occurrence of a daily one (both may wrap around midnight)."""
    week_start, week_length = weekly_minutes(weekly)
    day_start, day_length = daily_minutes(daily)
    for day in range(7):
        start = day * 24 * 60 + day_start
        # Distance from the weekly window's start to this occurrence's start, and back, around the week.
        ahead = (start - week_start) % MINUTES_PER_WEEK
        behind = (week_start - start) % MINUTES_PER_WEEK
        if ahead < week_length or behind < day_length:
            return True
    return False
