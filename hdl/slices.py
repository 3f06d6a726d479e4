"""Register slices: a valid/ready handshake cut by a FIFO of two entries; kept copies of a
register for its groups of consumers."""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["register_slice", "skid_slice", "stream_slice", "kept_copies", "PartedFIFO",
           "KEEP_MARK"]

#: Part of the name of every flip-flop that is a deliberate copy of another (same inputs):
#: synthesis would merge such copies into one, so the FPGA flow marks the flip-flops driving
#: the wires whose name holds it ``keep`` (``gen.bitstream``).
KEEP_MARK = "keep_copy"


def kept_copies(m, value, n, name, init=0, reset_less=False):
    """``n`` registers (reset to ``init``, unless ``reset_less``) each holding ``value`` a
    cycle later, one for each group of consumers, so that no one flip-flop drives all of them
    across the die (a fast clock's high fan-out control). Returns the list of signals.

    (Copies of a value that is constant in part, such as a read enable tied high, should be
    ``reset_less``: with a reset, each such bit's input is the same LUT of the reset, and
    synthesis feeds every copy from that one LUT across the die.)"""
    shape = Value.cast(value).shape()
    copies = [Signal(shape, name=f"{name}_{KEEP_MARK}{k}", init=init, reset_less=reset_less)
              for k in range(n)]
    m.d.sync += [c.eq(value) for c in copies]
    return copies


def register_slice(m, name, valid, payload, shape, parted=False):
    """A ``fifo.SyncFIFO`` of depth 2 (submodule ``name``) between a producer and a consumer.

    Both sides' readiness comes from the FIFO's level, so no path runs from the consumer's
    ready into the producer's logic or back, at one transfer a cycle (a ``SyncFIFOBuffered`` of
    depth 2 passes one every other cycle: its inner FIFO's room does not count the read). The
    producer offers ``payload`` with ``valid``; it is taken when ``room``.

    Returns ``(room, out_valid, out, take)``: ``out`` (a signal of ``shape``) is the head while
    ``out_valid``; the consumer drives ``take`` to pop it.

    With ``parted`` (a wide payload, for a fast clock) the FIFO is a :class:`PartedFIFO` of
    32-bit parts: the head's read pointer is a copy of its own in each part.
    """
    width = Shape.cast(shape).width
    out = Signal(shape, name=f"{name}_head")
    take = Signal(name=f"{name}_take")
    if parted:
        q = PartedFIFO(PartedFIFO.split(width, 32), depth=2)
        m.d.comb += q.w_en.eq((valid & q.w_rdy).replicate(len(q.w_en)))
    else:
        q = fifo.SyncFIFO(width=width, depth=2)
        m.d.comb += q.w_en.eq(valid)
    m.submodules[name] = q
    m.d.comb += [q.w_data.eq(payload), out.eq(q.r_data), q.r_en.eq(take)]
    return q.w_rdy, q.r_rdy, out, take


def skid_slice(m, name, valid, payload, shape):
    """As :func:`register_slice`, with the head in a register: two registers of ``shape``
    (the head, and a spare that takes a transfer while the head waits), so the consumer reads
    flip-flops, not a memory's read port behind its read pointer. One transfer a cycle;
    ``room`` is the spare's being empty, a register. Returns ``(room, out_valid, out,
    take)`` like :func:`register_slice`.

    The two registers load without waiting for ``valid``: the spare whenever it is empty,
    the head whenever it is empty or taken (from the spare if that is full), and only the
    valid flags follow the handshake. What a register holds while its flag is clear is never
    read, and the producer's ``valid`` (often the end of its own logic) enables no more than
    two flip-flops."""
    out = Signal(shape, name=f"{name}_head", reset_less=True)
    spare = Signal(shape, name=f"{name}_spare", reset_less=True)
    out_valid, spare_valid = Signal(name=f"{name}_valid"), Signal(name=f"{name}_spare_valid")
    take = Signal(name=f"{name}_take")
    room = ~spare_valid
    put = valid & room
    # (the spare is full only while the head is: the head then loads from the spare)
    with m.If(~spare_valid):
        m.d.sync += spare.eq(payload)
    with m.If(take | ~out_valid):
        m.d.sync += out.eq(Mux(spare_valid, spare, payload))
    with m.If(take & out_valid):
        with m.If(spare_valid):
            m.d.sync += spare_valid.eq(0)
        with m.Elif(~put):
            m.d.sync += out_valid.eq(0)
    with m.Elif(put):
        with m.If(out_valid):
            m.d.sync += spare_valid.eq(1)
        with m.Else():
            m.d.sync += out_valid.eq(1)
    return room, out_valid, out, take


def stream_slice(m, name, src, drop=None, parted=False, skid=False):
    """The stream ``src`` (valid and payload read, ready driven here: an ``In`` stream of the
    component, or a submodule's ``Out`` one) through :func:`register_slice`, or with ``skid``
    through :func:`skid_slice` (the consumer's valid and payload, and the producer's ready,
    are flip-flops).

    Returns the stream the consumer uses (``stream.Signature`` of the same payload: it reads
    ``valid`` and ``payload`` and drives ``ready``). ``drop``, if given, pops the head as
    ``ready`` does (to discard what is queued). ``parted`` as for :func:`register_slice`.
    """
    shape = src.payload.shape()
    if skid:
        if parted:
            raise ValueError("a skid slice's head is registers, not parted memories")
        room, valid, out, take = skid_slice(m, name, src.valid, src.payload, shape)
    else:
        room, valid, out, take = register_slice(m, name, src.valid, src.payload, shape, parted)
    port = stream.Signature(shape).create(path=(name,))
    m.d.comb += [src.ready.eq(room), port.valid.eq(valid), port.payload.eq(out),
                 take.eq(port.ready if drop is None else port.ready | drop)]
    return port


class PartedFIFO(wiring.Component):
    """A first-in first-out queue of ``depth`` wide rows, stored as ``len(widths)`` memories
    (one per part of the row, ``widths[g]`` bits each, the parts concatenated low first), each
    with write and read pointers of its own.

    The ports are ``fifo.SyncFIFO``'s (``r_data`` is read without latency), except that the
    write enable has a bit per part: ``w_en[g]`` writes part ``g``. The writer raises all of
    them in the same cycle (copies of one enable, from registers of their own), and only while
    ``w_rdy``. For a fast clock a wide row then has no read pointer, write pointer or enable
    fanning out to all of its LUT RAM cells across the die: each part's cells have their own,
    which the placer can put beside them. ``level`` counts on ``w_en[0]``.

    With ``write_register`` the writer drives one ``w_en`` (logic, not registers): the row
    and a copy of the enable for each part are registered, and written a cycle later, from
    those registers. ``w_rdy`` counts the row in them; ``r_rdy`` and ``level`` see a row once
    it is written.

    Parameters
    ----------
    widths : list of int
        Bits of each part.
    depth : int
        Rows, at least 2.
    write_register : bool
        Register the write port in front of the memories.
    """

    def __init__(self, widths, depth, write_register=False):
        widths = list(widths)
        if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
            raise TypeError(f"widths must be positive integers, not {widths!r}")
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer of at least 2, not {depth!r}")
        self._widths, self._depth = widths, depth
        self._write_register = bool(write_register)
        super().__init__({
            "w_data": In(sum(widths)), "w_en": In(1 if write_register else len(widths)),
            "w_rdy": Out(1),
            "r_data": Out(sum(widths)), "r_en": In(1), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
        })

    @staticmethod
    def split(width, part):
        """Widths of ``part`` bits (the last one the rest) covering ``width`` bits."""
        return [min(part, width - lo) for lo in range(0, width, part)]

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        do_r = Signal()
        w_en, w_data = self.w_en, self.w_data
        if self._write_register:
            w_en = Cat(*kept_copies(m, self.w_en & self.w_rdy, len(self._widths), "w_en"))
            w_data = Signal.like(self.w_data, name="w_data_r", reset_less=True)
            m.d.sync += w_data.eq(self.w_data)
            m.d.comb += self.w_rdy.eq(self.level + w_en[0] < depth)
        else:
            m.d.comb += self.w_rdy.eq(self.level != depth)
        m.d.comb += [self.r_rdy.eq(self.level != 0), do_r.eq(self.r_en & self.r_rdy)]
        m.d.sync += self.level.eq(self.level + w_en[0] - do_r)

        def advance(ptr):
            return ptr + 1 if depth & (depth - 1) == 0 else Mux(ptr == depth - 1, 0, ptr + 1)

        lo = 0
        for g, width in enumerate(self._widths):
            mem = memory.Memory(shape=width, depth=depth, init=[])
            m.submodules[f"part{g}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="comb")
            w_ptr = Signal(range(depth), name=f"w_ptr{g}_{KEEP_MARK}")
            r_ptr = Signal(range(depth), name=f"r_ptr{g}_{KEEP_MARK}")
            m.d.comb += [wp.addr.eq(w_ptr), wp.en.eq(w_en[g]),
                         wp.data.eq(w_data[lo:lo + width]),
                         rp.addr.eq(r_ptr), self.r_data[lo:lo + width].eq(rp.data)]
            with m.If(w_en[g]):
                m.d.sync += w_ptr.eq(advance(w_ptr))
            with m.If(do_r):
                m.d.sync += r_ptr.eq(advance(r_ptr))
            lo += width
        return m
