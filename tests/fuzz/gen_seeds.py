#!/usr/bin/env python3
"""Write the seed corpora and dictionaries of the fuzz targets (make fuzz).

    python3 tests/fuzz/gen_seeds.py OUTDIR

OUTDIR/<target>/ gets one file per seed, OUTDIR/<name>.dict the libFuzzer
dictionaries. Seeds come from proto/vectors/vectors.json (every datagram,
binary and JSON, accepted or rejected), from daemon/catalog.json and
daemon/birdfeeder.json, and from the lists below: addresses and referrers
that the privacy rules are about, and spool segments built the way
daemon/spool.h lays them out. Nothing here is random: the same tree gives
the same seeds.
"""
import hashlib
import json
import os
import struct
import sys
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Sender addresses in every form the daemon reads, and those that carry an
# IPv4 (issue 11, finding 1).
ADDRESSES = [
    '203.0.113.77', '198.51.100.7', '::ffff:203.0.113.77', '2001:db8:1234:5678::1',
    '[2001:db8::7]', 'fe80::1%eth0', '2002:cb00:714d::1', '64:ff9b::cb00:714d',
    '::203.0.113.77', '2001:0:4136:e378:8000:63bf:34ff:8ef2', '::1', '::', '0.0.0.0',
    '255.255.255.255', '2001:db8::', '1.2.3', 'not an ip', '',
    'fe80::1%' + 'z' * 56,                     # 64 bytes, the longest accepted
]
# Referrers with credentials, paths, queries and schemes to drop (finding 7).
REFERRERS = [
    'https://user:pa?ss@example.org/path?q=secret#frag', 'https://user:pa@ss@host/',
    'http://example.org:8080/a/b', 'javascript://alert(1)', 'vbscript://x', 'data://x',
    'HTTPS://Example.ORG', 'https://[2001:db8::1]:443/x', 'ftp://files.example.org/',
    'https://example.org\\@evil.example/', 'https:/example.org', '//example.org/x',
    'https://exa mple.org/', 'https://tab\there/', '',
]


def vectors():
    with open(os.path.join(REPO, 'proto', 'vectors', 'vectors.json')) as f:
        return json.load(f)


def field_names():
    names, datasets = [], []
    with open(os.path.join(REPO, 'proto', 'fields.def')) as f:
        for line in f:
            if line.startswith('BF_FIELD('):
                names.append(line.split(',')[1].strip())
            elif line.startswith('BF_DATASET('):
                datasets.append(line.split(',')[1].strip(' )\n'))
    return names, datasets


def field_limits():
    """(tag, type, limit) of each field of proto/fields.def."""
    out = []
    with open(os.path.join(REPO, 'proto', 'fields.def')) as f:
        for line in f:
            if line.startswith('BF_FIELD('):
                parts = [x.strip() for x in line[len('BF_FIELD('):].split(',')]
                out.append((int(parts[0]), parts[2], int(parts[3])))
    return out


def varint(v):
    out = b''
    while v >= 0x80:
        out += bytes([v & 0x7f | 0x80])
        v >>= 7
    return out + bytes([v])


def put(out, target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), 'wb') as f:
        f.write(data)


def spool_record(dataset, rows, payload, count=None):
    """One record of a spool segment (daemon/spool.h)."""
    rest = struct.pack('<BBHQ', dataset, 0, 0, len(rows) if count is None else count)
    crc = zlib.crc32(rest + payload) & 0xffffffff
    return b'BFS1' + struct.pack('<II', len(payload), crc) + rest + payload


def main():
    out = sys.argv[1]
    names, datasets = field_names()
    events = []
    for v in vectors():
        if 'hex' in v:
            data = bytes.fromhex(v['hex'])
            put(out, 'decode', data)
            put(out, 'row', data)
        if 'json' in v:
            put(out, 'json', v['json'])
            put(out, 'row', v['json'])
        if isinstance(v.get('event'), dict):
            events.append(v['event'])
            text = json.dumps(v['event'], separators=(',', ':'))
            put(out, 'json', text)
            put(out, 'row', text)

    # Each field with a bad value (over its limit; a control character in
    # an identifier) where bf_decode_validate's general loop reads it: after
    # "stream", the last tag, which ends the canonical-order path. fuzz_decode
    # decodes their re-encodings by that path: both must find the same fault.
    for tag, kind, limit in field_limits():
        if kind == 'STR':
            bad = [b'x' * (limit + 1)] if limit else []
            if tag in (1, 2, 4, 5):     # id, user_id, tier, model: identifiers
                bad.append(b'a\x01b')
            bad = [varint(tag << 3 | 2) + varint(len(b)) + b for b in bad]
        else:
            bad = [varint(tag << 3) + varint(limit + 1)]
        for ds in (1, 2):
            for b in bad:
                put(out, 'decode', bytes([0xBF, 0xFD, 1, ds]) + varint(21 << 3) + b'\x00' +
                    varint(5 << 3 | 2) + b'\x04flux' + b)

    # Privacy seeds for the row target: each address and referrer once.
    for i, ip in enumerate(ADDRESSES):
        ev = {'dataset': datasets[i % len(datasets)], 'model': 'flux', 'ip': ip}
        put(out, 'row', json.dumps(ev))
    for ref in REFERRERS:
        put(out, 'row', json.dumps({'dataset': 'llm_events', 'model': 'gpt-5-nano',
                                    'referrer': ref}))

    # Spool segments: rows as the daemon writes them, then damaged forms.
    rows = [json.dumps(dict(ev, ip='203.0.113.0'), separators=(',', ':')).encode() + b'\n'
            for ev in events[:6]]
    one = spool_record(1, rows[:1], rows[0])
    many = spool_record(2, rows, b''.join(rows))
    for flags in (0, 1, 2, 3, 7):
        put(out, 'spool', bytes([flags]) + one)
        put(out, 'spool', bytes([flags]) + one + many)
    put(out, 'spool', b'\x03' + many + many[:30])                      # torn tail
    put(out, 'spool', b'\x03' + spool_record(1, [], b'', count=3))    # rows, no bytes
    put(out, 'spool', b'\x03' + spool_record(1, rows, b'{}', count=5))  # rows != lines
    put(out, 'spool', b'\x00')

    with open(os.path.join(REPO, 'daemon', 'birdfeeder.json'), 'rb') as f:
        put(out, 'config', f.read())
    put(out, 'config', '{}')
    put(out, 'config', '{"flush_bytes": 1048576, "max-memory": "1MiB", "token": "x",'
                       ' "tinybird-url": "http://127.0.0.1:9/", "log-level": "debug"}')
    with open(os.path.join(REPO, 'daemon', 'catalog.json'), 'rb') as f:
        put(out, 'catalog', f.read())
    put(out, 'catalog', '{"models": {"m": {"provider": "p", "prompt_per_mtok": 1.5}}}')

    # Dictionaries: the words the inputs are made of.
    words = ['"dataset"', '"image_events"', '"llm_events"', 'true', 'false', 'null',
             '"\\u00e9"', '"\\ud83d\\ude00"', '1e308', '-0', '18446744073709551615']
    words += [f'"{n}"' for n in names + datasets]
    words += [json.dumps(a) for a in ADDRESSES[:10]]
    words += ['"https://"', '"http://"', '"@"', '"://"']
    with open(os.path.join(out, 'json.dict'), 'w') as f:
        f.writelines(json.dumps(w) + '\n' for w in words)
    with open(os.path.join(REPO, 'daemon', 'birdfeeder.json')) as f:
        keys = list(json.load(f))
    ckeys = [f'"{k}"' for k in keys] + [f'"{k.replace("-", "_")}"' for k in keys]
    ckeys += ['"token"', '"KiB"', '"MiB"', '"GiB"', '"https://"', '"http://"']
    with open(os.path.join(out, 'config.dict'), 'w') as f:
        f.writelines(json.dumps(w) + '\n' for w in ckeys)
    cwords = ['"models"', '"provider"', '"per_image"', '"prompt_per_mtok"',
              '"cached_prompt_per_mtok"', '"completion_per_mtok"', 'null', '1e400']
    with open(os.path.join(out, 'catalog.dict'), 'w') as f:
        f.writelines(json.dumps(w) + '\n' for w in cwords)


if __name__ == '__main__':
    main()
