"""Tests of hdl/isa.py (layouts, encode/decode) and gen/header.py (npu.h, regmap.json, isa.md).

The fast encoder is checked against Amaranth's own ``Layout.const`` and ``data.Const``; the C
header against the Python encoder, by compiling and running a C program with gcc.
"""

import json
import random
import shutil
import subprocess
import tomllib
from enum import Enum
from pathlib import Path

import pytest
from amaranth.hdl import Shape
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st

from gen import cli
from gen.header import (
    isa_md_path,
    render_c_header,
    render_isa_md,
    render_regmap_json,
    write_headers,
)
from hdl import isa
from hdl.config import CONFIG_DIR, NpuConfig, shipped_configs

OPS = list(isa.COMMANDS)
CONFIGS = shipped_configs()


def value_fields(op):
    """The fields of a command a caller sets: all but the opcode and the reserved tail."""
    return [f for f in isa.fields(isa.COMMANDS[op]) if f.name not in ("op", "reserved")]


def is_enum(shape):
    return isinstance(shape, type) and issubclass(shape, Enum)


def bounds(f):
    if f.signed:
        return -(1 << (f.width - 1)), (1 << (f.width - 1)) - 1
    return 0, (1 << f.width) - 1


def plain(v):
    return v.value if isinstance(v, Enum) else v


def field_strategy(f):
    if is_enum(f.shape):
        return st.sampled_from(list(f.shape))
    lo, hi = bounds(f)
    return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0]))


def amaranth_bytes(op, values):
    """The command as Amaranth's layout encodes it: the reference for :func:`isa.encode`."""
    const = isa.COMMANDS[op].const({"op": op, **values})
    return int(const.as_bits()).to_bytes(isa.CMD_BYTES, "little")


# -- Layouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_layout_is_one_command_wide_and_tiled(op):
    layout = isa.COMMANDS[op]
    assert layout.size == isa.CMD_BITS == 8 * isa.CMD_BYTES
    # The fields tile the command exactly: no overlap, no gap.
    pos = 0
    for f in isa.fields(layout):
        assert f.offset == pos, f"{op.name}.{f.name} starts at {f.offset}, expected {pos}"
        assert f.width > 0
        pos += f.width
    assert pos == isa.CMD_BITS


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_every_command_starts_with_the_header(op):
    header = [(f.name, f.offset, f.width, f.shape) for f in isa.fields(isa.HEADER)
              if f.name != "reserved"]
    got = [(f.name, f.offset, f.width, f.shape) for f in isa.fields(isa.COMMANDS[op])]
    assert got[:len(header)] == header
    assert header[0][0] == "op" and header[0][3] is isa.Opcode
    assert isa.HEADER.size == isa.CMD_BITS
    assert isa.COMMAND.size == isa.CMD_BITS


def test_commands_cover_every_opcode():
    assert set(isa.COMMANDS) == set(isa.Opcode)
    assert set(isa.FIELD_DOCS) == set(isa.COMMANDS) | {None}
    for op in isa.COMMANDS:
        if op is not isa.Opcode.END:
            assert op in isa.QUEUE_OF
        for f in isa.fields(isa.COMMANDS[op], isa.FIELD_DOCS[op]):
            assert f.doc, f"{op.name}.{f.name} has no description"


# -- encode / decode -----------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_round_trip_matches_amaranth(op, draw):
    values = {}
    for f in value_fields(op):
        if draw.draw(st.booleans(), label=f"set {f.name}"):
            values[f.name] = draw.draw(field_strategy(f), label=f.name)
    raw = isa.encode(op, **values)
    assert isinstance(raw, bytes) and len(raw) == isa.CMD_BYTES

    # The fast encoder is Amaranth's layout encoder (missing fields are zero).
    assert raw == amaranth_bytes(op, values)
    # The opcode given by name encodes the same.
    assert isa.encode(op.name, **values) == raw

    got_op, got = isa.decode(raw)
    assert got_op is op
    expected = {f.name: plain(values.get(f.name, 0)) for f in value_fields(op)}
    assert {name: plain(got[name]) for name in expected} == expected
    assert got["op"] is op and got["reserved"] == 0
    assert set(got) == {f.name for f in isa.fields(isa.COMMANDS[op])}

    # Amaranth's decoder agrees with ours, field by field.
    const = data.Const(isa.COMMANDS[op], int.from_bytes(raw, "little"))
    for f in isa.fields(isa.COMMANDS[op]):
        assert plain(getattr(const, f.name)) == plain(got[f.name]), f.name

    # decode also takes an int.
    assert isa.decode(int.from_bytes(raw, "little")) == (got_op, got)


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_decode_returns_reserved_bits(op):
    f = next(f for f in isa.fields(isa.COMMANDS[op]) if f.name == "reserved")
    word = int.from_bytes(isa.encode(op), "little") | (1 << (f.offset + f.width - 1))
    got_op, got = isa.decode(word.to_bytes(isa.CMD_BYTES, "little"))
    assert got_op is op
    assert got["reserved"] == 1 << (f.width - 1)


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_encode_rejects_out_of_range(op):
    for f in value_fields(op):
        lo, hi = bounds(f)
        for bad in (lo - 1, hi + 1):
            with pytest.raises(isa.EncodeError) as exc:
                isa.encode(op, **{f.name: bad})
            assert op.name in str(exc.value) and f.name in str(exc.value)
        isa.encode(op, **{f.name: lo})
        isa.encode(op, **{f.name: hi})


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_encode_rejects_unknown_fields(op):
    with pytest.raises(isa.EncodeError) as exc:
        isa.encode(op, no_such_field=1)
    assert op.name in str(exc.value) and "no_such_field" in str(exc.value)
    # A field of another command is unknown too.
    other = {f.name for o in OPS for f in value_fields(o)} - {f.name for f in value_fields(op)}
    for name in sorted(other)[:3]:
        with pytest.raises(isa.EncodeError, match=name):
            isa.encode(op, **{name: 0})



@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_reserved_bits_can_be_set_on_purpose_and_round_trip(op):
    """Fuzzers build malformed commands: `reserved` encodes, decodes back, and a decoded command
    re-encodes to the same bytes."""
    width = next(f.width for f in isa.fields(isa.COMMANDS[op]) if f.name == "reserved")
    raw = isa.encode(op, reserved=(1 << width) - 1)
    got_op, got = isa.decode(raw)
    assert got_op == op and got["reserved"] == (1 << width) - 1
    assert isa.encode(got_op, **got) == raw
    with pytest.raises(isa.EncodeError, match="reserved"):
        isa.encode(op, reserved=1 << width)


@pytest.mark.parametrize("bad", [0, 16, "FOO"])
def test_encode_rejects_bad_opcodes(bad):
    with pytest.raises(isa.EncodeError, match="not an opcode"):
        isa.encode(bad)


def test_encode_rejects_enum_of_the_wrong_type():
    with pytest.raises(isa.EncodeError, match="Buffer"):
        isa.encode(isa.Opcode.LOAD, target=isa.PoolMode.SUM)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 15).filter(lambda v: v not in {op.value for op in isa.Opcode}),
       st.integers(0, (1 << (isa.CMD_BITS - 4)) - 1))
def test_decode_of_illegal_opcode_returns_the_integer(opval, rest):
    raw = ((rest << 4) | opval).to_bytes(isa.CMD_BYTES, "little")
    got_op, got = isa.decode(raw)
    assert type(got_op) is int and got_op == opval
    assert got == {}


def test_zero_is_not_a_command():
    assert isa.decode(bytes(isa.CMD_BYTES)) == (0, {})


# -- npu.h ---------------------------------------------------------------------------------------


def c_int(v):
    return f"{v}u" if v >= 0 else f"({v})"


def c_str(s):
    """A C string literal of ``s``: every UTF-8 byte as an octal escape."""
    return '"' + "".join(f"\\{b:03o}" for b in s.encode("utf-8")) + '"'


def enum_prefix(cls):
    """``PoolMode`` -> ``POOL_MODE``, as npu.h names enum members."""
    return "".join("_" + c if c.isupper() and i else c for i, c in enumerate(cls.__name__)).upper()


def c_test_program(config):
    """A C program that builds one command of each opcode with NPU_CMD_SET, compares its bytes
    with Python's encoding of the same values, reads every field back, and checks the config
    macros against the register reset values."""
    rng = random.Random(1234)
    lines = ['#include <stdint.h>', '#include <string.h>', '#include <stdio.h>',
             '#include "npu.h"', '#include "npu.h"  /* twice: the include guard works */', '',
             'static int fail(int line) { printf("failed at line %d\\n", line); return 1; }',
             '#define CHECK(c) do { if (!(c)) return fail(__LINE__); } while (0)', '',
             'int main(void)', '{', '    uint32_t cmd[NPU_CMD_WORDS];',
             '    uint8_t got[NPU_CMD_BYTES];']
    for op in OPS:
        values, sets, checks = {}, [], []
        for f in value_fields(op):
            field = f.name.upper()
            if is_enum(f.shape):
                member = rng.choice(list(f.shape))
                values[f.name] = member
                macro = f"NPU_{enum_prefix(f.shape)}_{member.name}"
                sets.append(f"NPU_CMD_SET(cmd, {op.name}, {field}, {macro});")
                checks.append(f"CHECK(NPU_CMD_GET(cmd, {op.name}, {field}) == {macro});")
                continue
            lo, hi = bounds(f)
            v = rng.choice([lo, hi, rng.randint(lo, hi), rng.randint(lo, hi)])
            values[f.name] = v
            sets.append(f"NPU_CMD_SET(cmd, {op.name}, {field}, {c_int(v)});")
            if f.signed:
                checks.append(f"CHECK(NPU_{op.name}_{field}_SIGNED == 1);")
                checks.append(f"CHECK(NPU_CMD_GET_SIGNED(cmd, {op.name}, {field}) == {v});")
            else:
                checks.append(f"CHECK(NPU_CMD_GET(cmd, {op.name}, {field}) == {c_int(v)});")
        expected = isa.encode(op, **values)
        lines += ['    {',
                  f"        static const uint8_t want[NPU_CMD_BYTES] = "
                  f"{{{', '.join(str(b) for b in expected)}}};",
                  '        memset(cmd, 0xA5, sizeof cmd);  /* the clear must clear */',
                  '        npu_cmd_clear(cmd);',
                  f"        NPU_CMD_SET(cmd, {op.name}, OP, NPU_{op.name}_OPCODE);"]
        lines += [f"        {s}" for s in sets]
        lines += ['        npu_cmd_to_bytes(cmd, got);',
                  '        CHECK(memcmp(got, want, NPU_CMD_BYTES) == 0);',
                  f"        CHECK(NPU_CMD_GET(cmd, {op.name}, OP) == NPU_OPCODE_{op.name});"]
        lines += [f"        {c}" for c in checks]
        lines += ['    }']

    # Config macros, and the HW_CONFIG reset values read back through the field macros.
    for name, value in [(f, getattr(config, f)) for f in config.__dataclass_fields__]:
        macro = f"NPU_CFG_{name.upper()}"
        if name == "perf_counters":     # a mask, bit = counter number (each bit tested)
            for pc in isa.PerfCounter:
                bit = int(pc.name in value)
                lines.append(f"    CHECK((({macro} >> NPU_PERF_COUNTER_{pc.name}) & 1u) == "
                             f"{bit}u);")
        elif isinstance(value, str):
            lines.append(f"    CHECK(strcmp({macro}, {c_str(value)}) == 0);")
        elif isinstance(value, int):
            lines.append(f"    CHECK({macro} == {value}ull);")
        else:
            lines.append(f"    CHECK({macro} == {value!r});")
    lines.append(f'    CHECK(strcmp(NPU_CFG_FINGERPRINT, "{config.fingerprint()}") == 0);')
    for reg in isa.registers(config):
        lines.append(f"    CHECK(NPU_REG_{reg.name} == {reg.offset}u);")
        lines.append(f"    CHECK(NPU_REG_{reg.name}_RESET == {reg.reset}u);")

    def hw(reg, field):
        r = f"NPU_REG_{reg}"
        return f"((NPU_REG_{reg}_RESET & {r}_{field}_MASK) >> {r}_{field}_LSB)"

    lines += [f"    CHECK({hw('HW_CONFIG0', 'ROWS')} == NPU_CFG_ROWS);",
              f"    CHECK({hw('HW_CONFIG0', 'COLS')} == NPU_CFG_COLS);",
              f"    CHECK((1u << {hw('HW_CONFIG0', 'BUS_WIDTH_LOG2')}) == NPU_CFG_BUS_DATA_WIDTH);",
              f"    CHECK((1u << {hw('HW_CONFIG1', 'INPUT_DEPTH_LOG2')}) == NPU_CFG_INPUT_DEPTH);",
              f"    CHECK((1u << {hw('HW_CONFIG1', 'ACC_DEPTH_LOG2')}) == NPU_CFG_ACC_DEPTH);",
              f"    CHECK({hw('HW_CONFIG2', 'TOKEN_DEPTH')} == NPU_CFG_TOKEN_DEPTH);",
              "    CHECK(NPU_REG_CONFIG_HASH_RESET == NPU_CFG_HASH);",
              "    CHECK(NPU_REG_VERSION_RESET == NPU_ISA_VERSION);",
              "    CHECK(NPU_REG_ID_RESET == NPU_ID);",
              "    CHECK(NPU_CMD_BYTES == 4u * NPU_CMD_WORDS);",
              '    printf("ok\\n");', "    return 0;", "}", ""]
    return "\n".join(lines)


def test_c_test_crosses_word_boundaries():
    """The C test below only proves the helpers handle split fields if some field is split."""
    split = [(op.name, f.name) for op in OPS for f in value_fields(op)
             if f.offset // 32 != (f.offset + f.width - 1) // 32]
    assert len(split) >= 3, split


def odd_config():
    """A valid configuration with awkward values: quotes, a trigraph, non-ASCII text, a
    fractional clock, a window at the top of the address space."""
    d = tomllib.loads((CONFIG_DIR / "tiny.toml").read_text(encoding="utf-8"))
    d["name"] = "odd"
    d["description"] = 'say "hi" \\ ??= */ /* caf\u00e9 \U0001F600'
    d["target"]["clock_mhz"] = 48.5
    d["memory"].update(window_base=0xF000_0000, window_size=0x1000_0000)
    return NpuConfig.from_dict(d)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed: npu.h not compiled")
@pytest.mark.parametrize("name", CONFIGS + ["odd"])
def test_c_header_compiles_and_matches_encode(name, tmp_path):
    config = odd_config() if name == "odd" else NpuConfig.load(name)
    (tmp_path / "npu.h").write_text(render_c_header(config))
    (tmp_path / "test.c").write_text(c_test_program(config))
    exe = tmp_path / "test"
    build = subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic", "-Wconversion",
         "-Wshadow", "-I", str(tmp_path), str(tmp_path / "test.c"), "-o", str(exe)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == "ok\n"


def test_c_header_defines_every_enum_member_and_field():
    text = render_c_header("tiny")
    for value, macro in [(isa.Opcode.END.value, "NPU_OPCODE_END"),
                         (isa.ErrorCode.TOKEN_DEADLOCK.value, "NPU_ERROR_CODE_TOKEN_DEADLOCK"),
                         (isa.PerfCounter.BYTES_WRITTEN.value, "NPU_PERF_COUNTER_BYTES_WRITTEN"),
                         (isa.Buffer.PARAM.value, "NPU_BUFFER_PARAM"),
                         (isa.PoolMode.SUM.value, "NPU_POOL_MODE_SUM"),
                         (isa.Queue.STORE.value, "NPU_QUEUE_STORE")]:
        assert f"#define {macro} {value}u" in text
    for op in OPS:
        for f in isa.fields(isa.COMMANDS[op]):
            assert f"#define NPU_{op.name}_{f.name.upper()}_LSB {f.offset}u" in text
            assert f"#define NPU_{op.name}_{f.name.upper()}_WIDTH {f.width}u" in text
    assert render_c_header("tiny") == text


# -- regmap.json ---------------------------------------------------------------------------------


def hw_config_expected(config):
    """What the HW_CONFIG registers must say about ``config``, field by field."""
    def log2(n):
        assert n > 0 and n & (n - 1) == 0
        return n.bit_length() - 1

    return {
        "rows": config.rows, "cols": config.cols,
        "dataflow": {"weight_stationary": 0, "output_stationary": 1}[config.dataflow],
        "bus_width_log2": log2(config.bus_data_width),
        "input_depth_log2": log2(config.input_depth), "input_banks_log2": log2(config.input_banks),
        "weight_depth_log2": log2(config.weight_depth),
        "weight_banks_log2": log2(config.weight_banks),
        "acc_depth_log2": log2(config.acc_depth), "acc_banks_log2": log2(config.acc_banks),
        "param_depth_log2": log2(config.param_depth),
        "fetch_depth_log2": log2(config.fetch_depth), "load_depth_log2": log2(config.load_depth),
        "execute_depth_log2": log2(config.execute_depth),
        "store_depth_log2": log2(config.store_depth), "token_depth": config.token_depth,
        "max_burst_log2": log2(config.max_burst), "max_reads_log2": log2(config.max_reads),
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_regmap_json(name):
    config = NpuConfig.load(name)
    text = render_regmap_json(config)
    assert text.endswith("}\n") and text == render_regmap_json(config)
    doc = json.loads(text)
    assert json.dumps(doc, sort_keys=True, indent=2) + "\n" == text
    assert doc["isa_version"] == ".".join(map(str, isa.ISA_VERSION))
    assert doc["config"] == {"name": name, "fingerprint": config.fingerprint(),
                             "values": config.to_dict()}

    regs = {r["name"]: r for r in doc["registers"]}
    offsets = [r["offset"] for r in doc["registers"]]
    assert len(regs) == len(doc["registers"])
    assert len(set(offsets)) == len(offsets)
    assert all(o % 4 == 0 for o in offsets)
    for r in doc["registers"]:
        used = 0
        for f in r["fields"]:
            mask = ((1 << f["width"]) - 1) << f["offset"]
            assert f["offset"] + f["width"] <= 32, (r["name"], f["name"])
            assert not used & mask, f"{r['name']}.{f['name']} overlaps"
            used |= mask
        assert 0 <= r["reset"] < 1 << 32

    expected = hw_config_expected(config)
    seen = set()
    for reg in ("HW_CONFIG0", "HW_CONFIG1", "HW_CONFIG2"):
        for f in regs[reg]["fields"]:
            got = (regs[reg]["reset"] >> f["offset"]) & ((1 << f["width"]) - 1)
            if f["name"] == "reserved":
                assert got == 0
                continue
            assert got == expected[f["name"]], f"{reg}.{f['name']}"
            seen.add(f["name"])
    assert seen == set(expected)
    assert regs["CONFIG_HASH"]["reset"] == int(config.fingerprint()[:8], 16)
    assert regs["WIN_BASE"]["reset"] == config.window_base
    assert regs["WIN_LIMIT"]["reset"] == config.window_base + config.window_size - 1
    assert regs["ID"]["reset"] == isa.NPU_ID == int.from_bytes(b"NPU0", "big")

    for op in OPS:
        cmd = doc["commands"][op.name]
        assert cmd["opcode"] == op.value
        assert [(f["name"], f["offset"], f["width"], f["signed"]) for f in cmd["fields"]] == \
            [(f.name, f.offset, f.width, f.signed) for f in isa.fields(isa.COMMANDS[op])]
    assert {m["name"]: m["value"] for m in doc["enums"]["ErrorCode"]["members"]} == \
        {m.name: m.value for m in isa.ErrorCode}


def test_register_layouts_are_32_bits():
    for reg in isa.registers():
        if isinstance(reg.layout, data.StructLayout):
            assert reg.layout.size == 32, reg.name
        else:
            assert Shape.cast(reg.layout).width == 32, reg.name


# -- docs/isa.md ---------------------------------------------------------------------------------


def test_isa_md_is_up_to_date():
    path = isa_md_path()
    assert path.exists(), f"{path} is missing: run `make docs`"
    assert path.read_text(encoding="utf-8") == render_isa_md(), \
        f"{path} is out of date with hdl/isa.py: run `make docs`"


def test_isa_md_content():
    text = render_isa_md()
    assert text == render_isa_md()
    assert "do not edit" in text and "npugen header" in text
    for prose in isa.SEMANTICS.values():
        assert prose in text
    for op in OPS:
        assert f"### {op.name}" in text
        for f in isa.fields(isa.COMMANDS[op]):
            assert f"| `{f.name}` |" in text
    for cls in (isa.Opcode, isa.Queue, isa.Buffer, isa.PoolMode, isa.ErrorCode, isa.PerfCounter):
        assert f"### {cls.__name__}" in text
        for m in cls:
            assert f"| {m.value} | `{m.name}` |" in text
    for reg in isa.registers():
        assert f"`{reg.name}`" in text or reg.name.startswith("PERF_")
    assert "| 89:58 | `dram_addr` | u32 |" in text     # LOAD.dram_addr, as the layout places it
    assert "| 17:10 | `pad_value` | s8 |" in text
    # Configuration-independent: no shipped configuration's values leak in.
    for name in CONFIGS:
        assert NpuConfig.load(name).fingerprint()[:8] not in text.lower()
    assert "the opcode is not one of `Opcode`" in text    # member comments, Sphinx roles removed


# -- npugen header -------------------------------------------------------------------------------


def listing(d: Path):
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir()}


def test_cli_header_writes_once(tmp_path, capsys):
    out = tmp_path / "deep" / "out"
    assert cli.main(["header", "--config", "tiny", "-o", str(out)]) == 0
    first = capsys.readouterr().out
    assert sorted(listing(out)) == ["isa.md", "npu.h", "regmap.json"]
    assert first.count("wrote ") == 3
    config = NpuConfig.load("tiny")
    assert (out / "npu.h").read_text() == render_c_header(config)
    assert (out / "regmap.json").read_text() == render_regmap_json(config)
    assert (out / "isa.md").read_text() == render_isa_md()
    before = listing(out)

    assert cli.main(["header", "--config", "tiny", "-o", str(out)]) == 0
    second = capsys.readouterr().out
    assert second.count("unchanged ") == 3 and "wrote" not in second
    assert listing(out) == before

    # A file that differs is rewritten, the others are not; no temporary file stays behind.
    (out / "regmap.json").write_text("{}\n")
    written = write_headers(config, out)
    assert [(p.name, changed) for p, changed in written] == \
        [("npu.h", False), ("regmap.json", True), ("isa.md", False)]
    assert (out / "regmap.json").read_text() == render_regmap_json(config)
    assert sorted(listing(out)) == ["isa.md", "npu.h", "regmap.json"]
    assert listing(out)["npu.h"] == before["npu.h"]


def test_cli_header_bad_config_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["header", "--config", "no_such_config", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no_such_config" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
