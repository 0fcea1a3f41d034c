#!/usr/bin/env python3
"""Writes a C program that prints the ABI-relevant layout of osstore.h.

Usage: layout.py HEADER > layout.c; cc layout.c -I...; ./a.out

The program prints one line per fact: the size (unless it starts with
struct_size, and so may grow) and alignment of every struct, the offset and size of every member, and the value of every
OS_* constant (macros and enumerators; version macros excepted, they
change with each release). Rust's debug info does not describe the C
types, so abidw cannot see these; tests/check_abi.sh compares the lines
with the baseline in abi/.
"""
import re
import sys

header = open(sys.argv[1], encoding="utf-8").read()
# Comments out, so that members and values are plain declarations.
code = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
code = re.sub(r"//[^\n]*", "", code)

out = ["#include <osstore.h>", "#include <stdio.h>", "#include <stddef.h>", "",
       "int main(void)", "{"]


def emit(fmt, *args):
    out.append('    printf("%s\\n", %s);' % (fmt, ", ".join(args)))


for name, body in re.findall(r"struct\s+(os_\w+)\s*\{(.*?)\};", code, re.S):
    t = "struct " + name
    # A struct that starts with struct_size may grow at its end by design;
    # the offsets of its members are what must not change.
    if not re.match(r"\s*size_t\s+struct_size\b", body):
        emit(f"sizeof {t} %zu", f"sizeof({t})")
    emit(f"alignof {t} %zu", f"offsetof(struct {{ char c; {t} x; }}, x)")
    for decl in filter(None, (d.strip() for d in body.split(";"))):
        m = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl) or re.search(r"(\w+)\s*(\[[^\]]*\])?$", decl)
        member = m.group(1)
        emit(f"offsetof {t}.{member} %zu", f"offsetof({t}, {member})")
        emit(f"sizeof {t}.{member} %zu", f"sizeof((({t} *)0)->{member})")

constants = re.findall(r"^#define\s+((?:OS|OSSTORE)_\w+)\s+\S", code, re.M)
for enum_body in re.findall(r"enum\s+\w*\s*\{(.*?)\}", code, re.S):
    constants += re.findall(r"\b(OS_\w+)\s*(?:=|,|$)", enum_body)
for c in constants:
    if "VERSION" in c or c.endswith("_H"):
        continue
    emit(f"value {c} %lld", f"(long long)({c})")

out += ["    return 0;", "}"]
print("\n".join(out))
