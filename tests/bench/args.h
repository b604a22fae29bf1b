/*
 * tests/bench/args.h: what the bench programs share: a monotonic clock and
 * their command line, which is "--name value" pairs only. Anything else (a
 * name the program does not know, --help, a name without its value) prints
 * the usage and exits 2, so a mistyped flag never runs a benchmark, or
 * sends load to the default address, with the defaults.
 */
#ifndef BF_BENCH_ARGS_H
#define BF_BENCH_ARGS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct bench_opt {
    const char *name;   /* "--to" */
    const char **value; /* set to the argument after the name; left alone if absent */
};

/* Reads argv[first..argc) into opts, an array ended by {NULL, NULL}. */
static inline void bench_args(int argc, char **argv, int first, const struct bench_opt *opts,
                              const char *usage)
{
    for (int i = first; i < argc; i += 2) {
        const struct bench_opt *o = opts;
        while (o->name && strcmp(o->name, argv[i]))
            o++;
        if (!o->name || i + 1 == argc) {
            fprintf(stderr, "usage: %s %s\n", argv[0], usage);
            exit(2);
        }
        *o->value = argv[i + 1];
    }
}

#endif
