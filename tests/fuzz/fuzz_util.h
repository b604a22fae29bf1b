/*
 * tests/fuzz/fuzz_util.h: what the libFuzzer targets share (make fuzz).
 *
 * Each tests/fuzz/fuzz_<name>.c is one target: LLVMFuzzerTestOneInput gets
 * one input and checks the promises of the code it drives; a broken
 * promise is a FUZZ_CHECK that prints what and aborts, which libFuzzer
 * reports as a crash with the input saved. Targets run with ASan and UBSan,
 * so memory errors need no check of their own.
 */
#ifndef BF_FUZZ_UTIL_H
#define BF_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "bf_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Abort with a message when cond is false. */
#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond))                                                           \
            fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                 \
    } while (0)

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

/* A private directory made once per process (under $TMPDIR or /tmp) and
 * removed with its files at exit. */
const char *fuzz_tmpdir(void);

/* Write data to path (mode 0600, truncated). Aborts on failure: the
 * target cannot test anything without its file. */
void fuzz_write_file(const char *path, const void *data, size_t size);

/* Remove every file in dir (not dir itself). */
void fuzz_empty_dir(const char *dir);

/* A path in the source tree (tinybird/datasources, daemon/catalog.json):
 * under $BF_FUZZ_SRCDIR when set, else the tree the target was built from. */
const char *fuzz_src_path(const char *rel);

/* s (n bytes) is valid UTF-8: written from RFC 3629, not shared with the
 * code under test. */
int fuzz_utf8_valid(const unsigned char *s, size_t n);

/* The daemon's decoder: one datagram to a validated event, or a reason.
 * There are two decoders, slot 0 and 1: strings of ev stay valid until the
 * next call with the same slot (and while buf lives). One place names the
 * entry point, so a decoder that moves (or a JSON parser that is replaced
 * behind it) changes one line here. */
bf_reason fuzz_decode_datagram(int slot, const uint8_t *buf, size_t len, bf_event *ev);

/* Two events hold the same dataset, the same fields and the same values
 * (strings compared by content). Aborts with the field that differs,
 * naming what was compared (what). */
void fuzz_check_same_event(const bf_event *a, const bf_event *b, const char *what);

/* Silence the daemon's log below error level (the targets hit every
 * warning on purpose). */
void fuzz_quiet_log(void);

#endif /* BF_FUZZ_UTIL_H */
