"""Command line: `python -m metaflow_infra config-table`."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .docs import config_table


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metaflow_infra", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("config-table", help="print the README's table of config keys and preset defaults")
    args = parser.parse_args(argv)
    if args.command == "config-table":
        print(config_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
