#!/usr/bin/env python3
"""Generate the stats key table of docs/operations.md from daemon/stats.def.

    python3 docs/gen_stats_doc.py --write   rewrite the generated table
    python3 docs/gen_stats_doc.py --check   exit 1 if it is stale (tests run this)
    python3 docs/gen_stats_doc.py --json    print the rows of stats.def as JSON

Only the text between <!-- BEGIN GENERATED STATS --> and
<!-- END GENERATED STATS --> is generated. Python 3 standard library only.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STATS_DEF = os.path.join(REPO, "daemon", "stats.def")
DOC = os.path.join(HERE, "operations.md")
BEGIN, END = "<!-- BEGIN GENERATED STATS -->", "<!-- END GENERATED STATS -->"

sys.path.insert(0, os.path.join(REPO, "proto"))
import gen_doc  # noqa: E402  (comments; the --write/--check/--json command line)

STR = r'"((?:[^"\\]|\\.)*)"'
NAME = r'(?:NULL|' + STR + r')'
ROW = {  # macro: (regex of its arguments, names of the groups)
    "FIELD": (r"(\w+)\s*,\s*(counter|gauge)\s*,\s*" + NAME + r"\s*,\s*" + STR,
              ("key", "type", "prom", "help")),
    "MAP": (r"(\w+)\s*,\s*(\w+)\s*,\s*" + STR + r"\s*,\s*" + NAME + r"\s*,\s*" + STR,
            ("key", "index", "label", "prom", "help")),
    "SUM": (r"(\w+)\s*,\s*(\w+)\s*,\s*" + STR, ("key", "map", "help")),
    "READ": (r"(\w+)\s*,\s*(counter|gauge)\s*,\s*([^,]+?)\s*,\s*" + NAME + r"\s*,\s*" + STR,
             ("key", "type", "reader", "prom", "help")),
    "QUANTILES": (r"(\w+)\s*,\s*([^,]+?)\s*,\s*" + NAME + r"\s*,\s*" + STR,
                  ("key", "reader", "prom", "help")),
    "TEXT": (r"(\w+)\s*,\s*([^,]+?)\s*,\s*" + NAME + r"\s*,\s*" + NAME + r"\s*,\s*" + STR,
             ("key", "reader", "states", "prom", "help")),
    "READ_MAP": (r"(\w+)\s*,\s*(\w+)\s*,\s*" + STR + r"\s*,\s*([^,]+?)\s*,\s*" + NAME
                 + r"\s*,\s*" + STR, ("key", "index", "label", "reader", "prom", "help")),
    "STATE_MAP": (r"(\w+)\s*,\s*(\w+)\s*,\s*" + STR + r"\s*,\s*([^,]+?)\s*,\s*" + NAME
                  + r"\s*,\s*" + NAME + r"\s*,\s*" + STR,
                  ("key", "index", "label", "reader", "states", "prom", "help")),
}
INDEX_TEXT = {"dataset": "by dataset", "reason": "by reject reason",
              "drop": "by drop reason", "status": "by HTTP status"}


def read_rows():
    """The rows of stats.def in order: dicts with kind (FIELD, MAP, ...),
    key, type, prom (None: not exported), label (None: no label), help, and
    index, map or reader as the kind has them."""
    with open(STATS_DEF, encoding="utf-8") as f:
        src = gen_doc.strip_comments(f.read())
    body = src[src.rindex("#endif"):]  # after the default definitions
    rows = []
    for m in re.finditer(r"^BF_STAT_(\w+)\((.*?)\)\s*$", body, re.M | re.S):
        kind, args = m.group(1), m.group(2)
        if kind not in ROW:
            raise SystemExit("gen_stats_doc.py: unknown row BF_STAT_%s" % kind)
        pattern, names = ROW[kind]
        a = re.fullmatch(r"\s*" + pattern + r"\s*", args, re.S)
        if not a:
            raise SystemExit("gen_stats_doc.py: row does not parse: BF_STAT_%s(%s)"
                             % (kind, " ".join(args.split())))
        row = dict(zip(names, a.groups()), kind=kind)
        # Every row with the same fields: what the CLI exports it as.
        row.setdefault("prom", None)
        row.setdefault("type", {"QUANTILES": "summary", "TEXT": "gauge", "READ_MAP": "gauge",
                                "STATE_MAP": "gauge"}.get(kind, "counter"))
        row.setdefault("label", {"QUANTILES": "quantile", "TEXT": "state"}.get(kind))
        rows.append(row)
    keys = [r["key"] for r in rows]
    if not rows or len(set(keys)) != len(keys):
        raise SystemExit("gen_stats_doc.py: stats.def did not parse (or a key is twice)")
    return rows


def kind_text(r):
    k = r["kind"]
    if k == "FIELD":
        return r["type"]
    if k == "MAP":
        return "counters, " + INDEX_TEXT.get(r["index"], "by " + r["index"])
    if k == "SUM":
        return "sum of `%s`" % r["map"]
    if k == "READ":
        return r["type"]
    if k == "TEXT":
        return ("one of %s" % ", ".join("`%s`" % v for v in r["states"].split())
                if r.get("states") else "text or null")
    if k == "READ_MAP":
        return "gauges, " + INDEX_TEXT.get(r["index"], "by " + r["index"])
    if k == "STATE_MAP":
        return ("one of %s, " % ", ".join("`%s`" % v for v in r["states"].split())
                + INDEX_TEXT.get(r["index"], "by " + r["index"]))
    return "p50, p99 (ms or null), window_s"


def prom_text(r):
    if not r.get("prom"):
        return "(not exported)"
    name = "birdfeeder_" + r["prom"]
    if r["kind"] in ("MAP", "READ_MAP"):
        name += '{%s}' % r["label"]
    elif r["kind"] == "STATE_MAP":
        name += '{%s,state}' % r["label"]
    elif r["kind"] == "QUANTILES":
        name += "{quantile}"
    elif r["kind"] == "TEXT":
        name += "{state}"
    return "`%s`" % name


def table(rows):
    lines = ["| Key | Kind | Prometheus | Meaning |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append("| `%s` | %s | %s | %s |" % (
            r["key"], kind_text(r), prom_text(r), r["help"].replace("|", "\\|")))
    return "\n".join(lines)


def regenerate(doc, rows):
    """doc with its generated table replaced; ValueError without the markers."""
    i, j = doc.find(BEGIN), doc.find(END)
    if i < 0 or j < i:
        raise ValueError("markers %s / %s not found" % (BEGIN, END))
    return (doc[:i + len(BEGIN)] +
            "\n<!-- generated by docs/gen_stats_doc.py from daemon/stats.def; do not edit -->\n" +
            table(rows) + "\n" + doc[j:])


def main(argv):
    rows = read_rows()
    return gen_doc.run(argv, __doc__, DOC, lambda doc: regenerate(doc, rows), rows,
                       "docs/gen_stats_doc.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
