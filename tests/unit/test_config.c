/* Unit tests: settings from defaults, file, environment and flags, in that precedence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_load.h"

static void test_defaults(void **state)
{
    tw_config cfg;
    char err[256];
    char *argv[] = {"tidewire", NULL};
    char *env[] = {NULL};
    assert_int_equal(load(&cfg, argv, env, err), TW_CONFIG_OK);
    assert_string_equal(cfg.listen, "0.0.0.0:8080");
    assert_string_equal(cfg.data, "./data");
    assert_string_equal(cfg.durability, "local");
    assert_string_equal(cfg.api_key, "");
    assert_int_equal(cfg.max_message_size, 1024 * 1024);
    assert_int_equal(cfg.ping_interval_ms, 25000);
    tw_config_free(&cfg);
}

static void test_precedence_flag_env_file(void **state)
{
    char path[] = "/tmp/tw-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "# a comment\n"
                       "node-id = from-file\n"
                       "listen 127.0.0.1:9000\n"
                       "data = \"/var/lib/tw\"   # trailing comment\n"
                       "max-message-size = 64KiB\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    char cfgflag[64];
    snprintf(cfgflag, sizeof cfgflag, "--config=%s", path);
    char *argv[] = {"tidewire", cfgflag, "--node-id", "from-flag", "--ping-interval=500ms", NULL};
    char *env[] = {"TIDEWIRE_NODE_ID=from-env", "TIDEWIRE_LISTEN=127.0.0.2:9001",
                   "TIDEWIRE_IDLE_TIMEOUT=2m", NULL};
    tw_config cfg;
    char err[256] = "";
    assert_int_equal(load(&cfg, argv, env, err), TW_CONFIG_OK);
    assert_string_equal(cfg.node_id, "from-flag");     /* flag beats env and file */
    assert_string_equal(cfg.listen, "127.0.0.2:9001"); /* env beats file */
    assert_string_equal(cfg.data, "/var/lib/tw");      /* file beats default */
    assert_int_equal(cfg.max_message_size, 64 * 1024);
    assert_int_equal(cfg.ping_interval_ms, 500);
    assert_int_equal(cfg.idle_timeout_ms, 120000);
    tw_config_free(&cfg);
    unlink(path);
}

static void test_errors_are_named(void **state)
{
    tw_config cfg;
    char err[256];
    char *env[] = {NULL};

    char *a1[] = {"tidewire", "--no-such-flag", "1", NULL};
    assert_int_equal(load(&cfg, a1, env, err), -1);
    assert_non_null(strstr(err, "--no-such-flag"));
    tw_config_free(&cfg);

    char *a2[] = {"tidewire", "--durability", "eventually", NULL};
    assert_int_equal(load(&cfg, a2, env, err), -1);
    assert_non_null(strstr(err, "local|quorum"));
    tw_config_free(&cfg);

    char *a3[] = {"tidewire", "--max-message-size", "lots", NULL};
    assert_int_equal(load(&cfg, a3, env, err), -1);
    assert_non_null(strstr(err, "max-message-size"));
    tw_config_free(&cfg);

    char *a4[] = {"tidewire", "--max-message-size", "10", NULL}; /* below the minimum */
    assert_int_equal(load(&cfg, a4, env, err), -1);
    assert_non_null(strstr(err, "out of range"));
    tw_config_free(&cfg);

    char *a5[] = {"tidewire", "--listen", NULL};
    assert_int_equal(load(&cfg, a5, env, err), -1);
    assert_non_null(strstr(err, "needs a value"));
    tw_config_free(&cfg);

    char *a6[] = {"tidewire", "--config", "/nonexistent/tw.conf", NULL};
    assert_int_equal(load(&cfg, a6, env, err), -1);
    assert_non_null(strstr(err, "/nonexistent/tw.conf"));
    tw_config_free(&cfg);
}

static void test_help_lists_every_flag(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tw_config_print_help(f);
    fclose(f);
    const char *must[] = {"--node-id", "--listen", "--data", "--durability", "--api-key",
                          "--config", "TIDEWIRE_LISTEN", "0.0.0.0:8080"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        assert_non_null(strstr(buf, must[i]));
    free(buf);
}

static void test_units(void **state)
{
    int64_t v;
    assert_int_equal(tw_parse_size("1MiB", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(tw_parse_size("512", &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(tw_parse_size("2g", &v), 0);
    assert_int_equal(v, 2LL << 30);
    assert_int_equal(tw_parse_size("-1", &v), -1);
    assert_int_equal(tw_parse_size("1 parsec", &v), -1);
    assert_int_equal(tw_parse_size("99999999999999999999", &v), -1);
    assert_int_equal(tw_parse_duration_ms("25s", &v), 0);
    assert_int_equal(v, 25000);
    assert_int_equal(tw_parse_duration_ms("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(tw_parse_duration_ms("3", &v), 0);
    assert_int_equal(v, 3000);
    assert_int_equal(tw_parse_duration_ms("1h", &v), 0);
    assert_int_equal(v, 3600000);
    char host[64];
    int port;
    assert_int_equal(tw_parse_hostport("127.0.0.1:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(tw_parse_hostport("[::1]:9", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(tw_parse_hostport("nocolon", host, sizeof host, &port), -1);
    assert_int_equal(tw_parse_hostport("h:99999", host, sizeof host, &port), -1);
}

/* The shipped sample config loads, and docs/configuration.md carries the table as generated. */
static void test_sample_config_and_docs_in_sync(void **state)
{
    tw_config cfg;
    char err[256] = "";
    char *argv[] = {"tidewire", "--config", TW_SOURCE_DIR "/deploy/tidewire.conf", NULL};
    char *env[] = {NULL};
    assert_int_equal(load(&cfg, argv, env, err), TW_CONFIG_OK);
    assert_string_equal(cfg.data, "/var/lib/tidewire");
    tw_config_free(&cfg);

    char *table = NULL;
    size_t tlen = 0;
    FILE *f = open_memstream(&table, &tlen);
    tw_config_print_markdown(f);
    fclose(f);
    FILE *doc = fopen(TW_SOURCE_DIR "/docs/configuration.md", "r");
    assert_non_null(doc);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, doc);
    fclose(doc);
    text[n] = '\0';
    if (!strstr(text, table))
        fail_msg("docs/configuration.md is out of date: regenerate its table with "
                 "build/bin/tidewire --help-markdown");
    free(table);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence_flag_env_file),
        cmocka_unit_test(test_errors_are_named),
        cmocka_unit_test(test_help_lists_every_flag),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_sample_config_and_docs_in_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
