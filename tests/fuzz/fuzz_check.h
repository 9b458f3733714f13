/*
 * fuzz_check.h — the one check every fuzz driver makes: a broken invariant aborts, which
 * libFuzzer reports with the input that broke it.
 */
#ifndef TW_FUZZ_CHECK_H
#define TW_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
