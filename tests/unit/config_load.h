/*
 * config_load.h — loads a tw_config from a NULL-terminated argv and env, with --help and
 * warnings sent to /dev/null, for the config tests. Returns tw_config_load's result.
 */
#ifndef TW_TEST_CONFIG_LOAD_H
#define TW_TEST_CONFIG_LOAD_H

#include <stdio.h>

#include "config.h"

static inline int load(tw_config *cfg, char **argv, char **env, char *err)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = tw_config_load(cfg, argc, argv, env, err, 256, devnull);
    fclose(devnull);
    return rc;
}

#endif
