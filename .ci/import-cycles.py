#!/usr/bin/env python3
"""Fails when files in src/ import each other in a circle.

An edge A -> B means code in file A (not its inline test module) names an item defined in file B (through `use`, or a
path such as `crate::x::Y` / `super::Y` in the code). Paths are resolved to the file that
DEFINES the item: a `pub use` re-export in a `mod.rs` is followed to its source, and
`mod x;` declarations and re-exports themselves are not edges (they are the table of
contents, not code that depends on anything). `src/bin/` is its own crate and is skipped.
Usage: .ci/import-cycles.py [src]
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "src"
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"

def without_inline_modules(text):
    """The file without its inline `mod x { ... }` blocks (unit tests): their `super` is
    the file itself, and what they import is test code, not the file's."""
    while True:
        m = re.search(r"\bmod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += text[i] == "{"
            depth -= text[i] == "}"
            i += 1
            if depth == 0:
                break
        text = text[: m.start()] + text[i:]


files = {}
for d, _, fs in os.walk(ROOT):
    if os.path.relpath(d, ROOT).split(os.sep)[0] == "bin":
        continue
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(d, f)
            text = open(p, encoding="utf-8").read()
            text = re.sub(r"//[^\n]*", "", text)  # comments, doc comments
            text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)  # string literals
            files[p] = without_inline_modules(text)


def modpath(p):
    parts = os.path.relpath(p, ROOT)[:-3].split(os.sep)
    return tuple(parts[:-1] if parts[-1] in ("mod", "lib", "main") else parts)


mods = {modpath(p): p for p in files}


def split_use(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)(?:::)?\{(.*)\}$", tree)
    if not m:
        tree = re.sub(r"as" + IDENT + "$", "", tree) if "as" in tree else tree
        tree = tree.split("as")[0] if re.search(r"[A-Za-z0-9_]as[A-Za-z_]", tree) is None else tree
        return [[x for x in tree.split("::") if x]]
    pre = [x for x in m.group(1).split("::") if x]
    out, depth, cur = [], 0, ""
    for ch in m.group(2):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [pre + sub for o in out if o for sub in split_use(o)]


def uses(text):
    """(is_reexport, path) for each `use` and each qualified path in the code."""
    found = []
    for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", text):
        for path in split_use(re.sub(r"\s+as\s+" + IDENT, "", m.group(2))):
            found.append((bool(m.group(1)), path))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    for m in re.finditer(r"(?<![\w:])((?:" + IDENT + r")(?:::" + IDENT + r")+)", body):
        found.append((False, m.group(1).split("::")))
    return found


def defines(text):
    return set(
        re.findall(
            # (not the `'static` of a lifetime)
            r"(?<!')\b(?:struct|enum|trait|fn|type|const|static|macro_rules!)\s+(" + IDENT + ")",
            text,
        )
    )


defined = {p: defines(t) for p, t in files.items()}
reexports = {}  # (file, name) -> path (absolute module parts)


def absolute(me, path):
    """The absolute module path of `path` as written in module `me`, or None if external."""
    if not path:
        return None
    if path[0] == "crate":
        return list(path[1:])
    if path[0] in ("super", "self"):
        base, rest = list(me), list(path)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
        return base + rest
    if tuple(list(me) + [path[0]]) in mods:
        return list(me) + list(path)
    if me == () and (path[0],) in mods:
        return list(path)
    return None


for p, t in files.items():
    for pub, path in uses(t):
        if pub:
            a = absolute(modpath(p), path)
            if a:
                reexports[(p, a[-1])] = a


def target(a, seen=0):
    """The file that defines the item at absolute path `a`."""
    for i in range(len(a), -1, -1):
        k = tuple(a[:i])
        if k in mods:
            f = mods[k]
            if i == len(a):
                return f  # a module itself
            name = a[i]
            if name in defined[f]:
                return f
            if (f, name) in reexports and seen < 8:
                return target(reexports[(f, name)], seen + 1)
            return f
    return None


edges = {}
for p, t in files.items():
    for pub, path in uses(t):
        if pub:
            continue
        a = absolute(modpath(p), path)
        if a is None:
            continue
        dst = target(a)
        if dst and dst != p:
            edges.setdefault(p, set()).add(dst)

# Tarjan's strongly connected components.
sys.setrecursionlimit(10000)
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges.get(v, ())):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))


for v in sorted(files):
    if v not in index:
        visit(v)
n_edges = sum(len(v) for v in edges.values())
for comp in sccs:
    print("import cycle:", " ".join(comp))
    for a in comp:
        print("   ", a, "->", " ".join(sorted(b for b in edges.get(a, ()) if b in comp)))
print(f"{len(files)} files, {n_edges} file-to-file imports, {len(sccs)} cycles")
sys.exit(1 if sccs else 0)
