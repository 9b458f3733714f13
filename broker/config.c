/* config.c — see config.h. The table below is the single source of every setting. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* T_LIST: a string setting that may be given several times; each value adds one entry
 * (entries joined with '\n'), and entries from the file, environment and flags add up. */
typedef enum { T_STR, T_INT, T_SIZE, T_DURATION, T_LIST } setting_type;

typedef struct setting {
    const char *name; /* flag name without dashes; env is TIDEWIRE_ + upper(name) */
    setting_type type;
    size_t offset;
    const char *def;
    int64_t min, max; /* bounds for numbers (inclusive) */
    const char *choices; /* for strings: "a|b|c", or NULL for any */
    const char *help;
} setting;

#define OFF(f) offsetof(tw_config, f)
#define KiB (1024LL)
#define MiB (1024LL * 1024)
#define GiB (1024LL * 1024 * 1024)

static const setting settings[] = {
    {"node-id", T_STR, OFF(node_id), "n1", 0, 0, NULL,
     "This node's name: [A-Za-z0-9_-]{1,32}; part of every position it assigns"},
    {"listen", T_STR, OFF(listen), "0.0.0.0:8080", 0, 0, NULL,
     "HOST:PORT for WebSocket clients (/ws) and the HTTP endpoints"},
    {"data", T_STR, OFF(data), "./data", 0, 0, NULL, "Directory of the durable event log"},
    {"durability", T_STR, OFF(durability), "local", 0, 0, "local|quorum",
     "When a publish is acknowledged: fsynced here (local) or on a majority of the cluster "
     "(quorum; on a single node the two are the same)"},
    {"api-key", T_STR, OFF(api_key), "", 0, 0, NULL,
     "Bearer key for the HTTP API; empty: the API is open (development only)"},
    {"config", T_STR, OFF(config), "", 0, 0, NULL,
     "Config file of `name = value` lines (flags and environment override it)"},
    {"log-level", T_STR, OFF(log_level), "info", 0, 0, "debug|info|warn|error",
     "Least severe log level written"},
    {"log-format", T_STR, OFF(log_format), "text", 0, 0, "text|json",
     "Log lines as text or as JSON lines"},
    {"threads", T_INT, OFF(threads), "1", 1, 64, NULL,
     "Event loops serving clients, each on its own thread with its own listening socket "
     "(SO_REUSEPORT); more than 1 for machines with cores to spare"},
    {"max-connections", T_INT, OFF(max_connections), "100000", 1, 10000000, NULL,
     "Connections (WebSocket and HTTP) served at once; more are refused"},
    {"max-message-size", T_SIZE, OFF(max_message_size), "1MiB", 128, 64 * MiB, NULL,
     "Largest WebSocket message or HTTP body accepted (WebSocket: close 1009; HTTP: 413)"},
    {"max-header-bytes", T_SIZE, OFF(max_header_bytes), "8KiB", 512, 80 * KiB, NULL,
     "Largest HTTP request head (request line and headers): 431 beyond"},
    {"max-subscriptions", T_INT, OFF(max_subscriptions), "1024", 1, 1000000, NULL,
     "Channels one connection may subscribe to"},
    {"max-last", T_INT, OFF(max_last), "10000", 0, 1000000, NULL,
     "Largest `last` a subscribe may ask for"},
    {"handshake-timeout", T_DURATION, OFF(handshake_timeout_ms), "10s", 100, 3600000, NULL,
     "Time a new connection has to send a whole HTTP request or upgrade"},
    {"ping-interval", T_DURATION, OFF(ping_interval_ms), "25s", 100, 3600000, NULL,
     "Interval of the server's WebSocket pings"},
    {"idle-timeout", T_DURATION, OFF(idle_timeout_ms), "60s", 200, 86400000, NULL,
     "A WebSocket client that sends nothing (not even a pong) for this long is closed"},
    {"outbound-high-water", T_SIZE, OFF(outbound_high_water), "1MiB", 4 * KiB, 1 * GiB, NULL,
     "Bytes queued to a client beyond which it stops taking live events and is fed from the "
     "log at its own pace"},
    {"slow-consumer-timeout", T_DURATION, OFF(slow_consumer_timeout_ms), "60s", 100, 86400000, NULL,
     "A client that stays behind (queue over the high-water mark) this long is closed "
     "with 4208 (it resumes from the log)"},
    {"replay-chunk-events", T_INT, OFF(replay_chunk_events), "512", 1, 100000, NULL,
     "Events read from the log per replay step"},
    {"replay-chunk-bytes", T_SIZE, OFF(replay_chunk_bytes), "256KiB", 1 * KiB, 64 * MiB, NULL,
     "Bytes of event data read from the log per replay step"},
    {"store-map-size", T_SIZE, OFF(store_map_size), "8GiB", 1 * MiB, 1LL << 40, NULL,
     "LMDB map size: the largest the log may grow (virtual address space, not memory); at "
     "this size publishes are refused with 503 (store-full)"},
    {"store-max-queue-bytes", T_SIZE, OFF(store_max_queue_bytes), "64MiB", 64 * KiB, 4 * GiB, NULL,
     "Bytes of publishes waiting for the log writer before new ones are refused (503)"},
    {"shutdown-timeout", T_DURATION, OFF(shutdown_timeout_ms), "5s", 0, 600000, NULL,
     "On SIGTERM/SIGINT, time given to clients to receive their close frames"},
    /* -- the log: retention, growth (issue 3) -- */
    {"retention-max-age", T_DURATION, OFF(retention_max_age_ms), "0", 0, 100LL * 366 * 86400000,
     NULL,
     "Events older than this are trimmed from the log (oldest first); 0: kept whatever "
     "their age"},
    {"retention-max-count", T_INT, OFF(retention_max_count), "0", 0, 1LL << 50, NULL,
     "Newest events kept per channel; older ones are trimmed; 0: no limit"},
    {"retention-max-bytes", T_SIZE, OFF(retention_max_bytes), "0", 0, 1LL << 50, NULL,
     "Channel and data bytes the whole log keeps; beyond, its oldest events are trimmed "
     "whatever their channel; 0: no limit"},
    {"retention", T_LIST, OFF(retention), "", 0, 0, NULL,
     "Retention of one namespace (repeatable): `PREFIX [max-age=DURATION] [max-count=N]`, "
     "e.g. `chat: max-age=1h max-count=1000`; the longest matching prefix wins, a field not "
     "given takes the default above, 0 means no limit"},
    {"retention-interval", T_DURATION, OFF(retention_interval_ms), "1s", 10, 3600000, NULL,
     "Time between the log writer's retention passes (each trims at most 1024 events in one "
     "transaction; a pass with more to do is followed by another at once)"},
    {"store-map-initial", T_SIZE, OFF(store_map_initial), "1GiB", 64 * KiB, 1LL << 40, NULL,
     "LMDB map size at start; when a commit finds it full the map doubles, up to "
     "store-map-size (beyond, publishes are refused with 503 until retention or an operator "
     "frees space)"},
    /* -- authentication, permissions, TLS, limits (issue 5) -- */
    {"jwt-key", T_LIST, OFF(jwt_key), "", 0, 0, NULL,
     "A key that verifies client tokens (repeatable): `kid=ID alg=HS256 secret-file=PATH` or "
     "`kid=ID alg=RS256|ES256 public-key-file=PATH`; none: the node is open (development)"},
    {"jwt-audience", T_STR, OFF(jwt_audience), "", 0, 0, NULL,
     "Required `aud` of client tokens; empty: not checked"},
    {"jwt-issuer", T_STR, OFF(jwt_issuer), "", 0, 0, NULL,
     "Required `iss` of client tokens; empty: not checked"},
    {"jwt-leeway", T_DURATION, OFF(jwt_leeway_ms), "30s", 0, 300000, NULL,
     "Clock skew allowed on a token's exp and nbf"},
    {"auth-timeout", T_DURATION, OFF(auth_timeout_ms), "10s", 100, 600000, NULL,
     "With jwt-key set, a client that has not authenticated this long after the upgrade is "
     "closed with 4001"},
    {"namespace", T_LIST, OFF(namespace), "", 0, 0, NULL,
     "Channel namespace rules (repeatable): `PREFIX|* [subscribe=TERMS] [publish=TERMS] "
     "[presence=on|off] [join-leave=on|off]`, TERMS a comma list of all, users, granted, "
     "none, role:NAME (docs/security.md)"},
    {"admin-key", T_STR, OFF(admin_key), "", 0, 0, NULL,
     "Bearer key for /stats and /metrics (the /admin page holds no data and asks for it); "
     "empty: they are open"},
    {"allowed-origins", T_STR, OFF(allowed_origins), "", 0, 0, NULL,
     "Comma list of browser origins allowed to open a WebSocket (e.g. "
     "https://app.example.com); empty: any origin"},
    {"max-connections-per-ip", T_INT, OFF(max_connections_per_ip), "0", 0, 10000000, NULL,
     "Connections one client IP address may hold at once; more are refused; 0: no limit"},
    {"new-connections-per-ip", T_INT, OFF(new_connections_per_ip), "0", 0, 1000000, NULL,
     "New connections per second one client IP address may open; more are refused; 0: no "
     "limit"},
    {"max-messages-per-second", T_INT, OFF(max_messages_per_second), "0", 0, 10000000, NULL,
     "WebSocket messages per second one connection may send (token bucket); beyond, it is "
     "closed with 4129; 0: no limit"},
    {"messages-burst", T_INT, OFF(messages_burst), "0", 0, 100000000, NULL,
     "Depth of that token bucket (messages sent at once after a quiet spell); 0: twice the "
     "rate"},
    {"tls-listen", T_STR, OFF(tls_listen), "", 0, 0, NULL,
     "HOST:PORT for wss:// and https:// (TLS 1.2+), beside the plain --listen; empty: no TLS"},
    {"tls-cert", T_STR, OFF(tls_cert), "", 0, 0, NULL,
     "PEM certificate chain (leaf first) for tls-listen; re-read on SIGHUP"},
    {"tls-key", T_STR, OFF(tls_key), "", 0, 0, NULL,
     "PEM private key of tls-cert; re-read on SIGHUP"},
    /* -- admin dashboard (issue 7) -- */
    /* -- the cluster (issue 4) -- */
    {"cluster-listen", T_STR, OFF(cluster_listen), "", 0, 0, NULL,
     "tcp://HOST:PORT (or tls+tcp://) where this node takes replication from its peers; HOST "
     "must be an address the peers can dial; empty: a single node"},
    {"peers", T_STR, OFF(peers), "", 0, 0, NULL,
     "Comma list of peer cluster addresses to join through (seeds: the rest of the cluster "
     "is learned from them); may include this node's own"},
    {"cluster-heartbeat", T_DURATION, OFF(cluster_heartbeat_ms), "500ms", 20, 60000, NULL,
     "Heartbeat period between nodes (each carries the node's digest, so lags show this fast)"},
    {"cluster-suspect-timeout", T_DURATION, OFF(cluster_suspect_timeout_ms), "2s", 50, 600000, NULL,
     "Silence after which a member is suspect"},
    {"cluster-dead-timeout", T_DURATION, OFF(cluster_dead_timeout_ms), "5s", 100, 3600000, NULL,
     "Silence after which a member is dead (its presence entries go)"},
    {"cluster-tls-cert", T_STR, OFF(cluster_tls_cert), "", 0, 0, NULL,
     "PEM certificate of this node for mutual TLS between nodes (with tls+tcp:// addresses)"},
    {"cluster-tls-key", T_STR, OFF(cluster_tls_key), "", 0, 0, NULL,
     "PEM private key of cluster-tls-cert"},
    {"cluster-tls-ca", T_STR, OFF(cluster_tls_ca), "", 0, 0, NULL,
     "PEM CA that signs every node's cluster certificate (use one dedicated to the cluster)"},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static int64_t suffix_mult(const char *sfx, const char *const *names, const int64_t *mults,
                           size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(sfx, names[i]) == 0) return mults[i];
    return -1;
}

/* Parses a non-negative integer with a unit suffix from a table; the whole string must match. */
static int parse_with_suffix(const char *s, const char *const *names, const int64_t *mults,
                             size_t n, int64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return -1;
    while (*end == ' ')
        end++;
    int64_t mult = suffix_mult(end, names, mults, n);
    if (mult < 0) return -1;
    if (v > (unsigned long long)(INT64_MAX / mult)) return -1;
    *out = (int64_t)v * mult;
    return 0;
}

int tw_parse_size(const char *s, int64_t *out)
{
    static const char *const names[] = {"", "b", "k", "kb", "kib", "m", "mb", "mib",
                                        "g", "gb", "gib", "t", "tb", "tib"};
    static const int64_t mults[] = {1, 1, KiB, KiB, KiB, MiB, MiB, MiB,
                                    GiB, GiB, GiB, 1024 * GiB, 1024 * GiB, 1024 * GiB};
    return parse_with_suffix(s, names, mults, sizeof mults / sizeof mults[0], out);
}

int tw_parse_duration_ms(const char *s, int64_t *out)
{
    static const char *const names[] = {"", "ms", "s", "m", "h"};
    static const int64_t mults[] = {1000, 1, 1000, 60000, 3600000};
    return parse_with_suffix(s, names, mults, sizeof mults / sizeof mults[0], out);
}

int tw_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return -1;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -1;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen) return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 0 || p > 65535) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static const setting *find_setting(const char *name, size_t len)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0)
            return &settings[i];
    return NULL;
}

static int choice_ok(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && strncmp(p, v, l) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

/* Sets one setting from text; `from` names the source for the error message. */
static int apply(tw_config *cfg, const setting *st, const char *value, const char *from,
                 char *errbuf, size_t errlen)
{
    char *base = (char *)cfg;
    if (st->type == T_LIST) {
        char **slot = (char **)(base + st->offset);
        size_t old = *slot ? strlen(*slot) : 0, vl = strlen(value);
        if (vl == 0 && *slot) return 0;
        char *joined = realloc(*slot, old + vl + 2);
        if (!joined) {
            seterr(errbuf, errlen, "out of memory");
            return -1;
        }
        if (old && vl) joined[old++] = '\n';
        memcpy(joined + old, value, vl + 1);
        *slot = joined;
        return 0;
    }
    if (st->type == T_STR) {
        if (st->choices && !choice_ok(st->choices, value)) {
            seterr(errbuf, errlen, "%s: %s must be one of %s", from, st->name, st->choices);
            return -1;
        }
        char *copy = strdup(value);
        if (!copy) {
            seterr(errbuf, errlen, "out of memory");
            return -1;
        }
        char **slot = (char **)(base + st->offset);
        free(*slot);
        *slot = copy;
        return 0;
    }
    int64_t v;
    int rc;
    const char *what;
    switch (st->type) {
    case T_SIZE:
        rc = tw_parse_size(value, &v);
        what = "a size such as 512, 64KiB or 1MiB";
        break;
    case T_DURATION:
        rc = tw_parse_duration_ms(value, &v);
        what = "a duration such as 500ms, 25s or 2m";
        break;
    default:
        rc = parse_with_suffix(value, (const char *const[]){""}, (const int64_t[]){1}, 1, &v);
        what = "a whole number";
        break;
    }
    if (rc != 0) {
        seterr(errbuf, errlen, "%s: %s must be %s, not '%s'", from, st->name, what, value);
        return -1;
    }
    if (v < st->min || v > st->max) {
        seterr(errbuf, errlen, "%s: %s=%s is out of range [%lld, %lld]", from, st->name, value,
               (long long)st->min, (long long)st->max);
        return -1;
    }
    *(int64_t *)(base + st->offset) = v;
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int tw_config_parse_text(tw_config *cfg, const char *text, size_t len, const char *path,
                         char *errbuf, size_t errlen)
{
    char line[4096];
    int lineno = 0, rc = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
        lineno++;
        if (ll >= sizeof line || memchr(text + pos, '\0', ll)) {
            seterr(errbuf, errlen, "%s:%d: line too long or not text", path, lineno);
            return -1;
        }
        memcpy(line, text + pos, ll);
        line[ll] = '\0';
        pos += ll + (nl ? 1 : 0);
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        char *name, *value;
        if (eq) {
            *eq = '\0';
            name = trim(s);
            value = trim(eq + 1);
        } else {
            name = s;
            value = s + strcspn(s, " \t");
            if (*value) *value++ = '\0';
            value = trim(value);
        }
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = '\0';
            value++;
        }
        char from[512];
        snprintf(from, sizeof from, "%s:%d", path, lineno);
        const setting *st = find_setting(name, strlen(name));
        if (!st || strcmp(st->name, "config") == 0) {
            seterr(errbuf, errlen, "%s: unknown setting '%s'", from, name);
            rc = -1;
            break;
        }
        if (apply(cfg, st, value, from, errbuf, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    return rc;
}

/* Config files are small: read whole, then parsed from memory (tw_config_parse_text). */
static int load_file(tw_config *cfg, const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        seterr(errbuf, errlen, "config %s: %s", path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    int rc = 0;
    do {
        if (len == cap) {
            char *more = cap < (1u << 24) ? realloc(text, cap = cap ? cap * 2 : 8192) : NULL;
            if (!more) {
                seterr(errbuf, errlen, "config %s: too large or out of memory", path);
                rc = -1;
                break;
            }
            text = more;
        }
        n = fread(text + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    if (rc == 0 && ferror(f)) {
        seterr(errbuf, errlen, "config %s: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    if (rc == 0) rc = tw_config_parse_text(cfg, text ? text : "", len, path, errbuf, errlen);
    if (text) memset(text, 0, len); /* it may hold keys */
    free(text);
    return rc;
}

/* Environment variable name for a setting: TIDEWIRE_ + upper case, dashes as underscores. */
static void env_name(const setting *st, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "TIDEWIRE_");
    for (const char *p = st->name; *p && n + 1 < len; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static const char *env_get(char **env, const char *name)
{
    size_t nl = strlen(name);
    for (char **e = env; e && *e; e++)
        if (strncmp(*e, name, nl) == 0 && (*e)[nl] == '=') return *e + nl + 1;
    return NULL;
}

/* Finds --name / --name=value at argv[*i]; returns the setting or NULL, sets *value. */
static int parse_flag(int argc, char **argv, int *i, const setting **st, const char **value,
                      char *errbuf, size_t errlen)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0) {
        seterr(errbuf, errlen, "unexpected argument '%s' (see --help)", arg);
        return -1;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    *st = find_setting(name, nl);
    if (!*st) {
        seterr(errbuf, errlen, "unknown flag '--%.*s' (see --help)", (int)nl, name);
        return -1;
    }
    if (eq) {
        *value = eq + 1;
    } else {
        if (*i + 1 >= argc) {
            seterr(errbuf, errlen, "--%s needs a value", (*st)->name);
            return -1;
        }
        *value = argv[++*i];
    }
    return 0;
}

int tw_config_load(tw_config *cfg, int argc, char **argv, char **env, char *errbuf, size_t errlen,
                   FILE *out)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NSETTINGS; i++)
        if (apply(cfg, &settings[i], settings[i].def, "default", errbuf, errlen) != 0) return -1;

    /* First pass over argv: --help, --version and --config, which decide what to read. */
    const char *config_path = env_get(env, "TIDEWIRE_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            tw_config_print_help(out);
            return TW_CONFIG_EXIT_HELP;
        }
        if (strcmp(argv[i], "--help-markdown") == 0) {
            tw_config_print_markdown(out);
            return TW_CONFIG_EXIT_HELP;
        }
        if (strcmp(argv[i], "--version") == 0) {
            fprintf(out, "tidewire %s\n", TW_VERSION);
            return TW_CONFIG_EXIT_VERSION;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config_path = argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0) config_path = argv[i] + 9;
    }
    if (config_path && *config_path) {
        if (apply(cfg, find_setting("config", 6), config_path, "--config", errbuf, errlen) != 0)
            return -1;
        if (load_file(cfg, config_path, errbuf, errlen) != 0) return -1;
    }
    for (size_t i = 0; i < NSETTINGS; i++) {
        char name[96];
        env_name(&settings[i], name, sizeof name);
        const char *v = env_get(env, name);
        if (v && strcmp(settings[i].name, "config") != 0 &&
            apply(cfg, &settings[i], v, name, errbuf, errlen) != 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const setting *st;
        const char *value;
        if (parse_flag(argc, argv, &i, &st, &value, errbuf, errlen) != 0) return -1;
        char from[64];
        snprintf(from, sizeof from, "--%s", st->name);
        if (apply(cfg, st, value, from, errbuf, errlen) != 0) return -1;
    }
    return TW_CONFIG_OK;
}

void tw_config_free(tw_config *cfg)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (settings[i].type != T_STR && settings[i].type != T_LIST) continue;
        char **slot = (char **)((char *)cfg + settings[i].offset);
        free(*slot);
        *slot = NULL;
    }
}

void tw_config_print_help(FILE *out)
{
    fprintf(out, "Usage: tidewire [--SETTING VALUE]...\n\n"
                 "tidewire %s: a clustered real-time event broker with a durable log.\n"
                 "With no arguments it serves one node on 0.0.0.0:8080 with its log in ./data.\n"
                 "Each setting is a flag, an environment variable or a line of the --config "
                 "file,\nin that order of precedence.\n\n",
            TW_VERSION);
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *st = &settings[i];
        char env[96];
        env_name(st, env, sizeof env);
        fprintf(out, "  --%-24s %s\n", st->name, st->help);
        fprintf(out, "  %-26s env %s, default \"%s\"%s%s\n", "", env, st->def,
                st->choices ? ", one of " : "", st->choices ? st->choices : "");
    }
    fprintf(out, "\n  --help                     this text\n  --help-markdown            the settings as a "
                 "Markdown table (docs/configuration.md)\n  --version                  the version\n");
}

void tw_config_print_markdown(FILE *out)
{
    fprintf(out, "| flag | environment | default | description |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *st = &settings[i];
        char env[96];
        env_name(st, env, sizeof env);
        fprintf(out, "| `--%s` | `%s` | `%s` | %s%s%s |\n", st->name, env, st->def, st->help,
                st->choices ? "; one of " : "", st->choices ? st->choices : "");
    }
}
