"""The ``.npubin`` program format: one file with everything a backend needs to run a network.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic b"NPUBIN\\0\\0"
    8       2     format major version (a reader refuses other majors)
    10      2     format minor version
    12      4     ISA version: major << 16 | minor << 8 | patch (hdl.isa.ISA_VERSION)
    16      32    SHA-256 fingerprint of the NpuConfig compiled for (raw bytes)
    48      8     base: bus address of the data image
    56      8     prog_base: bus address of the first command
    64      8     number of commands
    72      8     data image offset in the file     80  8  data image length
    88      8     command stream offset             96  8  command stream length
    104     8     manifest offset                   112 8  manifest length
    120     8     reserved, zero

The data image (weights, parameters, the activation arena, zero where nothing is stored) is
loaded at ``base``; the command stream (32 bytes a command) at ``prog_base``, which follows it.
The manifest is UTF-8 JSON: the configuration (name, fingerprint, the full dict), the memory
window the program needs, the input and output tensors (address, NHWC shape, the ONNX name and
shape, scale, zero point) and the per-layer table.

A program runs only on the configuration it was compiled for: :func:`load` (and
:meth:`NpuProgram.check_config`) refuse any other with a message naming both.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdl.config import NpuConfig
from hdl.isa import CMD_BYTES, ISA_VERSION

__all__ = ["MAGIC", "FORMAT_VERSION", "NpuProgram", "NpubinError", "load", "save"]

MAGIC = b"NPUBIN\0\0"
FORMAT_VERSION = (1, 0)
_HEADER = struct.Struct("<8sHHI32s10Q")
assert _HEADER.size == 128


class NpubinError(ValueError):
    """A file is not a valid program, or not one for this configuration."""


def _isa_word(v):
    return (v[0] << 16) | (v[1] << 8) | v[2]


@dataclass
class NpuProgram:
    """A compiled program: data image, command stream and manifest."""
    manifest: dict
    data: bytes
    commands: bytes

    @property
    def base(self):
        return self.manifest["memory"]["base"]

    @property
    def prog_base(self):
        return self.manifest["memory"]["prog_base"]

    @property
    def num_commands(self):
        return len(self.commands) // CMD_BYTES

    @property
    def image_size(self):
        return len(self.data) + len(self.commands)

    @property
    def window(self):
        """(WIN_BASE, WIN_LIMIT) the program needs; WIN_LIMIT inclusive."""
        m = self.manifest["memory"]
        return m["window_base"], m["window_limit"]

    @property
    def fingerprint(self):
        return self.manifest["config"]["fingerprint"]

    def config(self) -> NpuConfig:
        """The configuration the program was compiled for (rebuilt and re-validated)."""
        cfg = NpuConfig.from_dict(self.manifest["config"]["dict"], "npubin manifest")
        if cfg.fingerprint() != self.fingerprint:
            raise NpubinError("the manifest's configuration does not match its fingerprint")
        return cfg

    def check_config(self, config):
        """Refuse to run on any configuration but the one compiled for."""
        cfg = NpuConfig.load(config)
        if cfg.fingerprint() != self.fingerprint:
            c = self.manifest["config"]
            raise NpubinError(
                f"program compiled for config {c['name']!r} (fingerprint {c['fingerprint'][:12]})"
                f" cannot run on config {cfg.name!r} (fingerprint {cfg.fingerprint()[:12]}): "
                f"recompile it with --config {cfg.name}")
        return cfg

    def image(self) -> np.ndarray:
        """Data then commands, from ``base``."""
        return np.frombuffer(self.data + self.commands, dtype=np.uint8)

    def to_bytes(self) -> bytes:
        manifest = json.dumps(self.manifest, sort_keys=True, indent=1).encode()
        head = _HEADER.size
        data_off = head
        cmd_off = data_off + len(self.data)
        man_off = cmd_off + len(self.commands)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION[0], FORMAT_VERSION[1], _isa_word(ISA_VERSION),
                              bytes.fromhex(self.fingerprint), self.base, self.prog_base,
                              self.num_commands, data_off, len(self.data), cmd_off,
                              len(self.commands), man_off, len(manifest), 0)
        return header + self.data + self.commands + manifest

    @classmethod
    def from_program(cls, prog, memory_size=None) -> NpuProgram:
        """A hand-built :class:`firmware.program.Program` (no network: no input, output or
        layer table) as an :class:`NpuProgram`, for any backend. The window covers
        ``memory_size`` bytes from the program's base (default: the configuration's window)."""
        cfg = prog.config
        size = cfg.window_size if memory_size is None else int(memory_size)
        image = prog.image()
        data_len = prog.prog_base - prog.base
        manifest = {
            "format": "npubin", "isa_version": list(ISA_VERSION),
            "config": {"name": cfg.name, "fingerprint": cfg.fingerprint(),
                       "dict": cfg.to_dict()},
            "model": None,
            "memory": {"base": prog.base, "prog_base": prog.prog_base,
                       "image_size": prog.image_size, "window_base": prog.base,
                       "window_limit": prog.base + size - 1},
            "layers": [], "totals": {},
        }
        return cls(manifest, image[:data_len].tobytes(), image[data_len:].tobytes())

    @classmethod
    def from_bytes(cls, raw: bytes, source="<bytes>") -> NpuProgram:
        if len(raw) < _HEADER.size or raw[:8] != MAGIC:
            raise NpubinError(f"{source}: not an npubin file (bad magic)")
        (_, major, minor, isa, fp, base, prog_base, ncmd, d_off, d_len, c_off, c_len, m_off,
         m_len, _) = _HEADER.unpack_from(raw)
        if major != FORMAT_VERSION[0]:
            raise NpubinError(f"{source}: npubin format {major}.{minor}, this reader reads "
                              f"{FORMAT_VERSION[0]}.x")
        if isa >> 16 != ISA_VERSION[0]:
            raise NpubinError(f"{source}: ISA version {isa >> 16}.{(isa >> 8) & 255}.{isa & 255}"
                              f", this NPU implements {'.'.join(map(str, ISA_VERSION))}")
        if max(d_off + d_len, c_off + c_len, m_off + m_len) > len(raw) or \
                c_len != ncmd * CMD_BYTES:
            raise NpubinError(f"{source}: truncated or inconsistent npubin file")
        try:
            manifest = json.loads(raw[m_off:m_off + m_len].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise NpubinError(f"{source}: bad manifest: {e}") from None
        prog = cls(manifest, raw[d_off:d_off + d_len], raw[c_off:c_off + c_len])
        if fp.hex() != prog.fingerprint or base != prog.base or prog_base != prog.prog_base:
            raise NpubinError(f"{source}: header and manifest disagree")
        return prog


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(program: NpuProgram, path) -> Path:
    """Write atomically: the file appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(program.to_bytes())
        os.chmod(tmp, 0o666 & ~_umask())           # mkstemp makes 0600; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path, config=None) -> NpuProgram:
    """Read a program; with ``config`` (a name, path or NpuConfig), refuse it unless it was
    compiled for exactly that configuration."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NpubinError(f"{path}: cannot read: {e.strerror or e}") from None
    prog = NpuProgram.from_bytes(raw, str(path))
    if config is not None:
        prog.check_config(config)
    return prog
