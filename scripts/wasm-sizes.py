#!/usr/bin/env python3
"""Where a .wasm module's bytes are: section sizes, code-section function body sizes summed by
crate/module path prefix, and the largest functions.

The function names come from the module's name section, so build with it first:
    WASM_KEEP_NAMES=1 scripts/build-wasm.sh
    scripts/wasm-sizes.py target/wasm32-wasip1/wasm/kafka_upstream.wasm --depth 2 --top 40
Names are demangled with `c++filt` (binutils; it reads Rust's legacy and v0 manglings) when it is
installed. A function's prefix is its path with any `<T as Trait>` impl reduced to `T`.
"""
import argparse
import collections
import re
import shutil
import subprocess
import sys

SECTION_NAMES = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
                 7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "data count"}


def leb(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def parse(data):
    """Sections as (id, custom name, size), the imported function count, the code section's body
    sizes (with their length prefix) and the name section's function names."""
    if data[:4] != b"\0asm":
        sys.exit("not a wasm module")
    i, sections, imported, bodies, names = 8, [], 0, [], {}
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        end = i + size
        custom = ""
        if sid == 2:  # imports: count the functions, which come first in the index space
            count, j = leb(data, i)
            for _ in range(count):
                for _ in range(2):  # module and field names
                    length, j = leb(data, j)
                    j += length
                kind = data[j]
                j += 1
                if kind == 0:  # function: type index
                    _, j = leb(data, j)
                    imported += 1
                elif kind == 1:  # table: reftype, limits
                    flags, j = leb(data, j + 1)
                    _, j = leb(data, j)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 2:  # memory: limits
                    flags, j = leb(data, j)
                    _, j = leb(data, j)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 3:  # global: valtype, mutability
                    j += 2
        elif sid == 10:
            count, j = leb(data, i)
            for _ in range(count):
                length, body = leb(data, j)
                bodies.append(body - j + length)
                j = body + length
        elif sid == 0:
            length, j = leb(data, i)
            custom = data[j:j + length].decode("utf-8", "replace")
            j += length
            if custom == "name":
                while j < end:
                    sub = data[j]
                    sub_size, j = leb(data, j + 1)
                    sub_end = j + sub_size
                    if sub == 1:  # function names
                        count, j = leb(data, j)
                        for _ in range(count):
                            index, j = leb(data, j)
                            length, j = leb(data, j)
                            names[index] = data[j:j + length].decode("utf-8", "replace")
                            j += length
                    j = sub_end
        sections.append((sid, custom, size))
        i = end
    return sections, imported, bodies, names


def demangle(raw):
    if not shutil.which("c++filt"):
        return raw
    out = subprocess.run(["c++filt"], input="\n".join(raw), capture_output=True, text=True).stdout.split("\n")
    return [re.sub(r"::h[0-9a-f]{16}$", "", d) for d in out[:len(raw)]]


def prefix(name, depth):
    impl = re.match(r"^<(.*?)(?: as .*)?>::", name)
    if impl:
        name = impl.group(1)
    name = re.sub(r"^(&mut |&|\*const |\*mut )+", "", name)
    name = re.sub(r"\[[0-9a-f]{16}\]", "", name)  # v0 crate disambiguators
    return "::".join(name.split("::")[:depth])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wasm")
    parser.add_argument("--depth", type=int, default=1, help="path segments per group (default 1: the crate)")
    parser.add_argument("--groups", type=int, default=30, help="groups shown (default 30)")
    parser.add_argument("--top", type=int, default=20, help="largest functions shown (default 20)")
    args = parser.parse_args()

    data = open(args.wasm, "rb").read()
    sections, imported, bodies, names = parse(data)
    print(f"{args.wasm}: {len(data)} bytes")
    for sid, custom, size in sections:
        label = SECTION_NAMES.get(sid, str(sid)) + (f" ({custom})" if custom else "")
        print(f"  {size:9d}  {label}")
    if not names:
        print("no name section: build with WASM_KEEP_NAMES=1 scripts/build-wasm.sh for function names")
    raw = [names.get(imported + k, f"function {imported + k}") for k in range(len(bodies))]
    functions = list(zip(bodies, demangle(raw)))

    groups, counts = collections.Counter(), collections.Counter()
    for size, name in functions:
        groups[prefix(name, args.depth)] += size
        counts[prefix(name, args.depth)] += 1
    print(f"\ncode: {sum(bodies)} bytes of function bodies in {len(bodies)} functions, by prefix:")
    for group, size in groups.most_common(args.groups):
        print(f"  {size:9d} {counts[group]:5d}  {group}")
    print(f"\nlargest functions:")
    for size, name in sorted(functions, key=lambda f: -f[0])[:args.top]:
        print(f"  {size:9d}  {name[:160]}")


if __name__ == "__main__":
    main()
