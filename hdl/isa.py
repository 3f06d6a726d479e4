"""The npugen instruction set and register map: defined once, here.

The hardware decodes commands with these layouts (``Signal(COMMAND)``), the compiler encodes them
with :func:`encode` (derived from the same layouts and checked against ``Layout.const``), and
``npu.h``, ``regmap.json`` and ``docs/isa.md`` are generated from them by :mod:`gen.header`.

A command is :data:`CMD_BITS` bits, stored little-endian as :data:`CMD_BYTES` bytes. Every command
starts with the same :data:`HEADER` (opcode and the four dependency-token flags); fields after the
last named one are reserved and must be zero.
"""

from dataclasses import dataclass

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data, enum

from .config import PERF_COUNTERS

__all__ = [
    "ISA_VERSION", "CMD_BITS", "CMD_BYTES", "NPU_ID",
    "Opcode", "Queue", "Buffer", "PoolMode", "ErrorCode", "PerfCounter",
    "HEADER", "LOAD", "STORE", "COMPUTE", "POOL", "SETPP", "END", "COMMAND", "COMMANDS",
    "QUEUE_OF", "FIELD_DOCS", "Field", "fields", "encode", "decode", "EncodeError",
    "Register", "registers", "register_by_name", "PERF_BASE", "PERF_DOCS", "perf_counters",
    "SEMANTICS", "RESERVED_TAILS",
]

#: (major, minor, patch) of the ISA and register map. Bump minor on additions, major on changes.
ISA_VERSION = (2, 0, 0)
CMD_BITS = 256
CMD_BYTES = CMD_BITS // 8
#: Value of the ID register: ASCII "NPU0".
NPU_ID = 0x4E505530


class Opcode(enum.Enum, shape=4):
    """Command opcodes. Opcode 0 is illegal, so zeroed memory never executes."""
    LOAD = 1     #: memory -> input/weight/accumulator/parameter buffer (LOAD queue)
    STORE = 2    #: accumulator -> post-processor -> memory (STORE queue)
    COMPUTE = 3  #: weight tiles over a 2-D block of input vectors, reduced into ACC (EXECUTE queue)
    POOL = 4     #: max or sum pooling of input rows into the accumulator (EXECUTE queue)
    SETPP = 5    #: set the post-processor parameters used by later STOREs (STORE queue)
    END = 15     #: end of program: stop fetching; done when all queues have drained


class Queue(enum.Enum, shape=2):
    """The three decoupled queues. Neighbours exchange dependency tokens."""
    LOAD = 0
    EXECUTE = 1
    STORE = 2


#: The queue each opcode is dispatched to (END is handled by the command processor itself).
QUEUE_OF = {
    Opcode.LOAD: Queue.LOAD,
    Opcode.COMPUTE: Queue.EXECUTE,
    Opcode.POOL: Queue.EXECUTE,
    Opcode.STORE: Queue.STORE,
    Opcode.SETPP: Queue.STORE,
}


class Buffer(enum.Enum, shape=2):
    """On-chip buffers a LOAD can write. Rows: INPUT `rows` x int8, WEIGHT `cols` x int8,
    ACC and PARAM `cols` x int32 (little-endian in memory)."""
    INPUT = 0
    WEIGHT = 1
    ACC = 2
    PARAM = 3


class PoolMode(enum.Enum, shape=1):
    """POOL reduction: MAX keeps the largest value of the window, SUM adds the window up."""
    MAX = 0
    SUM = 1


class ErrorCode(enum.Enum, shape=8):
    """Why the NPU stopped (STATUS.error_code). Any non-zero code also raises the interrupt."""
    NONE = 0             #: no error
    ILLEGAL_OPCODE = 1   #: the opcode is not one of :class:`Opcode`
    ILLEGAL_FIELD = 2    #: a reserved bit is set, or a field is out of its documented range
    BUFFER_OVERFLOW = 3  #: a buffer row address is at or past the buffer's depth
    WINDOW = 4           #: a memory access (including command fetch) is outside the window
    BUS_ERROR = 5        #: the memory answered SLVERR or DECERR
    TOKEN_DEADLOCK = 6   #: every unit waits on a token that nothing can push any more
    PROGRAM_END = 7      #: the program ran past PROG_LEN without an END command
    BAD_PROGRAM = 8      #: START with PROG_BASE not 32-byte aligned or PROG_LEN zero
    ABORTED = 9          #: CTRL.abort was written while running


class PerfCounter(enum.Enum, shape=5):
    """Performance counters of ``perf.counter_bits`` bits (64 by default, zero-extended to the
    64 bits of a LO/HI register pair; a counter wraps at 2^bits), cleared by START, counting
    while busy (what each counts: :data:`PERF_DOCS`). A configuration may leave counters out
    (``perf.counters``): their registers read 0."""
    CYCLES = 0
    COMMANDS = 1
    LOAD_BUSY = 2
    EXECUTE_BUSY = 3
    STORE_BUSY = 4
    MAC_ACTIVE = 5
    LOAD_WAIT_TOKEN = 6
    EXECUTE_WAIT_TOKEN = 7
    STORE_WAIT_TOKEN = 8
    FETCH_STALL = 9
    EXECUTE_STARVED = 10
    LOAD_BUS_STALL = 11
    STORE_BUS_STALL = 12
    BYTES_READ = 13
    BYTES_WRITTEN = 14


assert tuple(c.name for c in PerfCounter) == PERF_COUNTERS, "PerfCounter and PERF_COUNTERS differ"


def perf_counters(config) -> tuple[PerfCounter, ...]:
    """The counters a configuration has (``perf.counters``), in register order."""
    return tuple(c for c in PerfCounter if c.name in config.perf_counters)


#: What each performance counter counts.
PERF_DOCS = {
    PerfCounter.CYCLES: "cycles from START to done or error",
    PerfCounter.COMMANDS: "commands retired (END included)",
    PerfCounter.LOAD_BUSY: "cycles the LOAD unit works on a command",
    PerfCounter.EXECUTE_BUSY: "cycles the EXECUTE unit works on a command",
    PerfCounter.STORE_BUSY: "cycles the STORE unit works on a command",
    PerfCounter.MAC_ACTIVE: "cycles an input vector enters the array (rows*cols MACs each)",
    PerfCounter.LOAD_WAIT_TOKEN: "cycles LOAD holds a command waiting for a token",
    PerfCounter.EXECUTE_WAIT_TOKEN: "cycles EXECUTE holds a command waiting for a token",
    PerfCounter.STORE_WAIT_TOKEN: "cycles STORE holds a command waiting for a token",
    PerfCounter.FETCH_STALL: "cycles the command processor waits for room in a full queue",
    PerfCounter.EXECUTE_STARVED: "cycles EXECUTE is idle with an empty queue",
    PerfCounter.LOAD_BUS_STALL: "cycles LOAD waits for read data from memory",
    PerfCounter.STORE_BUS_STALL: "cycles STORE waits for the write channel or responses",
    PerfCounter.BYTES_READ: "bytes requested from memory (command fetch included)",
    PerfCounter.BYTES_WRITTEN: "bytes written to memory (byte strobes set)",
}


# -- Commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One named field of a command or register: bit offset, width, shape and meaning."""
    name: str
    offset: int
    width: int
    shape: object
    doc: str

    @property
    def signed(self):
        return not isinstance(self.shape, data.Layout) and Shape.cast(self.shape).signed


def _width(shape):
    return shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width


def _spec_layout(name, spec, bits):
    """Build a StructLayout from ``[(field, shape, doc), ...]`` padded with a reserved tail."""
    used = sum(_width(shape) for _, shape, _ in spec)
    if used > bits:
        raise AssertionError(f"{name}: fields take {used} bits, more than {bits}")
    members = {field: shape for field, shape, _ in spec}
    if used < bits:
        members["reserved"] = unsigned(bits - used)
    docs = {field: doc for field, _, doc in spec}
    docs.setdefault("reserved", "reserved, must be zero")
    return data.StructLayout(members), docs


_HEADER_SPEC = [
    ("op", Opcode, "opcode"),
    ("pop_prev", unsigned(1), "wait for and take a token from the previous queue before starting"),
    ("pop_next", unsigned(1), "wait for and take a token from the next queue before starting"),
    ("push_prev", unsigned(1), "give a token to the previous queue when done"),
    ("push_next", unsigned(1), "give a token to the next queue when done"),
]

_LOAD_SPEC = _HEADER_SPEC + [
    ("target", Buffer, "buffer written"),
    ("pad_value", signed(8), "value of padding rows and of row lanes past `elems` (sign-extended "
                             "for ACC/PARAM)"),
    ("elems", unsigned(8), "elements read per row, 1..row width of `target`"),
    ("pad_top", unsigned(4), "padding rows before the first y"),
    ("pad_bottom", unsigned(4), "padding rows after the last y"),
    ("pad_left", unsigned(4), "padding rows before the first x"),
    ("pad_right", unsigned(4), "padding rows after the last x"),
    ("sram_addr", unsigned(16), "first buffer row"),
    ("dram_addr", unsigned(32), "byte address of the first element of the first interior row"),
    ("x_size", unsigned(12), "rows along x, padding included"),
    ("y_size", unsigned(12), "rows along y, padding included"),
    ("z_size", unsigned(12), "rows along z"),
    ("sram_x_stride", unsigned(16), "buffer rows between x steps"),
    ("sram_y_stride", unsigned(16), "buffer rows between y steps"),
    ("sram_z_stride", unsigned(16), "buffer rows between z steps"),
    ("dram_x_stride", unsigned(24), "bytes between x steps"),
    ("dram_y_stride", unsigned(24), "bytes between y steps"),
    ("dram_z_stride", unsigned(24), "bytes between z steps"),
]

_STORE_SPEC = _HEADER_SPEC + [
    ("residual", unsigned(1), "add the int8 tensor at `res_addr` (same strides) in stage 2"),
    ("elems", unsigned(8), "output channels written per row, 1..cols"),
    ("acc_addr", unsigned(16), "first accumulator row"),
    ("dram_addr", unsigned(32), "byte address of the first output row"),
    ("res_addr", unsigned(32), "byte address of the first residual row (if `residual`)"),
    ("x_size", unsigned(12), "rows along x"),
    ("y_size", unsigned(12), "rows along y"),
    ("z_size", unsigned(12), "rows along z"),
    ("acc_x_stride", unsigned(16), "accumulator rows between x steps"),
    ("acc_y_stride", unsigned(16), "accumulator rows between y steps"),
    ("acc_z_stride", unsigned(16), "accumulator rows between z steps"),
    ("dram_x_stride", unsigned(24), "bytes between x steps (output and residual)"),
    ("dram_y_stride", unsigned(24), "bytes between y steps (output and residual)"),
    ("dram_z_stride", unsigned(24), "bytes between z steps (output and residual)"),
]

_COMPUTE_SPEC = _HEADER_SPEC + [
    ("accumulate", unsigned(1), "1: add to the accumulator rows; 0: the first reduction step "
                                "overwrites them"),
    ("wgt_addr", unsigned(16), "first weight-buffer row of the first tile; tiles follow every "
                               "`rows` rows"),
    ("in_addr", unsigned(16), "input-buffer row of the first vector"),
    ("acc_addr", unsigned(16), "accumulator row of the first result"),
    ("x_size", unsigned(12), "vectors along x"),
    ("y_size", unsigned(12), "vectors along y"),
    ("in_x_stride", unsigned(16), "input rows between x steps"),
    ("in_y_stride", unsigned(16), "input rows between y steps"),
    ("acc_x_stride", unsigned(16), "accumulator rows between x steps"),
    ("acc_y_stride", unsigned(16), "accumulator rows between y steps"),
    ("kx_size", unsigned(12), "reduction steps along kx (innermost)"),
    ("ky_size", unsigned(12), "reduction steps along ky"),
    ("kz_size", unsigned(12), "reduction steps along kz (outermost)"),
    ("in_kx_stride", unsigned(16), "input rows between kx steps"),
    ("in_ky_stride", unsigned(16), "input rows between ky steps"),
    ("in_kz_stride", unsigned(16), "input rows between kz steps"),
]

_POOL_SPEC = _HEADER_SPEC + [
    ("mode", PoolMode, "MAX or SUM"),
    ("accumulate", unsigned(1), "1: combine with the accumulator rows (max or add); 0: overwrite"),
    ("win_w", unsigned(8), "window width, >= 1"),
    ("win_h", unsigned(8), "window height, >= 1"),
    ("in_addr", unsigned(16), "input row of the first window's first element"),
    ("acc_addr", unsigned(16), "accumulator row of the first output"),
    ("x_size", unsigned(12), "outputs along x"),
    ("y_size", unsigned(12), "outputs along y"),
    ("in_x_stride", unsigned(16), "input rows between outputs along x"),
    ("in_y_stride", unsigned(16), "input rows between outputs along y"),
    ("win_x_stride", unsigned(16), "input rows between window columns"),
    ("win_y_stride", unsigned(16), "input rows between window rows"),
    ("acc_x_stride", unsigned(16), "accumulator rows between x steps"),
    ("acc_y_stride", unsigned(16), "accumulator rows between y steps"),
]

_SETPP_SPEC = _HEADER_SPEC + [
    ("param_addr", unsigned(16), "parameter rows: bias at +0, multiplier at +1, shift at +2"),
    ("zp", signed(8), "stage 1 output zero point"),
    ("lo", signed(8), "stage 1 lower clamp"),
    ("hi", signed(8), "stage 1 upper clamp"),
    ("res_zp", signed(8), "residual zero point"),
    ("add_zp", signed(8), "stage 2 output zero point"),
    ("add_lo", signed(8), "stage 2 lower clamp"),
    ("add_hi", signed(8), "stage 2 upper clamp"),
    ("add_ma", unsigned(31), "stage 2 multiplier of (stage 1 output - zp), Q31"),
    ("add_mb", unsigned(31), "stage 2 multiplier of (residual - res_zp), Q31"),
    ("add_shift", unsigned(6), "stage 2 right shift shared by both products, rounding half to "
                               "even"),
]

_END_SPEC = _HEADER_SPEC

HEADER, _HEADER_DOCS = _spec_layout("HEADER", _HEADER_SPEC, CMD_BITS)
LOAD, _LOAD_DOCS = _spec_layout("LOAD", _LOAD_SPEC, CMD_BITS)
STORE, _STORE_DOCS = _spec_layout("STORE", _STORE_SPEC, CMD_BITS)
COMPUTE, _COMPUTE_DOCS = _spec_layout("COMPUTE", _COMPUTE_SPEC, CMD_BITS)
POOL, _POOL_DOCS = _spec_layout("POOL", _POOL_SPEC, CMD_BITS)
SETPP, _SETPP_DOCS = _spec_layout("SETPP", _SETPP_SPEC, CMD_BITS)
END, _END_DOCS = _spec_layout("END", _END_SPEC, CMD_BITS)

#: Layout of each command, by opcode.
COMMANDS = {
    Opcode.LOAD: LOAD,
    Opcode.STORE: STORE,
    Opcode.COMPUTE: COMPUTE,
    Opcode.POOL: POOL,
    Opcode.SETPP: SETPP,
    Opcode.END: END,
}
#: Field descriptions, by opcode (``None`` for the common header).
FIELD_DOCS = {
    None: _HEADER_DOCS,
    Opcode.LOAD: _LOAD_DOCS,
    Opcode.STORE: _STORE_DOCS,
    Opcode.COMPUTE: _COMPUTE_DOCS,
    Opcode.POOL: _POOL_DOCS,
    Opcode.SETPP: _SETPP_DOCS,
    Opcode.END: _END_DOCS,
}
#: One command register seen as every command at once: ``cmd.header.op``, ``cmd.load.dram_addr``.
COMMAND = data.UnionLayout({"header": HEADER,
                            **{op.name.lower(): layout for op, layout in COMMANDS.items()}})


def fields(layout, docs=None):
    """The fields of a layout in bit order, as :class:`Field` records."""
    out = []
    for name, f in layout:
        out.append(Field(name, f.offset, _width(f.shape), f.shape, (docs or {}).get(name, "")))
    return sorted(out, key=lambda fld: fld.offset)


def _check_header_prefix():
    header = [(f.name, f.offset, f.width) for f in fields(HEADER) if f.name != "reserved"]
    for op, layout in COMMANDS.items():
        got = [(f.name, f.offset, f.width) for f in fields(layout)][:len(header)]
        if got != header:
            raise AssertionError(f"{op.name}: does not start with the common header")


_check_header_prefix()


# -- Fast encode/decode (derived from the layouts) -----------------------------------------------


class EncodeError(ValueError):
    """A command field has a value its layout cannot hold."""


def _codec(layout):
    out = []
    for f in fields(layout):
        if f.name == "reserved":
            continue
        lo, hi = (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed else \
                 (0, (1 << f.width) - 1)
        out.append((f.name, f.offset, f.width, (1 << f.width) - 1, lo, hi, f.signed))
    return out


_CODECS = {op: _codec(layout) for op, layout in COMMANDS.items()}
#: Each command's reserved tail, ``(offset, width)`` in the command's bits (None if it has none).
RESERVED_TAILS = {op: next(((f.offset, f.width) for f in fields(layout) if f.name == "reserved"),
                           None)
                  for op, layout in COMMANDS.items()}


_OP_FIELD = next(f for f in fields(HEADER) if f.name == "op")
_ENUM_FIELDS = {op: {f.name: f.shape for f in fields(layout)
                     if isinstance(f.shape, type) and issubclass(f.shape, enum.Enum)}
                for op, layout in COMMANDS.items()}


def encode(op, /, **values):
    """Encode one command to its :data:`CMD_BYTES`-byte little-endian form.

    ``op`` is an :class:`Opcode` (or its name); ``values`` are its fields, missing ones are zero.
    ``values`` may also hold ``op`` (it must agree) and ``reserved`` (to build malformed commands
    on purpose), so ``encode(*decode(raw))``-style round trips work:
    ``op, f = decode(raw); encode(op, **f) == raw``.
    Equivalent to ``COMMANDS[op].const({...}).as_bits()``, but fast enough for whole networks.

    Raises
    ------
    EncodeError
        If the opcode is not a command, a field is unknown for it, or a value does not fit.
    """
    try:
        op = Opcode[op] if isinstance(op, str) else Opcode(op)
    except (KeyError, ValueError):
        raise EncodeError(f"{op!r} is not an opcode "
                          f"({', '.join(o.name for o in Opcode)})") from None
    if "op" in values and values["op"] != op:
        raise EncodeError(f"{op.name}: op field says {values['op']!r}")
    codec = _CODECS[op]
    known = {name for name, *_ in codec}
    unknown = set(values) - known - {"reserved"}
    if unknown:
        raise EncodeError(f"{op.name}: unknown field(s) {', '.join(sorted(unknown))}; "
                          f"fields are {', '.join(sorted(known - {'op'}))}")
    word = op.value << _OP_FIELD.offset
    enums = _ENUM_FIELDS[op]
    for name, offset, width, mask, lo, hi, _ in codec:
        if name == "op":
            continue
        v = values.get(name, 0)
        if isinstance(v, enum.Enum):
            if name in enums and not isinstance(v, enums[name]):
                raise EncodeError(f"{op.name}.{name} = {v!r}: must be a {enums[name].__name__}")
            v = v.value
        v = int(v)
        if not lo <= v <= hi:
            raise EncodeError(f"{op.name}.{name} = {v}: does not fit {width} bits "
                              f"({lo}..{hi})")
        word |= (v & mask) << offset
    if values.get("reserved"):
        offset, width = RESERVED_TAILS[op]
        if not 0 <= int(values["reserved"]) < (1 << width):
            raise EncodeError(f"{op.name}.reserved = {values['reserved']}: does not fit "
                              f"{width} bits")
        word |= int(values["reserved"]) << offset
    return word.to_bytes(CMD_BYTES, "little")


def decode(raw):
    """Decode one command (bytes or int) to ``(opcode, {field: value})``.

    The opcode is an :class:`Opcode`, or the raw integer if it is not a legal opcode (the fields
    are then empty). ``op`` is returned as an :class:`Opcode`; every other field, enum-typed ones
    included, as a plain int (signed fields sign-extended), which keeps the golden model fast.
    The reserved tail is returned as ``"reserved"`` so callers can check it is zero.
    """
    word = int.from_bytes(raw, "little") if isinstance(raw, (bytes, bytearray, memoryview)) \
        else int(raw)
    opval = (word >> _OP_FIELD.offset) & ((1 << _OP_FIELD.width) - 1)
    try:
        op = Opcode(opval)
    except ValueError:
        return opval, {}
    out = {}
    for name, offset, width, mask, _, _, is_signed in _CODECS[op]:
        v = (word >> offset) & mask
        if is_signed and v >> (width - 1):
            v -= 1 << width
        out[name] = v
    out["op"] = op
    res = RESERVED_TAILS[op]
    out["reserved"] = (word >> res[0]) & ((1 << res[1]) - 1) if res else 0
    return op, out


# -- Register map --------------------------------------------------------------------------------


class Access(enum.Enum):
    """Register access from the bus."""
    RO = "ro"    #: read only
    RW = "rw"    #: read and write
    WO = "wo"    #: write only (reads return 0)
    W1C = "w1c"  #: read; writing 1 to a bit clears it


@dataclass(frozen=True)
class Register:
    """One 32-bit register of the AXI4-Lite control port."""
    name: str
    offset: int
    access: Access
    layout: object   # a data.StructLayout of 32 bits, or unsigned(32)
    reset: int
    doc: str
    field_docs: dict
    from_config: bool = False   #: the reset value comes from the NpuConfig

    @property
    def fields(self):
        if isinstance(self.layout, data.StructLayout):
            return fields(self.layout, self.field_docs)
        return [Field("value", 0, 32, unsigned(32), self.doc)]


def _reg_layout(spec):
    layout, docs = _spec_layout("register", spec, 32)
    return layout, docs


HW_CONFIG0, _HW0_DOCS = _reg_layout([
    ("rows", unsigned(8), "array rows (int8 lanes of an input vector)"),
    ("cols", unsigned(8), "array columns (output channels per pass)"),
    ("dataflow", unsigned(2), "0 weight-stationary, 1 output-stationary"),
    ("bus_width_log2", unsigned(4), "log2 of the memory bus data width in bits"),
])
HW_CONFIG1, _HW1_DOCS = _reg_layout([
    ("input_depth_log2", unsigned(5), "log2 of the input buffer depth (rows)"),
    ("input_banks_log2", unsigned(3), "log2 of the input buffer banks"),
    ("weight_depth_log2", unsigned(5), "log2 of the weight buffer depth (rows)"),
    ("weight_banks_log2", unsigned(3), "log2 of the weight buffer banks"),
    ("acc_depth_log2", unsigned(5), "log2 of the accumulator depth (rows)"),
    ("acc_banks_log2", unsigned(3), "log2 of the accumulator banks"),
    ("param_depth_log2", unsigned(5), "log2 of the parameter buffer depth (rows)"),
])
HW_CONFIG2, _HW2_DOCS = _reg_layout([
    ("fetch_depth_log2", unsigned(4), "log2 of the fetch buffer depth (commands)"),
    ("load_depth_log2", unsigned(4), "log2 of the LOAD queue depth"),
    ("execute_depth_log2", unsigned(4), "log2 of the EXECUTE queue depth"),
    ("store_depth_log2", unsigned(4), "log2 of the STORE queue depth"),
    ("token_depth", unsigned(8), "tokens a dependency channel holds"),
    ("max_burst_log2", unsigned(4), "log2 of the longest burst (beats)"),
    ("max_reads_log2", unsigned(4), "log2 of the read bursts in flight"),
])
CTRL, _CTRL_DOCS = _reg_layout([
    ("start", unsigned(1), "start the program at PROG_BASE (ignored while busy)"),
    ("abort", unsigned(1), "stop now with error ABORTED"),
])
STATUS, _STATUS_DOCS = _reg_layout([
    ("busy", unsigned(1), "a program is running"),
    ("done", unsigned(1), "the last program reached END and drained"),
    ("error", unsigned(1), "the last program stopped with an error"),
    ("start_ignored", unsigned(1), "a START arrived while busy (cleared by the next START)"),
    ("_reserved0", unsigned(4), "reserved"),
    ("error_code", ErrorCode, "why it stopped (ErrorCode)"),
])
IRQ, _IRQ_DOCS = _reg_layout([
    ("done", unsigned(1), "program finished"),
    ("error", unsigned(1), "program stopped with an error"),
])

#: Byte offset of the performance counters: counter i is at PERF_BASE + 8*i (low word) and
#: PERF_BASE + 8*i + 4 (high word). Reading a low word latches that counter's high word into the
#: one latch every high word reads: read a counter's low word, then its high word.
PERF_BASE = 0x100


def _log2(n):
    return n.bit_length() - 1


def registers(config=None):
    """The register map, in address order. ``config`` (an NpuConfig) fills the reset values of the
    read-only configuration registers; without it they read as zero."""
    def pack(layout, **values):
        return int(layout.const(values).as_bits())

    if config is not None:
        dataflow = 0 if config.dataflow == "weight_stationary" else 1
        hw0 = pack(HW_CONFIG0, rows=config.rows, cols=config.cols, dataflow=dataflow,
                   bus_width_log2=_log2(config.bus_data_width))
        hw1 = pack(HW_CONFIG1,
                   input_depth_log2=_log2(config.input_depth),
                   input_banks_log2=_log2(config.input_banks),
                   weight_depth_log2=_log2(config.weight_depth),
                   weight_banks_log2=_log2(config.weight_banks),
                   acc_depth_log2=_log2(config.acc_depth),
                   acc_banks_log2=_log2(config.acc_banks),
                   param_depth_log2=_log2(config.param_depth))
        hw2 = pack(HW_CONFIG2,
                   fetch_depth_log2=_log2(config.fetch_depth),
                   load_depth_log2=_log2(config.load_depth),
                   execute_depth_log2=_log2(config.execute_depth),
                   store_depth_log2=_log2(config.store_depth),
                   token_depth=config.token_depth,
                   max_burst_log2=_log2(config.max_burst),
                   max_reads_log2=_log2(config.max_reads))
        chash = int(config.fingerprint()[:8], 16)
        win_base, win_limit = config.window_base, config.window_base + config.window_size - 1
    else:
        hw0 = hw1 = hw2 = chash = win_base = win_limit = 0
    version = (ISA_VERSION[0] << 16) | (ISA_VERSION[1] << 8) | ISA_VERSION[2]
    u32 = unsigned(32)
    regs = [
        Register("ID", 0x00, Access.RO, u32, NPU_ID, "identification, ASCII 'NPU0'", {}),
        Register("VERSION", 0x04, Access.RO, u32, version,
                 "ISA version: major << 16 | minor << 8 | patch", {}),
        Register("HW_CONFIG0", 0x08, Access.RO, HW_CONFIG0, hw0, "array and bus", _HW0_DOCS,
                 from_config=True),
        Register("HW_CONFIG1", 0x0C, Access.RO, HW_CONFIG1, hw1, "buffer sizes", _HW1_DOCS,
                 from_config=True),
        Register("HW_CONFIG2", 0x10, Access.RO, HW_CONFIG2, hw2, "queues and bus", _HW2_DOCS,
                 from_config=True),
        Register("CONFIG_HASH", 0x14, Access.RO, u32, chash,
                 "first 32 bits of the configuration's fingerprint: programs carry it too", {},
                 from_config=True),
        Register("CTRL", 0x20, Access.WO, CTRL, 0, "control", _CTRL_DOCS),
        Register("STATUS", 0x24, Access.RO, STATUS, 0, "status", _STATUS_DOCS),
        Register("ERR_INDEX", 0x28, Access.RO, u32, 0,
                 "index in the program of the command that stopped the NPU", {}),
        Register("ERR_ADDR", 0x2C, Access.RO, u32, 0,
                 "memory address of a WINDOW or BUS_ERROR error", {}),
        Register("PROG_BASE", 0x30, Access.RW, u32, 0,
                 "byte address of the first command, 32-byte aligned", {}),
        Register("PROG_LEN", 0x34, Access.RW, u32, 0, "number of commands in the program", {}),
        Register("WIN_BASE", 0x38, Access.RW, u32, win_base,
                 "lowest byte address the NPU may access", {}, from_config=True),
        Register("WIN_LIMIT", 0x3C, Access.RW, u32, win_limit,
                 "highest byte address the NPU may access (inclusive)", {}, from_config=True),
        Register("IRQ_ENABLE", 0x40, Access.RW, IRQ, 0, "interrupt enables", _IRQ_DOCS),
        Register("IRQ_STATUS", 0x44, Access.W1C, IRQ, 0,
                 "pending interrupts; irq = |(IRQ_STATUS & IRQ_ENABLE)", _IRQ_DOCS),
    ]
    for counter in PerfCounter:
        doc = PERF_DOCS[counter]
        for half, word in (("LO", 0), ("HI", 4)):
            regs.append(Register(f"PERF_{counter.name}_{half}",
                                 PERF_BASE + 8 * counter.value + word, Access.RO, u32, 0,
                                 f"{doc} (bits {32 * (word // 4)}..{32 * (word // 4) + 31})", {}))
    return regs




def register_by_name(name, config=None):
    """The :class:`Register` called ``name``."""
    for reg in registers(config):
        if reg.name == name:
            return reg
    raise KeyError(f"no register named {name!r}")


# -- Semantics (rendered into docs/isa.md; the golden model implements exactly this) -------------

#: Normative prose, in markdown, by section. ``docs/isa.md`` is generated from this module.
SEMANTICS = {
    "Format": f"""\
A program is an array of commands in memory, {CMD_BYTES} bytes ({CMD_BITS} bits) each, stored
little-endian: bit *n* of the command is bit *n % 8* of byte *n // 8*. Every command starts with the
common header (opcode and four token flags). Fields not listed for a command are reserved and must
be zero. Signed fields are two's complement. Buffer addresses count rows of the buffer; memory
addresses and memory strides count bytes. Strides are unsigned.

Buffers (rows x lanes): INPUT `input_depth` x `rows` int8, WEIGHT `weight_depth` x `cols` int8,
ACC `acc_depth` x `cols` int32, PARAM `param_depth` x `cols` int32. In memory, int32 values are
little-endian.""",
    "Dispatch and tokens": """\
The command processor fetches commands in program order from PROG_BASE. It checks each command
completely before dispatching it: opcode, reserved bits and field ranges, buffer row ranges, and the
memory window of every byte the command will touch. A command that fails a check stops the NPU with
the matching error code and its index in ERR_INDEX; no later command is dispatched. Checked
commands go to their queue (LOAD: LOAD; EXECUTE: COMPUTE, POOL; STORE: STORE, SETPP). A full queue
stalls the fetch. A queue holds `<queue>_depth` commands, the one its unit runs or waits to run
included (the unit reads its queue's head in place and removes it when the command completes).

A unit takes the head of its queue, waits until every token it pops is available and every channel
it pushes to has room (`token_depth` tokens), executes the command, then pushes its tokens. Four
channels connect neighbours: LOAD push_next -> EXECUTE pop_prev, EXECUTE push_prev -> LOAD pop_next,
EXECUTE push_next -> STORE pop_prev, STORE push_prev -> EXECUTE pop_next. LOAD has no previous and
STORE no next queue: those flags must be zero.

END stops the fetch; the NPU is done when all queues are empty and idle (STATUS.done, IRQ done).
END must carry no token flags. Reaching PROG_LEN without END is error PROGRAM_END. When no unit can
make progress and the program has not ended, the NPU stops with TOKEN_DEADLOCK. Units never
overlap two commands of one queue in a way that changes results: commands of one queue take effect
in order. Commands of different queues are ordered only by tokens.

A command whose sizes include a zero does no work (its tokens still count). Within one command,
rows are processed in order (z outermost, x innermost); when two rows of one command write the same
place, the later one wins.""",
    "LOAD": """\
Copies a z x y x x block of rows from memory into buffer `target`, starting at row `sram_addr`:
row (z, y, x) goes to buffer row `sram_addr + z*sram_z_stride + y*sram_y_stride + x*sram_x_stride`.
Rows with `y < pad_top`, `y >= y_size - pad_bottom`, `x < pad_left` or `x >= x_size - pad_right`
are padding: every lane is `pad_value`. Every other row reads `elems` elements (1 or 4 bytes each
for INPUT/WEIGHT or ACC/PARAM) from byte address
`dram_addr + z*dram_z_stride + (y - pad_top)*dram_y_stride + (x - pad_left)*dram_x_stride`; its
lanes at and past `elems` are `pad_value` (sign-extended for ACC/PARAM). Memory rows may overlap
(for example x stride smaller than the row), which lets one LOAD build im2col-style rows.""",
    "COMPUTE": """\
Runs kz_size x ky_size x kx_size weight tiles over y_size x x_size input vectors and reduces them
into the accumulator. Reduction step (kz, ky, kx) uses tile number
`t = (kz*ky_size + ky)*kx_size + kx`, the WEIGHT rows `wgt_addr + t*rows .. + rows - 1`. For vector
(y, x), with `i = in_addr + y*in_y_stride + x*in_x_stride + kz*in_kz_stride + ky*in_ky_stride +
kx*in_kx_stride` and `a = acc_addr + y*acc_y_stride + x*acc_x_stride`:
`ACC[a][c] = (ACC[a][c] if accumulate else 0) + sum_{kz,ky,kx} sum_k INPUT[i][k] *
WEIGHT[wgt_addr + t*rows + k][c]` for every lane c, in wrapping int32. Steps are taken tile by tile
(kz, ky, kx outermost, then y, then x); the first step overwrites when `accumulate` is 0, later
steps always add. One step of a 3x3 convolution over a channel block is one tile; a whole
convolution tile is one command. Raw int8 values are multiplied: zero points are folded into the
bias by the compiler (docs/numerics.md).""",
    "POOL": """\
For output (y, x), the window rows are
`in_addr + y*in_y_stride + x*in_x_stride + wy*win_y_stride + wx*win_x_stride` for
`wy < win_h`, `wx < win_w`. Lane c < L = min(rows, cols) of the result is the maximum (MAX) or the
int32 sum (SUM) of lane c of the window rows. It goes to ACC row
`acc_addr + y*acc_y_stride + x*acc_x_stride`: with `accumulate` 0 lanes below L get the result and
the others 0; with `accumulate` 1 lanes below L become max(old, result) (MAX) or old + result (SUM)
and the others keep their value. Max-pool padding is made by the LOAD's `pad_value` (-128).""",
    "SETPP": """\
Sets the post-processing parameters used by the STOREs that follow it in the STORE queue.
Nothing is read when SETPP executes; STORE reads the PARAM rows when it runs.""",
    "STORE": """\
Writes a z x y x x block of accumulator rows through the post-processor to memory. Row (z, y, x)
reads ACC row `acc_addr + z*acc_z_stride + y*acc_y_stride + x*acc_x_stride` and writes lanes
`0 .. elems-1` as int8 at byte address `dram_addr + z*dram_z_stride + y*dram_y_stride +
x*dram_x_stride`. Step z uses PARAM rows `p = param_addr + 3*z` (from the last SETPP): bias
`PARAM[p]`, multiplier `PARAM[p+1]`, shift `PARAM[p+2] & 63`, per lane c:

1. `v = wrap32(acc[c] + bias[c])`
2. `a = clamp(zp + round_half_even(v * mult[c] / 2^shift[c]), lo, hi)`
3. with `residual`: `r` is the int8 at the same place relative to `res_addr`, and
   `y = clamp(add_zp + round_half_even(((a - zp)*add_ma + (r - res_zp)*add_mb) / 2^add_shift),
   add_lo, add_hi)`, computed exactly (the sum has at most 41 bits); otherwise `y = a`.

A STORE that does work must follow a SETPP in the STORE queue.""",
    "END": """\
End of program. See *Dispatch and tokens*.""",
    "Errors": """\
Any error stops the NPU: STATUS.error is set with STATUS.error_code, ERR_INDEX holds the index of
the command at fault (the oldest blocked one for TOKEN_DEADLOCK) and ERR_ADDR the address for
WINDOW and BUS_ERROR; IRQ_STATUS.error rises. Memory written by commands that had not completed is
unspecified. Checks are made in program order at dispatch, so of several static errors the first
in program order is reported. A START while busy is ignored and sets STATUS.start_ignored.""",
}
