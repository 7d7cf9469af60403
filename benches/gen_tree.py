#!/usr/bin/env python3
"""Deterministically generate the benchmark build context.

usage: gen_tree.py DIR [FILES] [TARGET_BYTES]

Writes FILES files (default 50,000) in DIR/aN/bNN/fNNNNN.dat (10 top dirs x 20 subdirs),
sizes varying between 0 and ~44 KB with a mean chosen so that the total is about
TARGET_BYTES (default 200 MB). Even-numbered files hold pseudo-random (incompressible) bytes,
odd-numbered ones text (compressible). The same arguments always give the same tree.
Prints the number of files and the total size; writes DIR/../files.txt (one relative path a
line) for the benchmark to pick files to touch or change.
"""
import os
import random
import sys

root = sys.argv[1]
nfiles = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
target = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000_000

rng = random.Random(20240501)
POOL = 8 << 20
rand_pool = rng.randbytes(POOL)
words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel",
         b"india", b"juliett", b"kilo", b"lima", b"mike", b"november", b"oscar", b"papa"]
text = bytearray()
while len(text) < POOL:
    line = b" ".join(rng.choice(words) for _ in range(rng.randrange(3, 14)))
    text += line + b"\n"
text_pool = bytes(text[:POOL])

# 90% small files (0..4000 B), 10% larger ones (0..44000 B): mean 4000 B; scale to target.
scale = target / (nfiles * 4000.0)
small_max = max(1, int(4000 * scale))
large_max = max(1, int(44000 * scale))

TOP, SUB = 10, 20
per_dir = -(-nfiles // (TOP * SUB))
total = 0
paths = []
made = set()
for i in range(nfiles):
    d = i // per_dir
    top, sub = d // SUB, d % SUB
    rel_dir = f"a{top}/b{sub:02d}"
    if rel_dir not in made:
        os.makedirs(os.path.join(root, rel_dir), exist_ok=True)
        made.add(rel_dir)
    size = rng.randrange(0, small_max) if rng.random() < 0.9 else rng.randrange(0, large_max)
    pool = rand_pool if i % 2 == 0 else text_pool
    off = rng.randrange(0, POOL - size) if size < POOL else 0
    header = b"file %d\n" % i
    body = header + pool[off:off + max(0, size - len(header))]
    rel = f"{rel_dir}/f{i:05d}.dat"
    with open(os.path.join(root, rel), "wb") as f:
        f.write(body)
    total += len(body)
    paths.append(rel)

with open(os.path.join(os.path.dirname(os.path.abspath(root)), "files.txt"), "w") as f:
    f.write("\n".join(paths) + "\n")
print(f"{nfiles} files, {total} bytes ({total / 1e6:.1f} MB) in {len(made)} directories")
