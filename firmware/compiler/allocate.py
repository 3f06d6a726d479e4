"""Allocate: activation memory reused by liveness.

Every activation (after aliases are resolved to their storage) lives from the step that writes it
to the last step that reads it; the model input lives from the start, the model output to the end.
Steps are visited in order: blocks whose last reader came before the current step are freed, and
the step's output takes the lowest gap that fits (first fit, 64-byte aligned). Inputs of a step
are live during it, so an output never overlaps what the step reads (a convolution's input and
residual included).
"""

from __future__ import annotations

from dataclasses import dataclass

from .lower import Lowered, step_inputs

__all__ = ["Allocation", "allocate", "ALIGN"]

ALIGN = 64


def _align(n):
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Allocation:
    """Byte offsets of every tensor (aliases share their storage's) within an arena of
    ``size`` bytes; ``naive`` is what allocating every tensor separately would take."""
    offsets: dict
    size: int
    naive: int


def allocate(low: Lowered) -> Allocation:
    st = low.storage
    n = len(low.steps)
    first, last, size = {}, {}, {}
    root_in = st[low.input]
    q = low.tensors[root_in]
    pt, pl, pb, pr = low.input_pad
    first[root_in], size[root_in] = -1, (q.h + pt + pb) * (q.w + pl + pr) * q.c
    for i, s in enumerate(low.steps):
        r = st[s.out.name]
        first.setdefault(r, i)
        size[r] = s.out.size
        for t in step_inputs(s):
            last[st[t.name]] = i
    last[st[low.output]] = n
    for r in first:
        last.setdefault(r, first[r])
    live: list[tuple[int, int, str]] = []     # (offset, size, root)
    offsets, top = {}, 0

    def place(root):
        nonlocal top
        need = _align(size[root])
        cur = 0
        for off, sz, _ in sorted(live):
            if off - cur >= need:
                break
            cur = max(cur, off + _align(sz))
        live.append((cur, need, root))
        offsets[root] = cur
        top = max(top, cur + need)

    place(root_in)
    for i, s in enumerate(low.steps):
        live[:] = [b for b in live if last[b[2]] >= i]
        place(st[s.out.name])
    out = {name: offsets[st[name]] for name in low.tensors if st[name] in offsets}
    naive = sum(_align(v) for v in size.values())
    return Allocation(out, top, naive)
