/*
 * bf_proto.h: birdfeeder protocol v1, the datagram codec.
 *
 * One datagram is one event. Layout (all integers unsigned LEB128 varints):
 *
 *   0xBF 0xFD <version=1> <dataset id>  then  { key value }*
 *   key = tag << 3 | wire_type;  wire types: 0 varint, 1 fixed64, 2 length-
 *   delimited bytes, 5 fixed32. Unknown tags of those types are skipped, so an
 *   old decoder accepts a newer sender. Fields are described in fields.def.
 *
 * The encoder writes the canonical form: present fields in ascending tag
 * order, each once. The decoder also accepts any order; a repeated tag keeps
 * the last value.
 *
 * This file and bf_proto.c depend on libc only, so the C client shim can
 * embed them. No function here allocates.
 */
#ifndef BF_PROTO_H
#define BF_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define BF_MAGIC0 0xBF
#define BF_MAGIC1 0xFD
#define BF_PROTO_VERSION 1
#define BF_HEADER_LEN 4

/* Wire types (low three bits of a key). */
enum { BF_WT_VARINT = 0, BF_WT_FIXED64 = 1, BF_WT_BYTES = 2, BF_WT_FIXED32 = 5 };

/* Field value types from fields.def. */
enum bf_type { BF_TYPE_STR, BF_TYPE_U64, BF_TYPE_BOOL };

/* Which datasets a field belongs to (bit per dataset id). */
#define BF_DS_ALL   0x6u
#define BF_DS_IMAGE 0x2u
#define BF_DS_LLM   0x4u

enum bf_dataset {
    BF_DATASET_NONE = 0,
#define BF_DATASET(id, name) BF_DATASET_##name = id,
#define BF_FIELD(tag, name, type, max, ds)
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
    BF_DATASET_MAX
};

enum bf_field {
#define BF_DATASET(id, name)
#define BF_FIELD(tag, name, type, max, ds) BF_F_##name = tag,
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
    BF_F_MAX
};

/* Result of decoding or validating: BF_OK or one named reject reason. */
typedef enum bf_reason {
    BF_OK = 0,
#define BF_REASON(name, desc) BF_R_##name,
#include "reasons.def"
#undef BF_REASON
    BF_R_MAX
} bf_reason;

/* A string slice. Not NUL-terminated; points into memory owned by whoever
 * filled the event (the datagram buffer, or a JSON document). */
typedef struct bf_str {
    const char *ptr;
    size_t len;
} bf_str;

/* One decoded event. `present` has bit (1 << tag) set for each field given.
 * String members borrow memory: an event is valid only as long as the buffer
 * it was decoded from. */
typedef struct bf_event {
    uint8_t dataset; /* enum bf_dataset */
    uint64_t present;
#define BF_DATASET(id, name)
#define BF_FIELD_STR(name) bf_str name;
#define BF_FIELD_U64(name) uint64_t name;
#define BF_FIELD_BOOL(name) uint64_t name;
#define BF_FIELD(tag, name, type, max, ds) BF_FIELD_##type(name)
#include "fields.def"
#undef BF_DATASET
#undef BF_FIELD
#undef BF_FIELD_STR
#undef BF_FIELD_U64
#undef BF_FIELD_BOOL
} bf_event;

#define BF_HAS(ev, name) (((ev)->present >> BF_F_##name) & 1u)
#define BF_SET_STR(ev, name, p, n)                                            \
    ((ev)->name.ptr = (p), (ev)->name.len = (n),                               \
     (ev)->present |= (uint64_t)1 << BF_F_##name)
#define BF_SET_U64(ev, name, v)                                               \
    ((ev)->name = (v), (ev)->present |= (uint64_t)1 << BF_F_##name)

/* Static description of one field, indexed by tag (NULL name: unused tag). */
typedef struct bf_field_info {
    const char *name;
    enum bf_type type;
    uint64_t max;      /* see fields.def */
    unsigned datasets; /* BF_DS_* bits */
    size_t offset;     /* offsetof(bf_event, name) */
} bf_field_info;

extern const bf_field_info bf_fields[BF_F_MAX];

/* Name of a dataset id, or NULL when unknown. */
const char *bf_dataset_name(unsigned id);
/* Dataset id of a name (len bytes), or BF_DATASET_NONE. */
unsigned bf_dataset_lookup(const char *name, size_t len);
/* Tag of a field name, or 0 when unknown. */
unsigned bf_field_lookup(const char *name, size_t len);
/* Reason name ("truncated") and description; "ok" for BF_OK. */
const char *bf_reason_name(bf_reason r);
const char *bf_reason_desc(bf_reason r);

/* Zero an event and set its dataset. */
void bf_event_init(bf_event *ev, unsigned dataset);

/* Encode ev into out (cap bytes). Returns the datagram length, or 0 when it
 * does not fit in cap (nothing useful is left in out then). */
size_t bf_encode(const bf_event *ev, uint8_t *out, size_t cap);

/* Decode a binary datagram into ev. Strings in ev point into buf. Checks the
 * wire format only (magic, version, dataset, varints, types, bounds);
 * bf_validate() checks the values. On error ev is partly filled. */
bf_reason bf_decode(const uint8_t *buf, size_t len, bf_event *ev);

/* Check a decoded event's values against fields.def: required fields, string
 * lengths, integer limits, no control characters in identifiers (id,
 * user_id, tier, model), status set, time order. Fields that do not belong
 * to the event's dataset are not checked (they are ignored downstream). Pure;
 * ev is not changed. */
bf_reason bf_validate(const bf_event *ev);

/* bf_validate(), and on a reject also the tag of the field at fault in *tag
 * (0 for the dataset; end_time when the times are out of order). For log
 * lines and the CLI's "line N: reason: key" messages. */
bf_reason bf_validate_detail(const bf_event *ev, unsigned *tag);

/* Prompts are cut to this many characters (code points): by the shims
 * before encoding, and by the daemon before writing a row. */
#define BF_PROMPT_MAX_CHARS 120

/* Length of the valid UTF-8 sequence at s (n > 0 bytes left), or 0 when the
 * byte at s does not start one (overlongs, surrogates and values past
 * U+10FFFF are not valid). */
size_t bf_utf8_seq(const unsigned char *s, size_t n);

/* Bytes of the first max_chars characters of s (len bytes): a valid UTF-8
 * sequence counts as one character, an invalid byte as one too, so a cut
 * never falls inside a sequence. */
size_t bf_utf8_prefix(const char *s, size_t len, size_t max_chars);

/* Varint helpers, exposed for tests and other encoders.
 * bf_varint_put: writes v at out (room for 10 bytes needed), returns length.
 * bf_varint_get: reads at *p (< end), advances *p; returns 0 on success,
 * -1 when truncated, -2 when over 10 bytes or 64 bits. */
size_t bf_varint_put(uint8_t *out, uint64_t v);
int bf_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v);

#endif /* BF_PROTO_H */
