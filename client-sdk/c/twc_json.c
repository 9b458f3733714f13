/*
 * JSON for the C client: a validating scanner instead of a DOM.
 *
 * Why not cJSON on the receive path: every event would cost a tree of mallocs, and the
 * application wants `data` as JSON text anyway, which cJSON would have to print again. The
 * scanner walks the top-level object once, records where the fields the client needs are,
 * and hands `data` over as the exact bytes the server sent. Seqs are read as exact 64-bit
 * integers (cJSON keeps numbers as doubles, exact only to 2^53).
 */
#include "twc_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 256

static const char *skip_ws(const char *s, const char *lim)
{
    while (s < lim && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    return s;
}

/* Length of the valid UTF-8 sequence at s (2..4 bytes; s[0] >= 0x80), 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, const unsigned char *lim)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f; /* no UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if ((size_t)(lim - s) < n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

bool twc__utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *lim = p + n;
    while (p < lim) {
        if (*p == 0) return false;
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t k = utf8_seq(p, lim);
        if (!k) return false;
        p += k;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* s at the opening quote. Returns the position after the closing quote or NULL. */
static const char *scan_string(const char *s, const char *lim, bool *esc)
{
    const unsigned char *p = (const unsigned char *)s + 1, *l = (const unsigned char *)lim;
    while (p < l) {
        unsigned char c = *p;
        if (c == '"') return (const char *)p + 1;
        if (c == '\\') {
            *esc = true;
            if (++p >= l) return NULL;
            switch (*p) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p++;
                break;
            case 'u':
                if (l - p < 5) return NULL;
                for (int i = 1; i <= 4; i++)
                    if (hexval((char)p[i]) < 0) return NULL;
                p += 5;
                break;
            default:
                return NULL;
            }
        } else if (c < 0x20) {
            return NULL;
        } else if (c < 0x80) {
            p++;
        } else {
            size_t k = utf8_seq(p, l);
            if (!k) return NULL;
            p += k;
        }
    }
    return NULL;
}

static const char *scan_number(const char *s, const char *lim)
{
    const char *p = s;
    if (p < lim && *p == '-') p++;
    if (p >= lim) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < lim && *p >= '0' && *p <= '9')
            p++;
    } else {
        return NULL;
    }
    if (p < lim && *p == '.') {
        p++;
        if (p >= lim || *p < '0' || *p > '9') return NULL;
        while (p < lim && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < lim && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < lim && (*p == '+' || *p == '-')) p++;
        if (p >= lim || *p < '0' || *p > '9') return NULL;
        while (p < lim && *p >= '0' && *p <= '9')
            p++;
    }
    return p;
}

static const char *skip_value(const char *s, const char *lim, int depth, int *kind)
{
    s = skip_ws(s, lim);
    if (s >= lim) return NULL;
    bool esc = false;
    switch (*s) {
    case '"':
        *kind = TWC__J_STR;
        return scan_string(s, lim, &esc);
    case '{':
    case '[': {
        bool obj = *s == '{';
        char close = obj ? '}' : ']';
        int k;
        *kind = obj ? TWC__J_OBJ : TWC__J_ARR;
        if (depth >= MAX_DEPTH) return NULL;
        s = skip_ws(s + 1, lim);
        if (s < lim && *s == close) return s + 1;
        for (;;) {
            if (obj) {
                if (s >= lim || *s != '"' || !(s = scan_string(s, lim, &esc))) return NULL;
                s = skip_ws(s, lim);
                if (s >= lim || *s != ':') return NULL;
                s++;
            }
            if (!(s = skip_value(s, lim, depth + 1, &k))) return NULL;
            s = skip_ws(s, lim);
            if (s >= lim) return NULL;
            if (*s == close) return s + 1;
            if (*s != ',') return NULL;
            s = skip_ws(s + 1, lim);
        }
    }
    case 't':
        *kind = TWC__J_TRUE;
        return lim - s >= 4 && !memcmp(s, "true", 4) ? s + 4 : NULL;
    case 'f':
        *kind = TWC__J_FALSE;
        return lim - s >= 5 && !memcmp(s, "false", 5) ? s + 5 : NULL;
    case 'n':
        *kind = TWC__J_NULL;
        return lim - s >= 4 && !memcmp(s, "null", 4) ? s + 4 : NULL;
    default:
        *kind = TWC__J_NUM;
        return scan_number(s, lim);
    }
}

int twc__json_skip(const char *s, const char *lim, const char **end)
{
    int kind = TWC__J_NONE;
    const char *e = skip_value(s, lim, 0, &kind);
    if (!e) return -1;
    *end = e;
    return kind;
}

bool twc__json_valid(const char *s, size_t n)
{
    const char *end;
    if (twc__json_skip(s, s + n, &end) < 0) return false;
    return skip_ws(end, s + n) == s + n;
}

static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

long twc__json_unescape(const char *s, size_t n, char *out)
{
    const char *p = s, *lim = s + n;
    char *o = out;
    while (p < lim) {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        if (++p >= lim) return -1;
        switch (*p++) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '/':
            *o++ = '/';
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            if (lim - p < 4) return -1;
            int cp = hex4(p);
            if (cp < 0) return -1;
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && lim - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                int lo = hex4(p + 2);
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd; /* a lone surrogate cannot be UTF-8 */
            /* \uXXXX is 6 bytes and becomes at most 3; a pair is 12 and becomes 4. */
            o = put_utf8(o, (unsigned)cp);
            break;
        }
        default:
            return -1;
        }
    }
    *o = '\0';
    return (long)(o - out);
}

int twc__json_escape(twc__buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rv = twc__buf_reserve(b, n + 2);
    if (rv) return rv;
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            if (b->len + 2 > b->cap && (rv = twc__buf_reserve(b, 2))) return rv;
            b->p[b->len++] = (char)c;
            continue;
        }
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            el = 6;
        }
        if ((rv = twc__buf_append(b, e, el))) return rv;
    }
    return twc__buf_append(b, "\"", 1);
}

/* ---- numbers ----------------------------------------------------------------------------- */

/* An integer JSON number span (no fraction/exponent) -> int64. */
static bool span_int64(const char *p, size_t n, int64_t *out)
{
    char tmp[32];
    if (n == 0 || n >= sizeof tmp) return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '.' || p[i] == 'e' || p[i] == 'E') {
            /* 1.0 or 1e3 are integers too: accept them when exact. */
            memcpy(tmp, p, n);
            tmp[n] = '\0';
            double d = strtod(tmp, NULL);
            if (!(d >= -9.2e18 && d <= 9.2e18) || (double)(int64_t)d != d) return false;
            *out = (int64_t)d;
            return true;
        }
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    errno = 0;
    long long v = strtoll(tmp, NULL, 10);
    if (errno) return false;
    *out = v;
    return true;
}

/* Digits only -> uint64 exactly. */
static bool span_uint64(const char *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20 || (n > 1 && p[0] == '0')) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* ---- message scanner --------------------------------------------------------------------- */

static bool key_is(const char *k, size_t kn, const char *name)
{
    size_t l = strlen(name);
    return kn == l && !memcmp(k, name, l);
}

#define MSG_FAIL(reason)                                                                           \
    do {                                                                                           \
        *why = reason;                                                                             \
        return TWC_E_PROTOCOL;                                                                     \
    } while (0)

int twc__msg_scan(const char *s, size_t n, twc__msg *m, const char **why)
{
    const char *lim = s + n;
    memset(m, 0, sizeof *m);
    m->recovered = m->replayed = -1;
    const char *p = skip_ws(s, lim);
    if (p >= lim || *p != '{') MSG_FAIL("message is not a JSON object");
    p = skip_ws(p + 1, lim);
    if (p < lim && *p == '}') {
        p++;
        goto done;
    }
    for (;;) {
        bool kesc = false;
        if (p >= lim || *p != '"') MSG_FAIL("malformed JSON");
        const char *ks = p + 1;
        const char *ke = scan_string(p, lim, &kesc);
        if (!ke) MSG_FAIL("malformed JSON");
        size_t kn = (size_t)(ke - 1 - ks);
        char kbuf[32];
        if (kesc) { /* an escaped key is legal JSON; compare it decoded */
            if (kn >= sizeof kbuf) {
                kn = 0;
            } else {
                long dl = twc__json_unescape(ks, kn, kbuf);
                kn = dl < 0 ? 0 : (size_t)dl;
                ks = kbuf;
            }
        }
        p = skip_ws(ke, lim);
        if (p >= lim || *p != ':') MSG_FAIL("malformed JSON");
        const char *vs = skip_ws(p + 1, lim);
        int kind = TWC__J_NONE;
        const char *ve = skip_value(vs, lim, 1, &kind);
        if (!ve) MSG_FAIL("malformed JSON");
        size_t vn = (size_t)(ve - vs);
        twc__jstr str = {0};
        if (kind == TWC__J_STR) {
            str.p = vs + 1;
            str.n = vn - 2;
            str.esc = memchr(str.p, '\\', str.n) != NULL;
        }
#define WANT(k, reason)                                                                            \
    do {                                                                                           \
        if (kind != (k)) MSG_FAIL(reason);                                                         \
    } while (0)
        switch (kn ? ks[0] : 0) {
        case 'c':
            if (key_is(ks, kn, "channel")) {
                WANT(TWC__J_STR, "channel is not a string");
                m->channel = str;
            } else if (key_is(ks, kn, "code")) {
                WANT(TWC__J_NUM, "code is not a number");
                if (!span_int64(vs, vn, &m->code)) MSG_FAIL("code is not an integer");
                m->has_code = true;
            } else if (key_is(ks, kn, "cursor")) {
                m->cursor = vs;
                m->cursor_len = vn;
            }
            break;
        case 'd':
            if (key_is(ks, kn, "data")) {
                m->data = vs;
                m->data_len = vn;
            }
            break;
        case 'i':
            if (key_is(ks, kn, "id")) {
                WANT(TWC__J_NUM, "id is not a number");
                if (!span_int64(vs, vn, &m->id)) MSG_FAIL("id is not an integer");
                m->has_id = true;
            }
            break;
        case 'm':
            if (key_is(ks, kn, "message")) {
                WANT(TWC__J_STR, "message is not a string");
                m->message = str;
            }
            break;
        case 'n':
            if (key_is(ks, kn, "node")) {
                WANT(TWC__J_STR, "node is not a string");
                m->node = str;
            }
            break;
        case 'o':
            if (key_is(ks, kn, "op")) {
                WANT(TWC__J_STR, "op is not a string");
                m->op = str;
            }
            break;
        case 'p':
            if (key_is(ks, kn, "pos")) {
                WANT(TWC__J_STR, "pos is not a string");
                m->pos = str;
            } else if (key_is(ks, kn, "ping_interval")) {
                WANT(TWC__J_NUM, "ping_interval is not a number");
                char tmp[64];
                if (vn >= sizeof tmp) MSG_FAIL("ping_interval out of range");
                memcpy(tmp, vs, vn);
                tmp[vn] = '\0';
                m->ping_interval = strtod(tmp, NULL);
                m->has_ping_interval = true;
            }
            break;
        case 'r':
            if (key_is(ks, kn, "recovered") || key_is(ks, kn, "replayed")) {
                if (kind != TWC__J_TRUE && kind != TWC__J_FALSE)
                    MSG_FAIL("recovered/replayed is not a boolean");
                *(ks[2] == 'c' ? &m->recovered : &m->replayed) = kind == TWC__J_TRUE;
            }
            break;
        case 's':
            if (key_is(ks, kn, "session")) {
                /* A connection id: a string, or a number taken as its text. */
                if (kind == TWC__J_STR) {
                    m->session = str;
                } else if (kind == TWC__J_NUM) {
                    m->session.p = vs;
                    m->session.n = vn;
                } else {
                    MSG_FAIL("session is not a string");
                }
            }
            break;
        case 't':
            if (key_is(ks, kn, "ts")) {
                WANT(TWC__J_NUM, "ts is not a number");
                if (!span_int64(vs, vn, &m->ts)) MSG_FAIL("ts is not an integer");
                m->has_ts = true;
            }
            break;
        default:
            break;
        }
#undef WANT
        p = skip_ws(ve, lim);
        if (p >= lim) MSG_FAIL("malformed JSON");
        if (*p == '}') {
            p++;
            break;
        }
        if (*p != ',') MSG_FAIL("malformed JSON");
        p = skip_ws(p + 1, lim);
    }
done:
    if (skip_ws(p, lim) != lim) MSG_FAIL("trailing bytes after the JSON object");
    return 0;
}

/* ---- positions and cursors ---------------------------------------------------------------- */

int twc__pos_parse(const char *s, size_t n, size_t *origin_len, uint64_t *seq)
{
    size_t i = n;
    while (i > 0 && s[i - 1] != ':')
        i--;
    if (i < 2) /* no ':' or empty origin */
        return TWC_E_PROTOCOL;
    uint64_t v;
    if (!span_uint64(s + i, n - i, &v) || v == 0) return TWC_E_PROTOCOL;
    *origin_len = i - 1;
    *seq = v;
    return 0;
}

static twc__cursor_entry *cursor_find(const twc__cursor *c, const char *origin, size_t len)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].len == len && !memcmp(c->v[i].origin, origin, len)) return &c->v[i];
    return NULL;
}

static int cursor_add(twc__cursor *c, const char *origin, size_t len, uint64_t seq)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 2;
        twc__cursor_entry *v = realloc(c->v, cap * sizeof *v);
        if (!v) return UV_ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    char *o = malloc(len + 1);
    if (!o) return UV_ENOMEM;
    memcpy(o, origin, len);
    o[len] = '\0';
    c->v[c->n++] = (twc__cursor_entry){o, len, seq};
    return 0;
}

uint64_t twc__cursor_get(const twc__cursor *c, const char *origin, size_t len)
{
    const twc__cursor_entry *e = cursor_find(c, origin, len);
    return e ? e->seq : 0;
}

int twc__cursor_advance(twc__cursor *c, const char *origin, size_t len, uint64_t seq)
{
    twc__cursor_entry *e = cursor_find(c, origin, len);
    if (e) {
        if (seq <= e->seq) return 0;
        e->seq = seq;
        return 1;
    }
    if (seq == 0) /* an origin the cursor does not name counts as 0 */
        return 0;
    int rv = cursor_add(c, origin, len, seq);
    return rv ? rv : 1;
}

int twc__cursor_merge(twc__cursor *dst, const twc__cursor *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const twc__cursor_entry *s = &src->v[i];
        twc__cursor_entry *e = cursor_find(dst, s->origin, s->len);
        if (e) {
            if (s->seq > e->seq) e->seq = s->seq;
        } else {
            int rv = cursor_add(dst, s->origin, s->len, s->seq);
            if (rv) return rv;
        }
    }
    return 0;
}

void twc__cursor_free(twc__cursor *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].origin);
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
}

/* Decodes a string literal's inside (esc or not) into a malloc'd NUL-terminated copy. */
static char *str_dup(const char *p, size_t n, bool esc, size_t *outlen)
{
    char *o = malloc(n + 1);
    if (!o) return NULL;
    if (esc) {
        long l = twc__json_unescape(p, n, o);
        if (l < 0) {
            free(o);
            return NULL;
        }
        *outlen = (size_t)l;
    } else {
        memcpy(o, p, n);
        o[n] = '\0';
        *outlen = n;
    }
    return o;
}

int twc__cursor_parse(const char *s, size_t n, twc__cursor *out)
{
    const char *lim = s + n;
    twc__cursor c = {0};
    const char *p = skip_ws(s, lim);
    int rv = TWC_E_CURSOR;
    bool esc = false;
    if (p < lim && *p == '"') {
        const char *e = scan_string(p, lim, &esc);
        if (!e || skip_ws(e, lim) != lim) return TWC_E_CURSOR;
        size_t dl, ol;
        uint64_t seq;
        char *d = str_dup(p + 1, (size_t)(e - p - 2), esc, &dl);
        if (!d) return esc ? TWC_E_CURSOR : UV_ENOMEM;
        if (strlen(d) != dl || twc__pos_parse(d, dl, &ol, &seq)) {
            free(d);
            return TWC_E_CURSOR;
        }
        rv = cursor_add(&c, d, ol, seq);
        free(d);
        if (rv) {
            twc__cursor_free(&c);
            return rv;
        }
        twc__cursor_free(out);
        *out = c;
        return 0;
    }
    if (p >= lim || *p != '{') return TWC_E_CURSOR;
    p = skip_ws(p + 1, lim);
    if (p < lim && *p == '}') {
        p++;
    } else {
        for (;;) {
            esc = false;
            if (p >= lim || *p != '"') goto fail;
            const char *ke = scan_string(p, lim, &esc);
            if (!ke) goto fail;
            size_t kl;
            char *k = str_dup(p + 1, (size_t)(ke - p - 2), esc, &kl);
            if (!k) goto fail;
            p = skip_ws(ke, lim);
            uint64_t seq = 0;
            const char *ns = p < lim && *p == ':' ? skip_ws(p + 1, lim) : NULL;
            const char *ne = ns;
            while (ne && ne < lim && *ne >= '0' && *ne <= '9')
                ne++;
            if (!ns || kl == 0 || strlen(k) != kl || !span_uint64(ns, (size_t)(ne - ns), &seq) ||
                (ne < lim && (*ne == '.' || *ne == 'e' || *ne == 'E'))) {
                free(k);
                goto fail;
            }
            twc__cursor_entry *e = cursor_find(&c, k, kl);
            if (e) {
                if (seq > e->seq) e->seq = seq;
                rv = 0;
            } else {
                rv = cursor_add(&c, k, kl, seq);
            }
            free(k);
            if (rv) goto fail;
            rv = TWC_E_CURSOR;
            p = skip_ws(ne, lim);
            if (p >= lim) goto fail;
            if (*p == '}') {
                p++;
                break;
            }
            if (*p != ',') goto fail;
            p = skip_ws(p + 1, lim);
        }
    }
    if (skip_ws(p, lim) != lim) goto fail;
    twc__cursor_free(out);
    *out = c;
    return 0;
fail:
    twc__cursor_free(&c);
    return rv;
}

int twc__cursor_json(const twc__cursor *c, twc__buf *out)
{
    int rv = twc__buf_append(out, "{", 1);
    for (size_t i = 0; !rv && i < c->n; i++) {
        if (i) rv = twc__buf_append(out, ",", 1);
        if (!rv) rv = twc__json_escape(out, c->v[i].origin, c->v[i].len);
        if (!rv) rv = twc__buf_printf(out, ":%llu", (unsigned long long)c->v[i].seq);
    }
    if (!rv) rv = twc__buf_append(out, "}", 1);
    if (!rv) out->p[out->len] = '\0';
    return rv;
}
