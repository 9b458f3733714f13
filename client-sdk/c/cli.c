/*
 * tidewire-cli: pub, sub, stats and bench, built on the twc SDK.
 *
 * Each subcommand owns one libuv loop and ends by closing every handle and checking that
 * uv_loop_close() succeeds (a debug assert), so a leaked handle shows up in tests.
 */
#include "cli.h"
#include "twc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define DEFAULT_URL "ws://127.0.0.1:8080/ws"

static const char usage_text[] =
    "usage: tidewire-cli COMMAND [ARGS] [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  pub CHANNEL JSON [--url URL] [--token T] [--timeout S]\n"
    "      Publish JSON (any JSON value) to CHANNEL once; print the event's position when\n"
    "      it is durable. --timeout: give up after S seconds (default 10).\n"
    "  sub CHANNEL [--url URL] [--token T] [--cursor-file F] [--since CURSOR] [--last N]\n"
    "      [--count N] [--timeout S]\n"
    "      Print each event as one JSON line {\"channel\",\"pos\",\"ts\",\"data\"}. With\n"
    "      --cursor-file, resume from the cursor saved in F (if F exists) and save the\n"
    "      cursor to F after each event. --since: a cursor to start from when F does not\n"
    "      exist ({} = everything kept). --last N: also the newest N events first.\n"
    "      --count N: exit after N events. --timeout S: exit after S seconds (status 1 if\n"
    "      --count was given and not reached). Reconnects and resumes by itself.\n"
    "  stats [--url http://HOST:PORT] [--timeout S]\n"
    "      GET /stats and print it.\n"
    "  bench fanout --url URL --subs N --rate R --duration S --size BYTES [--channel C]\n"
    "      [--inflight K]\n"
    "      N subscribers in this process, one publisher at R events/s (0: as fast as\n"
    "      possible with K publishes in flight, default 256) for S seconds; reports\n"
    "      deliveries/s, loss and publish-to-delivery latency.\n"
    "  bench publish --url URL --inflight K --duration S --size BYTES [--conns C]\n"
    "      [--channel C]\n"
    "      Acknowledged publishes with K in flight over C connections; reports acks/s and\n"
    "      ack latency.\n"
    "\n"
    "--url defaults to $TIDEWIRE_URL or " DEFAULT_URL "; --token to $TIDEWIRE_TOKEN.\n"
    "exit status: 0 ok, 1 error, 2 usage.\n";

void cli_usage(FILE *f)
{
    fputs(usage_text, f);
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("tidewire-cli: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(tidewire-cli --help for usage)\n", stderr);
    return CLI_USAGE;
}

bool cli_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t nl = strlen(name);
    if (strncmp(a, name, nl)) return false;
    if (a[nl] == '=') {
        *val = a + nl + 1;
        return true;
    }
    if (a[nl] != '\0') return false;
    if (*i + 1 >= argc) {
        *val = NULL;
        return true;
    }
    *val = argv[++*i];
    return true;
}

bool cli_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool cli_double(const char *s, double *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < 0) return false;
    *out = v;
    return true;
}

const char *cli_default_url(void)
{
    const char *u = getenv("TIDEWIRE_URL");
    return u && *u ? u : DEFAULT_URL;
}

const char *cli_default_token(void)
{
    const char *t = getenv("TIDEWIRE_TOKEN");
    return t && *t ? t : NULL;
}

uint64_t cli_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

int cli_nofile_allows(uint64_t nconns)
{
    uint64_t nofile = cli_raise_nofile();
    if (!nofile || nconns + 32 <= nofile) return 0;
    fprintf(stderr,
            "tidewire-cli bench: %llu connections need more open files than the limit (%llu)\n",
            (unsigned long long)nconns, (unsigned long long)nofile);
    return -1;
}

static void print_handle(uv_handle_t *h, void *arg)
{
    fprintf(stderr, "tidewire-cli: handle left open: %s%s\n", uv_handle_type_name(h->type),
            uv_is_closing(h) ? " (closing)" : "");
}

int cli_loop_finish(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    if (rc) {
        uv_walk(loop, print_handle, NULL);
        fprintf(stderr, "tidewire-cli: uv_loop_close: %s\n", uv_strerror(rc));
    }
    assert(rc == 0 && "every handle closed before exit");
    return rc;
}

static void close_if_open(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

/* ---- common client plumbing for pub and sub ------------------------------------------------ */

typedef struct run {
    uv_loop_t loop;
    twc_client *client;
    uv_timer_t timeout;
    uv_signal_t sigint, sigterm;
    bool finishing;
    bool freed;
    int status;
    /* sub */
    const char *channel;
    char *channel_json; /* the channel as a JSON string literal */
    const char *cursor_file;
    uint64_t count, max_count;
    bool warned_save;
} run;

static void run_free_all(run *r)
{
    if (r->freed) return;
    r->freed = true;
    twc_free(r->client);
    close_if_open((uv_handle_t *)&r->timeout);
    close_if_open((uv_handle_t *)&r->sigint);
    close_if_open((uv_handle_t *)&r->sigterm);
}

/* Closes the connection gracefully, then frees everything (see on_state). */
static void run_finish(run *r, int status)
{
    if (r->finishing) return;
    r->finishing = true;
    r->status = status;
    uv_timer_stop(&r->timeout);
    twc_close(r->client);
    if (!r->freed && twc_get_state(r->client) == TWC_STATE_DISCONNECTED) run_free_all(r);
}

static void on_run_state(twc_client *c, twc_state s, const twc_error *why, void *arg)
{
    run *r = arg;
    if (s != TWC_STATE_DISCONNECTED) return;
    if (r->finishing) {
        run_free_all(r);
        return;
    }
    /* The server stopped us: a terminal close (4000-4099), a refused connect, or 1000. */
    bool normal = why && why->err == TWC_E_PEER_CLOSED && why->code == 1000;
    if (normal)
        fprintf(stderr, "tidewire-cli: the server closed the connection (1000)\n");
    else if (why && why->err == TWC_E_PEER_CLOSED)
        fprintf(stderr, "tidewire-cli: giving up: the server closed with %d%s%s\n", why->code,
                *why->message ? ": " : "", why->message);
    else if (why)
        fprintf(stderr, "tidewire-cli: giving up: %s%s\n", why->message,
                why->err == TWC_E_SERVER ? " (connect refused)" : "");
    run_finish(r, why && !normal ? CLI_ERROR : CLI_OK);
}

static void on_run_error(twc_client *c, const twc_error *e, void *arg)
{
    if (e->err == TWC_E_PEER_CLOSED)
        fprintf(stderr, "tidewire-cli: connection closed by the server (%d%s%s)\n", e->code,
                *e->message ? ": " : "", e->message);
    else if (e->err == TWC_E_SERVER)
        fprintf(stderr, "tidewire-cli: server error %d: %s%s%s\n", e->code, e->message,
                e->channel ? " on " : "", e->channel ? e->channel : "");
    else
        fprintf(stderr, "tidewire-cli: %s\n", e->message);
}

static void on_run_timeout(uv_timer_t *t)
{
    run *r = t->data;
    if (r->max_count && r->count < r->max_count) {
        fprintf(stderr, "tidewire-cli: timed out after %llu of %llu events\n",
                (unsigned long long)r->count, (unsigned long long)r->max_count);
        run_finish(r, CLI_ERROR);
    } else if (!r->channel_json) { /* pub */
        fprintf(stderr, "tidewire-cli: timed out waiting for the ack\n");
        run_finish(r, CLI_ERROR);
    } else {
        run_finish(r, CLI_OK);
    }
}

static void on_run_signal(uv_signal_t *s, int signum)
{
    run_finish(s->data, CLI_OK);
}

static int run_init(run *r, const char *url, const char *token, twc_event_cb on_event,
                    twc_subscribed_cb on_subscribed, double timeout_s)
{
    uv_loop_init(&r->loop);
    twc_options o = {
        .url = url,
        .token = token,
        .on_state = on_run_state,
        .on_event = on_event,
        .on_subscribed = on_subscribed,
        .on_error = on_run_error,
        .arg = r,
    };
    int rv = twc_client_new(&r->loop, &o, &r->client);
    if (rv) {
        uv_loop_close(&r->loop);
        return cli_usage_error("bad --url %s: %s", url, twc_strerror(rv));
    }
    uv_timer_init(&r->loop, &r->timeout);
    r->timeout.data = r;
    if (timeout_s > 0) uv_timer_start(&r->timeout, on_run_timeout, (uint64_t)(timeout_s * 1000), 0);
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sigterm);
    r->sigint.data = r->sigterm.data = r;
    uv_signal_start(&r->sigint, on_run_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_run_signal, SIGTERM);
    /* Signal handles must not keep a finished loop alive. */
    uv_unref((uv_handle_t *)&r->sigint);
    uv_unref((uv_handle_t *)&r->sigterm);
    return 0;
}

/* ---- pub ------------------------------------------------------------------------------------ */

static void on_pub_ack(twc_client *c, const twc_error *err, const char *pos, void *arg)
{
    run *r = arg;
    if (err) {
        if (err->err == TWC_E_SERVER)
            fprintf(stderr, "tidewire-cli: publish refused: %d %s\n", err->code, err->message);
        else if (!r->finishing)
            fprintf(stderr, "tidewire-cli: publish failed: %s\n", err->message);
        run_finish(r, CLI_ERROR);
        return;
    }
    printf("%s\n", pos);
    fflush(stdout);
    run_finish(r, CLI_OK);
}

static int cmd_pub(int argc, char **argv)
{
    const char *url = cli_default_url(), *token = cli_default_token(), *v;
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    double timeout = 10;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--url", &v)) {
            if (!(url = v)) return cli_usage_error("--url needs a value");
        } else if (cli_opt(argc, argv, &i, "--token", &v)) {
            if (!(token = v)) return cli_usage_error("--token needs a value");
        } else if (cli_opt(argc, argv, &i, "--timeout", &v)) {
            if (!cli_double(v, &timeout))
                return cli_usage_error("--timeout needs a number of seconds");
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return cli_usage_error("pub: unknown option %s", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return cli_usage_error("pub: too many arguments");
        }
    }
    if (npos != 2) return cli_usage_error("pub needs CHANNEL and JSON");
    run r = {0};
    int rv = run_init(&r, url, token, NULL, NULL, timeout);
    if (rv) return rv;
    rv = twc_publish(r.client, pos[0], pos[1], on_pub_ack, &r);
    if (rv) {
        run_free_all(&r);
        cli_loop_finish(&r.loop);
        if (rv == TWC_E_JSON) return cli_usage_error("pub: not valid JSON: %s", pos[1]);
        if (rv == TWC_E_ARG) return cli_usage_error("pub: bad channel name");
        fprintf(stderr, "tidewire-cli: publish: %s\n", twc_strerror(rv));
        return CLI_ERROR;
    }
    twc_connect(r.client);
    cli_loop_finish(&r.loop);
    return r.status;
}

/* ---- sub ------------------------------------------------------------------------------------ */

static char *read_file(const char *path, int *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = errno;
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                *err = ENOMEM;
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    int ferr = ferror(f);
    fclose(f);
    if (ferr) {
        free(buf);
        *err = EIO;
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Write-then-rename, so that a reader (or a restart after a kill) sees the old cursor or
 * the new one, never a torn file. No fsync: this guards against the process dying, which
 * is what scripts do to it, not against power loss (that would cost a disk flush per
 * event); after a power loss an older cursor only means duplicates, which the SDK drops. */
static int save_cursor(const char *path, const char *json)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) return ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    size_t len = strlen(json), off = 0;
    while (off < len) {
        ssize_t w = write(fd, json + off, len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return e;
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || close(fd)) {
        int e = errno;
        unlink(tmp);
        return e;
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return e;
    }
    return 0;
}

static void sub_save(run *r)
{
    if (!r->cursor_file) return;
    char *json = twc_cursor_json(r->client, r->channel);
    if (!json) return;
    int e = save_cursor(r->cursor_file, json);
    free(json);
    if (e && !r->warned_save) {
        r->warned_save = true;
        fprintf(stderr, "tidewire-cli: cannot save the cursor to %s: %s\n", r->cursor_file,
                strerror(e));
    }
}

static void on_sub_event(twc_client *c, const twc_event *ev, void *arg)
{
    run *r = arg;
    if (r->finishing) return;
    /* data is JSON as the server sent it: keep it on one line (raw newlines can only be
     * whitespace between tokens, never inside strings). */
    char *d = (char *)ev->data;
    for (size_t i = 0; i < ev->data_len; i++)
        if (d[i] == '\n' || d[i] == '\r') d[i] = ' ';
    printf("{\"channel\":%s,\"pos\":\"%s\",\"ts\":%lld,\"data\":%s}\n", r->channel_json, ev->pos,
           (long long)ev->ts, ev->data);
    fflush(stdout);
    sub_save(r); /* after printing: a crash in between repeats the event, never loses it */
    if (r->max_count && ++r->count >= r->max_count) run_finish(r, CLI_OK);
}

static void on_sub_subscribed(twc_client *c, const char *channel, bool recovered, bool replayed,
                              void *arg)
{
    run *r = arg;
    if (!recovered)
        fprintf(stderr,
                "tidewire-cli: %s: not recovered: events were lost to retention since "
                "the saved cursor\n",
                channel);
    /* Save the start point too: after a restart the resume begins here, not at "now". */
    sub_save(r);
}

static int cmd_sub(int argc, char **argv)
{
    const char *url = cli_default_url(), *token = cli_default_token(), *v;
    const char *channel = NULL, *cursor_file = NULL, *since = NULL;
    uint64_t last = 0, count = 0;
    double timeout = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--url", &v)) {
            if (!(url = v)) return cli_usage_error("--url needs a value");
        } else if (cli_opt(argc, argv, &i, "--token", &v)) {
            if (!(token = v)) return cli_usage_error("--token needs a value");
        } else if (cli_opt(argc, argv, &i, "--cursor-file", &v)) {
            if (!(cursor_file = v) || !*v) return cli_usage_error("--cursor-file needs a path");
        } else if (cli_opt(argc, argv, &i, "--since", &v)) {
            if (!(since = v)) return cli_usage_error("--since needs a cursor");
        } else if (cli_opt(argc, argv, &i, "--last", &v)) {
            if (!cli_u64(v, &last) || last > UINT32_MAX)
                return cli_usage_error("--last needs a count");
        } else if (cli_opt(argc, argv, &i, "--count", &v)) {
            if (!cli_u64(v, &count)) return cli_usage_error("--count needs a count");
        } else if (cli_opt(argc, argv, &i, "--timeout", &v)) {
            if (!cli_double(v, &timeout))
                return cli_usage_error("--timeout needs a number of seconds");
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return cli_usage_error("sub: unknown option %s", argv[i]);
        } else if (!channel) {
            channel = argv[i];
        } else {
            return cli_usage_error("sub: too many arguments");
        }
    }
    if (!channel || !*channel) return cli_usage_error("sub needs CHANNEL");

    char *saved = NULL;
    if (cursor_file) {
        int err = 0;
        saved = read_file(cursor_file, &err);
        if (!saved && err != ENOENT) {
            fprintf(stderr, "tidewire-cli: cannot read %s: %s\n", cursor_file, strerror(err));
            return CLI_ERROR;
        }
        if (saved) {
            size_t l = strlen(saved);
            while (l && (saved[l - 1] == '\n' || saved[l - 1] == ' ' || saved[l - 1] == '\r'))
                saved[--l] = '\0';
            if (!l) { /* an empty file: as if there were none */
                free(saved);
                saved = NULL;
            }
        }
    }
    run r = {0};
    r.channel = channel;
    r.cursor_file = cursor_file;
    r.max_count = count;
    cJSON *js = cJSON_CreateString(channel);
    r.channel_json = js ? cJSON_PrintUnformatted(js) : NULL;
    cJSON_Delete(js);
    if (!r.channel_json) {
        free(saved);
        fprintf(stderr, "tidewire-cli: out of memory\n");
        return CLI_ERROR;
    }
    int rv = run_init(&r, url, token, on_sub_event, on_sub_subscribed, timeout);
    if (rv) {
        free(saved);
        free(r.channel_json);
        return rv;
    }
    const char *start = saved ? saved : since;
    rv = twc_subscribe(r.client, channel, start, (unsigned)last);
    if (rv) {
        run_free_all(&r);
        cli_loop_finish(&r.loop);
        free(r.channel_json);
        if (rv == TWC_E_CURSOR && saved) {
            fprintf(stderr, "tidewire-cli: %s does not hold a cursor\n", cursor_file);
            free(saved);
            return CLI_ERROR;
        }
        free(saved);
        if (rv == TWC_E_CURSOR)
            return cli_usage_error("--since: not a cursor (use {\"ORIGIN\":SEQ}, "
                                   "\"\\\"ORIGIN:SEQ\\\"\" or {})");
        return cli_usage_error("sub: %s", twc_strerror(rv));
    }
    free(saved);
    twc_connect(r.client);
    cli_loop_finish(&r.loop);
    free(r.channel_json);
    return r.status;
}

/* ---- stats: a tiny blocking HTTP/1.1 GET ------------------------------------------------------
 */

/* Decodes a chunked body in place; returns its length or -1. */
static long dechunk(char *p, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        unsigned long sz = strtoul(p + in, &end, 16);
        if (end == p + in) return -1;
        char *crlf = strstr(end, "\r\n");
        if (!crlf) return -1;
        in = (size_t)(crlf - p) + 2;
        if (sz == 0) return (long)out;
        if (in + sz > n) return -1;
        memmove(p + out, p + in, sz);
        out += sz;
        in += sz + 2;
        if (in > n) return -1;
    }
}

static int cmd_stats(int argc, char **argv)
{
    const char *url = NULL, *v;
    double timeout = 10;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--url", &v)) {
            if (!(url = v)) return cli_usage_error("--url needs a value");
        } else if (cli_opt(argc, argv, &i, "--timeout", &v)) {
            if (!cli_double(v, &timeout) || timeout <= 0)
                return cli_usage_error("--timeout needs a number of seconds");
        } else {
            return cli_usage_error("stats: unexpected argument %s", argv[i]);
        }
    }
    if (!url) url = cli_default_url();
    /* Accept http://, and ws:// URLs too (same listener): only host and port matter. */
    char host[256];
    unsigned port = 80;
    const char *p = strstr(url, "://");
    if (!p || (strncasecmp(url, "http://", 7) && strncasecmp(url, "ws://", 5)))
        return cli_usage_error("stats: --url must be http://HOST:PORT");
    p += 3;
    size_t hl;
    if (*p == '[') {
        const char *e = strchr(p, ']');
        if (!e) return cli_usage_error("stats: bad --url %s", url);
        hl = (size_t)(e - p - 1);
        if (hl >= sizeof host) return cli_usage_error("stats: bad --url %s", url);
        memcpy(host, p + 1, hl);
        p = e + 1;
    } else {
        hl = strcspn(p, ":/");
        if (!hl || hl >= sizeof host) return cli_usage_error("stats: bad --url %s", url);
        memcpy(host, p, hl);
        p += hl;
    }
    host[hl] = '\0';
    if (*p == ':') {
        uint64_t pv;
        char portstr[8];
        size_t pl = strcspn(p + 1, "/");
        if (pl == 0 || pl >= sizeof portstr) return cli_usage_error("stats: bad port in %s", url);
        memcpy(portstr, p + 1, pl);
        portstr[pl] = '\0';
        if (!cli_u64(portstr, &pv) || pv == 0 || pv > 65535)
            return cli_usage_error("stats: bad port in %s", url);
        port = (unsigned)pv;
    }
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int gerr = getaddrinfo(host, portstr, &hints, &res);
    if (gerr) {
        fprintf(stderr, "tidewire-cli: cannot resolve %s: %s\n", host, gai_strerror(gerr));
        return CLI_ERROR;
    }
    int fd = -1, cerr = 0;
    struct timeval tv = {.tv_sec = (time_t)timeout,
                         .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        cerr = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "tidewire-cli: cannot connect to %s:%u: %s\n", host, port, strerror(cerr));
        return CLI_ERROR;
    }
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET /stats HTTP/1.1\r\nHost: %s%s%s:%u\r\nAccept: application/json\r\n"
                      "Connection: close\r\nUser-Agent: tidewire-cli\r\n\r\n",
                      strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    if (write(fd, req, (size_t)rl) != rl) {
        fprintf(stderr, "tidewire-cli: write: %s\n", strerror(errno));
        close(fd);
        return CLI_ERROR;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    const size_t max = 64u << 20;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 131072;
            char *nb = cap <= max ? realloc(buf, cap + 1) : NULL;
            if (!nb) {
                fprintf(stderr, "tidewire-cli: response too large\n");
                free(buf);
                close(fd);
                return CLI_ERROR;
            }
            buf = nb;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fprintf(stderr, "tidewire-cli: read: %s\n",
                    errno == EAGAIN ? "timed out" : strerror(errno));
            free(buf);
            close(fd);
            return CLI_ERROR;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    int status = 0;
    if (!body || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        fprintf(stderr, "tidewire-cli: malformed HTTP response\n");
        free(buf);
        return CLI_ERROR;
    }
    *body = '\0';
    body += 4;
    size_t blen = len - (size_t)(body - buf);
    /* Header names are case-insensitive; look at each line. */
    bool chunked = false;
    long clen = -1;
    for (char *line = strstr(buf, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (!strncasecmp(line, "transfer-encoding:", 18)) {
            const char *eol = strstr(line, "\r\n");
            size_t ll = eol ? (size_t)(eol - line) : strlen(line);
            for (size_t k = 18; k + 7 <= ll; k++)
                if (!strncasecmp(line + k, "chunked", 7)) chunked = true;
        } else if (!strncasecmp(line, "content-length:", 15))
            clen = strtol(line + 15, NULL, 10);
    }
    if (chunked) {
        long dl = dechunk(body, blen);
        if (dl < 0) {
            fprintf(stderr, "tidewire-cli: malformed chunked body\n");
            free(buf);
            return CLI_ERROR;
        }
        blen = (size_t)dl;
    } else if (clen >= 0 && (size_t)clen < blen) {
        blen = (size_t)clen;
    }
    FILE *out = status == 200 ? stdout : stderr;
    if (status != 200) fprintf(stderr, "tidewire-cli: GET /stats: HTTP %d\n", status);
    fwrite(body, 1, blen, out);
    if (blen && body[blen - 1] != '\n') fputc('\n', out);
    fflush(out);
    free(buf);
    return status == 200 ? CLI_OK : CLI_ERROR;
}

int main(int argc, char **argv)
{
    if (argc < 2) return cli_usage_error("missing command");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        cli_usage(stdout);
        return CLI_OK;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_usage(stdout);
            return CLI_OK;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(cmd, "pub")) return cmd_pub(argc - 1, argv + 1);
    if (!strcmp(cmd, "sub")) return cmd_sub(argc - 1, argv + 1);
    if (!strcmp(cmd, "stats")) return cmd_stats(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cli_bench(argc - 1, argv + 1);
    return cli_usage_error("unknown command %s", cmd);
}
