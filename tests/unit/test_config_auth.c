/* Unit tests of the issue-5 settings: repeatable settings (jwt-key, namespace) that add up
 * across the config file, the environment and flags, and tw_config_parse_text. */
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
    assert_string_equal(cfg.jwt_key, ""); /* open node */
    assert_string_equal(cfg.namespace, "");
    assert_string_equal(cfg.admin_key, "");
    assert_string_equal(cfg.tls_listen, "");
    assert_int_equal(cfg.jwt_leeway_ms, 30000);
    assert_int_equal(cfg.auth_timeout_ms, 10000);
    assert_int_equal(cfg.max_messages_per_second, 0);
    assert_int_equal(cfg.max_connections_per_ip, 0);
    tw_config_free(&cfg);
}

static void test_lists_add_up(void **state)
{
    char path[] = "/tmp/tw-config-auth-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "namespace = vessel: presence=on\n"
                       "namespace = \"chat: subscribe=users\"  # quoted\n"
                       "jwt-key = kid=a alg=HS256 secret-file=/a\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char cfgflag[64];
    snprintf(cfgflag, sizeof cfgflag, "--config=%s", path);
    char *argv[] = {"tidewire",
                    cfgflag,
                    "--namespace",
                    "ops: subscribe=role:ops",
                    "--namespace=* subscribe=users",
                    NULL};
    char *env[] = {"TIDEWIRE_JWT_KEY=kid=b alg=RS256 public-key-file=/b", NULL};
    tw_config cfg;
    char err[256] = "";
    assert_int_equal(load(&cfg, argv, env, err), TW_CONFIG_OK);
    assert_string_equal(cfg.namespace, "vessel: presence=on\nchat: subscribe=users\n"
                                       "ops: subscribe=role:ops\n* subscribe=users");
    assert_string_equal(cfg.jwt_key, "kid=a alg=HS256 secret-file=/a\n"
                                     "kid=b alg=RS256 public-key-file=/b");
    tw_config_free(&cfg);
    unlink(path);
}

static void test_parse_text(void **state)
{
    tw_config cfg;
    char err[256] = "";
    char *argv[] = {"tidewire", NULL};
    char *env[] = {NULL};
    assert_int_equal(load(&cfg, argv, env, err), TW_CONFIG_OK);
    const char ok[] = "max-messages-per-second = 50\r\nallowed-origins = https://a, https://b\n"
                      "tls-listen 127.0.0.1:8443";
    assert_int_equal(tw_config_parse_text(&cfg, ok, sizeof ok - 1, "t", err, sizeof err), 0);
    assert_int_equal(cfg.max_messages_per_second, 50);
    assert_string_equal(cfg.allowed_origins, "https://a, https://b");
    assert_string_equal(cfg.tls_listen, "127.0.0.1:8443"); /* last line without newline */
    /* errors name the place */
    const char bad[] = "\n\njwt-leeway = 10m\n";
    assert_int_equal(tw_config_parse_text(&cfg, bad, sizeof bad - 1, "t", err, sizeof err), -1);
    assert_non_null(strstr(err, "t:3"));
    const char nul[] = "node-id = a\0b\n";
    assert_int_equal(tw_config_parse_text(&cfg, nul, sizeof nul - 1, "t", err, sizeof err), -1);
    char *longline = malloc(5000);
    memset(longline, 'x', 4999);
    longline[4999] = '\n';
    assert_int_equal(tw_config_parse_text(&cfg, longline, 5000, "t", err, sizeof err), -1);
    assert_non_null(strstr(err, "too long"));
    free(longline);
    tw_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_lists_add_up),
        cmocka_unit_test(test_parse_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
