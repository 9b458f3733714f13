/*
 * scratch.h — a scratch directory per unit test: made under $TW_TEST_TMP (ctest sets it to
 * the build tree's tmp/; /tmp otherwise), removed with everything in it afterwards, from a
 * cmocka teardown so a failed test leaves nothing behind. Include after defining
 * _GNU_SOURCE (nftw).
 */
#ifndef TW_TEST_SCRATCH_H
#define TW_TEST_SCRATCH_H

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Makes TW_TEST_TMP/PREFIX-XXXXXX into root[size]. Returns 0 or -1. */
static inline int scratch_make(char *root, size_t size, const char *prefix)
{
    const char *base = getenv("TW_TEST_TMP");

    if (!base || !*base) base = "/tmp";
    if (mkdir(base, 0700) != 0 && errno != EEXIST) return -1;
    if ((size_t)snprintf(root, size, "%s/%s-XXXXXX", base, prefix) >= size) return -1;
    return mkdtemp(root) ? 0 : -1;
}

static inline int scratch_rm_entry(const char *path, const struct stat *st, int flag,
                                   struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes root and everything below it. Returns 0 or -1. */
static inline int scratch_remove(const char *root)
{
    return nftw(root, scratch_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A scratch directory and a path inside it not made yet (where a store creates its data). */
struct dir {
    char root[PATH_MAX];
    char data[PATH_MAX + 8];
};

/* cmocka setup and teardown: a fresh struct dir per test in *state, all of it removed after
 * the test (failed ones too). */
static inline int dir_setup(void **state)
{
    struct dir *d = calloc(1, sizeof(*d));

    if (!d || scratch_make(d->root, sizeof(d->root), "store") != 0) {
        free(d);
        return -1;
    }
    snprintf(d->data, sizeof(d->data), "%s/data", d->root);
    *state = d;
    return 0;
}

static inline int dir_teardown(void **state)
{
    struct dir *d = *state;
    int rc = scratch_remove(d->root);

    free(d);
    return rc;
}

#endif
