#!/usr/bin/env python3
"""Writes seed inputs for every fuzz target from the golden vectors
(test-vectors/*.json) into the directory given (default: seeds/), one
subdirectory per target, in each target's input layout (see the comment at
the top of each fuzz_targets/*.rs). Where the `lz4` command is installed, it
adds frames our writer never makes (linked blocks, block and content
checksums, every block size) for `lz4_decompress`. The committed corpus/ is these seeds plus
what the fuzzer found, minimized with `cargo fuzz cmin`."""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "..", "..", "test-vectors")


def load(name):
    with open(os.path.join(VECTORS, name)) as f:
        return json.load(f)


def write(out, target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "seeds")
    for v in load("keys.json"):
        write(out, "cke_decode", bytes.fromhex(v["cke"]))
    for v in load("lz4.json"):
        write(out, "lz4_decompress", bytes.fromhex(v["frame"]))
        write(out, "lz4_roundtrip", bytes.fromhex(v["plain"]))
    secret = b"s3cr3t"
    for v in load("files.json"):
        f, key = bytes.fromhex(v["file"]), bytes.fromhex(v["key"])
        comp, enc = v["compressor"], v["encryptor"]
        m = struct.unpack_from("<I", f, 12)[0]
        meta, value = f[48 : 48 + m], f[48 + m :]
        keyed = bytes([len(key)]) + key
        for mode in (0, 1):
            write(out, "header", bytes([mode]) + struct.pack("<Q", len(f)) + f[:48])
            write(out, "key_file", bytes([mode]) + keyed + f)
        write(out, "meta_split", bytes([comp, enc]) + keyed + meta)
        if enc == 0 and comp == 0:
            write(out, "lz4_roundtrip", value)
        if enc == 0 and comp == 1:
            write(out, "lz4_decompress", meta)
            write(out, "lz4_decompress", value)
        if enc == 1:
            write(out, "aes_open", bytes([0, len(secret)]) + secret + keyed + meta)
            write(out, "aes_open", bytes([1, len(secret)]) + secret + keyed + value)
    for v in load("wal.json"):
        # mode | header slot B | the file from the first frame on (12288)
        f = bytes.fromhex(v["file"])
        for mode in (0, 3):
            write(out, "wal_scan", bytes([mode]) + f[4096:4160] + f[12288:])
    if shutil.which("lz4"):
        # Over 64 KiB, so that 64 KiB blocks are linked; repetitive, so small.
        big = b"".join(b"key %06d konserve value; " % (i % 500) for i in range(4000))
        flag_sets = [[], ["-BD"], ["-B4", "-BD", "-BX"], ["-B5", "--content-size"],
                     ["-B6", "--no-frame-crc"], ["-B7", "-BD", "--content-size", "-BX"]]
        for plain in (b"konserve " * 50, big):
            for flags in flag_sets:
                frame = subprocess.run(["lz4", *flags, "-c"], input=plain, capture_output=True, check=True).stdout
                write(out, "lz4_decompress", frame)


if __name__ == "__main__":
    main()
