#!/usr/bin/env python3
"""Generate proto/vectors/vectors.json, the golden vectors of protocol v1.

    python3 proto/vectors/gen_vectors.py            rewrite vectors.json
    python3 proto/vectors/gen_vectors.py --check    exit 1 if vectors.json is stale

The bytes are built by the small encoder below, written from PROTOCOL.md and
not from the C sources: the C codec is checked against a second
implementation, not against itself. For the same reason the field table here
is typed in by hand instead of being read from fields.def, so a tag that is
renumbered there by mistake fails the tests instead of moving the vectors.

Vector forms (see PROTOCOL.md, "Golden vectors"):
    {"name", "hex",  "event"}            valid: decode(hex) == event and,
                                         unless "decode_only", encode(event) == hex
    {"name", "hex",  "reject"}           decode, then validate, gives reject
    {"name", "json", "event"|"reject"}   the same for a JSON datagram's text
Every datagram, hex or json, goes through the daemon's dispatch: a first byte
'{' is a JSON datagram, anything else a binary one.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "vectors.json")

MAGIC = b"\xbf\xfd"
VERSION = 1
DATASETS = {"image_events": 1, "llm_events": 2}
WT_VARINT, WT_FIXED64, WT_BYTES, WT_FIXED32 = 0, 1, 2, 5

# tag: (name, type). S = UTF-8 string, U = unsigned integer, B = boolean.
FIELDS = {
    1: ("id", "S"),
    2: ("user_id", "S"),
    3: ("username", "S"),
    4: ("tier", "S"),
    5: ("model", "S"),
    6: ("start_time", "U"),
    7: ("end_time", "U"),
    8: ("duration_ms", "U"),
    9: ("status", "S"),
    10: ("error_message", "S"),
    11: ("prompt", "S"),
    12: ("width", "U"),
    13: ("height", "U"),
    14: ("steps", "U"),
    15: ("cached", "B"),
    16: ("referrer", "S"),
    17: ("ip", "S"),
    18: ("prompt_tokens", "U"),
    19: ("completion_tokens", "U"),
    20: ("cached_tokens", "U"),
    21: ("stream", "B"),
}
TAGS = {name: tag for tag, (name, _) in FIELDS.items()}


# --- the encoder ------------------------------------------------------------

def varint(n):
    """Unsigned LEB128: seven bits per byte, low group first."""
    if n < 0 or n >= 1 << 64:
        raise ValueError("varint out of range: %r" % n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(tag, wire_type):
    return varint(tag << 3 | wire_type)


def header(dataset_id, version=VERSION):
    return MAGIC + bytes([version, dataset_id])


def f_str(tag, value):
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return key(tag, WT_BYTES) + varint(len(raw)) + raw


def f_int(tag, value):
    return key(tag, WT_VARINT) + varint(int(value))


def encode_event(event):
    """The canonical datagram of an event dict ("dataset" name + fields)."""
    out = bytearray(header(DATASETS[event["dataset"]]))
    for tag in sorted(FIELDS):
        name, typ = FIELDS[tag]
        if event.get(name) is None:
            continue
        value = event[name]
        out += f_str(tag, value) if typ == "S" else f_int(tag, int(value))
    return bytes(out)


def replace_invalid_utf8(raw):
    """Each byte that does not start a valid UTF-8 sequence becomes U+FFFD,
    as the daemon writes rows (Python's errors="replace" would instead
    replace a cut-short sequence by one U+FFFD)."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        want = 1 if c < 0x80 else 2 if c < 0xE0 else 3 if c < 0xF0 else 4
        try:
            out.append(raw[i:i + want].decode("utf-8"))
            i += want
        except UnicodeDecodeError:
            out.append("\ufffd")
            i += 1
    return "".join(out)


def canonical_event(event):
    """The event as the C decoder prints it: dataset first, then fields in tag
    order; null values dropped, booleans as true/false."""
    out = {"dataset": event["dataset"]}
    for tag in sorted(FIELDS):
        name, typ = FIELDS[tag]
        if event.get(name) is None:
            continue
        out[name] = bool(event[name]) if typ == "B" else event[name]
    return out


# --- the vectors ------------------------------------------------------------

VECTORS = []


def valid(name, event, **extra):
    """A canonical binary vector: the encoder's bytes must decode to event."""
    ev = canonical_event(event)
    VECTORS.append(dict(name=name, hex=encode_event(ev).hex(), event=ev, **extra))


def decode_only(name, raw, event):
    """Non-canonical bytes that must still decode to event."""
    VECTORS.append(dict(name=name, hex=bytes(raw).hex(),
                        event=canonical_event(event), decode_only=True))


def reject(name, raw, reason):
    VECTORS.append(dict(name=name, hex=bytes(raw).hex(), reject=reason))


def json_valid(name, text, event):
    VECTORS.append(dict(name=name, json=text, event=canonical_event(event)))


def json_reject(name, text, reason):
    VECTORS.append(dict(name=name, json=text, reject=reason))


IMG = DATASETS["image_events"]
LLM = DATASETS["llm_events"]
T0 = 1764441205123  # 2025-11-29 18:33:25.123 UTC, in ms
MODEL = f_str(5, "flux")

FULL_COMMON = {
    "id": "01JDQ6ZK7V3N8X2M4P5R6S7T8U",
    "user_id": "u_48213",
    "username": "ada",
    "tier": "flower",
    "start_time": T0,
    "end_time": T0 + 2350,
    "duration_ms": 2350,
    "status": "success",
    "error_message": "",
    "cached": False,
    "referrer": "https://example.org/gallery",
    "ip": "2001:db8::7",
}

WORKED_EXAMPLE = {"dataset": "image_events", "id": "r1", "model": "flux",
                  "start_time": T0, "width": 1024, "cached": True}


def build():
    # Valid, canonical: encode(event) == hex and decode(hex) == event.
    valid("image minimal", {"dataset": "image_events", "model": "flux"})
    valid("llm minimal", {"dataset": "llm_events", "model": "gpt-5-nano"})
    valid("worked example (PROTOCOL.md)", WORKED_EXAMPLE)
    valid("image full", dict(FULL_COMMON, dataset="image_events", model="gptimage",
                             prompt="a lighthouse at dusk, oil painting",
                             width=1024, height=768, steps=30,
                             prompt_tokens=52, completion_tokens=4160))
    valid("llm full", dict(FULL_COMMON, dataset="llm_events", model="gpt-4.1-nano",
                           tier="nectar", cached=True, prompt_tokens=1234,
                           completion_tokens=567, cached_tokens=1024, stream=True))
    valid("every field type: string, integer, true, false",
          {"dataset": "llm_events", "model": "m", "id": "x", "duration_ms": 7,
           "cached": True, "stream": False})
    valid("integers zero are present",
          {"dataset": "image_events", "model": "flux", "start_time": 0,
           "end_time": 0, "width": 0, "height": 0, "steps": 0, "cached": False})
    valid("varint boundaries 127 128 16383 16384",
          {"dataset": "image_events", "model": "flux", "duration_ms": 127,
           "width": 128, "height": 16383, "prompt_tokens": 16384})
    valid("multi-byte varints at their limits",
          {"dataset": "image_events", "model": "flux", "start_time": 4102444800000,
           "end_time": 4102444800000, "duration_ms": 4294967295,
           "width": 65535, "height": 16384, "steps": 10000,
           "prompt_tokens": 4294967295, "completion_tokens": 2 ** 31})
    valid("large timestamps", {"dataset": "llm_events", "model": "m",
                               "start_time": T0, "end_time": T0 + 86400000})
    valid("empty strings", {"dataset": "image_events", "model": "flux", "id": "",
                            "user_id": "", "username": "", "tier": "", "status": "",
                            "error_message": "", "prompt": "", "referrer": "", "ip": ""})
    valid("UTF-8 prompt", {"dataset": "image_events", "model": "flux",
                           "prompt": "一只戴帽子的猫 🐈 café, «ночь»"})
    valid("strings at their byte limits",
          {"dataset": "image_events", "id": "i" * 64, "user_id": "u" * 128,
           "username": "n" * 128, "tier": "t" * 32, "model": "m" * 128,
           "status": "error", "ip": "1" * 64})
    valid("string with a two-byte length",
          {"dataset": "llm_events", "model": "m", "status": "error",
           "error_message": "upstream timeout; " * 12})
    valid("prompt over 120 characters is valid on the wire",
          {"dataset": "image_events", "model": "flux", "prompt": "p" * 300})
    valid("tags 16 and up take a two-byte key",
          {"dataset": "llm_events", "model": "m", "referrer": "r", "ip": "127.0.0.1",
           "prompt_tokens": 1, "completion_tokens": 2, "cached_tokens": 3,
           "stream": True})
    valid("field of the other dataset is carried",
          {"dataset": "llm_events", "model": "m", "prompt": "hi", "width": 512})
    valid("field of the other dataset is not range-checked",
          {"dataset": "llm_events", "model": "m", "width": 70000})
    valid("start equals end", {"dataset": "llm_events", "model": "m",
                               "start_time": T0, "end_time": T0})

    # Valid, not canonical: decode only.
    minimal = {"dataset": "image_events", "model": "flux"}
    decode_only("fields in descending tag order",
                header(IMG) + f_int(12, 512) + MODEL + f_str(1, "a"),
                dict(minimal, id="a", width=512))
    decode_only("repeated tag: last wins",
                header(IMG) + f_str(5, "turbo") + MODEL + f_int(12, 1) + f_int(12, 2),
                dict(minimal, width=2))
    decode_only("unknown tag, wire type 0 (varint), skipped",
                header(IMG) + key(100, WT_VARINT) + varint(2 ** 64 - 1) + MODEL,
                minimal)
    decode_only("unknown tag, wire type 1 (fixed64), skipped",
                header(IMG) + MODEL + key(22, WT_FIXED64) + bytes(range(8)), minimal)
    decode_only("unknown tag, wire type 2 (bytes), skipped",
                header(IMG) + key(63, WT_BYTES) + varint(3) + b"new" + MODEL, minimal)
    decode_only("unknown tag, wire type 5 (fixed32), skipped",
                header(IMG) + MODEL + key(2 ** 40, WT_FIXED32) + b"\x01\x02\x03\x04",
                minimal)
    decode_only("unknown tag with an empty bytes value, skipped",
                header(IMG) + MODEL + key(30, WT_BYTES) + varint(0), minimal)
    decode_only("tag 0 is an unknown tag, skipped",
                header(IMG) + key(0, WT_VARINT) + varint(5) + MODEL, minimal)
    decode_only("over-long varint is accepted",
                header(IMG) + MODEL + key(12, WT_VARINT) + b"\x80\x88\x00",
                dict(minimal, width=1024))
    bad_utf8 = b"a\xffb\xe2\x82 \xc0\x80 \xed\xa0\x80 \xf0\x9f\x90\x88"
    decode_only("invalid UTF-8: U+FFFD for each bad byte",
                header(IMG) + MODEL + f_str(11, bad_utf8),
                dict(minimal, prompt=replace_invalid_utf8(bad_utf8)))

    # Rejects, binary.
    reject("empty datagram", b"", "empty")
    reject("plain text", b"hello birdfeeder", "bad_magic")
    reject("one byte", b"\x00", "bad_magic")
    reject("second magic byte wrong", b"\xbf\x00\x01\x01" + MODEL, "bad_magic")
    reject("magic bytes swapped", b"\xfd\xbf\x01\x01" + MODEL, "bad_magic")
    reject("fields without a header", MODEL, "bad_magic")
    reject("JSON array is not a JSON datagram", b"[1,2]", "bad_magic")
    reject("version 0", header(IMG, version=0) + MODEL, "bad_version")
    reject("version 2", header(IMG, version=2) + MODEL, "bad_version")
    reject("version 255", header(IMG, version=255) + MODEL, "bad_version")
    reject("truncated header: magic only", MAGIC, "truncated")
    reject("truncated header: first magic byte", b"\xbf", "truncated")
    reject("truncated header: no dataset", MAGIC + b"\x01", "truncated")
    reject("truncated in a key", header(IMG) + MODEL + b"\x82", "truncated")
    reject("truncated before a varint value", header(IMG) + MODEL + key(6, WT_VARINT),
           "truncated")
    reject("truncated inside a varint value",
           header(IMG) + MODEL + key(6, WT_VARINT) + b"\x80\x80", "truncated")
    reject("truncated before a string length", header(IMG) + key(5, WT_BYTES),
           "truncated")
    reject("truncated inside a string length",
           header(IMG) + MODEL + key(10, WT_BYTES) + b"\x80", "truncated")
    reject("string length past the end",
           header(IMG) + key(5, WT_BYTES) + varint(5) + b"flux", "truncated")
    reject("unknown bytes field past the end",
           header(IMG) + MODEL + key(40, WT_BYTES) + varint(100) + b"x", "truncated")
    reject("unknown fixed64 truncated",
           header(IMG) + MODEL + key(22, WT_FIXED64) + bytes(7), "truncated")
    reject("unknown fixed32 truncated",
           header(IMG) + MODEL + key(22, WT_FIXED32) + bytes(3), "truncated")
    reject("11-byte varint value",
           header(IMG) + MODEL + key(6, WT_VARINT) + b"\xff" * 10 + b"\x01", "bad_varint")
    reject("10-byte varint over 64 bits",
           header(IMG) + MODEL + key(6, WT_VARINT) + b"\xff" * 9 + b"\x02", "bad_varint")
    reject("11-byte varint key", header(IMG) + MODEL + b"\x80" * 10 + b"\x00",
           "bad_varint")
    reject("11-byte string length",
           header(IMG) + MODEL + key(10, WT_BYTES) + b"\x80" * 10 + b"\x00", "bad_varint")
    for wt in (3, 4, 6, 7):
        reject("wire type %d on a known tag" % wt,
               header(IMG) + MODEL + key(1, wt) + b"\x00", "bad_wire_type")
    reject("wire type 3 on an unknown tag", header(IMG) + MODEL + key(50, 3),
           "bad_wire_type")
    reject("string for width", header(IMG) + MODEL + f_str(12, "512"), "bad_type")
    reject("varint for model", header(IMG) + f_int(5, 1), "bad_type")
    reject("bytes for cached", header(IMG) + MODEL + f_str(15, b"\x01"), "bad_type")
    reject("fixed64 for start_time",
           header(IMG) + MODEL + key(6, WT_FIXED64) + bytes(8), "bad_type")
    reject("fixed32 for width",
           header(IMG) + MODEL + key(12, WT_FIXED32) + bytes(4), "bad_type")
    for ds in (0, 3, 255):
        reject("unknown dataset id %d" % ds, header(ds) + MODEL, "unknown_dataset")
    reject("header only: no model", header(IMG), "missing_field")
    reject("no model", header(LLM) + f_str(1, "r1") + f_int(6, T0), "missing_field")
    reject("empty model", header(IMG) + f_str(5, ""), "missing_field")
    reject("id of 65 bytes", header(IMG) + f_str(1, "i" * 65) + MODEL, "too_long")
    reject("tier of 33 bytes", header(IMG) + f_str(4, "t" * 33) + MODEL, "too_long")
    reject("model of 129 bytes", header(IMG) + f_str(5, "m" * 129), "too_long")
    reject("status of 17 bytes", header(IMG) + MODEL + f_str(9, "s" * 17), "too_long")
    reject("width 65536", header(IMG) + MODEL + f_int(12, 65536), "out_of_range")
    reject("steps 10001", header(IMG) + MODEL + f_int(14, 10001), "out_of_range")
    reject("cached 2", header(IMG) + MODEL + f_int(15, 2), "out_of_range")
    reject("stream 2 on llm_events", header(LLM) + MODEL + f_int(21, 2), "out_of_range")
    reject("duration_ms 2^32", header(IMG) + MODEL + f_int(8, 2 ** 32), "out_of_range")
    reject("start_time after 2100-01-01",
           header(IMG) + MODEL + f_int(6, 4102444800001), "out_of_range")
    reject("end_time 2^64-1", header(IMG) + MODEL + f_int(7, 2 ** 64 - 1),
           "out_of_range")
    reject('status "ok"', header(IMG) + MODEL + f_str(9, "ok"), "bad_value")
    reject('status "Success" (case matters)', header(IMG) + MODEL + f_str(9, "Success"),
           "bad_value")
    reject("end_time before start_time",
           header(IMG) + MODEL + f_int(6, T0) + f_int(7, T0 - 1), "bad_value")
    # Identifiers hold no NUL and no control character (issue 11, finding 10).
    for tag, fname in ((1, "id"), (2, "user_id"), (4, "tier")):
        for what, b in (("NUL", b"a\x00b"), ("\\x01", b"\x01"), ("newline", b"a\n"),
                        ("DEL", b"a\x7f"), ("U+0085", b"a\xc2\x85")):
            reject("%s in %s" % (what, fname), header(IMG) + MODEL + f_str(tag, b), "control_char")
    reject("NUL in model", header(IMG) + f_str(5, b"flux\x00"), "control_char")
    reject("tab in model", header(LLM) + f_str(5, b"gpt\t5"), "control_char")
    valid("control characters in prompt and error_message are kept",
          {"dataset": "image_events", "model": "flux", "error_message": "line 1\nline\t2",
           "prompt": "a\nb\x01c"})
    valid("U+00A0 and U+00AD in user_id are not controls",
          {"dataset": "image_events", "user_id": "a\u00a0b\u00adc", "model": "flux"})

    # JSON datagrams.
    json_valid("json minimal", '{"dataset":"image_events","model":"flux"}',
               {"dataset": "image_events", "model": "flux"})
    full_llm = dict(FULL_COMMON, dataset="llm_events", model="gpt-4.1-nano",
                    prompt_tokens=1234, completion_tokens=567, cached_tokens=1024,
                    stream=True)
    json_valid("json full llm, keys in any order",
               json.dumps(dict(reversed(list(full_llm.items()))), ensure_ascii=False),
               full_llm)
    json_valid("json null is absent",
               '{"dataset":"image_events","model":"flux","id":null,"width":null}',
               {"dataset": "image_events", "model": "flux"})
    json_valid("json unknown keys ignored",
               '{"dataset":"image_events","model":"flux","provider":"bfl",'
               '"extra":{"a":[1,2]},"cost_usd":0.003}',
               {"dataset": "image_events", "model": "flux"})
    json_valid("json integral real accepted",
               '{"dataset":"image_events","model":"flux","width":512.0,"height":1e3}',
               {"dataset": "image_events", "model": "flux", "width": 512, "height": 1000})
    json_valid("json 0 and 1 accepted for booleans",
               '{"dataset":"llm_events","model":"m","cached":1,"stream":0}',
               {"dataset": "llm_events", "model": "m", "cached": True, "stream": False})
    json_valid("json whitespace around the object",
               '{ "dataset" : "llm_events", "model" : "m" }\n',
               {"dataset": "llm_events", "model": "m"})
    json_valid("json escapes and UTF-8",
               '{"dataset":"image_events","model":"flux",'
               '"prompt":"caf\\u00e9 \\ud83d\\udc08 \\"quoted\\" 猫"}',
               {"dataset": "image_events", "model": "flux",
                "prompt": 'café 🐈 "quoted" 猫'})
    json_valid("json empty status counts as absent",
               '{"dataset":"image_events","model":"flux","status":""}',
               {"dataset": "image_events", "model": "flux", "status": ""})
    json_reject("json only an opening brace", "{", "bad_json")
    json_reject("json unterminated", '{"dataset":"image_events","model":', "bad_json")
    json_reject("json trailing garbage",
                '{"dataset":"image_events","model":"flux"} x', "bad_json")
    json_reject("json two objects", '{"dataset":"llm_events"}{"model":"m"}', "bad_json")
    json_reject("json duplicate key",
                '{"dataset":"image_events","model":"turbo","model":"flux"}', "bad_json")
    json_reject("json single quotes", "{'dataset':'image_events'}", "bad_json")
    json_reject("json NUL in a string",
                '{"dataset":"image_events","model":"a\\u0000b"}', "bad_json")
    json_reject("json integer over 2^63",
                '{"dataset":"image_events","model":"flux","start_time":9223372036854775808}',
                "bad_json")
    VECTORS.append(dict(name="json invalid UTF-8",
                        hex=(b'{"dataset":"image_events","model":"fl\xffx"}').hex(),
                        reject="bad_json"))
    json_reject("json leading space is not a JSON datagram",
                ' {"dataset":"image_events","model":"flux"}', "bad_magic")
    json_reject("json array", '[{"dataset":"image_events","model":"flux"}]', "bad_magic")
    json_reject("json empty object", "{}", "missing_field")
    json_reject("json missing dataset", '{"model":"flux"}', "missing_field")
    json_reject("json null dataset", '{"dataset":null,"model":"flux"}', "missing_field")
    json_reject("json unknown dataset name", '{"dataset":"images","model":"flux"}',
                "unknown_dataset")
    json_reject("json dataset as a number", '{"dataset":1,"model":"flux"}', "bad_type")
    json_reject("json missing model", '{"dataset":"llm_events","id":"r1"}',
                "missing_field")
    json_reject("json empty model", '{"dataset":"llm_events","model":""}',
                "missing_field")
    json_reject("json negative number",
                '{"dataset":"image_events","model":"flux","width":-1}', "out_of_range")
    json_reject("json negative real",
                '{"dataset":"image_events","model":"flux","duration_ms":-0.5}',
                "out_of_range")
    json_reject("json string for width",
                '{"dataset":"image_events","model":"flux","width":"512"}', "bad_type")
    json_reject("json bool for width",
                '{"dataset":"image_events","model":"flux","width":true}', "bad_type")
    json_reject("json fraction for width",
                '{"dataset":"image_events","model":"flux","width":512.5}', "bad_type")
    json_reject("json number for model", '{"dataset":"image_events","model":7}',
                "bad_type")
    json_reject("json object for id",
                '{"dataset":"image_events","model":"flux","id":{}}', "bad_type")
    json_reject("json 2 for cached",
                '{"dataset":"image_events","model":"flux","cached":2}', "bad_type")
    json_reject('json "true" for cached',
                '{"dataset":"image_events","model":"flux","cached":"true"}', "bad_type")
    json_reject("json id of 65 bytes",
                '{"dataset":"image_events","model":"flux","id":"%s"}' % ("i" * 65),
                "too_long")
    json_reject("json width 65536",
                '{"dataset":"image_events","model":"flux","width":65536}', "out_of_range")
    json_reject('json status "ok"',
                '{"dataset":"image_events","model":"flux","status":"ok"}', "bad_value")
    json_reject("json control character in user_id",
                '{"dataset":"image_events","model":"flux","user_id":"u\\u0001"}',
                "control_char")
    json_reject("json escaped newline in id",
                '{"dataset":"image_events","model":"flux","id":"r\\n1"}', "control_char")
    return VECTORS


def render():
    vectors = build()
    names = [v["name"] for v in vectors]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit("gen_vectors.py: duplicate names: %s" % sorted(dup))
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


def main(argv):
    text = render()
    if argv[1:] == ["--check"]:
        try:
            with open(OUT, encoding="utf-8") as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            print("%s is stale: run python3 proto/vectors/gen_vectors.py" % OUT,
                  file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print("usage: gen_vectors.py [--check]", file=sys.stderr)
        return 2
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %d vectors to %s" % (len(VECTORS), OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
