#!/usr/bin/env python3
"""Fails when a Rust crate's modules import each other in a circle.

The project promises one-way layers (filter: config -> message -> REST -> host interface -> glue;
host-sim: ABI vocabulary -> guest memory -> state -> profiles -> driver -> transports -> CLI). This
check keeps that promise visible: for each crate source directory given, it builds the graph of
`crate::…` / `super::…` references between top-level modules (and between sibling files of each
directory module), leaving out `#[cfg(test)]` modules, and prints every cycle it finds.

Usage: scripts/check-layers.py DIR...   (e.g. filter/src host-sim/src host-sim/rest-proxy/src)
Exit status 1 when any cycle exists; `--graph` also prints the edges.
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text: str) -> str:
    """The source with comments removed and every string and char literal emptied, so that
    neither a `crate::` in a doc comment nor a brace in a string is taken for code."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := re.match(r'b?r(#*)"', text[i:i + 260])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            end = text.find(close, i + m.end())
            out.append('""')
            i = n if end < 0 else end + len(close)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and i + 2 < n and (text[i + 1] == "\\" or text[i + 2] == "'"):
            end = text.find("'", i + 2 if text[i + 1] == "\\" else i + 2)
            out.append("' '")
            i = n if end < 0 else end + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_modules(text: str) -> str:
    """Removes `#[cfg(test)] mod name { … }` blocks (tests may reach any layer)."""
    out, pos = [], 0
    for match in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", text):
        if match.start() < pos:
            continue
        out.append(text[pos : match.start()])
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


def module_path(root: Path, file: Path) -> tuple:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def group_heads(text: str, start: int) -> list:
    """First path segment of each item in a `{a, b::c, d::{…}}` group opening at text[start]."""
    depth, i, item, heads = 0, start, "", []
    while i < len(text):
        ch = text[i]
        if ch == "{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and ch == ",":
            heads.append(item)
            item = ""
        elif depth >= 1:
            item += ch
        i += 1
    heads.append(item)
    return [m.group(0) for h in heads if (m := re.match(IDENT, h.strip()))]


def references(text: str, here: tuple) -> set:
    """Absolute module paths (as tuples of their first segments) that `text` names."""
    found = set()
    for match in re.finditer(r"\b(crate|super)((?:::super)*)::", text):
        if match.group(1) == "crate":
            base = ()
        else:
            ups = 1 + match.group(2).count("super")
            base = here[: max(len(here) - ups, 0)]
        rest = match.end()
        if text.startswith("{", rest):
            for head in group_heads(text, rest):
                found.add(base + (head,))
        elif m := re.match(IDENT + r"(?:::" + IDENT + r")?", text[rest:]):
            found.add(base + tuple(m.group(0).split("::")))
    return found


def crate_graph(root: Path):
    files = sorted(root.rglob("*.rs"))
    modules = {module_path(root, f): f for f in files}
    # Names the crate root re-exports (`pub use module::Name`) resolve to their module.
    reexports = {}
    for root_file in ("lib.rs", "main.rs"):
        path = root / root_file
        if path.exists():
            text = strip_comments_and_strings(path.read_text())
            for m in re.finditer(r"pub use (" + IDENT + r")::(\{[^;]*\}|" + IDENT + r")", text):
                names = re.findall(IDENT, m.group(2))
                for name in names:
                    reexports.setdefault(name, m.group(1))
    edges = {}
    for path, file in modules.items():
        text = strip_test_modules(strip_comments_and_strings(file.read_text()))
        for target in references(text, path):
            resolved = resolve(target, modules, reexports)
            if resolved is not None and resolved != path:
                edges.setdefault(path, set()).add(resolved)
    return modules, edges


def resolve(target: tuple, modules: dict, reexports: dict):
    """The longest known module that `target` names (an item path ends inside a module)."""
    for n in range(len(target), 0, -1):
        if target[:n] in modules:
            return target[:n]
    if len(target) == 1 and target[0] in reexports:
        return (reexports[target[0]],)
    if len(target) >= 1 and target[0] in reexports:
        return (reexports[target[0]],)
    return None


def collapse(edges: dict, level: tuple) -> dict:
    """Edges between the children of module `level` (each path cut to one segment below it)."""
    out = {}
    depth = len(level)
    for src, targets in edges.items():
        if src[:depth] != level or len(src) <= depth:
            continue
        for dst in targets:
            if dst[:depth] != level or len(dst) <= depth:
                continue
            a, b = src[: depth + 1], dst[: depth + 1]
            if a != b:
                out.setdefault(a, set()).add(b)
    return out


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(set(graph) | {d for ts in graph.values() for d in ts}):
        if node not in index:
            visit(node)
    return result


def name(path: tuple) -> str:
    return "::".join(path) or "crate"


def main(argv: list) -> int:
    show_graph = "--graph" in argv
    dirs = [a for a in argv if a != "--graph"]
    if not dirs:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    failed = False
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            print(f"{d}: not a directory", file=sys.stderr)
            return 2
        modules, edges = crate_graph(root)
        # The crate root and every directory module: their children must not form a circle.
        levels = [()] + [p for p, f in modules.items() if f.name == "mod.rs"]
        for level in levels:
            graph = collapse(edges, level)
            if show_graph:
                for src in sorted(graph):
                    print(f"{d}: {name(src)} -> {', '.join(name(t) for t in sorted(graph[src]))}")
            for component in cycles(graph):
                failed = True
                print(f"{d}: import cycle among {', '.join(name(m) for m in component)}")
    if not failed:
        print(f"no import cycles in {', '.join(dirs)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
