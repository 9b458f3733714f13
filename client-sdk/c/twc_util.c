/*
 * Pure helpers of the C client: buffers, URL parsing, the WebSocket opening handshake and
 * frame header, the PRNG, and the reconnect policy. No I/O, no clock.
 */
#include "twc_int.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

/* ---- buffer ----------------------------------------------------------------------------- */

int twc__buf_reserve(twc__buf *b, size_t n)
{
    if (b->cap - b->len > n) /* keeps one byte spare for a terminating NUL */
        return 0;
    size_t need = b->len + n + 1;
    if (need < b->len) /* overflow */
        return UV_ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->p, cap);
    if (!p) return UV_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int twc__buf_append(twc__buf *b, const void *p, size_t n)
{
    int rv = twc__buf_reserve(b, n);
    if (rv) return rv;
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int twc__buf_appends(twc__buf *b, const char *s)
{
    return twc__buf_append(b, s, strlen(s));
}

int twc__buf_printf(twc__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return UV_EINVAL;
    int rv = twc__buf_reserve(b, (size_t)n);
    if (rv) return rv;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void twc__buf_free(twc__buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- URL -------------------------------------------------------------------------------- */

static bool host_char(unsigned char ch)
{
    return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

int twc__url_parse(const char *url, const char *default_path, twc__url *out)
{
    twc__url u;
    memset(&u, 0, sizeof u);
    if (!url) return TWC_E_URL;
    const char *sep = strstr(url, "://");
    if (!sep || sep == url || (size_t)(sep - url) >= sizeof u.scheme) return TWC_E_URL;
    for (size_t i = 0; url + i < sep; i++)
        u.scheme[i] = (char)tolower((unsigned char)url[i]);
    if (!strcmp(u.scheme, "ws") || !strcmp(u.scheme, "http")) {
        u.port = 80;
    } else if (!strcmp(u.scheme, "wss") || !strcmp(u.scheme, "https")) {
        u.port = 443;
        u.secure = true;
    } else {
        return TWC_E_URL;
    }

    const char *p = sep + 3;
    const char *auth_end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(auth_end - p)))
        return TWC_E_URL; /* userinfo: credentials do not belong in the URL */
    const char *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (!host_end || host_end == host) return TWC_E_URL;
        for (const char *q = host; q < host_end; q++)
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.') return TWC_E_URL;
        u.ipv6 = true;
        p = host_end + 1;
    } else {
        host_end = p;
        while (host_end < auth_end && *host_end != ':')
            host_end++;
        if (host_end == host) return TWC_E_URL;
        for (const char *q = host; q < host_end; q++)
            if (!host_char((unsigned char)*q)) return TWC_E_URL;
        p = host_end;
    }
    if ((size_t)(host_end - host) >= sizeof u.host) return TWC_E_URL;
    memcpy(u.host, host, (size_t)(host_end - host));

    if (p < auth_end) {
        if (*p != ':' || p + 1 == auth_end) return TWC_E_URL;
        unsigned long port = 0;
        for (p++; p < auth_end; p++) {
            if (!isdigit((unsigned char)*p)) return TWC_E_URL;
            port = port * 10 + (unsigned long)(*p - '0');
            if (port > 65535) return TWC_E_URL;
        }
        if (port == 0) return TWC_E_URL;
        u.port = (uint16_t)port;
    }

    const char *rest = auth_end;
    for (const char *q = rest; *q; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q == 0x7f || *q == '#') return TWC_E_URL;
    int n;
    if (*rest == '/')
        n = snprintf(u.path, sizeof u.path, "%s", rest);
    else /* empty path, maybe a query */
        n = snprintf(u.path, sizeof u.path, "%s%s", default_path ? default_path : "/", rest);
    if (n < 0 || (size_t)n >= sizeof u.path) return TWC_E_URL;
    *out = u;
    return 0;
}

void twc__url_hostport(const twc__url *u, char *out, size_t outsz)
{
    bool dflt = u->port == (u->secure ? 443 : 80);
    if (u->ipv6)
        snprintf(out, outsz, dflt ? "[%s]" : "[%s]:%u", u->host, (unsigned)u->port);
    else
        snprintf(out, outsz, dflt ? "%s" : "%s:%u", u->host, (unsigned)u->port);
}

/* ---- handshake -------------------------------------------------------------------------- */

void twc__ws_key_encode(const uint8_t key[16], char key_b64[25])
{
    EVP_EncodeBlock((unsigned char *)key_b64, key, 16);
}

int twc__ws_accept(const char *key_b64, char accept[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[64 + sizeof guid];
    size_t kl = strlen(key_b64);
    if (kl > 64) return TWC_E_HANDSHAKE;
    memcpy(in, key_b64, kl);
    memcpy(in + kl, guid, sizeof guid - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(in, kl + sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        return TWC_E_HANDSHAKE;
    EVP_EncodeBlock((unsigned char *)accept, md, 20);
    return 0;
}

int twc__hs_request(twc__buf *out, const twc__url *u, const char *key_b64)
{
    char hostport[300];
    twc__url_hostport(u, hostport, sizeof hostport);
    return twc__buf_printf(out,
                           "GET %s HTTP/1.1\r\n"
                           "Host: %s\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: " TWC__WS_SUBPROTOCOL "\r\n"
                           "User-Agent: twc/0.1\r\n"
                           "\r\n",
                           u->path, hostport, key_b64);
}

/* Case-insensitive search for token in a comma-separated header value. */
static bool header_has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && !strncasecmp(v + s, token, tl)) return true;
    }
    return false;
}

#define HS_FAIL(...)                                                                               \
    do {                                                                                           \
        snprintf(err, errsz, __VA_ARGS__);                                                         \
        return TWC_E_HANDSHAKE;                                                                    \
    } while (0)

int twc__hs_parse(const char *buf, size_t len, const char *expected_accept, int *status, char *err,
                  size_t errsz)
{
    *status = 0;
    const char *end = NULL;
    for (size_t i = 3; i < len; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
            end = buf + i + 1;
            break;
        }
    }
    if (!end) {
        if (len > TWC__HS_MAX) HS_FAIL("response head longer than %d bytes", TWC__HS_MAX);
        return 0;
    }
    if (end - buf > TWC__HS_MAX) HS_FAIL("response head longer than %d bytes", TWC__HS_MAX);

    /* Status line: HTTP/1.1 SP 3DIGIT SP reason */
    const char *line = buf;
    const char *eol = memchr(line, '\r', (size_t)(end - line));
    if (eol - line < 12 || memcmp(line, "HTTP/1.", 7) || (line[7] != '1' && line[7] != '0') ||
        line[8] != ' ' || !isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
        !isdigit((unsigned char)line[11]) || (eol - line > 12 && line[12] != ' '))
        HS_FAIL("malformed status line");
    *status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (*status != 101) {
        int rl = (int)(eol - line) - 13;
        HS_FAIL("server answered %d%s%.*s instead of 101", *status, rl > 0 ? " " : "",
                rl > 0 ? (rl > 80 ? 80 : rl) : 0, line + 13);
    }
    if (line[7] != '1') HS_FAIL("101 over HTTP/1.0");

    bool upgrade = false, connection = false, accept = false;
    for (line = eol + 2; line < end - 2; line = eol + 2) {
        eol = memchr(line, '\r', (size_t)(end - line));
        if (!eol || eol[1] != '\n') HS_FAIL("malformed header line");
        if (*line == ' ' || *line == '\t') HS_FAIL("obsolete header line folding");
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (!colon || colon == line) HS_FAIL("malformed header line");
        size_t nl = (size_t)(colon - line);
        for (size_t i = 0; i < nl; i++)
            if ((unsigned char)line[i] <= 0x20 || (unsigned char)line[i] >= 0x7f)
                HS_FAIL("malformed header name");
        const char *v = colon + 1;
        const char *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vl = (size_t)(ve - v);
#define IS(name) (nl == sizeof(name) - 1 && !strncasecmp(line, name, nl))
        if (IS("Upgrade")) {
            if (vl != 9 || strncasecmp(v, "websocket", 9))
                HS_FAIL("Upgrade header is not websocket");
            upgrade = true;
        } else if (IS("Connection")) {
            if (!header_has_token(v, vl, "upgrade")) HS_FAIL("Connection header lacks upgrade");
            connection = true;
        } else if (IS("Sec-WebSocket-Accept")) {
            if (accept) HS_FAIL("Sec-WebSocket-Accept repeated");
            if (vl != strlen(expected_accept) || memcmp(v, expected_accept, vl))
                HS_FAIL("wrong Sec-WebSocket-Accept");
            accept = true;
        } else if (IS("Sec-WebSocket-Protocol")) {
            /* Absent means the server's default, which is the JSON protocol we asked for. */
            if (vl != strlen(TWC__WS_SUBPROTOCOL) || memcmp(v, TWC__WS_SUBPROTOCOL, vl))
                HS_FAIL("server chose subprotocol %.*s", (int)(vl > 64 ? 64 : vl), v);
        } else if (IS("Sec-WebSocket-Extensions")) {
            if (vl) HS_FAIL("server chose an extension we did not offer");
        }
#undef IS
    }
    if (!upgrade) HS_FAIL("101 without Upgrade: websocket");
    if (!connection) HS_FAIL("101 without Connection: upgrade");
    if (!accept) HS_FAIL("101 without Sec-WebSocket-Accept");
    return (int)(end - buf);
}

/* ---- frames ----------------------------------------------------------------------------- */

size_t twc__ws_frame_header(uint8_t hdr[14], uint8_t opcode, uint64_t len, const uint8_t mask[4])
{
    size_t n;
    hdr[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        hdr[1] = (uint8_t)(0x80 | len);
        n = 2;
    } else if (len <= 0xffff) {
        hdr[1] = 0x80 | 126;
        hdr[2] = (uint8_t)(len >> 8);
        hdr[3] = (uint8_t)len;
        n = 4;
    } else {
        hdr[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            hdr[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    }
    memcpy(hdr + n, mask, 4);
    return n + 4;
}

void twc__ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4], size_t off)
{
    size_t i = 0;
    /* Head bytes until the mask phase is 0, then 8 bytes at a time. */
    for (; i < n && ((off + i) & 3); i++)
        dst[i] = src[i] ^ mask[(off + i) & 3];
    uint64_t m8;
    uint8_t mb[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
    memcpy(&m8, mb, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= m8;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ mask[(off + i) & 3];
}

/* ---- PRNG ------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void twc__rng_seed_u64(twc__rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

void twc__rng_seed(twc__rng *r)
{
    uint64_t seed;
    if (RAND_bytes((unsigned char *)&seed, sizeof seed) != 1)
        seed = (uint64_t)uv_hrtime() ^ ((uint64_t)(uintptr_t)r << 17);
    twc__rng_seed_u64(r, seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t twc__rng_next(twc__rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* ---- reconnect policy ------------------------------------------------------------------- */

twc__action twc__close_action(int code)
{
    if (code == 1000) return TWC__ACT_STOP;
    if (code >= 4000 && code <= 4099) return TWC__ACT_TERMINAL;
    if (code >= 4100 && code <= 4199) return TWC__ACT_BACKOFF;
    if ((code >= 4200 && code <= 4299) || code == 1012) return TWC__ACT_NOW;
    return TWC__ACT_RETRY;
}

uint64_t twc__backoff_cap(const twc__backoff *b, unsigned attempt)
{
    double cap = (double)b->initial_ms * pow(b->factor, (double)attempt);
    if (!(cap < (double)b->max_ms)) /* also catches inf/NaN */
        return b->max_ms;
    return (uint64_t)cap;
}

uint64_t twc__backoff_next(twc__backoff *b, uint64_t rnd)
{
    uint64_t cap = twc__backoff_cap(b, b->attempt);
    if (b->attempt < 64) b->attempt++;
    return cap ? rnd % (cap + 1) : 0;
}

uint64_t twc__reconnect_delay(twc__backoff *b, twc__action action, bool was_connected,
                              uint64_t uptime_ms, uint64_t rnd)
{
    bool healthy = was_connected && uptime_ms >= TWC__HEALTHY_MS;
    /* A 41xx close means "you are too much for me": keep growing the backoff even after a
     * healthy connection. Anything else after a healthy connection starts over. */
    if (healthy && action != TWC__ACT_BACKOFF) b->attempt = 0;
    /* Reconnect at once only after a healthy connection: a node that closes with 42xx/1012
     * right after accepting would otherwise be hammered in a tight loop. */
    if (action == TWC__ACT_NOW && healthy) return 0;
    return twc__backoff_next(b, rnd);
}
