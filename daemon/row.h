/*
 * row.h: one enriched event as one NDJSON line, with every column of its
 * datasource, typed as tinybird/datasources/<dataset>.datasource declares.
 *
 * Strings are JSON-escaped, and bytes that are not valid UTF-8 become
 * U+FFFD (counted in stats.utf8_replaced), so Tinybird never quarantines a
 * row for its encoding. Timestamps are UTC "YYYY-MM-DD HH:MM:SS.mmm".
 */
#ifndef BF_ROW_H
#define BF_ROW_H

#include <stddef.h>

#include "enrich.h"

/* Upper bound of row_format's output for events decoded from datagrams of
 * at most max_datagram bytes (every string byte may grow to a 6-byte
 * escape, plus the fixed columns). */
size_t row_max_bytes(size_t max_datagram);

/* Write row as one line ending in '\n' at out, which must have room for
 * row_max_bytes() bytes. Returns the bytes written. Never fails. */
size_t row_format(char *out, const bf_row *row);

/* Format epoch milliseconds as "YYYY-MM-DD HH:MM:SS.mmm" (24 bytes with the
 * NUL) into out. */
void row_format_time(char *out, uint64_t ms);

/* The columns of a dataset, in the order they are written, NULL-terminated;
 * NULL for an unknown dataset. Tests compare this with the datafiles. */
const char *const *row_columns(unsigned dataset);

#endif /* BF_ROW_H */
