"""Register slices: a valid/ready handshake cut by a FIFO of two entries; kept copies of a
register for its groups of consumers."""

from amaranth.hdl import Shape, Signal, Value
from amaranth.lib import fifo, stream

__all__ = ["register_slice", "skid_slice", "stream_slice", "kept_copies", "KEEP_MARK"]

#: Part of the name of every flip-flop that is a deliberate copy of another (same inputs):
#: synthesis would merge such copies into one, so the FPGA flow marks the flip-flops driving
#: the wires whose name holds it ``keep`` (``gen.bitstream``).
KEEP_MARK = "keep_copy"


def kept_copies(m, value, n, name):
    """``n`` registers each holding ``value`` a cycle later, one for each group of consumers,
    so that no one flip-flop drives all of them across the die (a fast clock's high fan-out
    control). Returns the list of signals."""
    shape = Value.cast(value).shape()
    copies = [Signal(shape, name=f"{name}_{KEEP_MARK}{k}") for k in range(n)]
    m.d.sync += [c.eq(value) for c in copies]
    return copies


def register_slice(m, name, valid, payload, shape):
    """A ``fifo.SyncFIFO`` of depth 2 (submodule ``name``) between a producer and a consumer.

    Both sides' readiness comes from the FIFO's level, so no path runs from the consumer's
    ready into the producer's logic or back, at one transfer a cycle (a ``SyncFIFOBuffered`` of
    depth 2 passes one every other cycle: its inner FIFO's room does not count the read). The
    producer offers ``payload`` with ``valid``; it is taken when ``room``.

    Returns ``(room, out_valid, out, take)``: ``out`` (a signal of ``shape``) is the head while
    ``out_valid``; the consumer drives ``take`` to pop it.
    """
    q = fifo.SyncFIFO(width=Shape.cast(shape).width, depth=2)
    m.submodules[name] = q
    out = Signal(shape, name=f"{name}_head")
    take = Signal(name=f"{name}_take")
    m.d.comb += [q.w_en.eq(valid), q.w_data.eq(payload), out.eq(q.r_data), q.r_en.eq(take)]
    return q.w_rdy, q.r_rdy, out, take


def skid_slice(m, name, valid, payload, shape):
    """As :func:`register_slice`, with the head in a register: two registers of ``shape``
    (the head, and a spare that takes a transfer while the head waits), so the consumer reads
    flip-flops, not a memory's read port behind its read pointer. One transfer a cycle;
    ``room`` is the spare's being empty, a register. Returns ``(room, out_valid, out,
    take)`` like :func:`register_slice`."""
    out = Signal(shape, name=f"{name}_head", reset_less=True)
    spare = Signal(shape, name=f"{name}_spare", reset_less=True)
    out_valid, spare_valid = Signal(name=f"{name}_valid"), Signal(name=f"{name}_spare_valid")
    take = Signal(name=f"{name}_take")
    room = ~spare_valid
    put = valid & room
    with m.If(take & out_valid):
        with m.If(spare_valid):
            m.d.sync += [out.eq(spare), spare_valid.eq(0)]
        with m.Elif(put):
            m.d.sync += out.eq(payload)
        with m.Else():
            m.d.sync += out_valid.eq(0)
    with m.Elif(put):
        with m.If(out_valid):
            m.d.sync += [spare.eq(payload), spare_valid.eq(1)]
        with m.Else():
            m.d.sync += [out.eq(payload), out_valid.eq(1)]
    return room, out_valid, out, take


def stream_slice(m, name, src, drop=None):
    """The stream ``src`` (valid and payload read, ready driven here: an ``In`` stream of the
    component, or a submodule's ``Out`` one) through :func:`register_slice`.

    Returns the stream the consumer uses (``stream.Signature`` of the same payload: it reads
    ``valid`` and ``payload`` and drives ``ready``). ``drop``, if given, pops the head as
    ``ready`` does (to discard what is queued).
    """
    shape = src.payload.shape()
    room, valid, out, take = register_slice(m, name, src.valid, src.payload, shape)
    port = stream.Signature(shape).create(path=(name,))
    m.d.comb += [src.ready.eq(room), port.valid.eq(valid), port.payload.eq(out),
                 take.eq(port.ready if drop is None else port.ready | drop)]
    return port
