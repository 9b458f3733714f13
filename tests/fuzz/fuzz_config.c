/*
 * fuzz_config.c — libFuzzer driver for the config file parser (tw_config_parse_text) and
 * the namespace rules it feeds (tw_auth_load_text). jwt-key entries name files, so the
 * driver never loads them: a fuzzer must not read arbitrary paths.
 * Checks: no crash, no leak, and a parse that succeeds leaves every setting set.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *argv[] = {"tidewire", NULL};
    static char *env[] = {NULL};
    tw_config cfg;
    char err[256];
    FILE *devnull = fopen("/dev/null", "w");
    FUZZ_CHECK(tw_config_load(&cfg, 1, argv, env, err, sizeof err, devnull) == TW_CONFIG_OK);
    fclose(devnull);
    if (tw_config_parse_text(&cfg, (const char *)data, size, "fuzz", err, sizeof err) == 0) {
        FUZZ_CHECK(cfg.node_id && cfg.listen && cfg.data && cfg.jwt_key && cfg.namespace);
        FUZZ_CHECK(cfg.max_message_size >= 128);
        tw_auth *a = NULL;
        if (tw_auth_load_text(&a, "", cfg.namespace, cfg.jwt_audience, cfg.jwt_issuer, 0, err,
                              sizeof err) == 0) {
            FUZZ_CHECK(!tw_auth_required(a));
            (void)tw_auth_flags(a, "vessel:1", 8);
            tw_auth_free(a);
        }
    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
    }
    tw_config_free(&cfg);
    return 0;
}
