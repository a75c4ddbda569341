#!/usr/bin/env python3
"""Write a legitimate image at the pixel limit for the peak-RSS comparison (README.md): a
7000x7000 RGB PNG (49 Mpx, just under the 50 Mpx limit) whose rows are Up-filtered, so it
is only ~180 KB on disk.   usage: make-large-png.py OUT.png [WIDTH HEIGHT]"""
import struct
import sys
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def main() -> None:
    out = sys.argv[1]
    w, h = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (7000, 7000)
    comp = zlib.compressobj(9)
    first = bytearray()
    for x in range(w):
        first += bytes((x * 255 // w, 0, (x * 7) & 255))
    parts = [comp.compress(b"\x00" + bytes(first))]
    step = bytearray(3 * w)
    step[1::3] = b"\x01" * w
    flat = bytes(3 * w)
    for y in range(1, h):
        # Up filter: each row repeats the one above, with green one higher every 28 rows.
        parts.append(comp.compress(b"\x02" + (bytes(step) if y % 28 == 0 else flat)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    with open(out, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


if __name__ == "__main__":
    main()
