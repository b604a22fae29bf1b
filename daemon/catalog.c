/* catalog.c: model catalog, an open-addressing table keyed by name. */
#include "catalog.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fnv.h"

struct catalog {
    catalog_model *models; /* count entries */
    size_t count;
    uint32_t *slots;       /* index + 1 into models; 0 empty */
    size_t mask;           /* slots size - 1, a power of two minus one */
};

static int read_price(json_t *m, const char *key, double *out, const char *model,
                      char *err, size_t n)
{
    json_t *v = json_object_get(m, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v) || json_number_value(v) < 0) {
        snprintf(err, n, "model '%s': '%s' must be a non-negative number", model,
                 key);
        return -EINVAL;
    }
    *out = json_number_value(v);
    return 1;
}

void catalog_free(catalog *cat)
{
    if (!cat)
        return;
    for (size_t i = 0; i < cat->count; i++) {
        free(cat->models[i].name);
        free(cat->models[i].provider);
    }
    free(cat->models);
    free(cat->slots);
    free(cat);
}

int catalog_load(const char *path, catalog **out, char *err, size_t n)
{
    int rc = -EINVAL;
    *out = NULL;
    json_error_t jerr;
    json_t *root;
    if (path) {
        FILE *f = fopen(path, "re");
        if (!f) {
            int e = errno;
            snprintf(err, n, "catalog %s: %s", path, strerror(e));
            return -e;
        }
        root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
        fclose(f);
    } else {
        root = json_loadb(catalog_builtin, catalog_builtin_len, JSON_REJECT_DUPLICATES,
                          &jerr);
    }
    path = catalog_name(path); /* for the messages below */
    if (!root) {
        snprintf(err, n, "%s:%d: %s", path, jerr.line, jerr.text);
        return -EINVAL;
    }
    catalog *cat = calloc(1, sizeof(*cat));
    json_t *models = json_object_get(root, "models");
    if (!cat) {
        snprintf(err, n, "out of memory");
        rc = -ENOMEM;
        goto fail;
    }
    if (!json_is_object(models)) {
        snprintf(err, n, "%s: expected an object with a \"models\" object", path);
        goto fail;
    }
    size_t count = json_object_size(models), size = 16;
    while (size < count * 2)
        size <<= 1;
    cat->models = calloc(count ? count : 1, sizeof(catalog_model));
    cat->slots = calloc(size, sizeof(uint32_t));
    cat->mask = size - 1;
    if (!cat->models || !cat->slots) {
        snprintf(err, n, "out of memory");
        rc = -ENOMEM;
        goto fail;
    }
    const char *name;
    json_t *m;
    json_object_foreach(models, name, m) {
        if (!json_is_object(m)) {
            snprintf(err, n, "%s: model '%s' must be an object", path, name);
            goto fail;
        }
        catalog_model *cm = &cat->models[cat->count];
        json_t *prov = json_object_get(m, "provider");
        if (!json_is_string(prov) || !*json_string_value(prov) ||
            json_string_length(prov) > CATALOG_PROVIDER_MAX) {
            snprintf(err, n,
                     "%s: model '%s': 'provider' must be a non-empty string of at "
                     "most %d bytes", path, name, CATALOG_PROVIDER_MAX);
            goto fail;
        }
        cm->name = strdup(name);
        cm->name_len = strlen(name);
        cm->provider = strdup(json_string_value(prov));
        cm->provider_len = cm->provider ? strlen(cm->provider) : 0;
        cat->count++;
        if (!cm->name || !cm->provider) {
            snprintf(err, n, "out of memory");
            rc = -ENOMEM;
            goto fail;
        }
        int has_cached;
        if (read_price(m, "per_image", &cm->per_image, name, err, n) < 0 ||
            read_price(m, "prompt_per_mtok", &cm->prompt_per_mtok, name, err, n) < 0 ||
            read_price(m, "completion_per_mtok", &cm->completion_per_mtok, name, err,
                       n) < 0 ||
            (has_cached = read_price(m, "cached_prompt_per_mtok",
                                     &cm->cached_prompt_per_mtok, name, err, n)) < 0)
            goto fail;
        if (!has_cached)
            cm->cached_prompt_per_mtok = cm->prompt_per_mtok;
        size_t len = strlen(name);
        size_t i = hash_words(name, len) & cat->mask;
        while (cat->slots[i])
            i = (i + 1) & cat->mask;
        cat->slots[i] = (uint32_t)cat->count;
    }
    json_decref(root);
    *out = cat;
    return 0;
fail:
    json_decref(root);
    catalog_free(cat);
    return rc;
}

const catalog_model *catalog_find(const catalog *cat, const char *name,
                                  size_t len)
{
    if (!cat)
        return NULL;
    for (size_t i = hash_words(name, len) & cat->mask;; i = (i + 1) & cat->mask) {
        uint32_t s = cat->slots[i];
        if (!s)
            return NULL;
        const catalog_model *m = &cat->models[s - 1];
        if (m->name_len == len && key_equal(m->name, name, len))
            return m;
    }
}

const char *catalog_name(const char *path)
{
    return path ? path : "built-in";
}

size_t catalog_size(const catalog *cat)
{
    return cat ? cat->count : 0;
}
