"""Command line of metaflow-infra, offline (no AWS credentials, no Pulumi CLI) except `ui`.

python -m metaflow_infra plan [--stack dev] [--region R] [--set ns:key=value ...] [--diff | --summary] [--json]
python -m metaflow_infra plan --compare [--stack dev | --region us-east-1] [--json]
python -m metaflow_infra config-table
python -m metaflow_infra readme [--dir .]     rewrite the README's generated tables
python -m metaflow_infra ui [--stack dev] [--port 8083] [--no-browser] [--stop] [--profile P] [--dir .]
                                              open the deployed UI (private: a tunnel, see ui_tunnel.py)
"""

from __future__ import annotations

import gc

# Run as a command, importing pulumi-aws allocates about a million objects that live until the command
# ends: the cyclic collector is off while they are imported and then they are frozen out of its passes
# (a plan takes a fifth less CPU). Imported as a module, the caller's collector is left alone.
AS_COMMAND = __name__ == "__main__"
if AS_COMMAND:
    gc.disable()

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pulumi

from .docs import config_table, update_readme
from .plan import comparison_document, render_comparison, run_compare, run_plan, stack_config
from .settings import ConfigError
from .ui_tunnel import DEFAULT_PORT, UiError
from .ui_tunnel import run as run_ui

if AS_COMMAND:
    gc.freeze()
    gc.enable()


def refuse_with_compare(overrides: Sequence[str], diff: bool, summary: bool) -> None:
    """`--compare` prices each preset's own defaults: an override, a diff or a summary would be silently dropped."""
    if overrides or diff or summary:
        flags = [*(["--diff"] if diff else []), *(["--summary"] if summary else [])]
        given = " ".join([*(f"--set {o}" for o in overrides), *flags])
        raise ConfigError(
            f"--compare prices every preset's defaults and takes no {given}: to price a change, run "
            "`plan --set KEY=VALUE` (its cost is at the end) or `plan --diff --set KEY=VALUE`; to compare "
            "another region, `plan --compare --region REGION`"
        )


def with_region(overrides: Sequence[str], region: str | None) -> list[str]:
    """`--region R` is `--set aws:region=R`; both, disagreeing, is refused."""
    if region is None:
        return list(overrides)
    others = {o.partition("=")[2] for o in overrides if o.partition("=")[0] == "aws:region"} - {region}
    if others:
        raise ConfigError(f"--region {region} and --set aws:region={others.pop()} disagree: give one")
    return [*overrides, f"aws:region={region}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metaflow_infra", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="show what `pulumi up` would create, the profile and the monthly cost")
    plan.add_argument("--stack", default="dev", help="read Pulumi.STACK.yaml (default: dev)")
    plan.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NS:KEY=VALUE",
        help="override one config key, like `pulumi config set`; ns:key.path=value sets inside a structured "
        "key, like `pulumi config set --path` (repeatable)",
    )
    plan.add_argument(
        "--diff",
        action="store_true",
        help="show what the --set/--region overrides change against the stack's own config, property by property",
    )
    plan.add_argument("--json", action="store_true", help="print JSON instead of tables")
    plan.add_argument(
        "--summary", action="store_true", help="print only the resource count, warnings and the idle monthly cost"
    )
    plan.add_argument(
        "--compare",
        action="store_true",
        help="compare the idle cost of every preset and the Terraform module's defaults",
    )
    plan.add_argument(
        "--region",
        help="plan the stack in this region (like --set aws:region=REGION); with --compare, "
        "the region to price (default: the stack's aws:region)",
    )
    plan.add_argument("--dir", type=Path, default=Path.cwd(), help="project directory (default: current)")
    commands.add_parser("config-table", help="print the README's table of config keys and preset defaults")
    readme = commands.add_parser("readme", help="rewrite the README's generated tables (config keys, costs)")
    readme.add_argument("--dir", type=Path, default=Path.cwd(), help="project directory (default: current)")
    ui = commands.add_parser(
        "ui", help="open the stack's Metaflow UI (private: start its task and tunnel to it through Session Manager)"
    )
    ui.add_argument("--stack", default="dev", help="Pulumi stack (default: dev)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"local port (default: {DEFAULT_PORT})")
    ui.add_argument("--no-browser", dest="browser", action="store_false", help="print the URL, open no browser")
    ui.add_argument("--stop", action="store_true", help="stop the private UI's task unless a session is open")
    ui.add_argument("--profile", help="AWS profile (default: the usual credential chain)")
    ui.add_argument("--dir", type=Path, default=Path.cwd(), help="project directory (default: current)")
    args = parser.parse_args(argv)

    try:
        if args.command == "ui":
            return run_ui(
                args.stack, args.dir, port=args.port, open_browser=args.browser, stop_ui=args.stop, profile=args.profile
            )
        if args.command == "config-table":
            print(config_table())
        elif args.command == "readme":
            update_readme(
                args.dir / "README.md",
                {
                    "config-table": config_table,
                    "cost-comparison": lambda: render_comparison(comparison_document("us-east-1")),
                },
            )
        elif args.compare:
            refuse_with_compare(args.overrides, args.diff, args.summary)
            region = args.region or str(stack_config(args.stack, args.dir).get("aws:region", "us-east-1"))
            print(run_compare(region, as_json=args.json))
        else:
            overrides = with_region(args.overrides, args.region)
            if args.diff and not overrides:
                raise ConfigError("--diff compares the stack with changes: give them with --set KEY=VALUE or --region")
            if args.diff and args.summary:
                raise ConfigError("--diff ends with its own summary (counts and idle cost); drop --summary")
            print(run_plan(args.stack, args.dir, overrides, as_json=args.json, diff=args.diff, summary=args.summary))
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
    except BrokenPipeError:
        # The reader is gone (`| head`): nothing more goes out, and the interpreter's last flush must
        # not fail again on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (pulumi.RunError, UiError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
