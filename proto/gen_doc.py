#!/usr/bin/env python3
"""Generate the tables of proto/PROTOCOL.md from proto/fields.def and reasons.def.

    python3 proto/gen_doc.py --write   rewrite the generated parts of PROTOCOL.md
    python3 proto/gen_doc.py --check   exit 1 if PROTOCOL.md is stale (tests run this)
    python3 proto/gen_doc.py --json    print the protocol tables as JSON (for shims
                                       in other languages, e.g. the Node one)

Only the text between the marker comments is generated:
    <!-- BEGIN GENERATED FIELDS --> ... <!-- END GENERATED FIELDS -->
    <!-- BEGIN GENERATED REASONS --> ... <!-- END GENERATED REASONS -->
Python 3 standard library only.
"""
import datetime
import difflib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS_DEF = os.path.join(HERE, "fields.def")
REASONS_DEF = os.path.join(HERE, "reasons.def")
PROTO_H = os.path.join(HERE, "bf_proto.h")
DOC = os.path.join(HERE, "PROTOCOL.md")

TYPES = {  # fields.def type: (name in the doc and JSON, wire type)
    "STR": ("string", 2),
    "U64": ("uint64", 0),
    "BOOL": ("bool", 0),
}
WIRE_NAMES = {0: "0 varint", 1: "1 fixed64", 2: "2 bytes", 5: "5 fixed32"}


def strip_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def read_defs():
    """The datasets, fields and reasons, in file order, plus the header
    constants, as plain dicts."""
    with open(FIELDS_DEF, encoding="utf-8") as f:
        fields_src = strip_comments(f.read())
    with open(REASONS_DEF, encoding="utf-8") as f:
        reasons_src = strip_comments(f.read())
    with open(PROTO_H, encoding="utf-8") as f:
        header = f.read()

    datasets = [{"id": int(i), "name": n} for i, n in
                re.findall(r"BF_DATASET\(\s*(\d+)\s*,\s*(\w+)\s*\)", fields_src)]
    # BF_DS_<X> in bf_proto.h: bit (1 << dataset id) for each dataset.
    ds_by_macro = {}
    for macro, bits in re.findall(r"#define\s+BF_DS_(\w+)\s+(\w+?)u?\b", header):
        ds_by_macro[macro] = [d["name"] for d in datasets
                              if int(bits, 0) >> d["id"] & 1]

    fields = []
    for tag, name, typ, mx, ds in re.findall(
            r"BF_FIELD\(\s*(\d+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\)",
            fields_src):
        if typ not in TYPES:
            raise SystemExit("gen_doc.py: %s: unknown type %s" % (name, typ))
        if ds not in ds_by_macro:
            raise SystemExit("gen_doc.py: %s: unknown datasets %s" % (name, ds))
        fields.append({"tag": int(tag), "name": name, "type": TYPES[typ][0],
                       "wire_type": TYPES[typ][1], "max": int(mx, 0),
                       "datasets": ds_by_macro[ds]})

    reasons = [{"name": n, "description": d} for n, d in
               re.findall(r'BF_REASON\(\s*(\w+)\s*,\s*"((?:[^"\\]|\\.)*)"\s*\)',
                          reasons_src)]

    def define(name):
        m = re.search(r"#define\s+%s\s+(\w+)" % name, header)
        if not m:
            raise SystemExit("gen_doc.py: %s not found in bf_proto.h" % name)
        return int(m.group(1), 0)

    tags = [f["tag"] for f in fields]
    if len(set(tags)) != len(tags) or not fields or not reasons or not datasets:
        raise SystemExit("gen_doc.py: fields.def or reasons.def did not parse")
    return {
        "protocol_version": define("BF_PROTO_VERSION"),
        "magic": "%02x%02x" % (define("BF_MAGIC0"), define("BF_MAGIC1")),
        "header_length": define("BF_HEADER_LEN"),
        "datasets": datasets,
        "fields": fields,
        "reasons": reasons,
    }


def varint_hex(n):
    out = []
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return " ".join("%02x" % b for b in out)


def limit_text(f):
    mx = f["max"]
    if f["type"] == "string":
        return "%d bytes" % mx if mx else "none"
    if f["type"] == "bool":
        return "0 or 1"
    text = str(mx)
    if mx == 2 ** 32 - 1:
        text += " (2^32-1)"
    elif f["name"].endswith("_time"):
        when = datetime.datetime.fromtimestamp(mx / 1000, datetime.timezone.utc)
        text += " (%s UTC, in ms)" % when.strftime("%Y-%m-%d")
    return text


def fields_block(defs):
    all_ds = [d["name"] for d in defs["datasets"]]
    lines = ["| Id | Dataset |", "| ---: | --- |"]
    lines += ["| %d | `%s` |" % (d["id"], d["name"]) for d in defs["datasets"]]
    lines += ["", "| Tag | Field | Type | Wire type | Key bytes | Limit | Datasets |",
              "| ---: | --- | --- | --- | --- | --- | --- |"]
    for f in defs["fields"]:
        ds = "both" if f["datasets"] == all_ds else ", ".join(
            "`%s`" % d for d in f["datasets"])
        lines.append("| %d | `%s` | %s | %s | `%s` | %s | %s |" % (
            f["tag"], f["name"], f["type"], WIRE_NAMES[f["wire_type"]],
            varint_hex(f["tag"] << 3 | f["wire_type"]), limit_text(f), ds))
    return "\n".join(lines)


def reasons_block(defs):
    lines = ["| Reason | Meaning |", "| --- | --- |"]
    lines += ["| `%s` | %s |" % (r["name"], r["description"]) for r in defs["reasons"]]
    return "\n".join(lines)


def regenerate(doc, defs):
    """doc with its generated blocks replaced; raises ValueError when a pair
    of markers is missing."""
    for name, block in (("FIELDS", fields_block(defs)), ("REASONS", reasons_block(defs))):
        begin = "<!-- BEGIN GENERATED %s -->" % name
        end = "<!-- END GENERATED %s -->" % name
        i, j = doc.find(begin), doc.find(end)
        if i < 0 or j < i:
            raise ValueError("markers %s / %s not found" % (begin, end))
        doc = (doc[:i + len(begin)] +
               "\n<!-- generated by proto/gen_doc.py from proto/%s; do not edit -->\n"
               % ("fields.def" if name == "FIELDS" else "reasons.def") +
               block + "\n" + doc[j:])
    return doc


def sync_doc(path, make, mode, script):
    """Write (mode "--write") or check ("--check") the generated parts of the
    file at path: make(text) returns the text as it should be, or raises
    ValueError. Returns the exit status; a stale file is 1, with a diff on
    stderr. Shared with docs/gen_stats_doc.py."""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    try:
        new = make(doc)
    except ValueError as e:
        print("%s: %s: %s" % (os.path.basename(script), path, e), file=sys.stderr)
        return 1
    if mode == "--write":
        if new != doc:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
        return 0
    if new != doc:
        name = os.path.basename(path)
        sys.stderr.writelines(difflib.unified_diff(
            doc.splitlines(True), new.splitlines(True), name, "generated"))
        print("%s: %s is stale: run python3 %s --write" % (os.path.basename(script), path,
                                                           script), file=sys.stderr)
        return 1
    return 0


def run(argv, usage, doc, make, data, script):
    """The command line of a doc generator: --write or --check doc through
    make(text) (see sync_doc), or --json to print data; usage for anything
    else. Returns the exit status. Shared with docs/gen_stats_doc.py."""
    mode = argv[1] if len(argv) == 2 else None
    if mode not in ("--write", "--check", "--json"):
        print(usage.strip(), file=sys.stderr)
        return 2
    if mode == "--json":
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    return sync_doc(doc, make, mode, script)


def main(argv):
    defs = read_defs()
    return run(argv, __doc__, DOC, lambda doc: regenerate(doc, defs), defs,
               "proto/gen_doc.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
