"""Writes packages/core/test/fixtures/python.safetensors by hand (struct + json only), so the
file that qgrad's loader is tested on is produced independently of qgrad's writer.

Layout choices differ from qgrad's writer on purpose: tensors are stored in insertion order
(an I8 tensor first, so the F32 after it starts at an odd offset), and the header is padded
with spaces to a multiple of 8 as the reference implementation does.

Run: /usr/bin/python3 scripts/golden/safetensors_fixture.py
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "packages", "core", "test", "fixtures", "python.safetensors")

def bf16(x):
    # bfloat16 = top 16 bits of the float32 (values below are exactly representable)
    return struct.unpack("<I", struct.pack("<f", x))[0] >> 16

tensors = [
    ("i8", "I8", [3], struct.pack("<3b", -128, 0, 127)),
    ("f32", "F32", [2, 3], struct.pack("<6f", 1.0, -2.5, 0.1, 3.0e38, -0.0, 1e-45)),
    ("f64", "F64", [2], struct.pack("<2d", 0.1, -1.0e308)),
    ("i32", "I32", [2, 2], struct.pack("<4i", -2147483648, -1, 0, 2147483647)),
    ("u8", "U8", [4], struct.pack("<4B", 0, 1, 128, 255)),
    ("f16", "F16", [6], struct.pack("<6e", 1.0, -2.0, 0.5, 65504.0, 5.960464477539063e-08, float("inf"))),
    ("bf16", "BF16", [4], struct.pack("<4H", bf16(1.0), bf16(-2.5), bf16(0.15625), bf16(3.140625))),
    ("empty", "F32", [0, 3], b""),
]

header = {"__metadata__": {"format": "pt", "producer": "scripts/golden/safetensors_fixture.py"}}
data = b""
for name, dtype, shape, payload in tensors:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
    data += payload
h = json.dumps(header, separators=(",", ":")).encode("utf-8")
h += b" " * ((8 - len(h) % 8) % 8)
with open(OUT, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
print(f"wrote {OUT}: header {len(h)} bytes, data {len(data)} bytes")
