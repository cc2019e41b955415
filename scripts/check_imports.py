#!/usr/bin/env python3
"""Import circles between the files of each crate.

Every `use crate::…`, `use super::…`, `use self::…` (and inline
`crate::a::b::item` paths) is resolved to the file of the deepest module it
names; a module's own submodules declared with `mod` are not imports. A
circle — two or more files that import each other, directly or through
others — usually means one name lives in the wrong file. Prints every
circle and exits 1 when there is one.

    python3 scripts/check_imports.py            # the workspace
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["src", "schemas/src", "ingest/src", "router/src", "workers/src", "sink/src", "analysis/src"]


def module_files(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            mods[tuple(parts)] = os.path.join(dirpath, f)
    return mods


def expand(path):
    """`a::{b, c::d}` -> [a::b, a::c::d] (nested braces too)."""
    path = re.sub(r"\s+", "", path)
    m = re.search(r"\{", path)
    if not m:
        return [path]
    head, body = path[: m.start()], path[m.end():]
    depth, items, cur = 1, [], ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        if ch == "," and depth == 1:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it:
            out.extend(expand(head + it))
    return out


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def imports(mod, text):
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand(m.group(1)))
    paths.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", text))
    out = []
    for p in paths:
        segs = [s for s in p.split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            base, rest = (), segs[1:]
        elif segs[0] in ("super", "self"):
            base = list(mod)
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
            base, rest = tuple(base), segs
        else:
            continue
        out.append(base + tuple(s.split(" as ")[0] for s in rest))
    return out


def circles(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    found = []
    for crate in CRATES:
        src = os.path.join(ROOT, crate)
        mods = module_files(src)
        graph = {}
        for mod, path in mods.items():
            text = strip_comments(open(path, encoding="utf-8").read())
            targets = set()
            for imp in imports(mod, text):
                # The deepest module the path names.
                for k in range(len(imp), -1, -1):
                    f = mods.get(imp[:k])
                    if f:
                        if f != path and not is_ancestor_decl(mod, imp[:k]):
                            targets.add(f)
                        break
            graph[path] = targets
        for comp in circles(graph):
            found.append([os.path.relpath(f, ROOT) for f in comp])
    for comp in found:
        print("import circle: " + " <-> ".join(comp))
    if found:
        sys.exit(1)
    print("no import circles")


def is_ancestor_decl(mod, target):
    """A file naming its own parent module's items through `super` is an
    import; a path that resolves to the crate root only because it names an
    item re-exported there (`crate::Error`) is too. Only a module naming
    itself is not."""
    return tuple(target) == tuple(mod)


if __name__ == "__main__":
    main()
