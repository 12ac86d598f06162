#!/usr/bin/env python3
"""make layout-check: the files of a crate's source form a tree, not a circle.

For each folder given, reads every `.rs` file's references to other modules of its crate
(`use crate::...`, `crate::...::`, `super::...`, `self::...`, tests included) and fails when:
- two or more files reach each other (a cycle: every file of it is listed), or
- a file imports the module file of its own folder or an ancestor's (an arrow back up: a child
  of `archive/` reaching into `archive/mod.rs`).

Usage: layout-check.py SRC_DIR [SRC_DIR ...]   (each the `src/` of a crate, or a folder in it)
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def crate_root(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if (parent / "lib.rs").exists() or (parent / "main.rs").exists():
            if parent.name == "src":
                return parent
    raise SystemExit(f"{path}: not inside a crate's src/")


def module_of(root: Path, file: Path) -> list[str]:
    """The module path of a file: src/http/mod.rs is ["http"], src/http/range.rs ["http", "range"]."""
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def file_of(root: Path, module: list[str]) -> Path | None:
    """The file defining the longest prefix of `module` that is a module file."""
    for n in range(len(module), -1, -1):
        base = root.joinpath(*module[:n]) if n else root
        for candidate in ([base.with_suffix(".rs"), base / "mod.rs"] if n else [root / "lib.rs", root / "main.rs"]):
            if candidate.exists():
                return candidate
    return None


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def references(root: Path, file: Path) -> set[Path]:
    text = strip_comments(file.read_text())
    here = module_of(root, file)
    # A mod.rs's `self` is its own folder; a leaf file's `super` is its folder.
    folder = here if file.name in ("mod.rs", "lib.rs", "main.rs") else here[:-1]
    this = here

    def resolve(anchor: str, rest: list[str]) -> list[str]:
        if anchor == "crate":
            return rest
        if anchor == "self":
            return this + rest
        base = folder if file.name not in ("mod.rs", "lib.rs", "main.rs") else folder[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
        return base + rest

    found: list[list[str]] = []
    for anchor, path, group in USE_GROUP.findall(text):
        prefix = [p for p in path.split("::") if p]
        for item in re.split(r",", group):
            names = [p for p in re.split(r"::|\s+as\s+", item.strip().strip("{}")) if p and p != "self"]
            found.append(resolve(anchor, prefix + [re.sub(r"\W", "", n) for n in names[:1]]))
    for anchor, path in PATH.findall(text):
        found.append(resolve(anchor, [p for p in path.split("::") if p]))
    # A child module named without `self::` (`tracking::Connection`, `use tracking::X`).
    for child in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", text, re.M):
        if re.search(rf"(?<![\w:]){child}::", text):
            found.append(folder + [child] if file.name in ("mod.rs", "lib.rs", "main.rs") else here + [child])
    out = set()
    for module in found:
        target = file_of(root, module)
        if target is not None and target != file:
            out.add(target)
    return out


def main(dirs: list[str]) -> int:
    failures = []
    for d in dirs:
        folder = Path(d).resolve()
        root = crate_root(folder)
        files = sorted(folder.rglob("*.rs"))
        graph = {f: {t for t in references(root, f) if folder in t.parents or t == folder} for f in files}
        # Arrows back up: a file importing its own folder's mod.rs (or an ancestor's).
        for f, targets in graph.items():
            for t in targets:
                if t.name == "mod.rs" and t.parent in f.parents and f.name != "mod.rs" or (
                    t.name == "mod.rs" and f.name == "mod.rs" and t.parent in f.parent.parents
                ):
                    failures.append(f"{f.relative_to(root)} imports {t.relative_to(root)}, its own folder's module (an arrow back up)")
        # Cycles: strongly connected components of more than one file.
        index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

        def connect(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph.get(v, ()):
                if w not in index:
                    connect(w)
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
                    comps.append(sorted(comp))

        for f in files:
            if f not in index:
                connect(f)
        for comp in comps:
            names = ", ".join(str(c.relative_to(root)) for c in comp)
            failures.append(f"a circle of {len(comp)} files: {names}")
        edges = sum(len(t) for t in graph.values())
        print(f"{folder.relative_to(Path.cwd()) if Path.cwd() in folder.parents else folder}: {len(files)} files, {edges} imports between them")
    for f in failures:
        print(f"layout: {f}")
    if failures:
        return 1
    print("layout: ok (no circle, no arrow back up)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
