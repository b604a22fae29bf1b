/*
 * catalog.h: the model catalog: provider and prices per model, from JSON.
 *
 *   {"models": {"flux": {"provider": "Black Forest Labs", "per_image": 0.0025},
 *               "gpt-5-nano": {"provider": "OpenAI", "prompt_per_mtok": 0.05,
 *                              "cached_prompt_per_mtok": 0.01,
 *                              "completion_per_mtok": 0.35}}}
 *
 * Prices are USD. per_image prices an image model per generated image;
 * *_per_mtok price per million tokens (cached_prompt defaults to prompt).
 * A catalog is immutable once loaded, so a reload builds a new one and
 * swaps the pointer; lookups never allocate.
 */
#ifndef BF_CATALOG_H
#define BF_CATALOG_H

#include <stddef.h>

/* Longest provider name accepted: it is written into every row, and
 * row_max_bytes() counts it among the fixed columns. */
#define CATALOG_PROVIDER_MAX 64

typedef struct catalog_model {
    char *name;
    size_t name_len;
    char *provider;
    size_t provider_len;
    double per_image;
    double prompt_per_mtok;
    double cached_prompt_per_mtok;
    double completion_per_mtok;
} catalog_model;

typedef struct catalog catalog;

/* Load path into a new catalog at *out, which the caller frees with
 * catalog_free; path NULL loads the built-in catalog (daemon/catalog.json
 * as it was at build time, compiled in). Returns 0, or a negative errno
 * (the open's errno for a file that cannot be opened, -EINVAL for one that
 * does not parse or holds a bad model, -ENOMEM)
 * with a message naming the model or key at fault in err (size n); *out is
 * NULL then. */
int catalog_load(const char *path, catalog **out, char *err, size_t n);

/* How logs name the catalog loaded from path: path, or "built-in". */
const char *catalog_name(const char *path);

/* The built-in catalog's text, generated from daemon/catalog.json by the
 * Makefile ($(BUILD)/gen/catalog_builtin.c). */
extern const char catalog_builtin[];
extern const size_t catalog_builtin_len;
void catalog_free(catalog *cat);

/* The model called name (len bytes), or NULL. The pointer is valid until
 * catalog_free(cat). */
const catalog_model *catalog_find(const catalog *cat, const char *name,
                                  size_t len);

size_t catalog_size(const catalog *cat);

#endif /* BF_CATALOG_H */
