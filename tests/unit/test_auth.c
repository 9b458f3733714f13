/*
 * Unit tests of broker/auth.c: the jwt-key and namespace entries, and every permission
 * rule (open node, personal channels, token grants, namespace terms, longest prefix).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"

static char secret_path[64], short_path[64];

static int setup(void **state)
{
    snprintf(secret_path, sizeof secret_path, "/tmp/tw-auth-secret-XXXXXX");
    int fd = mkstemp(secret_path);
    const char s[] = "0123456789abcdef0123456789abcdef\n";
    assert_int_equal(write(fd, s, sizeof s - 1), (ssize_t)(sizeof s - 1));
    close(fd);
    snprintf(short_path, sizeof short_path, "/tmp/tw-auth-short-XXXXXX");
    fd = mkstemp(short_path);
    assert_int_equal(write(fd, "short\n", 6), 6);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    unlink(secret_path);
    unlink(short_path);
    return 0;
}

static tw_auth *load(const char *namespaces)
{
    char keys[256], err[256] = "";
    snprintf(keys, sizeof keys, "kid=k1 alg=HS256 secret-file=%s", secret_path);
    tw_auth *a = NULL;
    int rc = tw_auth_load_text(&a, keys, namespaces, "", "", 30, err, sizeof err);
    if (rc != 0) fail_msg("load failed: %s", err);
    return a;
}

/* A user with roles and grants, as a verified token would give. */
static tw_jwt_claims *user(const char *sub, const char *roles, const char *grants)
{
    tw_jwt_claims *c = calloc(1, sizeof *c);
    c->sub = strdup(sub);
    c->roles = calloc(8, sizeof(char *));
    c->channels = calloc(8, sizeof(char *));
    char buf[256];
    snprintf(buf, sizeof buf, "%s", roles ? roles : "");
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        c->roles[c->nroles++] = strdup(t);
    snprintf(buf, sizeof buf, "%s", grants ? grants : "");
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        c->channels[c->nchannels++] = strdup(t);
    return c;
}

static void user_free(tw_jwt_claims *c)
{
    tw_jwt_claims_free(c);
    free(c);
}

#define SUB(a, who, ch) tw_auth_may_subscribe(a, who, ch, strlen(ch))
#define PUB(a, who, ch) tw_auth_may_publish(a, who, ch, strlen(ch))

static void test_open_node_allows_everything(void **state)
{
    tw_auth *a = NULL;
    char err[256];
    assert_int_equal(
        tw_auth_load_text(&a, "", "vessel: presence=on", NULL, NULL, 0, err, sizeof err), 0);
    assert_int_equal(tw_auth_required(a), 0);
    assert_true(SUB(a, NULL, "user:7"));
    assert_true(PUB(a, NULL, "role:admin"));
    assert_true(PUB(a, NULL, "anything"));
    /* namespaces still switch presence on an open node */
    assert_true(tw_auth_flags(a, "vessel:1", 8).presence);
    assert_false(tw_auth_flags(a, "other", 5).presence);
    tw_jwt_claims c;
    assert_int_equal(tw_auth_verify(a, "a.b.c", 5, 0, &c), TW_JWT_EKID);
    tw_auth_free(a);
}

static void test_defaults_when_secured(void **state)
{
    tw_auth *a = load("");
    tw_jwt_claims *u7 = user("7", "crew", NULL);
    assert_true(tw_auth_required(a));
    /* anonymous: nothing */
    assert_false(SUB(a, NULL, "news"));
    assert_false(SUB(a, NULL, "user:7"));
    /* a user: its own channel and its roles' channels, nothing else */
    assert_true(SUB(a, u7, "user:7"));
    assert_false(SUB(a, u7, "user:8"));
    assert_false(SUB(a, u7, "user:77"));
    assert_false(SUB(a, u7, "user:"));
    assert_true(SUB(a, u7, "role:crew"));
    assert_false(SUB(a, u7, "role:admin"));
    assert_false(SUB(a, u7, "vessel:42"));
    /* nobody publishes from a client by default, not even to their own channel */
    assert_false(PUB(a, u7, "user:7"));
    assert_false(PUB(a, u7, "vessel:42"));
    assert_false(tw_auth_flags(a, "user:7", 6).presence);
    user_free(u7);
    tw_auth_free(a);
}

static void test_grants(void **state)
{
    tw_auth *a = load("");
    tw_jwt_claims *u = user("7", NULL, "vessel:*,form:12,user:9");
    assert_true(SUB(a, u, "vessel:42"));
    assert_true(SUB(a, u, "vessel:"));
    assert_false(SUB(a, u, "vessel"));
    assert_true(SUB(a, u, "form:12"));
    assert_false(SUB(a, u, "form:123"));
    assert_true(SUB(a, u, "user:9")); /* an explicit grant opens another user's channel */
    /* grants do not give publish unless a namespace says `granted` */
    assert_false(PUB(a, u, "vessel:42"));
    user_free(u);
    tw_auth_free(a);

    a = load("vessel: publish=granted");
    u = user("7", NULL, "vessel:4*");
    assert_true(PUB(a, u, "vessel:42"));
    assert_false(PUB(a, u, "vessel:52"));
    user_free(u);
    tw_auth_free(a);

    assert_true(tw_auth_pattern_match("*", "x", 1));
    assert_true(tw_auth_pattern_match("a*", "a", 1));
    assert_false(tw_auth_pattern_match("a", "ab", 2));
    assert_false(tw_auth_pattern_match("ab*", "a", 1));
}

static void test_namespace_terms(void **state)
{
    tw_auth *a = load("news: subscribe=all\n"
                      "vessel: subscribe=users publish=role:dispatcher,role:captain presence=on "
                      "join-leave=on;"
                      "vessel:secret: subscribe=role:admin publish=none\n"
                      "chat: subscribe=users publish=users presence=off\n"
                      "user: subscribe=users publish=users\n"
                      "* subscribe=users");
    tw_jwt_claims *u = user("7", "crew", NULL), *d = user("8", "dispatcher", NULL),
                  *adm = user("9", "admin", NULL);
    /* all: even without a token */
    assert_true(SUB(a, NULL, "news:1"));
    assert_false(PUB(a, NULL, "news:1"));
    /* users */
    assert_true(SUB(a, u, "vessel:42"));
    assert_false(SUB(a, NULL, "vessel:42"));
    /* roles */
    assert_false(PUB(a, u, "vessel:42"));
    assert_true(PUB(a, d, "vessel:42"));
    /* the longest prefix wins */
    assert_false(SUB(a, u, "vessel:secret:1"));
    assert_true(SUB(a, adm, "vessel:secret:1"));
    assert_false(PUB(a, d, "vessel:secret:1"));
    /* flags */
    assert_true(tw_auth_flags(a, "vessel:1", 8).presence);
    assert_true(tw_auth_flags(a, "vessel:1", 8).join_leave);
    assert_false(tw_auth_flags(a, "vessel:secret:1", 15).presence);
    assert_false(tw_auth_flags(a, "chat:1", 6).presence);
    assert_true(PUB(a, u, "chat:1"));
    /* the default namespace */
    assert_true(SUB(a, u, "misc"));
    assert_false(SUB(a, NULL, "misc"));
    assert_false(PUB(a, u, "misc"));
    /* a namespace cannot open personal channels to others */
    assert_true(SUB(a, u, "user:7"));
    assert_false(SUB(a, u, "user:8"));
    assert_true(PUB(a, u, "user:7"));
    assert_false(PUB(a, u, "user:8"));
    assert_false(SUB(a, u, "role:admin"));
    user_free(u);
    user_free(d);
    user_free(adm);
    tw_auth_free(a);
}

static void expect_error(const char *keys, const char *ns, const char *needle)
{
    tw_auth *a = NULL;
    char err[256] = "";
    assert_int_equal(tw_auth_load_text(&a, keys, ns, NULL, NULL, 0, err, sizeof err), -1);
    assert_null(a);
    if (!strstr(err, needle)) fail_msg("error '%s' does not say '%s'", err, needle);
}

static void test_config_errors(void **state)
{
    char k[256];
    expect_error("alg=HS256 secret-file=/x", "", "kid");
    expect_error("kid=a alg=none secret-file=/x", "", "alg must be");
    expect_error("kid=a alg=HS256", "", "secret-file");
    expect_error("kid=a alg=RS256 secret-file=/x", "", "public-key-file");
    expect_error("kid=a alg=HS256 secret-file=/nonexistent/x", "", "cannot read");
    expect_error("kid=a alg=HS256 secret=inline-secret-value", "", "unknown field 'secret'");
    snprintf(k, sizeof k, "kid=a alg=HS256 secret-file=%s", short_path);
    expect_error(k, "", "at least 32 bytes");
    snprintf(k, sizeof k, "kid=a alg=RS256 public-key-file=%s", secret_path);
    expect_error(k, "", "no RSA public key");
    snprintf(k, sizeof k, "kid=a alg=HS256 secret-file=%s;kid=a alg=HS256 secret-file=%s",
             secret_path, secret_path);
    expect_error(k, "", "twice");
    expect_error("", "vessel: subscribe=everyone", "terms are");
    expect_error("", "vessel: presence=yes", "on or off");
    expect_error("", "vessel: colour=blue", "unknown rule");
    expect_error("", "subscribe=all", "first word");
    expect_error("", "a: presence=on\na: presence=off", "twice");
    /* a secret never appears in an error */
    expect_error("kid=a alg=HS256 token=sup3rs3cr3t", "", "unknown field 'token'");
    tw_auth *a = NULL;
    char err[256] = "";
    assert_int_equal(tw_auth_load_text(&a, "kid=a alg=HS256 secret=sup3rs3cr3t", "", NULL, NULL, 0,
                                       err, sizeof err),
                     -1);
    assert_null(strstr(err, "sup3rs3cr3t"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_node_allows_everything),
        cmocka_unit_test(test_defaults_when_secured),
        cmocka_unit_test(test_grants),
        cmocka_unit_test(test_namespace_terms),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
