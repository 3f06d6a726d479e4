"""A program under construction: its command stream and the memory image it runs on.

:class:`Program` is plain data (commands as encoded bytes, named memory regions) so that every
compiler stage can be tested alone and every backend (golden, rtl, board) can load it the same way.
"""

from dataclasses import dataclass, field

import numpy as np

from hdl.isa import CMD_BYTES, Opcode, decode, encode

__all__ = ["Program", "Region", "Tensor"]

#: Alignment of every allocated region (a burst never needs to start mid-word on any bus width).
ALIGN = 64


@dataclass(frozen=True)
class Region:
    """A named, allocated range of memory."""
    name: str
    address: int
    size: int


@dataclass(frozen=True)
class Tensor:
    """An int8 activation tensor in memory, NHWC with N = 1, channels innermost.

    By default the pixels are packed (``x_stride = channels``, ``y_stride = width * x_stride``).
    Other strides describe views: ``x_stride < channels`` makes pixels overlap, so that one pixel
    of the view holds several neighbouring pixels of the tensor behind it (an im2col row: the
    compiler packs a kernel row of the 3-channel stem into one view pixel).
    """
    address: int
    height: int
    width: int
    channels: int
    x_stride: int | None = None
    y_stride: int | None = None

    @property
    def size(self):
        return self.height * self.width * self.channels

    @property
    def shape(self):
        return (1, self.height, self.width, self.channels)

    @property
    def pixel_stride(self):
        """Bytes between pixels along x."""
        return self.channels if self.x_stride is None else self.x_stride

    @property
    def row_stride(self):
        """Bytes between rows."""
        return self.width * self.pixel_stride if self.y_stride is None else self.y_stride

    def offset(self, y, x, c=0):
        """Byte address of element (y, x, c)."""
        return self.address + y * self.row_stride + x * self.pixel_stride + c


@dataclass
class Program:
    """Commands and memory contents, laid out from ``base``: data regions first, in allocation
    order, then the command stream (so addresses are final when a command is emitted).

    Parameters
    ----------
    config : NpuConfig
        The configuration the program is built for.
    base : int
        Bus address where the image starts (defaults to the config's window base).
    """
    config: object
    base: int | None = None
    commands: list = field(default_factory=list)
    regions: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    _top: int = 0

    def __post_init__(self):
        if self.base is None:
            self.base = self.config.window_base

    # -- commands -------------------------------------------------------------------------------

    def emit(self, op, **fields):
        """Append one command; returns its index."""
        self.commands.append(encode(op, **fields))
        return len(self.commands) - 1

    def end(self):
        return self.emit(Opcode.END)

    def decoded(self):
        """The commands as ``(opcode, fields)`` pairs."""
        return [decode(c) for c in self.commands]

    # -- memory ---------------------------------------------------------------------------------

    def alloc(self, name, size):
        """Reserve ``size`` bytes of data memory (64-byte aligned) and return its bus address."""
        if name in self.regions:
            raise ValueError(f"region {name!r} allocated twice")
        addr = self.base + self._top
        self.regions[name] = Region(name, addr, size)
        self._top = -(-(self._top + size) // ALIGN) * ALIGN
        return addr

    def put(self, name, array):
        """Allocate a region holding ``array``'s bytes (little-endian) and return its address."""
        raw = np.ascontiguousarray(array)
        if raw.dtype.byteorder == ">":
            raw = raw.astype(raw.dtype.newbyteorder("<"))
        addr = self.alloc(name, raw.nbytes)
        self.data[name] = raw.tobytes()
        return addr

    def tensor(self, name, height, width, channels, array=None):
        """Allocate an NHWC int8 tensor (optionally initialised) and return its :class:`Tensor`."""
        if array is not None:
            array = np.asarray(array, dtype=np.int8).reshape(height, width, channels)
            addr = self.put(name, array)
        else:
            addr = self.alloc(name, height * width * channels)
        return Tensor(addr, height, width, channels)

    @property
    def prog_base(self):
        """Bus address of the first command."""
        return self.base + self._top

    @property
    def image_size(self):
        return self._top + CMD_BYTES * len(self.commands)

    def image(self):
        """The memory image from ``base``: data regions (gaps zero) then the commands."""
        img = np.zeros(self.image_size, dtype=np.uint8)
        for name, raw in self.data.items():
            off = self.regions[name].address - self.base
            img[off:off + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        cmds = b"".join(self.commands)
        img[self._top:] = np.frombuffer(cmds, dtype=np.uint8)
        return img

    def load_into(self, npu):
        """Write the image into a backend with ``write(address, bytes)`` (the golden model)."""
        npu.write(self.base, self.image())

    def address(self, name):
        return self.regions[name].address
