/*
 * replay_main.c: a main() for the fuzz targets without libFuzzer, so that
 * `make test` builds them with the project's compiler (an API change that
 * breaks a target breaks the build) and replays their seed corpora (and
 * `make test-asan` under the sanitizers).
 *
 *   build/fuzz-replay/fuzz_<target> FILE_OR_DIR...
 *
 * Runs every file given, and every file in every directory given, through
 * LLVMFuzzerTestOneInput once, in name order. A broken check aborts, as
 * under libFuzzer. Prints "<target>: N inputs" at the end.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"

static size_t runs;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    size_t cap = 4096, len = 0, r;
    uint8_t *data = malloc(cap), *exact = NULL;
    while (data && (r = fread(data + len, 1, cap - len, f)) > 0) {
        len += r;
        uint8_t *more = len == cap ? realloc(data, cap *= 2) : data;
        if (!more)
            free(data);
        data = more;
    }
    fclose(f);
    /* An exact-size copy, so ASan sees a read past the input. */
    if (data && (exact = malloc(len ? len : 1)))
        memcpy(exact, data, len);
    free(data);
    if (!exact) {
        fprintf(stderr, "%s: out of memory\n", path);
        exit(1);
    }
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    runs++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            perror(argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            run_file(argv[i]);
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, by_name);
        if (n < 0) {
            perror(argv[i]);
            return 1;
        }
        for (int k = 0; k < n; k++) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], names[k]->d_name);
            if (names[k]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
                run_file(path);
            free(names[k]);
        }
        free(names);
    }
    const char *name = strrchr(argv[0], '/');
    printf("%s: %zu inputs\n", name ? name + 1 : argv[0], runs);
    return 0;
}
