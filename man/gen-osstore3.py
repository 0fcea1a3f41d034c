#!/usr/bin/env python3
"""Writes osstore(3), the library's man page, from the C header.

Usage: gen-osstore3.py HEADER VERSION > osstore.3

Every declaration of the header (function, macro, struct, enum, typedef)
appears with its documentation comment, functions grouped by topic, so the
page cannot drift from the header. Fails when a function would be left out.
"""
import re
import sys

# Topics, in order: (title, pattern on the function name). First match wins.
TOPICS = [
    ("LIBRARY", r"os_(version|last_error|free)$"),
    ("LOGGING", r"os_log"),
    ("OPENING AND CLOSING A STORE", r"os_store_(open|open_ex|free|path)$"),
    ("LOOK-UPS AND COMMITS", r"os_store_(new|get|contains|contains_ex|resolve_ref|commit)$"),
    ("TEMPORARY DIRECTORIES AND THE HOST TREE", r"os_store_(tempdir|host_tree)$"),
    ("CACHE AND MAINTENANCE", r"os_store_(gc|config_.*|stat|list|evict)$"),
    ("OBJECTS", r"os_object_(id|mode|tree|init|finalize|export|release)$"),
    ("COPIES WITH PROGRESS", r"os_object_.*_ex$"),
    ("OBJECT METADATA", r"os_object_"),
    ("SHARING THROUGH A REGISTRY", r"os_store_(push|pull)"),
    ("THE STORE SERVER", r"os_server_"),
    ("OTHER FUNCTIONS", r"os_"),
]

DECL = re.compile(r"/\*\*(.*?)\*/\s*(.*?)(?=\n\s*\n|\n/\*\*|\Z)", re.S)


def roff(text):
    """Escapes text for roff and turns `code` into bold."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"`([^`]*)`", lambda m: "\\fB" + m.group(1) + "\\fR", text)
    text = re.sub(r"\[`?([^\]`]*)`?\](\([^)]*\))?", r"\\fB\1\\fR", text)
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def doc_paragraphs(comment):
    """The comment's text as roff paragraphs ("# Safety" becomes a label)."""
    lines = [re.sub(r"^\s*\* ?", "", l) for l in comment.strip("\n").split("\n")]
    out, para = [], []

    def flush():
        if para:
            out.append(roff(" ".join(para)))
            para.clear()

    for line in lines:
        if not line.strip():
            flush()
        elif line.startswith("# "):
            flush()
            out.append("\\fI" + roff(line[2:]) + ":\\fR")
        elif line.lstrip().startswith("- "):
            flush()
            para.append("\\(bu " + line.lstrip()[2:])
        else:
            para.append(line.strip())
    flush()
    return out


def main():
    header_path, version = sys.argv[1], sys.argv[2]
    header = open(header_path, encoding="utf-8").read()
    # Comments inside structs and enums document members: keep them with
    # their declaration by matching whole braces first.
    items = []
    pos = 0
    while True:
        start = header.find("/**", pos)
        if start < 0:
            break
        end = header.find("*/", start)
        comment = header[start + 3 : end]
        rest = header[end + 2 :]
        body = rest.lstrip()
        if body.startswith(("struct", "enum")) and "{" in body.split(";")[0]:
            depth, i = 0, 0
            while True:
                c = body[i]
                depth += c == "{"
                depth -= c == "}"
                i += 1
                if c == "}" and depth == 0:
                    break
            decl = body[: body.index(";", i) + 1]
        elif body.startswith("#define"):
            decl = body.split("\n", 1)[0]
        else:
            decl = body[: body.index(";") + 1]
        items.append((comment, decl))
        pos = end + 2 + (len(rest) - len(body)) + len(decl)

    functions = {t: [] for t, _ in TOPICS}
    types = []
    for comment, decl in items:
        m = re.search(r"\b(os_[a-z0-9_]+)\s*\(", decl)
        if m and not decl.startswith(("typedef", "#define")):
            name = m.group(1)
            topic = next(t for t, p in TOPICS if re.match(p, name))
            functions[topic].append((name, comment, decl))
        else:
            types.append((comment, decl))

    declared = set(re.findall(r"^[^#/ *].*?\b(os_[a-z0-9_]+)\s*\(", header, re.M))
    documented = {n for fs in functions.values() for n, _, _ in fs}
    if declared != documented:
        sys.exit(f"gen-osstore3: functions left out: {sorted(declared - documented)}")

    w = sys.stdout.write
    w(f'.TH OSSTORE 3 "" "osstore {version}" "Library Functions Manual"\n')
    w(".SH NAME\nosstore \\- a store of filesystem trees for OS image builders (C library)\n")
    w(".SH SYNOPSIS\n.nf\n.B #include <osstore.h>\n.PP\n")
    w(".B cc prog.c $(pkg-config \\-\\-cflags \\-\\-libs osstore)\n.fi\n")
    w(".SH DESCRIPTION\n")
    w(roff(open(sys.argv[3], encoding="utf-8").read()) if len(sys.argv) > 3 else "")
    w("\n")
    for topic, _ in TOPICS:
        if not functions[topic]:
            continue
        w(f".SH {topic}\n")
        for name, comment, decl in functions[topic]:
            w(".PP\n.nf\n.B " + roff(" ".join(decl.split())) + "\n.fi\n.RS\n")
            w("\n.PP\n".join(doc_paragraphs(comment)) + "\n.RE\n")
    w(".SH TYPES AND CONSTANTS\n")
    for comment, decl in types:
        # Members (of structs and enums) with their own comments.
        members = re.findall(r"/\*\*(.*?)\*/\s*([^;{}]*?[;,])", decl, re.S)
        code_lines = [l.strip() for l in re.sub(r"/\*\*.*?\*/", "", decl, flags=re.S).split("\n")]
        w(".PP\n.nf\n")
        for line in filter(None, code_lines):
            inner = line[0] not in "#}" and not line.startswith(("struct", "enum", "typedef"))
            w(".B " + ("\\ \\ \\ \\ " if inner else "") + roff(line) + "\n")
        w(".fi\n.RS\n")
        w("\n.PP\n".join(doc_paragraphs(comment)) + "\n")
        for member_doc, member in members:
            w(".TP\n.B " + roff(" ".join(member.rstrip(";,").split())) + "\n")
            w("\n".join(doc_paragraphs(member_doc)) + "\n")
        w(".RE\n")
    w(".SH SEE ALSO\n.BR osstore (1),\n.BR osstore\\-client (1),\n.BR pkg\\-config (1)\n")


main()
