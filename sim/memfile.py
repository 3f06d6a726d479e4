"""Memory images as ``$readmemh``/``$writememh`` text, for the HDL-side memory model.

A memory word is ``bus_bytes`` bytes; byte 0 of the word is its least significant byte, so a line
of hex holds the word's bytes in reverse order. :func:`to_readmemh` writes only the words that
are not zero (a ``@<word>`` line starts every run), which keeps a ResNet-50 image (29 MB of
weights and an empty activation arena) to the weights alone.
"""

import numpy as np

__all__ = ["to_readmemh", "from_writememh"]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_lines(words):
    """``(n, bus_bytes)`` uint8 words -> the text of n lines of hex (most significant first)."""
    n, bb = words.shape
    rev = words[:, ::-1]
    out = np.empty((n, 2 * bb + 1), dtype=np.uint8)
    out[:, 0:2 * bb:2] = _HEX[rev >> 4]
    out[:, 1:2 * bb:2] = _HEX[rev & 15]
    out[:, -1] = ord("\n")
    return out.tobytes()


def to_readmemh(data, base, bus_bytes, skip_zero=True):
    """The ``$readmemh`` text that puts ``data`` (bytes) at byte address ``base``.

    ``base`` and ``len(data)`` must be multiples of ``bus_bytes`` (the caller merges partial
    words at the edges). With ``skip_zero``, all-zero words are left out.
    """
    if base % bus_bytes or len(data) % bus_bytes:
        raise ValueError(f"{len(data)} bytes at {base:#x} are not whole {bus_bytes}-byte words")
    words = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, bus_bytes)
    first = base // bus_bytes
    if not skip_zero:
        return f"@{first:x}\n".encode() + _hex_lines(words)
    keep = words.any(axis=1)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return b""
    # runs of consecutive kept words
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [idx.size]))
    parts = []
    for s, e in zip(starts, ends):
        lo, hi = idx[s], idx[e - 1] + 1
        parts.append(f"@{first + lo:x}\n".encode())
        parts.append(_hex_lines(words[lo:hi]))
    return b"".join(parts)


def from_writememh(text, bus_bytes):
    """The bytes of a ``$writememh`` dump (one word per line; comments and ``@`` lines
    skipped). Unknown bits (``x``/``z``, from a four-state simulator) raise ValueError."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln.split("//")[0].strip() for ln in lines]
    lines = [ln for ln in lines if ln and not ln.startswith("@")]
    width = 2 * bus_bytes
    out = np.zeros((len(lines), bus_bytes), dtype=np.uint8)
    for i, ln in enumerate(lines):
        ln = ln.replace("_", "")
        if any(c in "xXzZ" for c in ln):
            raise ValueError(f"memory word {i} of the dump has unknown bits: {ln}")
        out[i] = np.frombuffer(int(ln, 16).to_bytes(bus_bytes, "little"), dtype=np.uint8)
        if len(ln) > width:
            raise ValueError(f"memory word {i} of the dump is wider than {bus_bytes} bytes")
    return out.tobytes()
