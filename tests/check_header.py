#!/usr/bin/env python3
"""Checks the public header's hygiene (run by `make test-symbols`).

- Every name the header declares at file scope (macros, types, tags, enum
  constants, functions, globals) starts with os_, OS_ or OSSTORE_.
- Every function has a documentation comment that says what it returns
  (unless it returns void) and from which threads it may be called.
- The comments read as C documentation: no Rust link or section syntax.

Usage: check_header.py include/osstore.h. Prints "header: N passed, M
failed" and exits non-zero on a failure.
"""
import re
import sys

PREFIX = re.compile(r"^(os_|OS_|OSSTORE_)")
RUST_SYNTAX = [
    (re.compile(r"# Safety|# Errors|# Panics"), "a Rust doc section heading"),
    (re.compile(r"\[`[^`]*`\]"), "a Rust doc link ([`name`])"),
    (re.compile(r"\b(super|crate|self)::"), "a Rust path"),
    (re.compile(r"\b(Option|Result|Vec|Box|Arc)<"), "a Rust type"),
    (re.compile(r"&mut |\bunsafe\b|\bpanic!"), "Rust syntax"),
]


def main(path):
    text = open(path, encoding="utf-8").read()
    passed, failed = 0, []

    def check(ok, what):
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(what)

    # Comments: their text is checked for Rust syntax, then blanked (line
    # structure kept) so that declarations are parsed without them.
    comments = []

    def blank(m):
        comments.append((text.count("\n", 0, m.start()), m.group(0)))
        return re.sub(r"[^\n]", " ", m.group(0))

    code = re.sub(r"/\*.*?\*/", blank, text, flags=re.S)
    for line, comment in comments:
        for pattern, what in RUST_SYNTAX:
            check(not pattern.search(comment), f"line {line + 1}: comment has {what}: {comment[:60]!r}")

    names = []  # (name, kind, line)
    depth = 0  # brace depth: 0 is file scope
    enum_depth = None  # the depth of an enum's constants while in one
    lines = code.split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        lineno = i + 1
        m = re.match(r"#\s*define\s+(\w+)", line)
        if m:
            names.append((m.group(1), "macro", lineno))
            # Skip continuation lines.
            while lines[i].rstrip().endswith("\\"):
                i += 1
            i += 1
            continue
        if line.startswith("#") or not line or line == 'extern "C" {' or re.match(r'}\s*// extern "C"', line):
            i += 1
            continue
        if depth == 0:
            for m in re.finditer(r"\b(?:struct|enum|union)\s+(\w+)", line):
                names.append((m.group(1), "tag", lineno))
            m = re.search(r"\benum\b[^{]*{([^}]*)}", line)  # an enum on one line
            if m:
                for constant in re.findall(r"(\w+)\s*(?:=[^,]*)?(?:,|$)", m.group(1)):
                    names.append((constant, "enum constant", lineno))
            m = re.match(r"typedef\b.*\(\s*\*\s*(\w+)\s*\)", line)
            if m:
                names.append((m.group(1), "typedef", lineno))
            elif line.startswith("typedef"):
                # The name ends the statement (which may span lines).
                j, stmt = i, line
                while not stmt.rstrip().endswith(";") and j + 1 < len(lines):
                    j += 1
                    stmt += " " + lines[j].strip()
                m = re.search(r"(\w+)\s*(\[[^\]]*\])?\s*;\s*$", stmt)
                if m and "{" not in stmt:
                    names.append((m.group(1), "typedef", lineno))
            elif line.startswith("extern") and "(" not in line and '"C"' not in line:
                m = re.search(r"(\w+)\s*(\[[^\]]*\])?\s*;\s*$", line)
                if m:
                    names.append((m.group(1), "global", lineno))
            else:
                m = re.match(r"[\w\s\*]*?\b(\w+)\s*\(", line)
                if m and not line.startswith(("typedef", "extern")):
                    names.append((m.group(1), "function", lineno))
                    # The doc comment must end on the line just above.
                    doc = next((c for l, c in comments if l + c.count("\n") == i - 1), None)
                    check(doc is not None and doc.startswith("/**"),
                          f"line {lineno}: function {m.group(1)} has no documentation comment")
                    if doc:
                        returns_void = re.match(r"void\s+" + m.group(1), line) is not None
                        check(returns_void or re.search(r"\bReturns?\b|\breturns?\b", doc),
                              f"line {lineno}: {m.group(1)}: the documentation does not say what it returns")
                        check(re.search(r"\bThreads?:", doc),
                              f"line {lineno}: {m.group(1)}: the documentation does not say from which threads "
                              "it may be called (a 'Threads:' sentence)")
        elif re.match(r"\w+\s*(=.*)?,?$", line) and enum_depth is not None and depth == enum_depth:
            names.append((re.match(r"\w+", line).group(0), "enum constant", lineno))
        opened = line.count("{")
        if opened and depth == 0:
            enum_depth = 1 if re.search(r"\benum\b", line) else None
        depth += opened - line.count("}")
        if depth == 0:
            enum_depth = None
        i += 1

    check(any(kind == "function" for _, kind, _ in names), "no function found: is the parser broken?")
    for name, kind, lineno in names:
        if kind == "macro" and name == "OSSTORE_H":
            continue
        check(PREFIX.match(name), f"line {lineno}: {kind} {name} does not start with os_, OS_ or OSSTORE_")

    for what in failed:
        print("FAIL:", what)
    print(f"header: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "include/osstore.h"))
