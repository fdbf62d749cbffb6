#!/usr/bin/env python3
"""Writes the benchmark's build context: ~20,000 files (~200 MB) in nested directories, a few
large files, a multi-stage Dockerfile and a .dockerignore. Deterministic: the same bytes on
every machine, so runs compare like with like.

usage: generate-context.py DIR
"""
import os
import random
import sys

root = sys.argv[1]
rng = random.Random(20261122)
os.makedirs(root, exist_ok=True)

def write(path, size):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(rng.randbytes(size))

# Sources: 19,000 small and medium files across 3 levels of directories.
for i in range(19000):
    a, b = i % 40, (i // 40) % 25
    write(f"src/pkg{a:02}/mod{b:02}/file{i:05}.rs", rng.choice([512, 2048, 6144, 9000]))
# Assets: 996 files plus 4 large ones (~64 MB together).
for i in range(996):
    write(f"assets/img/{i % 10}/asset{i:04}.bin", 24000)
for i in range(4):
    write(f"assets/video/clip{i}.bin", 16 * 1024 * 1024)
write("package-lock.json", 200000)
# Ignored by .dockerignore: never read.
for i in range(200):
    write(f"build/out{i:03}.o", 50000)
    write(f"src/pkg00/tmp{i:03}.tmp", 1000)

with open(os.path.join(root, ".dockerignore"), "w") as f:
    f.write("build/\n**/*.tmp\n")
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("""ARG BASE
FROM ${BASE} AS deps
COPY package-lock.json /app/
RUN wc -c < /app/package-lock.json > /app/deps.txt

FROM ${BASE} AS assets
COPY assets/ /app/assets/
RUN du -s /app/assets > /app/assets.txt

FROM ${BASE}
COPY --from=deps /app/deps.txt /app/
COPY --from=assets /app/assets.txt /app/
COPY src/ /app/src/
RUN find /app/src -type f | wc -l > /app/count.txt
CMD ["cat", "/app/count.txt"]
""")
