"""The ``npugen`` command line: a thin shell over the library functions.

User mistakes (a bad config, a bad path, a bad model) end with one line on stderr naming the thing
and exit status 2; no traceback, and no partial output left behind.
"""

import argparse
import sys
from pathlib import Path

from hdl.config import ConfigError, NpuConfig

__all__ = ["main", "UserError"]


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit status 2."""


def _config(args):
    return NpuConfig.load(args.config)


def cmd_header(args):
    from .header import write_headers
    written = write_headers(_config(args), Path(args.output))
    for path, changed in written:
        print(f"{'wrote' if changed else 'unchanged'} {path}")


def cmd_demo(args):
    from .demo import run_demo
    return run_demo(_config(args), Path(args.output))


def cmd_tools(args):
    from .toolchain import tools_report
    rows = tools_report()
    width = max(len(r[0]) for r in rows)
    for tool, where, status in rows:
        print(f"{tool:<{width}}  {status:<12}  {where}")


COMMANDS = {
    "header": (cmd_header, "write npu.h, regmap.json and isa.md for a configuration"),
    "demo": (cmd_demo, "generate a configuration's artifacts and run a ResNet-50 layer"),
    "tools": (cmd_tools, "show the external tools npugen uses and where they come from"),
}


def parser():
    p = argparse.ArgumentParser(prog="npugen", description="int8 NPU generator")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        s = sub.add_parser(name, help=help_, description=help_)
        s.add_argument("--config", "-c", default="default",
                       help="a shipped config name (tiny, small, default, large) or a TOML path")
        s.add_argument("--output", "-o", default=f"build/{name}", help="output directory")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    func, _ = COMMANDS[args.command]
    try:
        status = func(args)
    except (ConfigError, UserError) as err:
        print(f"npugen {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
