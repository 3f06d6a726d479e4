"""The NPU configuration: one frozen, validated object read from a TOML file.

Every block of the gateware, the compiler and the golden model are parameterised from a single
:class:`NpuConfig`. The keys a configuration file may hold are defined once, in :data:`SCHEMA`: a
table of (section, key, field, type, default, rules) that drives parsing, validation,
:meth:`NpuConfig.to_dict`, :meth:`NpuConfig.to_toml` and the documentation
(:func:`schema_markdown`). No check is written by hand for one field.

A bad value fails with a :class:`ConfigError` whose message is one line naming the source, the
dotted key, the value and the rule::

    configs/bad.toml: buffers.input_depth = 1000: must be a power of two

Loading a configuration reads its file and nothing else; nothing is written anywhere.

Examples
--------
>>> cfg = NpuConfig.load("default")
>>> cfg.rows, cfg.cols, cfg.macs
(16, 16, 256)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_DIR",
    "SCHEMA",
    "ConfigError",
    "Key",
    "NpuConfig",
    "Rule",
    "config_path",
    "schema_markdown",
    "shipped_configs",
]

#: The repository root and the directory of the shipped configurations.
REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

#: Size of the address space the ISA and the bus address: 32 bits.
ADDRESS_SPACE = 1 << 32
#: AXI4 bursts must not cross a 4 KiB boundary; the memory window is aligned to it too.
PAGE = 4096


class ConfigError(ValueError):
    """A configuration is malformed or violates a rule.

    The message is one line: ``<source>: <key> = <value>: <rule>``.

    Attributes
    ----------
    source : str
        The file (or ``"<dict>"``, ``"NpuConfig"``) the bad value came from.
    key : str or None
        The dotted key (``"buffers.input_depth"``) at fault, or None when the error is not about
        one key (a TOML syntax error, an unknown config name).
    detail : str
        The message without the source.
    """

    def __init__(self, source: str, detail: str, *, key: str | None = None):
        self.source = str(source)
        self.key = key
        self.detail = detail
        super().__init__(_one_line(f"{self.source}: {detail}"))


# --- rendering values (error messages and to_toml share it) -------------------------------------


def _one_line(text: str) -> str:
    """Escape every non-printable character, so that ``text`` is exactly one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    short = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    if c in short:
        return short[c]
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"


def _toml_string(s: str) -> str:
    """A TOML basic string for ``s``, escaped so that it is valid TOML and one line."""
    body = "".join(
        "\\" + c if c in '"\\' else (c if c.isprintable() else _escape_char(c)) for c in s
    )
    return f'"{body}"'


def _hex(v: int) -> str:
    """``0x4000_0000``: hexadecimal with an underscore every four digits."""
    digits = f"{abs(v):x}"
    groups = []
    while digits:
        groups.insert(0, digits[-4:])
        digits = digits[:-4]
    return ("-" if v < 0 else "") + "0x" + "_".join(groups)


def _render(v: Any, *, hex: bool = False) -> str:
    """``v`` as it would be written in TOML (as near as TOML allows)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return _hex(v) if hex else str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, Mapping):
        inner = ", ".join(f"{_render_key(k)} = {_render(x)}" for k, x in v.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_render(x) for x in v) + "]"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return _one_line(repr(v))


def _render_key(k: Any) -> str:
    if isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_-]+", k):
        return k
    return _toml_string(str(k))


# --- rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule a value must obey.

    Attributes
    ----------
    doc : str
        The rule in a few words, for the documentation table.
    check : callable
        ``check(value, earlier)`` returns None if ``value`` obeys the rule, else the reason it does
        not (``"must be a power of two"``). ``earlier`` maps the field names of the keys before
        this one in :data:`SCHEMA` to their validated values, so that a rule may relate keys
        (``input_depth >= 2*rows``).
    """

    doc: str
    check: Callable[[Any, Mapping[str, Any]], str | None]


def _between(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
             fmt: Callable[[Any], str] = str) -> Rule:
    """``lo <= v <= hi`` (``lo < v`` if ``lo_open``); either bound may be None."""
    if lo is not None and hi is not None:
        doc = f"> {fmt(lo)} and <= {fmt(hi)}" if lo_open else f"{fmt(lo)}..{fmt(hi)}"
        reason = f"must be {doc}" if lo_open else f"must be between {fmt(lo)} and {fmt(hi)}"
    elif lo is not None:
        doc = f"> {fmt(lo)}" if lo_open else f">= {fmt(lo)}"
        reason = "must be positive" if (lo_open and lo == 0) else f"must be {doc}"
    else:
        doc = f"<= {fmt(hi)}"
        reason = f"must be at most {fmt(hi)}"

    def check(v, _):
        # Written as "is it inside", so that NaN is outside.
        above_lo = lo is None or (lo < v if lo_open else lo <= v)
        below_hi = hi is None or v <= hi
        return None if (above_lo and below_hi) else reason

    return Rule(doc, check)


def _power_of_two(lo: int | None = None, hi: int | None = None) -> Rule:
    """A power of two, optionally bounded."""
    bounds = _between(lo, hi) if (lo is not None or hi is not None) else None

    def check(v, earlier):
        if v <= 0 or v & (v - 1):
            return "must be a power of two"
        return bounds.check(v, earlier) if bounds else None

    doc = "power of two" + (f", {bounds.doc}" if bounds else "")
    return Rule(doc, check)


#: The allowed ``array.postproc_steps``: each splits the post-processor's 32-bit and 31-bit
#: multipliers into parts of ``ceil(bits / steps)`` bits, none of them empty.
POSTPROC_STEPS = (1, 2, 4, 8, 16)

#: The allowed ``queues.span_steps``: each forms a span term's 13-bit size times its stride
#: ``ceil(13 / steps)`` bits a cycle, taking exactly ``steps`` cycles.
SPAN_STEPS = (1, 2, 3, 4, 5, 7, 13)

#: The performance counters' names, in register order (:class:`hdl.isa.PerfCounter`).
PERF_COUNTERS = ("CYCLES", "COMMANDS", "LOAD_BUSY", "EXECUTE_BUSY", "STORE_BUSY", "MAC_ACTIVE",
                 "LOAD_WAIT_TOKEN", "EXECUTE_WAIT_TOKEN", "STORE_WAIT_TOKEN", "FETCH_STALL",
                 "EXECUTE_STARVED", "LOAD_BUS_STALL", "STORE_BUS_STALL", "BYTES_READ",
                 "BYTES_WRITTEN")


def _counter_names() -> Rule:
    def check(v, _):
        for name in v:
            if name not in PERF_COUNTERS:
                return f"unknown counter {_render(name)} (counters: {', '.join(PERF_COUNTERS)})"
        dup = next((n for i, n in enumerate(v) if n in v[:i]), None)
        if dup is not None:
            return f"{dup} is listed twice"
        if "CYCLES" not in v:
            return "must include CYCLES (runs are reported in cycles)"
        return None
    return Rule("names of counters, each once, CYCLES among them", check)


def _one_of(*choices: Any, why: str = "") -> Rule:
    listed = ", ".join(_render(c) for c in choices)
    reason = (f"must be {listed}" if len(choices) == 1 else f"must be one of {listed}")
    reason += f" ({why})" if why else ""

    def check(v, _):
        # `type(v) is type(c)` keeps 64.0 and True from passing for 64 and 1.
        return None if any(type(v) is type(c) and v == c for c in choices) else reason

    return Rule(("" if len(choices) == 1 else "one of ") + listed, check)


def _multiple_of(n: int, what: str) -> Rule:
    return Rule(f"multiple of {_hex(n)} ({what})",
                lambda v, _: None if v % n == 0 else f"must be a multiple of {n} ({what})")


def _holds_two_tiles() -> Rule:
    """A scratchpad depth (in rows) must hold two tiles of ``rows`` rows: double buffering."""

    def check(v, earlier):
        rows = earlier["rows"]
        if v >= 2 * rows:
            return None
        return (f"too small to hold one tile: needs at least 2*rows = {2 * rows} rows "
                f"(two {rows}-row tiles for double buffering)")

    return Rule(">= 2*rows (two tiles, for double buffering)", check)


def _at_most_field(field: str, why: str) -> Rule:
    def check(v, earlier):
        limit = earlier[field]
        if v <= limit:
            return None
        return f"{why}: must be at most {_BY_FIELD[field].dotted} = {limit}"

    return Rule(f"<= {field}", check)


def _burst_within_page() -> Rule:
    """An AXI4 burst may not cross 4 KiB, so no burst may be longer than 4 KiB."""

    def check(v, earlier):
        beat = earlier["bus_data_width"] // 8
        if v * beat <= PAGE:
            return None
        return (f"a burst of {v} beats of {beat} bytes is {v * beat} bytes and would cross a "
                f"4 KiB boundary: must be at most 4096 / {beat} = {PAGE // beat}")

    return Rule("<= 4096 / (data_width / 8) (an AXI burst may not cross 4 KiB)", check)


def _window_fits() -> Rule:
    def check(v, earlier):
        end = earlier["window_base"] + v
        if end <= ADDRESS_SPACE:
            return None
        return (f"the window does not fit in 32-bit addresses: window_base + window_size = "
                f"{_hex(end)}, must be at most {_hex(ADDRESS_SPACE)}")

    return Rule("window_base + window_size <= 2**32", check)


_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _name_rule() -> Rule:
    reason = ('must be 1 to 64 letters, digits, "_", "." or "-", starting with a letter or '
              "digit (it names the build directory)")
    return Rule('1-64 of [A-Za-z0-9_.-], starting alphanumeric',
                lambda v, _: None if _NAME_PATTERN.fullmatch(v) else reason)


# --- the schema ---------------------------------------------------------------------------------

#: A value type of the schema: the TOML type a key must have.
_TYPES = {
    "integer": ("must be an integer",
                lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("must be a number",
               lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "string": ("must be a string", lambda v: isinstance(v, str)),
    "list": ("must be a list of strings",
             lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
}


class _Required:
    def __repr__(self):
        return "REQUIRED"


#: The default of a key that must be given.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class _Derived:
    """A default computed from the keys before it (and the name of the file, for ``name``)."""

    doc: str
    compute: Callable[[Mapping[str, Any], str], Any]


@dataclass(frozen=True)
class Key:
    """One row of :data:`SCHEMA`: a key of the TOML file and the field it becomes.

    Attributes
    ----------
    section : str or None
        The TOML table the key is in (``"array"``), None for a top-level key.
    key : str
        The key's name inside its section.
    field : str
        The :class:`NpuConfig` field it becomes.
    type : str
        ``"integer"``, ``"number"`` (integer or float), ``"string"`` or ``"list"`` (of strings).
    default : object
        The value when the key is absent; :data:`REQUIRED` if it must be given.
    rules : tuple of Rule
        Checked in order after the type; the first that fails is reported.
    doc : str
        What the key means, for the documentation.
    hex : bool
        Show and write the value in hexadecimal (addresses).
    """

    section: str | None
    key: str
    field: str
    type: str
    default: Any
    rules: tuple[Rule, ...]
    doc: str
    hex: bool = False

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def render(self, value: Any) -> str:
        return _render(value, hex=self.hex)

    def default_doc(self) -> str:
        if self.required:
            return "required"
        if isinstance(self.default, _Derived):
            return self.default.doc
        return self.render(self.default)

    def rule_doc(self) -> str:
        return "; ".join(rule.doc for rule in self.rules)


def _depth(name: str, what: str, width: str) -> Key:
    return Key("buffers", f"{name}_depth", f"{name}_depth", "integer", REQUIRED,
               (_power_of_two(hi=65536), _holds_two_tiles()),
               f"{what} depth, in rows of {width}")


def _banks(name: str, what: str) -> Key:
    return Key("buffers", f"{name}_banks", f"{name}_banks", "integer", REQUIRED,
               (_power_of_two(lo=1), _at_most_field(f"{name}_depth", "more banks than rows")),
               f"{what} banks")


def _queue(name: str, what: str) -> Key:
    return Key("queues", f"{name}_depth", f"{name}_depth", "integer", 8,
               (_power_of_two(1, 256),), f"depth of the {what} queue, in commands")


#: The configuration schema: every key, in file order. A rule may refer to keys above it only.
SCHEMA: tuple[Key, ...] = (
    Key(None, "name", "name", "string",
        _Derived('the file stem ("custom" from a dict)', lambda _, default_name: default_name),
        (_name_rule(),), "name of the configuration; names `build/<name>/`"),
    Key(None, "description", "description", "string", "", (), "one line about the configuration"),

    Key("array", "rows", "rows", "integer", REQUIRED, (_between(1, 128),),
        "systolic array rows: the reduction width, int8 lanes of one input vector"),
    Key("array", "cols", "cols", "integer", REQUIRED, (_between(1, 128),),
        "systolic array columns: output channels per array pass"),
    Key("array", "dataflow", "dataflow", "string", "weight_stationary",
        (_one_of("weight_stationary", "output_stationary"),), "what stays in the PEs"),
    Key("array", "postproc_lanes", "pp_lanes", "integer",
        _Derived("cols (one row per cycle)", lambda earlier, _: earlier["cols"]),
        (_between(1, 128), _at_most_field("cols", "more lanes than columns")),
        "post-processor lanes computed per cycle: a row takes ceil(cols / lanes) cycles (fewer "
        "lanes, fewer multipliers: 6 per lane)"),
    Key("array", "postproc_steps", "pp_steps", "integer", 1, (_one_of(*POSTPROC_STEPS),),
        "cycles per post-processor multiplication, on multipliers that many times narrower (in "
        "logic, for a device whose DSPs the array uses up): a row takes ceil(cols / lanes) * "
        "steps cycles"),

    _depth("input", "input scratchpad", "rows int8"),
    _banks("input", "input scratchpad"),
    _depth("weight", "weight scratchpad", "cols int8"),
    _banks("weight", "weight scratchpad"),
    _depth("acc", "accumulator", "cols int32"),
    _banks("acc", "accumulator"),
    Key("buffers", "param_depth", "param_depth", "integer", REQUIRED,
        (_power_of_two(8, 65536),),
        "post-processing parameter memory depth, in rows of cols int32 (bias, multiplier, shift)"),

    Key("bus", "data_width", "bus_data_width", "integer", REQUIRED, (_one_of(64, 128, 256),),
        "AXI4 memory bus data width, in bits"),
    Key("bus", "addr_width", "bus_addr_width", "integer", 32,
        (_one_of(32, why="the ISA carries 32-bit addresses"),), "AXI4 address width, in bits"),
    Key("bus", "id_width", "bus_id_width", "integer", 4, (_between(1, 8),),
        "AXI4 ID width, in bits"),
    Key("bus", "max_burst", "max_burst", "integer",
        _Derived("256, or 4096 / (data_width / 8) if less",
                 lambda earlier, _: min(256, PAGE // (earlier["bus_data_width"] // 8))),
        (_power_of_two(1, 256), _burst_within_page()), "longest AXI4 INCR burst, in beats"),
    Key("bus", "max_reads", "max_reads", "integer", 4, (_power_of_two(1, 16),),
        "read bursts in flight"),
    Key("bus", "max_writes", "max_writes", "integer",
        _Derived("max_reads, at least 8", lambda earlier, _: max(8, earlier["max_reads"])),
        (_power_of_two(1, 16),), "write bursts in flight"),

    _queue("fetch", "command fetch"),
    _queue("load", "LOAD"),
    _queue("execute", "EXECUTE"),
    _queue("store", "STORE"),
    Key("queues", "token_depth", "token_depth", "integer", 16, (_between(1, 255),),
        "most tokens outstanding on one dependency channel"),
    Key("queues", "span_steps", "span_steps", "integer", 1, (_one_of(*SPAN_STEPS),),
        "cycles per multiplication of the command checks (the last buffer row or byte a strided "
        "command touches: a size times a stride, 6 to 9 a command): 1 on one multiplier, more "
        "on an adder that many times narrower (in logic, for a device whose DSPs the array "
        "uses up)"),

    Key("memory", "window_base", "window_base", "integer", 0,
        (_between(0, ADDRESS_SPACE - 1, fmt=_hex), _multiple_of(PAGE, "4 KiB")),
        "reset value of the memory window's base: the DMA touches nothing outside the window",
        hex=True),
    Key("memory", "window_size", "window_size", "integer", 0x1000_0000,
        (_between(0, lo_open=True), _multiple_of(PAGE, "4 KiB"), _window_fits()),
        "reset value of the memory window's size, in bytes", hex=True),

    Key("perf", "counter_bits", "perf_bits", "integer", 64, (_between(32, 64),),
        "width of each performance counter (it wraps at 2^bits; the high word reads bits 32 and "
        "up): 32 on a device with little logic"),
    Key("perf", "counters", "perf_counters", "list",
        _Derived("all 15", lambda earlier, _: PERF_COUNTERS), (_counter_names(),),
        "the performance counters the hardware has (a counter left out reads 0, and drivers "
        "report only those listed): fewer on a device with little logic"),

    Key("target", "device", "device", "string", "none",
        (_one_of("none", "ice40-up5k", "ecp5-85f"),), "FPGA the configuration is sized for"),
    Key("target", "clock_mhz", "clock_mhz", "number", 100, (_between(0, 1000, lo_open=True),),
        "target clock frequency, in MHz"),
)

_BY_FIELD: dict[str, Key] = {k.field: k for k in SCHEMA}
#: Section names in file order; None is the top level.
_SECTIONS: tuple[str | None, ...] = tuple(dict.fromkeys(k.section for k in SCHEMA))


def _keys_in(section: str | None) -> list[Key]:
    return [k for k in SCHEMA if k.section == section]


def _resolve(raw: Mapping[str, Any], source: str, default_name: str) -> dict[str, Any]:
    """Validate field values in :data:`SCHEMA` order and fill in defaults.

    ``raw`` maps field names to the values given; absent fields take their default. Returns the
    normalised values (a float clock that is a whole number becomes an int, so that equal configs
    have equal fingerprints).
    """
    values: dict[str, Any] = {}
    for key in SCHEMA:
        if key.field in raw:
            value = raw[key.field]
        elif key.required:
            raise ConfigError(
                source, f"missing required key {key.dotted} ({key.type}, {key.rule_doc()})",
                key=key.dotted)
        elif isinstance(key.default, _Derived):
            value = key.default.compute(values, default_name)
        else:
            value = key.default

        def fail(reason: str, value=value, key=key) -> ConfigError:
            return ConfigError(source, f"{key.dotted} = {key.render(value)}: {reason}",
                               key=key.dotted)

        type_reason, is_type = _TYPES[key.type]
        if not is_type(value):
            raise fail(type_reason)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise fail("must be valid Unicode text") from None
        for rule in key.rules:
            reason = rule.check(value, values)
            if reason is not None:
                raise fail(reason)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, list):
            value = tuple(value)        # (hashable, as the frozen NpuConfig must be)
        values[key.field] = value
    return values


# --- the configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class NpuConfig:
    """A validated NPU configuration.

    Build one with :meth:`load`, :meth:`from_toml` or :meth:`from_dict`. Constructing it
    directly (or with :func:`dataclasses.replace`) validates too. The fields and the TOML keys
    they come from are listed in :data:`SCHEMA` and by :func:`schema_markdown`.
    """

    name: str
    description: str
    # [array]
    rows: int
    cols: int
    dataflow: str
    pp_lanes: int
    pp_steps: int
    # [buffers]
    input_depth: int
    input_banks: int
    weight_depth: int
    weight_banks: int
    acc_depth: int
    acc_banks: int
    param_depth: int
    # [bus]
    bus_data_width: int
    bus_addr_width: int
    bus_id_width: int
    max_burst: int
    max_reads: int
    max_writes: int
    # [queues]
    fetch_depth: int
    load_depth: int
    execute_depth: int
    store_depth: int
    token_depth: int
    span_steps: int
    # [memory]
    window_base: int
    window_size: int
    # [perf]
    perf_bits: int
    perf_counters: tuple[str, ...]
    # [target]
    device: str
    clock_mhz: int | float

    def __post_init__(self):
        raw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for field, value in _resolve(raw, "NpuConfig", self.name).items():
            object.__setattr__(self, field, value)

    # --- construction ---

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>", *,
                  default_name: str = "custom") -> NpuConfig:
        """Validate a nested dict in the TOML layout.

        Parameters
        ----------
        d : mapping
            ``{"name": ..., "array": {"rows": ..., ...}, "buffers": {...}, ...}``.
        source : str
            Where ``d`` came from, for error messages.
        default_name : str
            The name when ``d`` has none (:meth:`from_toml` passes the file stem).

        Raises
        ------
        ConfigError
            On an unknown section or key, a missing required key, a value of the wrong type or
            one that breaks a rule.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(source, f"a configuration must be a table, not {_render(d)}")
        sections = [s for s in _SECTIONS if s is not None]
        top_keys = [k.key for k in _keys_in(None)]
        raw: dict[str, Any] = {}
        for name, value in d.items():
            if name in top_keys:
                raw[_by_dotted(name).field] = value
            elif name in sections:
                if not isinstance(value, Mapping):
                    raise ConfigError(source, f"{name} = {_render(value)}: must be a table "
                                      f"[{name}]", key=name)
                known = [k.key for k in _keys_in(name)]
                for key, item in value.items():
                    if key not in known:
                        raise ConfigError(
                            source, f"unknown key {name}.{_render_key(key)} "
                            f"(known keys in [{name}]: {', '.join(known)})",
                            key=f"{name}.{key}")
                    raw[_by_dotted(f"{name}.{key}").field] = item
            elif isinstance(value, Mapping):
                raise ConfigError(source, f"unknown section [{_render_key(name)}] "
                                  f"(known sections: {', '.join(sections)})", key=str(name))
            else:
                raise ConfigError(source, f"unknown key {_render_key(name)} (known top-level "
                                  f"keys: {', '.join(top_keys)}; sections: "
                                  f"{', '.join(sections)})", key=str(name))
        return cls(**_resolve(raw, source, default_name))

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> NpuConfig:
        """Read and validate a TOML file. Its name defaults to the file's stem.

        Raises
        ------
        ConfigError
            If the file cannot be read, is not valid TOML (naming the line), or does not
            validate.
        """
        path = Path(path)
        source = str(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as e:
            raise ConfigError(source, f"cannot read the configuration: {e.strerror or e}") \
                from None
        except UnicodeDecodeError as e:
            raise ConfigError(source, f"not UTF-8 text: byte {e.start}: {e.reason}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(source, _toml_error(e)) from None
        return cls.from_dict(data, source, default_name=path.stem)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike | NpuConfig) -> NpuConfig:
        """Load a shipped configuration by name (``"tiny"``) or any TOML file by path.

        A string with a suffix or a path separator, or any path object, is a path; a bare name
        is ``configs/<name>.toml`` in the repository. An :class:`NpuConfig` is returned as is.
        """
        if isinstance(name_or_path, NpuConfig):
            return name_or_path
        if isinstance(name_or_path, os.PathLike):
            return cls.from_toml(name_or_path)
        return cls.from_toml(config_path(name_or_path))

    # --- serialisation ---

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a nested dict in the TOML layout, every key present."""
        out: dict[str, Any] = {}
        for key in SCHEMA:
            table = out if key.section is None else out.setdefault(key.section, {})
            value = getattr(self, key.field)
            table[key.key] = list(value) if isinstance(value, tuple) else value
        return out

    def to_toml(self) -> str:
        """The configuration as a TOML document, every key present, deterministic."""
        lines = []
        for section in _SECTIONS:
            if section is not None:
                lines += ["", f"[{section}]"]
            lines += [f"{k.key} = {k.render(getattr(self, k.field))}" for k in _keys_in(section)]
        return "\n".join(lines) + "\n"

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict` without ``name`` and
        ``description``: it identifies the hardware (the CONFIG_HASH register, the config a
        program was compiled for, the build-cache key), which a rename does not change."""
        hardware = {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}
        canonical = json.dumps(hardware, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True, allow_nan=False)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    # --- derived sizes ---

    @property
    def input_row_bytes(self) -> int:
        """Bytes in one input scratchpad row: ``rows`` int8."""
        return self.rows

    @property
    def weight_row_bytes(self) -> int:
        """Bytes in one weight scratchpad row: ``cols`` int8."""
        return self.cols

    @property
    def acc_row_bytes(self) -> int:
        """Bytes in one accumulator row: ``cols`` int32."""
        return 4 * self.cols

    @property
    def param_row_bytes(self) -> int:
        """Bytes in one parameter row: ``cols`` int32."""
        return 4 * self.cols

    @property
    def bus_bytes(self) -> int:
        """Bytes in one beat of the memory bus."""
        return self.bus_data_width // 8

    @property
    def pp_row_cycles(self) -> int:
        """Cycles the post-processor takes per accumulator row: ``ceil(cols / postproc_lanes)``
        beats of ``postproc_steps`` cycles."""
        return -(-self.cols // self.pp_lanes) * self.pp_steps

    @property
    def slices(self) -> bool:
        """Register slices on the paths that limit a fast clock (``target.clock_mhz >= 75``):
        between each DMA unit's row walker and its row reader, on the AXI master's requests
        and bursts, the board RAM's port, the post-processor's output and its roundings, the
        execute unit's commands, jobs and accumulator update, the command processor's verdict
        and the CSR read address. They cost flip-flops and a few cycles of latency a command;
        slower targets go without."""
        return self.clock_mhz >= 75

    @property
    def macs(self) -> int:
        """Multiply-accumulates per cycle: ``rows * cols``."""
        return self.rows * self.cols

    @property
    def input_bytes(self) -> int:
        return self.input_depth * self.input_row_bytes

    @property
    def weight_bytes(self) -> int:
        return self.weight_depth * self.weight_row_bytes

    @property
    def acc_bytes(self) -> int:
        return self.acc_depth * self.acc_row_bytes

    @property
    def param_bytes(self) -> int:
        return self.param_depth * self.param_row_bytes


def _by_dotted(dotted: str) -> Key:
    return next(k for k in SCHEMA if k.dotted == dotted)


def _toml_error(e: tomllib.TOMLDecodeError) -> str:
    """``TOML syntax error at line 3, column 8: Invalid value`` from a TOMLDecodeError."""
    lineno, colno = getattr(e, "lineno", None), getattr(e, "colno", None)
    msg = getattr(e, "msg", None) or str(e)
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", msg, re.S)
    if match:
        msg, lineno, colno = match[1], match[2], match[3]
    else:
        msg = re.sub(r" \(at end of document\)$", "", msg)
    where = f"at line {lineno}, column {colno}" if lineno else "at the end of the document"
    return f"TOML syntax error {where}: {msg}"


def config_path(name_or_path: str | os.PathLike) -> Path:
    """The TOML file :meth:`NpuConfig.load` reads for ``name_or_path``: a string with a suffix
    or a path separator, or any path object, is a path; a bare name is
    ``configs/<name>.toml`` (:class:`ConfigError` if no such configuration is shipped)."""
    if isinstance(name_or_path, os.PathLike):
        return Path(name_or_path)
    text = str(name_or_path)
    separators = {"/", os.sep, os.altsep} - {None}
    if Path(text).suffix or any(s in text for s in separators):
        return Path(text)
    shipped = shipped_configs()
    if text not in shipped:
        raise ConfigError(text, f"not a shipped configuration (shipped: "
                          f"{', '.join(shipped)}) nor a path to a .toml file")
    return CONFIG_DIR / f"{text}.toml"


def shipped_configs() -> list[str]:
    """Names of the configurations in ``configs/``, sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def schema_markdown() -> str:
    """A markdown table of every key: key, type, default, rule, meaning."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| Key | Type | Default | Rule | Meaning |", "|---|---|---|---|---|"]
    for k in SCHEMA:
        rows.append(f"| `{k.dotted}` | {k.type} | {cell(k.default_doc())} | "
                    f"{cell(k.rule_doc()) or 'any'} | {cell(k.doc)} |")
    return "\n".join(rows) + "\n"


assert [f.name for f in dataclasses.fields(NpuConfig)] == [k.field for k in SCHEMA], \
    "NpuConfig's fields and SCHEMA must list the same fields in the same order"
