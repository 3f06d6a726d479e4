"""Tests of hdl/config.py: loading, validation messages, round trips, the shipped configs."""

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdl.config import (
    CONFIG_DIR,
    PERF_COUNTERS,
    SCHEMA,
    ConfigError,
    NpuConfig,
    schema_markdown,
    shipped_configs,
)

SHIPPED = ["default", "large", "small", "tiny"]


def listing(*dirs: Path) -> dict[Path, list[str]]:
    """Every file and directory below each of ``dirs``, with sizes and mtimes."""
    out = {}
    for d in dirs:
        out[d] = sorted(f"{p.relative_to(d)} {p.stat().st_size} {p.stat().st_mtime_ns}"
                        for p in d.rglob("*"))
    return out


def one_line(e: ConfigError) -> str:
    text = str(e)
    assert len(text.splitlines()) == 1, text
    return text


# --- the shipped configurations -----------------------------------------------------------------


def test_shipped_names():
    assert shipped_configs() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads_and_round_trips(name):
    before = listing(CONFIG_DIR)
    cfg = NpuConfig.load(name)
    assert cfg.name == name
    assert cfg.description
    assert NpuConfig.load(CONFIG_DIR / f"{name}.toml") == cfg
    assert NpuConfig.from_dict(cfg.to_dict()) == cfg
    assert NpuConfig.from_dict(tomllib.loads(cfg.to_toml())) == cfg
    assert tomllib.loads(cfg.to_toml()) == cfg.to_dict()
    assert cfg.to_toml() == NpuConfig.from_dict(cfg.to_dict()).to_toml()
    # Every key of the file is in to_dict with the same value (the files spell out every key).
    with open(CONFIG_DIR / f"{name}.toml", "rb") as f:
        assert tomllib.load(f) == cfg.to_dict()
    assert listing(CONFIG_DIR) == before


def test_shipped_configs_match_their_targets():
    tiny, small, default, large = (NpuConfig.load(n) for n in ["tiny", "small", "default", "large"])
    assert (tiny.rows, tiny.cols, tiny.macs, tiny.device) == (4, 2, 8, "ice40-up5k")  # 8 DSPs
    assert tiny.window_size == 128 * 1024 and tiny.clock_mhz == 24
    assert tiny.input_bytes + tiny.weight_bytes + tiny.acc_bytes + tiny.param_bytes < 15 * 1024
    assert (small.rows, small.cols, small.device, small.clock_mhz) == (12, 12, "ecp5-85f", 100)
    assert small.macs <= 156  # LFE5U-85F multipliers
    assert (default.rows, default.cols, default.bus_data_width) == (16, 16, 128)
    assert default.max_burst * default.bus_bytes == 4096
    assert (large.rows, large.cols, large.bus_data_width, large.input_banks) == (32, 32, 256, 4)
    assert large.max_burst * large.bus_bytes == 4096


def test_fingerprints_are_stable_and_distinct():
    prints = {name: NpuConfig.load(name).fingerprint() for name in SHIPPED}
    assert len(set(prints.values())) == len(SHIPPED)
    assert all(re.fullmatch(r"[0-9a-f]{64}", p) for p in prints.values())
    assert {n: NpuConfig.load(n).fingerprint() for n in SHIPPED} == prints
    # The same in another interpreter with another hash seed.
    code = ("from hdl.config import NpuConfig;"
            f"print(' '.join(NpuConfig.load(n).fingerprint() for n in {SHIPPED!r}))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=CONFIG_DIR.parent, env=env).stdout.split()
    assert out == [prints[n] for n in SHIPPED]
    # One key changed changes the fingerprint.
    d = NpuConfig.load("default").to_dict()
    d["queues"]["token_depth"] = 15
    assert NpuConfig.from_dict(d).fingerprint() != prints["default"]
    # A rename or a new description is the same hardware: the same fingerprint.
    d = NpuConfig.load("default").to_dict()
    d["name"], d["description"] = "renamed", "another description"
    assert NpuConfig.from_dict(d).fingerprint() == prints["default"]


def test_derived_properties():
    cfg = NpuConfig.load("small")
    assert cfg.input_row_bytes == 12 and cfg.weight_row_bytes == 12
    assert cfg.acc_row_bytes == 48 and cfg.param_row_bytes == 48
    assert cfg.bus_bytes == 8 and cfg.macs == 144
    assert cfg.input_bytes == 4096 * 12 and cfg.weight_bytes == 4096 * 12
    assert cfg.acc_bytes == 1024 * 48 and cfg.param_bytes == 32 * 48


def test_frozen_and_hashable():
    a, b = NpuConfig.load("tiny"), NpuConfig.load("tiny")
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a is not b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.rows = 8
    assert len({NpuConfig.load(n) for n in SHIPPED + SHIPPED}) == len(SHIPPED)


def test_direct_construction_validates():
    cfg = NpuConfig.load("default")
    assert dataclasses.replace(cfg, rows=32).rows == 32
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(cfg, rows=0)
    assert one_line(e.value) == "NpuConfig: array.rows = 0: must be between 1 and 128"
    assert e.value.key == "array.rows"
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(cfg, acc_depth=16)
    assert e.value.key == "buffers.acc_depth"  # 16 rows < 2*16


# --- defaults -----------------------------------------------------------------------------------

MINIMAL = {
    "array": {"rows": 16, "cols": 8},
    "buffers": {"input_depth": 64, "input_banks": 1, "weight_depth": 64, "weight_banks": 2,
                "acc_depth": 32, "acc_banks": 1, "param_depth": 8},
    "bus": {"data_width": 128},
}


def test_defaults():
    cfg = NpuConfig.from_dict(MINIMAL)
    assert cfg.name == "custom" and cfg.description == ""
    assert cfg.dataflow == "weight_stationary"
    assert (cfg.bus_addr_width, cfg.bus_id_width, cfg.max_burst, cfg.max_reads) == (32, 4, 256, 4)
    assert (cfg.fetch_depth, cfg.load_depth, cfg.execute_depth, cfg.store_depth) == (8, 8, 8, 8)
    assert cfg.token_depth == 16
    assert (cfg.window_base, cfg.window_size) == (0, 0x1000_0000)
    assert (cfg.device, cfg.clock_mhz) == ("none", 100)
    # The default burst is the longest that stays within 4 KiB.
    wide = {**MINIMAL, "bus": {"data_width": 256}}
    assert NpuConfig.from_dict(wide).max_burst == 128


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my-npu.toml"
    path.write_text(NpuConfig.from_dict(MINIMAL).to_toml().replace('name = "custom"\n', ""))
    assert NpuConfig.load(path).name == "my-npu"
    assert NpuConfig.load(str(path)).name == "my-npu"


def test_whole_float_clock_is_normalised():
    a = NpuConfig.from_dict({**MINIMAL, "target": {"clock_mhz": 100.0}})
    b = NpuConfig.from_dict({**MINIMAL, "target": {"clock_mhz": 100}})
    assert type(a.clock_mhz) is int and a.fingerprint() == b.fingerprint()
    c = NpuConfig.from_dict({**MINIMAL, "target": {"clock_mhz": 48.5}})
    assert c.clock_mhz == 48.5 and "clock_mhz = 48.5\n" in c.to_toml()


# --- bad configuration files, case by case ------------------------------------------------------

# The file each case patches: TOML literals, by section.
BASE = {
    None: {"name": '"bad"'},
    "array": {"rows": "16", "cols": "16"},
    "buffers": {"input_depth": "8192", "input_banks": "2", "weight_depth": "8192",
                "weight_banks": "2", "acc_depth": "2048", "acc_banks": "2", "param_depth": "64"},
    "bus": {"data_width": "128"},
}


def toml_text(patches: dict[str, str | None]) -> str:
    """BASE with ``{"section.key": literal}`` set (None deletes the key)."""
    tables = {s: dict(keys) for s, keys in BASE.items()}
    for dotted, literal in patches.items():
        section, _, key = dotted.rpartition(".")
        table = tables.setdefault(section or None, {})
        if literal is None:
            del table[key]
        else:
            table[key] = literal
    lines = [f"{k} = {v}" for k, v in tables.pop(None).items()]
    for section, keys in tables.items():
        lines += ["", f"[{section}]"] + [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


TOO_SMALL = "too small to hold one tile: needs at least 2*rows = 32 rows " \
            "(two 16-row tiles for double buffering)"

BAD_CASES = [
    # unknown keys and sections
    ({"array.rowz": "16"}, "array.rowz",
     "unknown key array.rowz (known keys in [array]: rows, cols, dataflow, postproc_lanes, "
     "postproc_steps)"),
    ({"buffers.input_dpeth": "16"}, "buffers.input_dpeth",
     "unknown key buffers.input_dpeth (known keys in [buffers]: input_depth, input_banks, "
     "weight_depth, weight_banks, acc_depth, acc_banks, param_depth)"),
    ({"arrays.rows": "16"}, "arrays",
     "unknown section [arrays] (known sections: array, buffers, bus, queues, memory, perf,"
     " target)"),
    ({"rows": "16"}, "rows",
     "unknown key rows (known top-level keys: name, description; sections: array, buffers, bus, "
     "queues, memory, perf, target)"),
    # missing required keys
    ({"array.rows": None}, "array.rows", "missing required key array.rows (integer, 1..128)"),
    ({"bus.data_width": None}, "bus.data_width",
     "missing required key bus.data_width (integer, one of 64, 128, 256)"),
    ({"buffers.param_depth": None}, "buffers.param_depth",
     "missing required key buffers.param_depth (integer, power of two, 8..65536)"),
    # wrong types
    ({"array.rows": '"16"'}, "array.rows", 'array.rows = "16": must be an integer'),
    ({"array.rows": "16.0"}, "array.rows", "array.rows = 16.0: must be an integer"),
    ({"array.rows": "true"}, "array.rows", "array.rows = true: must be an integer"),
    ({"buffers.input_banks": "[1, 2]"}, "buffers.input_banks",
     "buffers.input_banks = [1, 2]: must be an integer"),
    ({"queues.token_depth": "{ a = 1 }"}, "queues.token_depth",
     "queues.token_depth = { a = 1 }: must be an integer"),
    ({"target.clock_mhz": '"fast"'}, "target.clock_mhz",
     'target.clock_mhz = "fast": must be a number'),
    ({"target.clock_mhz": "false"}, "target.clock_mhz",
     "target.clock_mhz = false: must be a number"),
    ({"array.dataflow": "1"}, "array.dataflow", "array.dataflow = 1: must be a string"),
    ({"name": "7"}, "name", "name = 7: must be a string"),
    ({"memory.window_base": "1979-05-27"}, "memory.window_base",
     "memory.window_base = 1979-05-27: must be an integer"),
    # zero (or less) where positive is needed
    ({"array.rows": "0"}, "array.rows", "array.rows = 0: must be between 1 and 128"),
    ({"array.cols": "-4"}, "array.cols", "array.cols = -4: must be between 1 and 128"),
    ({"bus.id_width": "0"}, "bus.id_width", "bus.id_width = 0: must be between 1 and 8"),
    ({"queues.token_depth": "0"}, "queues.token_depth",
     "queues.token_depth = 0: must be between 1 and 255"),
    ({"memory.window_size": "0"}, "memory.window_size",
     "memory.window_size = 0x0: must be positive"),
    ({"target.clock_mhz": "0"}, "target.clock_mhz",
     "target.clock_mhz = 0: must be > 0 and <= 1000"),
    ({"target.clock_mhz": "-0.0"}, "target.clock_mhz",
     "target.clock_mhz = -0.0: must be > 0 and <= 1000"),
    ({"target.clock_mhz": "nan"}, "target.clock_mhz",
     "target.clock_mhz = nan: must be > 0 and <= 1000"),
    ({"buffers.weight_banks": "0"}, "buffers.weight_banks",
     "buffers.weight_banks = 0: must be a power of two"),
    # out of range
    ({"array.rows": "129"}, "array.rows", "array.rows = 129: must be between 1 and 128"),
    ({"buffers.input_depth": "131072"}, "buffers.input_depth",
     "buffers.input_depth = 131072: must be at most 65536"),
    ({"buffers.param_depth": "4"}, "buffers.param_depth",
     "buffers.param_depth = 4: must be between 8 and 65536"),
    ({"bus.max_burst": "512"}, "bus.max_burst", "bus.max_burst = 512: must be between 1 and 256"),
    ({"bus.max_reads": "32"}, "bus.max_reads", "bus.max_reads = 32: must be between 1 and 16"),
    ({"queues.fetch_depth": "512"}, "queues.fetch_depth",
     "queues.fetch_depth = 512: must be between 1 and 256"),
    ({"queues.load_depth": "3"}, "queues.load_depth",
     "queues.load_depth = 3: must be a power of two"),
    ({"bus.max_writes": "32"}, "bus.max_writes", "bus.max_writes = 32: must be between 1 and 16"),
    ({"queues.token_depth": "256"}, "queues.token_depth",
     "queues.token_depth = 256: must be between 1 and 255"),
    ({"target.clock_mhz": "1000.5"}, "target.clock_mhz",
     "target.clock_mhz = 1000.5: must be > 0 and <= 1000"),
    ({"bus.addr_width": "64"}, "bus.addr_width",
     "bus.addr_width = 64: must be 32 (the ISA carries 32-bit addresses)"),
    # not a power of two
    ({"buffers.input_depth": "1000"}, "buffers.input_depth",
     "buffers.input_depth = 1000: must be a power of two"),
    ({"buffers.acc_banks": "3"}, "buffers.acc_banks",
     "buffers.acc_banks = 3: must be a power of two"),
    ({"bus.data_width": "96"}, "bus.data_width",
     "bus.data_width = 96: must be one of 64, 128, 256"),
    ({"bus.max_burst": "100"}, "bus.max_burst", "bus.max_burst = 100: must be a power of two"),
    ({"queues.store_depth": "12"}, "queues.store_depth",
     "queues.store_depth = 12: must be a power of two"),
    # buffers too small to hold a tile
    ({"buffers.input_depth": "16"}, "buffers.input_depth",
     f"buffers.input_depth = 16: {TOO_SMALL}"),
    ({"buffers.weight_depth": "16"}, "buffers.weight_depth",
     f"buffers.weight_depth = 16: {TOO_SMALL}"),
    ({"buffers.acc_depth": "16", "buffers.acc_banks": "1"}, "buffers.acc_depth",
     f"buffers.acc_depth = 16: {TOO_SMALL}"),
    ({"array.rows": "12", "buffers.input_depth": "16"}, "buffers.input_depth",
     "buffers.input_depth = 16: too small to hold one tile: needs at least 2*rows = 24 rows "
     "(two 12-row tiles for double buffering)"),
    # more banks than rows
    ({"buffers.input_depth": "32", "buffers.input_banks": "64"}, "buffers.input_banks",
     "buffers.input_banks = 64: more banks than rows: must be at most buffers.input_depth = 32"),
    # a burst longer than 4 KiB
    ({"bus.data_width": "256", "bus.max_burst": "256"}, "bus.max_burst",
     "bus.max_burst = 256: a burst of 256 beats of 32 bytes is 8192 bytes and would cross a "
     "4 KiB boundary: must be at most 4096 / 32 = 128"),
    # the memory window
    ({"memory.window_base": "0x1001"}, "memory.window_base",
     "memory.window_base = 0x1001: must be a multiple of 4096 (4 KiB)"),
    ({"memory.window_size": "0x800"}, "memory.window_size",
     "memory.window_size = 0x800: must be a multiple of 4096 (4 KiB)"),
    ({"memory.window_base": "0x1_0000_0000"}, "memory.window_base",
     "memory.window_base = 0x1_0000_0000: must be between 0x0 and 0xffff_ffff"),
    ({"memory.window_base": "0xF000_0000", "memory.window_size": "0x2000_0000"},
     "memory.window_size",
     "memory.window_size = 0x2000_0000: the window does not fit in 32-bit addresses: "
     "window_base + window_size = 0x1_1000_0000, must be at most 0x1_0000_0000"),
    ({"memory.window_base": "0xF000_0000", "memory.window_size": "0x1000_1000"},
     "memory.window_size",
     "memory.window_size = 0x1000_1000: the window does not fit in 32-bit addresses: "
     "window_base + window_size = 0x1_0000_1000, must be at most 0x1_0000_0000"),
    # post-processor lanes: at least one, at most one per column
    ({"array.postproc_lanes": "0"}, "array.postproc_lanes",
     "array.postproc_lanes = 0: must be between 1 and 128"),
    ({"array.postproc_lanes": "17"}, "array.postproc_lanes",
     "array.postproc_lanes = 17: more lanes than columns: must be at most array.cols = 16"),
    # strings outside their set
    ({"array.dataflow": '"row_stationary"'}, "array.dataflow",
     'array.dataflow = "row_stationary": must be one of "weight_stationary", '
     '"output_stationary"'),
    ({"target.device": '"ice40-hx8k"'}, "target.device",
     'target.device = "ice40-hx8k": must be one of "none", "ice40-up5k", "ecp5-85f"'),
    ({"name": '"my npu"'}, "name",
     'name = "my npu": must be 1 to 64 letters, digits, "_", "." or "-", starting with a '
     "letter or digit (it names the build directory)"),
    ({"name": '"a\\nb"'}, "name",
     'name = "a\\nb": must be 1 to 64 letters, digits, "_", "." or "-", starting with a '
     "letter or digit (it names the build directory)"),
]


@pytest.mark.parametrize("patches,key,expected", BAD_CASES,
                         ids=[f"{k}:{list(p.values())}" for p, k, _ in BAD_CASES])
def test_bad_config_file(tmp_path, monkeypatch, patches, key, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.toml"
    path.write_text(toml_text(patches))
    before = listing(tmp_path, CONFIG_DIR)
    with pytest.raises(ConfigError) as e:
        NpuConfig.load("bad.toml")
    assert one_line(e.value) == f"bad.toml: {expected}"
    assert e.value.key == key and e.value.source == "bad.toml"
    assert listing(tmp_path, CONFIG_DIR) == before


@pytest.mark.parametrize("patches", [
    {},
    {"array.rows": "1", "array.cols": "1", "buffers.input_depth": "2", "buffers.input_banks": "2",
     "buffers.weight_depth": "2", "buffers.weight_banks": "1", "buffers.acc_depth": "2",
     "buffers.param_depth": "8"},
    {"array.rows": "128", "array.cols": "128", "buffers.input_depth": "256",
     "buffers.input_banks": "256", "buffers.weight_depth": "65536", "buffers.acc_depth": "256",
     "buffers.param_depth": "65536"},
    {"array.rows": "12", "buffers.input_depth": "32"},
    {"memory.window_base": "0xF000_0000", "memory.window_size": "0x1000_0000"},
    {"memory.window_base": "0xFFFF_F000", "memory.window_size": "0x1000"},
    {"bus.data_width": "256", "bus.max_burst": "128", "bus.max_reads": "16", "bus.id_width": "8"},
    {"bus.data_width": "64", "bus.max_burst": "256", "bus.max_reads": "1", "bus.id_width": "1"},
    {"queues.fetch_depth": "1", "queues.store_depth": "256", "queues.token_depth": "255"},
    {"bus.max_writes": "1", "queues.load_depth": "1", "queues.execute_depth": "1"},
    {"target.clock_mhz": "1000", "target.device": '"ecp5-85f"'},
    {"target.clock_mhz": "0.001", "array.dataflow": '"output_stationary"'},
])
def test_good_config_file_at_the_limits(tmp_path, patches):
    path = tmp_path / "good.toml"
    path.write_text(toml_text(patches))
    cfg = NpuConfig.from_toml(path)
    assert cfg.name == "bad"
    with open(path, "rb") as f:
        given_values = tomllib.load(f)
    out = cfg.to_dict()
    for section, table in given_values.items():
        if isinstance(table, dict):
            assert {k: out[section][k] for k in table} == table


@pytest.mark.parametrize("text,line", [
    ("[array]\nrows = 16\ncols = = 3\n", 3),
    ('name = "unterminated\n[array]\n', 1),
    ("[array]\nrows = 16\n[array]\n", 3),
])
def test_toml_syntax_error(tmp_path, monkeypatch, text, line):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.toml").write_text(text)
    before = listing(tmp_path, CONFIG_DIR)
    with pytest.raises(ConfigError) as e:
        NpuConfig.load("broken.toml")
    message = one_line(e.value)
    assert message.startswith(f"broken.toml: TOML syntax error at line {line}, column "), message
    assert e.value.key is None
    assert listing(tmp_path, CONFIG_DIR) == before


def test_toml_error_at_end_of_document(tmp_path):
    (tmp_path / "broken.toml").write_text("a = 1\na = 2")
    with pytest.raises(ConfigError) as e:
        NpuConfig.from_toml(tmp_path / "broken.toml")
    assert one_line(e.value).startswith(f"{tmp_path / 'broken.toml'}: TOML syntax error ")


def test_unreadable_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        NpuConfig.load("missing.toml")
    assert one_line(e.value).startswith("missing.toml: cannot read the configuration: ")
    (tmp_path / "latin1.toml").write_bytes(b'description = "caf\xe9"\n')
    with pytest.raises(ConfigError) as e:
        NpuConfig.load("latin1.toml")
    assert one_line(e.value).startswith("latin1.toml: not UTF-8 text: byte 18")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.toml"]


@pytest.mark.parametrize("name", ["nosuch", "Default", "tiny2"])
def test_unknown_config_name(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path, CONFIG_DIR)
    with pytest.raises(ConfigError) as e:
        NpuConfig.load(name)
    assert one_line(e.value) == (
        f"{name}: not a shipped configuration (shipped: default, large, small, tiny) "
        "nor a path to a .toml file")
    assert listing(tmp_path, CONFIG_DIR) == before


def test_name_or_path(tmp_path, monkeypatch):
    # A name with a suffix or a separator is a path, even if a shipped config has that stem.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^tiny\.toml: cannot read"):
        NpuConfig.load("tiny.toml")
    with pytest.raises(ConfigError, match=r"^sub/tiny: cannot read"):
        NpuConfig.load("sub/tiny")
    cfg = NpuConfig.load("tiny")
    assert NpuConfig.load(cfg) is cfg


@pytest.mark.parametrize("d,key,expected", [
    ({**MINIMAL, "array": 5}, "array", "array = 5: must be a table [array]"),
    ([1, 2], None, "a configuration must be a table, not [1, 2]"),
    ({**MINIMAL, "array": {"rows": 16, "cols": 8, "ro\nws": 1}}, "array.ro\nws",
     'unknown key array."ro\\nws" (known keys in [array]: rows, cols, dataflow, postproc_lanes, '
     'postproc_steps)'),
    ({**MINIMAL, "description": ["line 1\nline 2"]}, "description",
     'description = ["line 1\\nline 2"]: must be a string'),
    ({**MINIMAL, "description": "\ud800"}, "description",
     'description = "\\ud800": must be valid Unicode text'),
    ({**MINIMAL, "name": "x" * 65}, "name",
     f'name = "{"x" * 65}": must be 1 to 64 letters, digits, "_", "." or "-", starting with a '
     "letter or digit (it names the build directory)"),
    ({**MINIMAL, "bus": {"data_width": 128.0}}, "bus.data_width",
     "bus.data_width = 128.0: must be an integer"),
    ({**MINIMAL, "target": {"clock_mhz": float("inf")}}, "target.clock_mhz",
     "target.clock_mhz = inf: must be > 0 and <= 1000"),
])
def test_bad_dict(d, key, expected):
    with pytest.raises(ConfigError) as e:
        NpuConfig.from_dict(d, "test")
    assert one_line(e.value) == f"test: {expected}"
    assert e.value.key == key


def test_schema_markdown():
    md = schema_markdown()
    lines = md.splitlines()
    assert lines[0] == "| Key | Type | Default | Rule | Meaning |"
    assert len(lines) == 2 + len(SCHEMA)
    for key, line in zip(SCHEMA, lines[2:]):
        assert line.startswith(f"| `{key.dotted}` | {key.type} | ")
        assert line.count(" | ") == 4
    assert "| `buffers.input_depth` | integer | required | power of two" in md
    assert '| `array.dataflow` | string | "weight_stationary" |' in md


def test_schema_and_to_dict_agree():
    d = NpuConfig.load("default").to_dict()
    flat = {(s, k) for s, t in d.items() if isinstance(t, dict) for k in t}
    flat |= {(None, k) for k, v in d.items() if not isinstance(v, dict)}
    assert flat == {(k.section, k.key) for k in SCHEMA}


# --- property tests -----------------------------------------------------------------------------


def is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def pow2_between(lo: int, hi: int) -> st.SearchStrategy[int]:
    lo_exp = max(0, (lo - 1).bit_length())
    return st.integers(lo_exp, hi.bit_length() - 1).map(lambda e: 1 << e)


NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
# Keys that may be left out of a valid dict: their default is valid whatever the other keys are.
OMITTABLE = ["name", "description", "array.dataflow", "array.postproc_lanes",
             "array.postproc_steps", "bus.addr_width",
             "bus.id_width", "bus.max_burst", "bus.max_reads", "bus.max_writes",
             "queues.fetch_depth",
             "queues.load_depth", "queues.execute_depth", "queues.store_depth",
             "queues.token_depth", "queues.span_steps", "memory.window_base",
             "perf.counter_bits", "perf.counters", "target.device", "target.clock_mhz"]


@st.composite
def valid_dicts(draw):
    rows = draw(st.integers(1, 128))
    d = {"name": draw(st.from_regex(NAME, fullmatch=True)), "description": draw(st.text())}
    cols = draw(st.integers(1, 128))
    d["array"] = {"rows": rows, "cols": cols,
                  "dataflow": draw(st.sampled_from(["weight_stationary", "output_stationary"])),
                  "postproc_lanes": draw(st.integers(1, cols)),
                  "postproc_steps": draw(st.sampled_from([1, 2, 4, 8, 16]))}
    buffers = {}
    for name in ["input", "weight", "acc"]:
        depth = draw(pow2_between(2 * rows, 65536))
        buffers[f"{name}_depth"] = depth
        buffers[f"{name}_banks"] = draw(pow2_between(1, depth))
    buffers["param_depth"] = draw(pow2_between(8, 65536))
    d["buffers"] = buffers
    width = draw(st.sampled_from([64, 128, 256]))
    d["bus"] = {"data_width": width, "addr_width": 32, "id_width": draw(st.integers(1, 8)),
                "max_burst": draw(pow2_between(1, min(256, 4096 // (width // 8)))),
                "max_reads": draw(pow2_between(1, 16)), "max_writes": draw(pow2_between(1, 16))}
    d["queues"] = {f"{q}_depth": draw(pow2_between(1, 256))
                   for q in ["fetch", "load", "execute", "store"]}
    d["queues"]["token_depth"] = draw(st.integers(1, 255))
    d["queues"]["span_steps"] = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 13]))
    base_pages = draw(st.integers(0, (1 << 20) - 1))
    d["memory"] = {"window_base": base_pages * 4096,
                   "window_size": draw(st.integers(1, (1 << 20) - base_pages)) * 4096}
    others = draw(st.lists(st.sampled_from(PERF_COUNTERS[1:]), unique=True))
    counters = draw(st.permutations(["CYCLES"] + others))
    d["perf"] = {"counter_bits": draw(st.integers(32, 64)), "counters": counters}
    d["target"] = {"device": draw(st.sampled_from(["none", "ice40-up5k", "ecp5-85f"])),
                   "clock_mhz": draw(st.one_of(
                       st.integers(1, 1000),
                       st.floats(0, 1000, exclude_min=True, allow_nan=False)))}
    for dotted in draw(st.lists(st.sampled_from(OMITTABLE), unique=True)):
        section, _, key = dotted.rpartition(".")
        (d[section] if section else d).pop(key)
    return d


def get(d, dotted, default=None):
    section, _, key = dotted.rpartition(".")
    return (d.get(section, {}) if section else d).get(key, default)


def put(d, dotted, value):
    section, _, key = dotted.rpartition(".")
    (d.setdefault(section, {}) if section else d)[key] = value


@given(valid_dicts())
@settings(max_examples=300, deadline=None)
def test_valid_dicts_round_trip(d):
    cfg = NpuConfig.from_dict(d)
    out = cfg.to_dict()
    for key in SCHEMA:
        given_value = get(d, key.dotted)
        if given_value is not None:
            assert get(out, key.dotted) == given_value
    assert NpuConfig.from_dict(out) == cfg
    assert tomllib.loads(cfg.to_toml()) == out
    again = NpuConfig.from_dict(tomllib.loads(cfg.to_toml()))
    assert again == cfg and hash(again) == hash(cfg)
    assert again.fingerprint() == cfg.fingerprint()
    assert again.to_toml() == cfg.to_toml()


def ints(ok, near):
    """Integers that fail ``ok``: half of them from ``near``, half from anywhere."""
    anywhere = st.one_of(
        st.integers(), st.integers(-1024, 1 << 17), st.integers(0, 40).map(lambda e: 1 << e),
        st.integers(-1 << 34, 1 << 34).map(lambda v: v * 4096),
    )
    return st.one_of(st.sampled_from([v for v in near if not ok(v)]),
                     anywhere.filter(lambda v: not ok(v)))


WRONG_FOR_INT = st.sampled_from([True, False, "16", 16.0, 2.5, [16], {"a": 1}, None])
WRONG_FOR_STR = st.sampled_from([0, 1, True, 1.5, ["none"], {"a": "b"}, None])
WRONG_FOR_NUMBER = st.sampled_from([True, "100", [100], {"mhz": 100}, None])


def invalid_values(dotted: str, d) -> st.SearchStrategy:
    """Values of ``dotted`` that break its own rule, given the other keys of ``d``."""
    rows = d["array"]["rows"]
    width = d["bus"]["data_width"]
    base = get(d, "memory.window_base", 0)
    section, _, key = dotted.rpartition(".")
    if dotted == "name":
        return st.one_of(st.text().filter(lambda s: not re.fullmatch(NAME, s)), WRONG_FOR_STR)
    if dotted == "description":
        return WRONG_FOR_STR
    if dotted in ("array.dataflow", "target.device"):
        allowed = {"array.dataflow": {"weight_stationary", "output_stationary"},
                   "target.device": {"none", "ice40-up5k", "ecp5-85f"}}[dotted]
        return st.one_of(st.text().filter(lambda s: s not in allowed), WRONG_FOR_STR)
    if dotted == "perf.counters":
        given = get(d, "perf.counters", list(PERF_COUNTERS))
        return st.one_of(
            st.just([n for n in given if n != "CYCLES"]),                      # no CYCLES
            st.sampled_from(given).map(lambda n: given + [n]),                 # twice
            st.text().filter(lambda t: t not in PERF_COUNTERS).map(lambda t: given + [t]),
            st.sampled_from(["CYCLES", ["CYCLES", 1], 3, None, {"a": "CYCLES"}]))
    if dotted == "target.clock_mhz":
        return st.one_of(st.floats().filter(lambda x: not 0 < x <= 1000),
                         st.integers().filter(lambda x: not 0 < x <= 1000), WRONG_FOR_NUMBER)
    # Per key: is a value valid (given the other keys), and the values just past each bound,
    # where a rule is easiest to get wrong (one bank more than rows, a burst of 8 KiB, ...).
    cap = min(256, 4096 // (width // 8))
    end = (1 << 32) - base
    rules = {
        "array.rows": (lambda v: 1 <= v <= 128, [0, 129]),
        "array.cols": (lambda v: 1 <= v <= 128, [0, 129]),
        "array.postproc_lanes": (lambda v: 1 <= v <= d["array"]["cols"],
                                 [0, d["array"]["cols"] + 1]),
        "array.postproc_steps": (lambda v: v in (1, 2, 4, 8, 16), [0, 3, 32]),
        "perf.counter_bits": (lambda v: 32 <= v <= 64, [31, 65]),
        "buffers.param_depth": (lambda v: is_pow2(v) and 8 <= v <= 65536, [4, 12, 1 << 17]),
        "bus.data_width": (lambda v: v in (64, 128, 256), [0, 32, 96, 512]),
        "bus.addr_width": (lambda v: v == 32, [0, 31, 33, 64]),
        "bus.id_width": (lambda v: 1 <= v <= 8, [0, 9]),
        "bus.max_burst": (lambda v: is_pow2(v) and v <= 256 and v * width // 8 <= 4096,
                          [0, 100, 2 * cap, 512]),
        "bus.max_reads": (lambda v: is_pow2(v) and v <= 16, [0, 3, 32]),
        "bus.max_writes": (lambda v: is_pow2(v) and v <= 16, [0, 3, 32]),
        "queues.token_depth": (lambda v: 1 <= v <= 255, [0, 256]),
        "queues.span_steps": (lambda v: v in (1, 2, 3, 4, 5, 7, 13), [0, 6, 8, 12, 14]),
        "memory.window_base": (lambda v: 0 <= v < 1 << 32 and v % 4096 == 0,
                               [-4096, 1, 4097, 1 << 32]),
        "memory.window_size": (lambda v: v > 0 and v % 4096 == 0 and v <= end,
                               [0, -4096, 4095, end + 4096, end + 1]),
    }
    if section == "buffers" and key.endswith("_depth") and dotted not in rules:
        below = 1 << ((2 * rows - 1).bit_length() - 1)  # the largest power of two < 2*rows
        rules[dotted] = (lambda v: is_pow2(v) and 2 * rows <= v <= 65536,
                         [0, below, 1000, 1 << 17])
    elif section == "buffers" and key.endswith("_banks"):
        depth = d["buffers"][key.replace("_banks", "_depth")]
        rules[dotted] = (lambda v: is_pow2(v) and v <= depth, [0, 3, 2 * depth])
    elif section == "queues" and dotted not in rules:
        rules[dotted] = (lambda v: is_pow2(v) and 1 <= v <= 256, [0, 3, 512])
    ok, near = rules[dotted]
    return st.one_of(ints(ok, near), WRONG_FOR_INT)


@pytest.mark.parametrize("dotted", [k.dotted for k in SCHEMA])
@given(d=valid_dicts(), data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_single_invalid_key_is_named(dotted, d, data):
    value = data.draw(invalid_values(dotted, d), label="value")
    put(d, dotted, value)
    with pytest.raises(ConfigError) as e:
        NpuConfig.from_dict(d, "prop")
    message = one_line(e.value)
    assert e.value.key == dotted
    assert message.startswith(f"prop: {dotted} = ")


@given(valid_dicts(), st.sampled_from([k.dotted for k in SCHEMA if k.required]))
@settings(max_examples=100, deadline=None)
def test_missing_required_key_is_named(d, dotted):
    section, _, key = dotted.rpartition(".")
    del d[section][key]
    with pytest.raises(ConfigError) as e:
        NpuConfig.from_dict(d, "prop")
    assert one_line(e.value).startswith(f"prop: missing required key {dotted} (")
    assert e.value.key == dotted


@given(valid_dicts(), st.sampled_from(sorted({k.section for k in SCHEMA if k.section})),
       st.text(min_size=1))
@settings(max_examples=100, deadline=None)
def test_unknown_key_is_named(d, section, key):
    if key in {k.key for k in SCHEMA if k.section == section}:
        return
    d.setdefault(section, {})[key] = 1
    with pytest.raises(ConfigError) as e:
        NpuConfig.from_dict(d, "prop")
    assert e.value.key == f"{section}.{key}"
    assert one_line(e.value).startswith(f"prop: unknown key {section}.")
