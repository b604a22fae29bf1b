/*
 * fuzz_catalog.c: the model catalog loader on a JSON file (--catalog).
 *
 * Promises checked, for any file content:
 *   - catalog_load gives a catalog, or -EINVAL / -ENOMEM with a message
 *     and NULL; catalog_free releases everything (ASan's leak check);
 *   - an accepted catalog holds exactly the models of the file: each one
 *     found by name, with the file's provider (a non-empty string of at
 *     most CATALOG_PROVIDER_MAX bytes) and prices (not negative; cached
 *     prompt defaulting to prompt);
 *   - looking up any bytes (the input itself, "") never reads outside.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "catalog.h"
#include "fuzz_util.h"

static char path[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_log();
    snprintf(path, sizeof(path), "%s/catalog.json", fuzz_tmpdir());
    return 0;
}

static double price(json_t *m, const char *key, double def)
{
    json_t *v = json_object_get(m, key);
    return v && !json_is_null(v) ? json_number_value(v) : def;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    catalog *cat;
    char err[512] = "";
    fuzz_write_file(path, data, size);
    int rc = catalog_load(path, &cat, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK((rc == -EINVAL || rc == -ENOMEM) && !cat && err[0],
                   "catalog_load: %d, message '%s'", rc, err);
        return 0;
    }
    FUZZ_CHECK(rc == 0 && cat, "catalog_load returned %d", rc);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    json_t *models = json_object_get(root, "models");
    FUZZ_CHECK(json_is_object(models), "accepted a file without a models object");
    FUZZ_CHECK(catalog_size(cat) == json_object_size(models), "%zu models, the file has %zu",
               catalog_size(cat), json_object_size(models));
    const char *name;
    json_t *m;
    json_object_foreach(models, name, m) {
        const catalog_model *cm = catalog_find(cat, name, strlen(name));
        FUZZ_CHECK(cm, "model '%s' not found", name);
        const char *prov = json_string_value(json_object_get(m, "provider"));
        FUZZ_CHECK(prov && *prov && strlen(prov) <= CATALOG_PROVIDER_MAX &&
                       strcmp(prov, cm->provider) == 0,
                   "model '%s': provider '%s'", name, cm->provider);
        double p = price(m, "prompt_per_mtok", 0);
        FUZZ_CHECK(cm->per_image == price(m, "per_image", 0) && cm->prompt_per_mtok == p &&
                       cm->completion_per_mtok == price(m, "completion_per_mtok", 0) &&
                       cm->cached_prompt_per_mtok == price(m, "cached_prompt_per_mtok", p),
                   "model '%s': prices differ from the file", name);
        FUZZ_CHECK(cm->per_image >= 0 && cm->prompt_per_mtok >= 0 &&
                       cm->completion_per_mtok >= 0 && cm->cached_prompt_per_mtok >= 0,
                   "model '%s': a negative price", name);
    }
    json_decref(root);
    catalog_find(cat, (const char *)data, size);
    catalog_find(cat, "", 0);
    catalog_free(cat);
    return 0;
}
