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
    return run_demo(_config(args), Path(args.output), rtl=not args.no_rtl)


def _add_demo_args(s):
    s.add_argument("--no-rtl", action="store_true",
                   help="skip the bottleneck block on the RTL (golden model only)")


def cmd_verilog(args):
    from .verilog import generate_verilog
    for path, changed in generate_verilog(_config(args), Path(args.output)):
        print(f"{'wrote' if changed else 'unchanged'} {path}")


def cmd_tools(args):
    from .toolchain import tools_report
    rows = tools_report()
    width = max(len(r[0]) for r in rows)
    for tool, where, status in rows:
        print(f"{tool:<{width}}  {status:<12}  {where}")


def cmd_compile(args):
    from .firmware_cmds import cmd_compile
    return cmd_compile(args)


def cmd_run(args):
    from .firmware_cmds import cmd_run
    return cmd_run(args)


def cmd_quantize(args):
    from .firmware_cmds import cmd_quantize
    return cmd_quantize(args)


def cmd_bitstream(args):
    from .bitstream import cmd_bitstream
    return cmd_bitstream(args)


def _bitstream_args(s):
    from .bitstream import main_args
    main_args(s)


def _args(name):
    """The argument adder of a subcommand defined in gen/firmware_cmds.py (imported lazily)."""
    def add(s):
        from . import firmware_cmds
        getattr(firmware_cmds, f"add_{name}_args")(s)
    return add


#: name -> (function, help[, add_arguments(subparser)]).
COMMANDS = {
    "header": (cmd_header, "write npu.h, regmap.json and isa.md for a configuration"),
    "demo": (cmd_demo, "generate a configuration's artifacts, run a ResNet-50 layer on the "
                       "golden model and a bottleneck block on the RTL", _add_demo_args),
    "verilog": (cmd_verilog, "write the Verilog of a configuration: npu.v (the NPU top) and "
                             "npu_datapath.v (the compute datapath alone)"),
    "tools": (cmd_tools, "show the external tools npugen uses and where they come from"),
    "compile": (cmd_compile, "compile a quantised ONNX model to a .npubin program "
                             "(prints the per-layer table, writes it as CSV too)",
                _args("compile")),
    "run": (cmd_run, "run a .npubin program on a float .npy input (backend: golden)",
            _args("run")),
    "bitstream": (cmd_bitstream, "build an FPGA bitstream of the NPU with its on-chip RAM and UART "
                                 "bridge for a board; prints utilization and Fmax",
                  _bitstream_args),
    "quantize": (cmd_quantize, "quantise a float ONNX model with onnxruntime (QDQ, "
                               "per-channel int8)", _args("quantize")),
}


def parser():
    p = argparse.ArgumentParser(prog="npugen", description="int8 NPU generator")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_, *add_args) in COMMANDS.items():
        s = sub.add_parser(name, help=help_, description=help_)
        s.add_argument("--config", "-c", default="default",
                       help="a shipped config name (tiny, small, default, large) or a TOML path")
        s.add_argument("--output", "-o", default=f"build/{name}",
                       help="output directory (for compile, run, quantize: the output file)")
        for add in add_args:
            add(s)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    func = COMMANDS[args.command][0]
    try:
        status = func(args)
    except (ConfigError, UserError) as err:
        print(f"npugen {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
