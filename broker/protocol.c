/*
 * protocol.c — the client protocol v1 codec of protocol.h (docs/protocol.md).
 *
 * JSON is parsed by cJSON, but cJSON keeps numbers only as doubles (so 2^53 + 1 and every
 * int64 above it come out wrong), truncates strings at an escaped \u0000, accepts some
 * non-JSON (01, 1., raw control characters) and prints doubles to 15 digits whenever that is
 * within an epsilon (0.1 + 0.2 prints as 0.3). So next to the tree we keep the exact text of
 * every number token (json_lex), use it wherever a number is read or printed, reject what
 * cJSON lets through, and never print with cJSON.
 *
 * MessagePack is read by a small reader of our own (mp_head/mp_skip) rather than
 * msgpack-c's unpacker: msgpack-c 4.0 allocates count * 32 bytes as soon as it reads an
 * array header (a 5-byte message reserves 8 GiB, a hundred bytes of nested headers reserve
 * 160 GiB), stops at 32 levels, and builds a tree of the whole message, data included,
 * where we want ~8 fields and the data bytes as they are. The reader checks every
 * container's count against the bytes left, so nothing is ever sized by a header.
 * msgpack-c's packer writes every MessagePack we send.
 *
 * Depth: a message nests at most MAX_DEPTH maps/arrays, its own top-level map included.
 * 32 is all msgpack-c's unpacker reads (a fixed stack; many clients use it), so an event
 * (one level) carrying any data a client may publish (at most 31 levels) stays readable,
 * in either encoding.
 *
 * Numbers are formatted and parsed with the C library: LC_NUMERIC must be "C" (tidewire
 * never calls setlocale()).
 */
#include "protocol.h"
#include "utf8.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <msgpack.h>
#include <openssl/evp.h>

#define MAX_DEPTH 32
#define DATA_MAX_DEPTH (MAX_DEPTH - 1)

const tw_proto_limits tw_proto_default_limits = {
    .max_channel_len = 255,
    .max_cursor_entries = 64,
    .max_last = 10000,
    .max_subs = 256,
    .max_token_len = 8192,
};

static const char *const op_names[] = {
    [TW_OP_CONNECT] = "connect",         [TW_OP_SUBSCRIBE] = "subscribe",
    [TW_OP_UNSUBSCRIBE] = "unsubscribe", [TW_OP_PUBLISH] = "publish",
    [TW_OP_PRESENCE] = "presence",       [TW_OP_PING] = "ping",
    [TW_OP_REFRESH] = "refresh",
};

const char *tw_op_name(tw_op op)
{
    if ((unsigned)op < sizeof op_names / sizeof op_names[0] && op_names[op]) return op_names[op];
    return "?";
}

/* ---- Names ---------------------------------------------------------------------------- */

int tw_origin_valid(const char *s, size_t len)
{
    if (len > TW_STORE_ORIGIN_MAX) return 0;
    size_t i = 0;
    while (i < len && s[i] != '.') {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
        i++;
    }
    if (i == 0 || i > TW_STORE_NODE_NAME_MAX || i == len) return 0;
    size_t epoch = len - i - 1;
    if (epoch < 1 || epoch > 15) return 0;
    for (i++; i < len; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return 0;
    }
    return 1;
}

int tw_channel_valid(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max) return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
    return 1;
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/*
 * Length of the UTF-8 sequence at p (n > 0 bytes left): *ok = 1 and 1..4 for a well-formed
 * one (no overlong forms, surrogates or code points above U+10FFFF); otherwise *ok = 0 and
 * the length of the "maximal subpart" to replace with one U+FFFD (Unicode 15, 3.9).
 */
static size_t utf8_next(const uint8_t *p, size_t n, int *ok)
{
    uint8_t c = p[0];
    *ok = 0;
    if (c < 0x80) {
        *ok = 1;
        return 1;
    }
    uint8_t lo, hi;
    size_t need = tw_utf8_lead(c, &lo, &hi);
    if (need == 0) return 1;
    if (n < 2 || p[1] < lo || p[1] > hi) return 1;
    for (size_t i = 2; i < need; i++)
        if (i >= n || (p[i] & 0xc0) != 0x80) return i;
    *ok = 1;
    return need;
}

static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int ok;
        i += utf8_next(s + i, n - i, &ok);
        if (!ok) return 0;
    }
    return 1;
}

/* s with each ill-formed subsequence replaced by U+FFFD, into t (empty, owned by caller). */
static int utf8_repair(tw_buf *t, const uint8_t *s, size_t n)
{
    int rc = tw_buf_reserve(t, n + n / 2);
    size_t i = 0, run = 0;
    while (!rc && i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int ok;
        size_t k = utf8_next(s + i, n - i, &ok);
        if (!ok) {
            rc = tw_buf_append(t, s + run, i - run);
            if (!rc) rc = tw_buf_append(t, "\xef\xbf\xbd", 3);
            run = i + k;
        }
        i += k;
    }
    if (!rc) rc = tw_buf_append(t, s + run, n - run);
    return rc;
}

/* A JSON string literal of s, ill-formed UTF-8 replaced by U+FFFD (JSON text must be
 * UTF-8, and a browser fails a WebSocket whose text frame is not). */
static int append_json_string_lossy(tw_buf *b, const uint8_t *s, size_t n)
{
    if (utf8_valid(s, n)) return tw_buf_append_json_string(b, (const char *)s, n);
    tw_buf t;
    tw_buf_init(&t, 0);
    int rc = utf8_repair(&t, s, n);
    if (!rc) rc = tw_buf_append_json_string(b, (const char *)tw_buf_data(&t), t.len);
    tw_buf_free(&t);
    return rc;
}

/* ---- Number text ------------------------------------------------------------------------ */

/* Writes v in decimal so that it ends at `end`; returns where it starts. Two digits a step:
 * every event carries two numbers, and the divisions form one dependent chain. */
static char *u64_dec(char *end, uint64_t v)
{
    static const char d2[201] = "00010203040506070809101112131415161718192021222324252627282930"
                                "31323334353637383940414243444546474849505152535455565758596061"
                                "62636465666768697071727374757677787980818283848586878889909192"
                                "93949596979899";
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        end -= 2;
        memcpy(end, d2 + 2 * r, 2);
    }
    if (v >= 10) {
        end -= 2;
        memcpy(end, d2 + 2 * v, 2);
    } else {
        *--end = (char)('0' + v);
    }
    return end;
}

static char *i64_dec(char *end, int64_t v)
{
    if (v >= 0) return u64_dec(end, (uint64_t)v);
    char *p = u64_dec(end, (uint64_t)0 - (uint64_t)v);
    *--p = '-';
    return p;
}

static int buf_u64(tw_buf *b, uint64_t v)
{
    char t[24];
    char *p = u64_dec(t + sizeof t, v);
    return tw_buf_append(b, p, (size_t)(t + sizeof t - p));
}

static int buf_i64(tw_buf *b, int64_t v)
{
    char t[24];
    char *p = i64_dec(t + sizeof t, v);
    return tw_buf_append(b, p, (size_t)(t + sizeof t - p));
}

/*
 * A finite double in JSON: the fewest digits that read back as the same value (trying 15,
 * 16 and 17 significant digits; for a float32, `single`, 6 to 9 and read back as a float32,
 * so 0.1f prints 0.1 and not 0.10000000149011612), laid out as ECMAScript's
 * Number::toString does (exponent only below 1e-6 or from 1e21) so that JavaScript clients
 * print what they receive. Integral values get ".0" so that a float stays a float across a
 * JSON trip (1.0 -> "1.0", -0.0 -> "-0.0"; integers are printed elsewhere). The layout does
 * not depend on `single`, so converting the output again gives the same text. `out` holds
 * 48 bytes at least; returns the length written.
 */
static size_t fmt_float(char *out, double v, int single)
{
    char sci[48];
    int lo = single ? 6 : 15, hi = single ? 9 : 17;
    for (int prec = lo; prec <= hi; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, v);
        if (single ? strtof(sci, NULL) == (float)v : strtod(sci, NULL) == v) break;
    }
    /* sci is [-]D.DDDe[+-]XX: take the digits without trailing zeros, and the exponent */
    const char *p = sci;
    char *w = out, dig[24];
    int k = 0;
    if (*p == '-') *w++ = *p++;
    for (; *p && *p != 'e' && k < (int)sizeof dig; p++)
        if (*p != '.') dig[k++] = *p;
    while (k > 1 && dig[k - 1] == '0')
        k--;
    int n = atoi(p + 1) + 1; /* v = 0.DIG x 10^n */
    if (k <= n && n <= 21) {
        memcpy(w, dig, (size_t)k);
        w += k;
        memset(w, '0', (size_t)(n - k));
        w += n - k;
        memcpy(w, ".0", 2);
        w += 2;
    } else if (0 < n && n <= 21) {
        memcpy(w, dig, (size_t)n);
        w += n;
        *w++ = '.';
        memcpy(w, dig + n, (size_t)(k - n));
        w += k - n;
    } else if (-6 < n && n <= 0) {
        memcpy(w, "0.", 2);
        w += 2;
        memset(w, '0', (size_t)-n);
        w += -n;
        memcpy(w, dig, (size_t)k);
        w += k;
    } else {
        *w++ = dig[0];
        if (k > 1) {
            *w++ = '.';
            memcpy(w, dig + 1, (size_t)(k - 1));
            w += k - 1;
        }
        w += sprintf(w, "e%+d", n - 1);
    }
    *w = '\0';
    return (size_t)(w - out);
}

/* A float as JSON: a number, or {"$float": "NaN" | "Infinity" | "-Infinity"}. */
static int buf_json_float(tw_buf *b, double v, int single)
{
    if (isnan(v)) return tw_buf_append_str(b, "{\"$float\":\"NaN\"}");
    if (isinf(v))
        return tw_buf_append_str(b, v > 0 ? "{\"$float\":\"Infinity\"}"
                                          : "{\"$float\":\"-Infinity\"}");
    char t[48];
    size_t n = fmt_float(t, v, single);
    return tw_buf_append(b, t, n);
}

/* A parsed number: what either encoding can carry. */
typedef struct num {
    enum { NUM_UINT, NUM_INT, NUM_FLOAT } kind; /* NUM_INT only for negative values */
    uint64_t u;
    int64_t i;
    double d;
} num;

/* strtod over a token that is not NUL-terminated (it may end the input). */
static int token_strtod(const char *s, size_t n, double *out)
{
    char tmp[64];
    char *p = tmp;
    if (n >= sizeof tmp) {
        p = malloc(n + 1);
        if (!p) return -ENOMEM;
    }
    memcpy(p, s, n);
    p[n] = '\0';
    *out = strtod(p, NULL);
    if (p != tmp) free(p);
    return 0;
}

/* Largest integer a double holds exactly, and with it every smaller one. */
#define EXACT_DOUBLE_INT 9007199254740992.0

/* An integral value within int64. `float_ok`: a float that holds an exact integer counts
 * (JSON numbers have no integer type: 5.0 and 5e0 are 5). */
static int num_i64(const num *x, int float_ok, int64_t *out)
{
    switch (x->kind) {
    case NUM_UINT:
        if (x->u > INT64_MAX) return -ERANGE;
        *out = (int64_t)x->u;
        return 0;
    case NUM_INT:
        *out = x->i;
        return 0;
    case NUM_FLOAT:
        if (!float_ok || x->d != floor(x->d) || fabs(x->d) > EXACT_DOUBLE_INT) return -ERANGE;
        *out = (int64_t)x->d;
        return 0;
    }
    return -ERANGE;
}

static int num_u64(const num *x, int float_ok, uint64_t *out)
{
    switch (x->kind) {
    case NUM_UINT:
        *out = x->u;
        return 0;
    case NUM_INT:
        return -ERANGE;
    case NUM_FLOAT:
        if (!float_ok || x->d != floor(x->d) || x->d < 0 || x->d > EXACT_DOUBLE_INT) return -ERANGE;
        *out = (uint64_t)x->d;
        return 0;
    }
    return -ERANGE;
}

/* ---- JSON documents: a cJSON tree plus the exact text of its numbers -------------------- */

enum { TOK_BAD = 0, TOK_INT, TOK_FLOAT };

typedef struct jspan {
    size_t off, len;
    int kind; /* TOK_* */
} jspan;

typedef struct jdoc {
    cJSON *root;
    const char *text;
    jspan *nums; /* the number tokens in document order; each number node's valueint
                  * holds its index here (see tag_numbers) */
    size_t nnums, cap;
    const char *lex_err; /* what the text does wrong that cJSON accepted, or NULL */
    jspan inline_nums[16];
} jdoc;

/* Classifies a number token by RFC 8259's grammar: TOK_INT, TOK_FLOAT or TOK_BAD. */
static int json_number_kind(const char *s, size_t n)
{
    size_t i = 0;
    int kind = TOK_INT;
#define DIGIT(k) ((k) < n && s[k] >= '0' && s[k] <= '9')
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0')
        i++;
    else if (DIGIT(i))
        while (DIGIT(i))
            i++;
    else
        return TOK_BAD;
    if (i < n && s[i] == '.') {
        i++;
        if (!DIGIT(i)) return TOK_BAD;
        while (DIGIT(i))
            i++;
        kind = TOK_FLOAT;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (!DIGIT(i)) return TOK_BAD;
        while (DIGIT(i))
            i++;
        kind = TOK_FLOAT;
    }
#undef DIGIT
    return i == n ? kind : TOK_BAD;
}

static int jdoc_push_num(jdoc *d, size_t off, size_t len, int kind)
{
    if (d->nnums == d->cap) {
        size_t cap = d->cap * 2;
        jspan *p;
        if (d->nums == d->inline_nums) {
            p = malloc(cap * sizeof *p);
            if (p) memcpy(p, d->nums, d->nnums * sizeof *p);
        } else {
            p = realloc(d->nums, cap * sizeof *p);
        }
        if (!p) return -ENOMEM;
        d->nums = p;
        d->cap = cap;
    }
    d->nums[d->nnums++] = (jspan){off, len, kind};
    return 0;
}

/*
 * One pass over the text, safe on any bytes: records the number tokens, the nesting depth
 * (-E2BIG beyond max_depth, before cJSON spends anything on it) and in d->lex_err the first
 * thing RFC 8259 or we refuse and cJSON does not: ill-formed UTF-8, \u0000 (cJSON would cut
 * the string there), raw control characters, non-JSON numbers. On text cJSON rejects the
 * tokens are meaningless, and unused.
 */
static int json_lex(jdoc *d, const char *text, size_t len, int max_depth)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    int depth = 0;
    if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) i = 3; /* a BOM, which cJSON skips too */
    while (i < len) {
        uint8_t c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++) {
                c = s[i];
                if (c == '\\') {
                    if (i + 5 < len && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0 &&
                        !d->lex_err)
                        d->lex_err = "strings must not contain \\u0000";
                    i++; /* the escaped character; \uXXXX's digits need no care */
                } else if (c < 0x20) {
                    if (!d->lex_err) d->lex_err = "control character in a string (escape it)";
                } else if (c >= 0x80) {
                    int ok;
                    i += utf8_next(s + i, len - i, &ok) - 1;
                    if (!ok && !d->lex_err) d->lex_err = "message is not valid UTF-8";
                }
            }
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            /* cJSON takes the longest run of these and accepts the text only when strtod
             * consumed all of it, so on accepted text this is exactly its token. */
            size_t start = i;
            while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '+' ||
                               s[i] == '.' || s[i] == 'e' || s[i] == 'E'))
                i++;
            int kind = json_number_kind(text + start, i - start);
            if (kind == TOK_BAD && !d->lex_err) d->lex_err = "malformed number";
            if (jdoc_push_num(d, start, i - start, kind)) return -ENOMEM;
        } else {
            if (c == '[' || c == '{') {
                if (++depth > max_depth) return -E2BIG;
            } else if (c == ']' || c == '}') {
                depth--;
            } else if (c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                if (!d->lex_err) d->lex_err = "control character in the message";
            }
            i++;
        }
    }
    return 0;
}

/* Numbers each number node of the tree in document order, which is the tokens' order. */
static int tag_numbers(cJSON *item, jdoc *d, size_t *k)
{
    if (cJSON_IsNumber(item)) {
        if (*k >= d->nnums) return -1;
        item->valueint = (int)(*k)++;
    }
    for (cJSON *ch = item->child; ch; ch = ch->next)
        if (tag_numbers(ch, d, k)) return -1;
    return 0;
}

/*
 * Parses one JSON text. 0: d->root is the value (check d->lex_err before trusting it);
 * -EINVAL with *why; -ENOMEM. Call jdoc_free() whatever it returns.
 */
static int jdoc_load(jdoc *d, const char *text, size_t len, int max_depth, const char **why)
{
    memset(d, 0, sizeof *d);
    d->text = text;
    d->nums = d->inline_nums;
    d->cap = sizeof d->inline_nums / sizeof d->inline_nums[0];
    *why = "message is not valid JSON";
    if (len > INT32_MAX) /* the tags are ints */
        return -EINVAL;
    int rc = json_lex(d, text, len, max_depth);
    if (rc == -E2BIG) {
        *why = max_depth == MAX_DEPTH ? "message nests deeper than 32 levels"
                                      : "data nests deeper than 31 levels";
        return -EINVAL;
    }
    if (rc) return rc;
    const char *end = NULL;
    d->root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!d->root) return -EINVAL; /* cJSON does not tell a syntax error from a failed malloc */
    size_t i = (size_t)(end - text);
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        i++;
    if (i != len) {
        *why = "unexpected bytes after the JSON value";
        return -EINVAL;
    }
    size_t k = 0;
    if (tag_numbers(d->root, d, &k) || k != d->nnums) return -EINVAL;
    return 0;
}

static void jdoc_free(jdoc *d)
{
    cJSON_Delete(d->root);
    d->root = NULL;
    if (d->nums != d->inline_nums) free(d->nums);
    d->nums = d->inline_nums;
}

/* The number of a number token s[0..len) of kind TOK_INT or TOK_FLOAT. */
static int json_num_text(const char *s, size_t len, int kind, num *out)
{
    if (kind == TOK_INT) {
        int neg = s[0] == '-';
        uint64_t mag = 0;
        size_t i;
        for (i = (size_t)neg; i < len; i++) {
            unsigned dgt = (unsigned)(s[i] - '0');
            if (mag > (UINT64_MAX - dgt) / 10) break;
            mag = mag * 10 + dgt;
        }
        if (i == len && !neg) {
            out->kind = NUM_UINT;
            out->u = mag;
            return 0;
        }
        if (i == len && mag <= (uint64_t)INT64_MAX + 1) {
            if (mag == 0) { /* "-0" */
                out->kind = NUM_UINT;
                out->u = 0;
                return 0;
            }
            out->kind = NUM_INT;
            out->i = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
            return 0;
        }
        /* beyond 64 bits: a double, as every JSON reader without bignums does */
    }
    out->kind = NUM_FLOAT;
    return token_strtod(s, len, &out->d);
}

/* The number a tagged number node holds. -EINVAL for a malformed token. */
static int json_num(const jdoc *d, const cJSON *j, num *out)
{
    if (!cJSON_IsNumber(j) || j->valueint < 0 || (size_t)j->valueint >= d->nnums) return -EINVAL;
    const jspan *sp = &d->nums[j->valueint];
    if (sp->kind == TOK_BAD) return -EINVAL;
    return json_num_text(d->text + sp->off, sp->len, sp->kind, out);
}

/* Appends a JSON value compactly; numbers as they were written. */
static int json_print(tw_buf *b, const cJSON *j, const jdoc *d)
{
    int rc;
    if (cJSON_IsNull(j)) return tw_buf_append(b, "null", 4);
    if (cJSON_IsFalse(j)) return tw_buf_append(b, "false", 5);
    if (cJSON_IsTrue(j)) return tw_buf_append(b, "true", 4);
    if (cJSON_IsNumber(j)) {
        if (j->valueint < 0 || (size_t)j->valueint >= d->nnums) return -EINVAL;
        const jspan *sp = &d->nums[j->valueint];
        return tw_buf_append(b, d->text + sp->off, sp->len);
    }
    if (cJSON_IsString(j))
        return tw_buf_append_json_string(b, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        int obj = cJSON_IsObject(j);
        rc = tw_buf_putc(b, obj ? '{' : '[');
        for (const cJSON *ch = j->child; ch && !rc; ch = ch->next) {
            if (ch != j->child) rc = tw_buf_putc(b, ',');
            if (obj && !rc) rc = tw_buf_append_json_string(b, ch->string, strlen(ch->string));
            if (obj && !rc) rc = tw_buf_putc(b, ':');
            if (!rc) rc = json_print(b, ch, d);
        }
        return rc ? rc : tw_buf_putc(b, obj ? '}' : ']');
    }
    return -EINVAL;
}

/* ---- MessagePack reading ---------------------------------------------------------------- */

enum mp_kind {
    MP_NIL,
    MP_BOOL,
    MP_UINT,
    MP_INT,
    MP_F32,
    MP_F64,
    MP_STR,
    MP_BIN,
    MP_EXT,
    MP_ARRAY,
    MP_MAP
};

typedef struct mp_val {
    enum mp_kind kind;
    uint32_t n; /* str/bin/ext: body bytes; array: items; map: pairs */
    int8_t ext_type;
    const uint8_t *body; /* str/bin/ext */
    union {
        int b;
        uint64_t u;
        int64_t i; /* MP_INT; may be >= 0 (an int8 can hold 5) */
        float f32;
        double f64;
    } v;
} mp_val;

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * Reads the value header at p and, for str/bin/ext, its body. Returns the first byte past
 * them, or NULL when the input ends first or holds 0xc1 (never used). Containers' items
 * are not read.
 */
static const uint8_t *mp_head(const uint8_t *p, const uint8_t *end, mp_val *v)
{
    if (p >= end) return NULL;
    uint8_t c = *p++;
    size_t left = (size_t)(end - p);
    size_t w; /* width of the header's length or value field */
    if (c <= 0x7f) {
        v->kind = MP_UINT;
        v->v.u = c;
        return p;
    }
    if (c >= 0xe0) {
        v->kind = MP_INT;
        v->v.i = (int8_t)c;
        return p;
    }
    if (c <= 0x8f || (c >= 0x90 && c <= 0x9f)) {
        v->kind = c <= 0x8f ? MP_MAP : MP_ARRAY;
        v->n = c & 0x0f;
        return p;
    }
    if (c <= 0xbf) {
        v->kind = MP_STR;
        v->n = c & 0x1f;
        goto body;
    }
    switch (c) {
    case 0xc0:
        v->kind = MP_NIL;
        return p;
    case 0xc2:
    case 0xc3:
        v->kind = MP_BOOL;
        v->v.b = c == 0xc3;
        return p;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        w = (size_t)1 << (c - 0xc4);
        if (left < w) return NULL;
        v->kind = MP_BIN;
        v->n = (uint32_t)be(p, w);
        p += w;
        goto body;
    case 0xc7:
    case 0xc8:
    case 0xc9:
        w = (size_t)1 << (c - 0xc7);
        if (left < w + 1) return NULL;
        v->kind = MP_EXT;
        v->n = (uint32_t)be(p, w);
        v->ext_type = (int8_t)p[w];
        p += w + 1;
        goto body;
    case 0xca: {
        if (left < 4) return NULL;
        uint32_t bits = (uint32_t)be(p, 4);
        v->kind = MP_F32;
        memcpy(&v->v.f32, &bits, 4);
        return p + 4;
    }
    case 0xcb: {
        if (left < 8) return NULL;
        uint64_t bits = be(p, 8);
        v->kind = MP_F64;
        memcpy(&v->v.f64, &bits, 8);
        return p + 8;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        w = (size_t)1 << (c - 0xcc);
        if (left < w) return NULL;
        v->kind = MP_UINT;
        v->v.u = be(p, w);
        return p + w;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        w = (size_t)1 << (c - 0xd0);
        if (left < w) return NULL;
        uint64_t u = be(p, w);
        if (w < 8 && (u >> (8 * w - 1)) & 1) /* sign-extend */
            u |= ~(uint64_t)0 << (8 * w);
        v->kind = MP_INT;
        v->v.i = (int64_t)u;
        return p + w;
    }
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        if (left < 1) return NULL;
        v->kind = MP_EXT;
        v->n = 1u << (c - 0xd4);
        v->ext_type = (int8_t)p[0];
        p++;
        goto body;
    case 0xd9:
    case 0xda:
    case 0xdb:
        w = (size_t)1 << (c - 0xd9);
        if (left < w) return NULL;
        v->kind = MP_STR;
        v->n = (uint32_t)be(p, w);
        p += w;
        goto body;
    case 0xdc:
    case 0xdd:
    case 0xde:
    case 0xdf:
        w = c & 1 ? 4 : 2;
        if (left < w) return NULL;
        v->kind = c <= 0xdd ? MP_ARRAY : MP_MAP;
        v->n = (uint32_t)be(p, w);
        return p + w;
    default: /* 0xc1 */
        return NULL;
    }
body:
    if ((size_t)(end - p) < v->n) return NULL;
    v->body = p;
    return p + v->n;
}

/* Why mp_skip() refused a value. */
enum { MP_BAD = 1, MP_TOO_DEEP, MP_KEY_NEST };

/* Whether a map key at p (a whole, valid value) is a map or array. */
static int mp_is_container(const uint8_t *p)
{
    return (*p >= 0x80 && *p <= 0x9f) || (*p >= 0xdc && *p <= 0xdf);
}

/*
 * Skips one whole value, checking that it is complete, nests at most `depth` containers,
 * and that no map or array is a key inside a key that is not a string (`in_key`). JSON
 * holds such a key as its JSON text in a string, escaped once per level of keys: a key
 * inside a key inside a key... would double its size per level (50 bytes became 50 MB), so
 * only one level of non-string keys may hold maps or arrays. Returns the value's end, or
 * NULL with *why set.
 */
static const uint8_t *mp_skip(const uint8_t *p, const uint8_t *end, int depth, int in_key, int *why)
{
    mp_val v;
    p = mp_head(p, end, &v);
    if (!p) {
        *why = MP_BAD;
        return NULL;
    }
    if (v.kind != MP_ARRAY && v.kind != MP_MAP) return p;
    if (depth <= 0) {
        *why = MP_TOO_DEEP;
        return NULL;
    }
    uint64_t items = v.kind == MP_MAP ? 2 * (uint64_t)v.n : v.n;
    if (items > (uint64_t)(end - p)) { /* each item takes a byte at least */
        *why = MP_BAD;
        return NULL;
    }
    for (uint64_t i = 0; i < items && p; i++) {
        if (p == end) {
            *why = MP_BAD;
            return NULL;
        }
        int key = v.kind == MP_MAP && i % 2 == 0;
        int odd_key = key && (*p < 0xa0 || *p > 0xbf) && (*p < 0xd9 || *p > 0xdb);
        if (odd_key && in_key && mp_is_container(p)) {
            *why = MP_KEY_NEST;
            return NULL;
        }
        p = mp_skip(p, end, depth - 1, in_key || odd_key, why);
    }
    return p;
}

/* The top-level fields a client message may hold (others are ignored). */
enum { F_OP, F_ID, F_CHANNEL, F_DATA, F_SINCE, F_LAST, F_TOKEN, F_SUBS, F_COUNT };

static const char *const field_names[F_COUNT] = {
    [F_OP] = "op",       [F_ID] = "id",     [F_CHANNEL] = "channel", [F_DATA] = "data",
    [F_SINCE] = "since", [F_LAST] = "last", [F_TOKEN] = "token",     [F_SUBS] = "subs",
};

/* ---- JSON client messages in one pass ----------------------------------------------------
 *
 * jdoc_load reads a message twice: json_lex for what cJSON cannot tell us (the exact text of
 * numbers, \u0000, UTF-8, raw control characters, depth), then cJSON for the tree. cJSON
 * cannot give a number's text or a value's byte span, so it cannot be made the only pass;
 * for client messages this validating scanner is. It reads strict RFC 8259 JSON (plus our
 * own rules: well-formed UTF-8, no \u0000, at most MAX_DEPTH levels) once, and records where
 * each known top-level field's value starts; decode_request then reads those values from
 * the text (val.t), and publish data is stored as its own bytes when they are already
 * compact (or rewritten compactly from the text), so nothing is built per message.
 *
 * It accepts a subset of what jdoc_load accepts, and on that subset gives the same result:
 * anything it is unsure of makes it answer JS_UNSURE, and the message is read again by
 * jdoc_load + cJSON, whose answers (and error messages) stay the reference. Unsure:
 * every syntax or validity error, a byte-order mark, whitespace other than the four of RFC
 * 8259 (cJSON skips every byte <= 0x20), \u escapes of surrogates (cJSON's pairing rules
 * are its own) or of U+0000, numbers of 63 characters or more (cJSON 1.7.15 reads at most
 * 63 and fails the rest), any escape in a top-level key or in a known field other than
 * data (decode_request reads those strings as their raw bytes), a known field given twice,
 * and any message that decode_request then refuses (the error is produced by the
 * reference path, so each message and its wording are today's). tests/unit/test_protocol.c
 * runs its cases through both readers and tests/fuzz/fuzz_protocol_json_diff.c compares
 * them on arbitrary input.
 */

enum { JS_OK = 0, JS_UNSURE = -1 };

/* What a scanned value held (jscan.flags). */
enum { JS_ESCAPE = 1, JS_SPACE = 2 };

typedef struct jscan {
    const uint8_t *s;
    size_t len, i;
    unsigned flags;
} jscan;

static int js_is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Skips whitespace; `inside`: within a value (data holding it is not compact). */
static inline void js_space(jscan *j, int inside)
{
    if (j->i < j->len && !js_is_space(j->s[j->i])) return; /* the usual case: compact text */
    size_t i = j->i;
    while (i < j->len && js_is_space(j->s[i]))
        i++;
    if (inside && i != j->i) j->flags |= JS_SPACE;
    j->i = i;
}

static int hex4(const uint8_t *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t c = p[k];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Whether none of 8 bytes at p ends a run of plain string bytes: a quote, a backslash, a
 * control character or a byte of a multi-byte character (SWAR: each test sets a byte's top
 * bit exactly when some byte matches). */
static inline int js_plain8(const uint8_t *p)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t w;
    memcpy(&w, p, 8);
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w;
    return (hit & high) == 0;
}

/* A string at j->i (its opening quote); leaves j->i past the closing quote. */
static int js_string(jscan *j)
{
    const uint8_t *s = j->s;
    size_t i = j->i + 1, n = j->len;
    for (;;) {
        while (n - i >= 8 && js_plain8(s + i))
            i += 8;
        while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
            i++;
        if (i >= n) return JS_UNSURE;
        uint8_t c = s[i];
        if (c == '"') break;
        if (c == '\\') {
            if (i + 1 >= n) return JS_UNSURE;
            uint8_t e = s[i + 1];
            if (e == 'u') {
                unsigned v;
                if (n - i < 6 || hex4(s + i + 2, &v)) return JS_UNSURE;
                if (v == 0 || (v >= 0xd800 && v <= 0xdfff)) return JS_UNSURE;
                i += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                       e == 'r' || e == 't') {
                i += 2;
            } else {
                return JS_UNSURE;
            }
            j->flags |= JS_ESCAPE;
        } else if (c < 0x20) {
            return JS_UNSURE;
        } else {
            int ok;
            i += utf8_next(s + i, n - i, &ok);
            if (!ok) return JS_UNSURE;
        }
    }
    j->i = i + 1;
    return JS_OK;
}

/* A number by RFC 8259's grammar, shorter than 63 characters. */
static int js_number(jscan *j)
{
    size_t start = j->i, i = j->i;
    while (i < j->len && ((j->s[i] >= '0' && j->s[i] <= '9') || j->s[i] == '-' || j->s[i] == '+' ||
                          j->s[i] == '.' || j->s[i] == 'e' || j->s[i] == 'E'))
        i++;
    if (i - start >= 63 || json_number_kind((const char *)j->s + start, i - start) == TOK_BAD)
        return JS_UNSURE;
    j->i = i;
    return JS_OK;
}

static int js_literal(jscan *j, const char *word, size_t n)
{
    if (j->len - j->i < n || memcmp(j->s + j->i, word, n) != 0) return JS_UNSURE;
    j->i += n;
    return JS_OK;
}

/* One value at j->i, nested inside `depth` containers already. */
static int js_value(jscan *j, int depth)
{
    if (j->i >= j->len) return JS_UNSURE;
    uint8_t c = j->s[j->i];
    switch (c) {
    case '"':
        return js_string(j);
    case 't':
        return js_literal(j, "true", 4);
    case 'f':
        return js_literal(j, "false", 5);
    case 'n':
        return js_literal(j, "null", 4);
    case '{':
    case '[':
        break;
    default:
        return c == '-' || (c >= '0' && c <= '9') ? js_number(j) : JS_UNSURE;
    }
    if (++depth > MAX_DEPTH) return JS_UNSURE;
    uint8_t close = c == '{' ? '}' : ']';
    j->i++;
    js_space(j, 1);
    if (j->i < j->len && j->s[j->i] == close) {
        j->i++;
        return JS_OK;
    }
    for (;;) {
        if (c == '{') {
            if (j->i >= j->len || j->s[j->i] != '"' || js_string(j)) return JS_UNSURE;
            js_space(j, 1);
            if (j->i >= j->len || j->s[j->i] != ':') return JS_UNSURE;
            j->i++;
            js_space(j, 1);
        }
        if (js_value(j, depth)) return JS_UNSURE;
        js_space(j, 1);
        if (j->i >= j->len) return JS_UNSURE;
        if (j->s[j->i] == close) {
            j->i++;
            return JS_OK;
        }
        if (j->s[j->i] != ',') return JS_UNSURE;
        j->i++;
        js_space(j, 1);
    }
}

/* The field a key names (field_names), or -1. */
static int field_lookup(const uint8_t *k, size_t n)
{
#define IS(name) (memcmp(k, name, sizeof name - 1) == 0)
    switch (n) {
    case 2:
        return IS("op") ? F_OP : IS("id") ? F_ID : -1;
    case 4:
        return IS("data") ? F_DATA : IS("last") ? F_LAST : IS("subs") ? F_SUBS : -1;
    case 5:
        return IS("since") ? F_SINCE : IS("token") ? F_TOKEN : -1;
    case 7:
        return IS("channel") ? F_CHANNEL : -1;
    default:
        return -1;
    }
#undef IS
}

/* The known fields of a scanned message: where each value starts, and publish data's span. */
typedef struct jfields {
    const uint8_t *at[F_COUNT];
    size_t data_len;
    unsigned data_flags;
} jfields;

/* Scans a whole message: one object, nothing after it but whitespace. */
static int js_message(const uint8_t *msg, size_t len, jfields *f)
{
    jscan j = {.s = msg, .len = len};
    memset(f, 0, sizeof *f);
    js_space(&j, 0);
    if (j.i >= len || msg[j.i] != '{') return JS_UNSURE;
    j.i++;
    js_space(&j, 0);
    if (j.i < len && msg[j.i] == '}') {
        j.i++;
    } else {
        for (;;) {
            if (j.i >= len || msg[j.i] != '"') return JS_UNSURE;
            size_t key = j.i + 1;
            j.flags = 0;
            if (js_string(&j) || j.flags) return JS_UNSURE;
            size_t klen = j.i - 1 - key;
            int field = field_lookup(msg + key, klen);
            if (field >= 0 && f->at[field]) return JS_UNSURE; /* the reference names it */
            js_space(&j, 0);
            if (j.i >= len || msg[j.i] != ':') return JS_UNSURE;
            j.i++;
            js_space(&j, 0);
            size_t start = j.i;
            j.flags = 0;
            if (js_value(&j, 1)) return JS_UNSURE;
            if (field >= 0) {
                f->at[field] = msg + start;
                if (field == F_DATA) {
                    f->data_len = j.i - start;
                    f->data_flags = j.flags;
                } else if (j.flags & JS_ESCAPE) {
                    return JS_UNSURE;
                }
            }
            js_space(&j, 0);
            if (j.i >= len) return JS_UNSURE;
            if (msg[j.i] == '}') {
                j.i++;
                break;
            }
            if (msg[j.i] != ',') return JS_UNSURE;
            j.i++;
            js_space(&j, 0);
        }
    }
    js_space(&j, 0);
    return j.i == len ? JS_OK : JS_UNSURE;
}

/* Past one value of a scanned (valid) text at p. */
static const uint8_t *js_skip(const uint8_t *p, const uint8_t *end)
{
    jscan j = {.s = p, .len = (size_t)(end - p)};
    js_value(&j, 0);
    return p + j.i;
}

/* The string at p of a scanned text, without its quotes (a known field: no escapes). */
static void js_str(const uint8_t *p, const uint8_t *end, const char **s, size_t *n)
{
    const uint8_t *q = memchr(p + 1, '"', (size_t)(end - p - 1));
    *s = (const char *)p + 1;
    *n = (size_t)(q - p - 1);
}

/*
 * Appends scanned JSON text compactly, as json_print prints the tree cJSON makes of it:
 * whitespace dropped, numbers and literals as written, strings with escapes decoded (as
 * cJSON does; no surrogates or \u0000 here) and escaped again by tw_buf_append_json_string.
 * A string without escapes is its own output: it holds no byte that function escapes.
 */
static int js_compact(tw_buf *b, const uint8_t *s, size_t n)
{
    int rc = tw_buf_reserve(b, n);
    size_t i = 0;
    while (!rc && i < n) {
        uint8_t c = s[i];
        if (js_is_space(c)) {
            i++;
            continue;
        }
        if (c != '"') {
            size_t k = i;
            while (k < n && !js_is_space(s[k]) && s[k] != '"')
                k++;
            rc = tw_buf_append(b, s + i, k - i);
            i = k;
            continue;
        }
        size_t k = i + 1;
        int esc = 0;
        while (s[k] != '"') {
            if (s[k] == '\\') {
                esc = 1;
                k++;
            }
            k++;
        }
        if (!esc) {
            rc = tw_buf_append(b, s + i, k + 1 - i);
            i = k + 1;
            continue;
        }
        /* decoded is never longer than the escaped text */
        uint8_t tmp[256];
        uint8_t *d = k - i <= sizeof tmp ? tmp : malloc(k - i);
        if (!d) return -ENOMEM;
        size_t m = 0;
        for (size_t p = i + 1; p < k; p++) {
            if (s[p] != '\\') {
                d[m++] = s[p];
                continue;
            }
            uint8_t e = s[++p];
            switch (e) {
            case 'b':
                d[m++] = '\b';
                break;
            case 'f':
                d[m++] = '\f';
                break;
            case 'n':
                d[m++] = '\n';
                break;
            case 'r':
                d[m++] = '\r';
                break;
            case 't':
                d[m++] = '\t';
                break;
            case 'u': {
                unsigned v = 0;
                hex4(s + p + 1, &v);
                p += 4;
                if (v < 0x80) {
                    d[m++] = (uint8_t)v;
                } else if (v < 0x800) {
                    d[m++] = (uint8_t)(0xc0 | v >> 6);
                    d[m++] = (uint8_t)(0x80 | (v & 0x3f));
                } else {
                    d[m++] = (uint8_t)(0xe0 | v >> 12);
                    d[m++] = (uint8_t)(0x80 | ((v >> 6) & 0x3f));
                    d[m++] = (uint8_t)(0x80 | (v & 0x3f));
                }
                break;
            }
            default: /* " \ / */
                d[m++] = e;
                break;
            }
        }
        rc = tw_buf_append_json_string(b, (const char *)d, m);
        if (d != tmp) free(d);
        i = k + 1;
    }
    return rc;
}

/* ---- Decoding: one view over both encodings --------------------------------------------- */

typedef struct dctx {
    tw_encoding enc;
    const tw_proto_limits *lim;
    tw_proto_error *err;
    const jdoc *jd;      /* JSON read by jdoc_load */
    const jfields *jf;   /* JSON read in one pass (js_message): values are text */
    const uint8_t *mend; /* MessagePack or one-pass JSON: the end of the message */
} dctx;

/* A value of the message being decoded: a cJSON node, or where a MessagePack value (or,
 * read in one pass, a JSON value) starts inside the (already validated) message. */
typedef struct val {
    const cJSON *j;
    const uint8_t *m;
} val;

/* The JSON text of a number at p, and its kind (TOK_INT or TOK_FLOAT). */
static size_t js_num_span(const uint8_t *p, const uint8_t *end, int *kind)
{
    const uint8_t *q = p;
    while (q < end && ((*q >= '0' && *q <= '9') || *q == '-' || *q == '+' || *q == '.' ||
                       *q == 'e' || *q == 'E'))
        q++;
    *kind = json_number_kind((const char *)p, (size_t)(q - p));
    return (size_t)(q - p);
}

/* Skips the whitespace at p, up to end. */
static const uint8_t *js_skip_space(const uint8_t *p, const uint8_t *end)
{
    while (p < end && js_is_space(*p))
        p++;
    return p;
}

enum vkind { V_NULL, V_BOOL, V_NUM, V_STR, V_ARRAY, V_MAP, V_OTHER };

static enum vkind val_kind(const dctx *c, val v)
{
    if (c->jf) {
        switch (*v.m) {
        case 'n':
            return V_NULL;
        case 't':
        case 'f':
            return V_BOOL;
        case '"':
            return V_STR;
        case '[':
            return V_ARRAY;
        case '{':
            return V_MAP;
        default:
            return V_NUM;
        }
    }
    if (c->enc == TW_ENC_JSON) {
        if (cJSON_IsNull(v.j)) return V_NULL;
        if (cJSON_IsBool(v.j)) return V_BOOL;
        if (cJSON_IsNumber(v.j)) return V_NUM;
        if (cJSON_IsString(v.j)) return V_STR;
        if (cJSON_IsArray(v.j)) return V_ARRAY;
        if (cJSON_IsObject(v.j)) return V_MAP;
        return V_OTHER;
    }
    mp_val m;
    if (!mp_head(v.m, c->mend, &m)) return V_OTHER;
    switch (m.kind) {
    case MP_NIL:
        return V_NULL;
    case MP_BOOL:
        return V_BOOL;
    case MP_UINT:
    case MP_INT:
    case MP_F32:
    case MP_F64:
        return V_NUM;
    case MP_STR:
        return V_STR;
    case MP_ARRAY:
        return V_ARRAY;
    case MP_MAP:
        return V_MAP;
    default:
        return V_OTHER;
    }
}

/* The bytes of a V_STR value (JSON strings hold no NUL: json_lex refuses \u0000). */
static void val_str(const dctx *c, val v, const char **s, size_t *n)
{
    if (c->jf) {
        js_str(v.m, c->mend, s, n);
        return;
    }
    if (c->enc == TW_ENC_JSON) {
        *s = v.j->valuestring;
        *n = strlen(v.j->valuestring);
        return;
    }
    mp_val m;
    mp_head(v.m, c->mend, &m);
    *s = (const char *)m.body;
    *n = m.n;
}

/* The number of a V_NUM value: 0, -EINVAL (not a number) or -ENOMEM. */
static int val_num(const dctx *c, val v, num *out)
{
    if (c->jf) {
        int kind;
        size_t n = js_num_span(v.m, c->mend, &kind);
        return kind == TOK_BAD ? -EINVAL : json_num_text((const char *)v.m, n, kind, out);
    }
    if (c->enc == TW_ENC_JSON) return json_num(c->jd, v.j, out);
    mp_val m;
    if (!mp_head(v.m, c->mend, &m)) return -EINVAL;
    switch (m.kind) {
    case MP_UINT:
        out->kind = NUM_UINT;
        out->u = m.v.u;
        return 0;
    case MP_INT:
        if (m.v.i >= 0) {
            out->kind = NUM_UINT;
            out->u = (uint64_t)m.v.i;
        } else {
            out->kind = NUM_INT;
            out->i = m.v.i;
        }
        return 0;
    case MP_F32:
        out->kind = NUM_FLOAT;
        out->d = m.v.f32;
        return 0;
    case MP_F64:
        out->kind = NUM_FLOAT;
        out->d = m.v.f64;
        return 0;
    default:
        return -EINVAL;
    }
}

/* Reads an integer field: 0, -EINVAL (wrong type or range), -ENOMEM. */
static int val_i64(const dctx *c, val v, int64_t *out)
{
    num x;
    int rc = val_kind(c, v) == V_NUM ? val_num(c, v, &x) : -EINVAL;
    if (rc) return rc;
    return num_i64(&x, c->enc == TW_ENC_JSON, out) ? -EINVAL : 0;
}

static int val_u64(const dctx *c, val v, uint64_t *out)
{
    num x;
    int rc = val_kind(c, v) == V_NUM ? val_num(c, v, &x) : -EINVAL;
    if (rc) return rc;
    return num_u64(&x, c->enc == TW_ENC_JSON, out) ? -EINVAL : 0;
}

/* Iterates a V_MAP's entries in order. */
typedef struct miter {
    val next; /* JSON: the next member; MessagePack: the next key */
    uint32_t left;
} miter;

static void map_iter(const dctx *c, val map, miter *it)
{
    if (c->jf) {
        it->next.m = js_skip_space(map.m + 1, c->mend);
        return;
    }
    if (c->enc == TW_ENC_JSON) {
        it->next.j = map.j->child;
        return;
    }
    mp_val m = {0}; /* validated as a map before: mp_head sets n; -O3 cannot see it */
    it->next.m = mp_head(map.m, c->mend, &m);
    it->left = m.n;
}

/* Next entry: 1 and the entry (*key NULL when it is not a string), or 0 at the end. */
static int map_next(const dctx *c, miter *it, const char **key, size_t *klen, val *value)
{
    if (c->jf) {
        const uint8_t *p = it->next.m, *end = c->mend;
        if (*p == '}') return 0;
        js_str(p, end, key, klen);
        p = js_skip_space((const uint8_t *)*key + *klen + 1, end);
        p = js_skip_space(p + 1, end); /* the ':' */
        value->m = p;
        p = js_skip_space(js_skip(p, end), end);
        if (*p == ',') p = js_skip_space(p + 1, end);
        it->next.m = p;
        return 1;
    }
    if (c->enc == TW_ENC_JSON) {
        if (!it->next.j) return 0;
        *key = it->next.j->string;
        *klen = strlen(*key);
        value->j = it->next.j;
        it->next.j = it->next.j->next;
        return 1;
    }
    if (!it->left) return 0;
    it->left--;
    mp_val k;
    int why;
    mp_head(it->next.m, c->mend, &k);
    *key = k.kind == MP_STR ? (const char *)k.body : NULL;
    *klen = k.kind == MP_STR ? k.n : 0;
    /* the message was validated whole: these cannot fail */
    value->m = mp_skip(it->next.m, c->mend, MAX_DEPTH, 0, &why);
    it->next.m = mp_skip(value->m, c->mend, MAX_DEPTH, 0, &why);
    return 1;
}

static size_t map_count(const dctx *c, val map)
{
    if (c->jf) {
        size_t n = 0;
        miter it;
        const char *k;
        size_t kn;
        val v;
        map_iter(c, map, &it);
        while (map_next(c, &it, &k, &kn, &v))
            n++;
        return n;
    }
    if (c->enc == TW_ENC_JSON) {
        size_t n = 0;
        for (const cJSON *ch = map.j->child; ch; ch = ch->next)
            n++;
        return n;
    }
    mp_val m;
    mp_head(map.m, c->mend, &m);
    return m.n;
}

/* ---- Decoding: errors ------------------------------------------------------------------- */

static int fail(const dctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(const dctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->err->code = 400;
    vsnprintf(c->err->message, sizeof c->err->message, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int fail_nomem(const dctx *c)
{
    c->err->code = 500;
    snprintf(c->err->message, sizeof c->err->message, "out of memory");
    return -ENOMEM;
}

/* Fails with the message for rc: -ENOMEM, or -EINVAL with `what`. */
static int fail_rc(const dctx *c, int rc, const char *what)
{
    return rc == -ENOMEM ? fail_nomem(c) : fail(c, "%s", what);
}

/* Up to 24 bytes of client input for an error message: printable ASCII, '?' otherwise. */
static const char *excerpt(char out[32], const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n && i < 24; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    strcpy(out + i, n > 24 ? "..." : "");
    return out;
}

/* ---- Decoding: fields ------------------------------------------------------------------- */

static int cursor_alloc(tw_cursor *cur, size_t n)
{
    cur->n = 0;
    cur->entries = NULL;
    cur->origins = NULL;
    if (n == 0) return 0;
    cur->entries = malloc(n * sizeof *cur->entries);
    cur->origins = malloc(n * sizeof *cur->origins);
    if (!cur->entries || !cur->origins) {
        tw_cursor_free(cur);
        return -ENOMEM;
    }
    return 0;
}

static void cursor_put(tw_cursor *cur, const char *origin, size_t len, uint64_t seq)
{
    memcpy(cur->origins[cur->n], origin, len);
    cur->origins[cur->n][len] = '\0';
    cur->entries[cur->n].origin = cur->origins[cur->n];
    cur->entries[cur->n].seq = seq;
    cur->n++;
}

/* "ORIGIN:SEQ" -> origin length and seq; -EINVAL when it is not one. */
static int parse_position(const char *s, size_t n, size_t *origin_len, uint64_t *seq)
{
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':') colon = s + i;
    if (!colon || !tw_origin_valid(s, (size_t)(colon - s))) return -EINVAL;
    const char *d = colon + 1, *e = s + n;
    if (d == e || e - d > 20) return -EINVAL;
    uint64_t v = 0;
    for (; d < e; d++) {
        if (*d < '0' || *d > '9') return -EINVAL;
        unsigned dgt = (unsigned)(*d - '0');
        if (v > (UINT64_MAX - dgt) / 10) return -EINVAL;
        v = v * 10 + dgt;
    }
    *origin_len = (size_t)(colon - s);
    *seq = v;
    return 0;
}

#define CURSOR_FORMS "{\"ORIGIN\": SEQ, ...}, \"ORIGIN:SEQ\" or {}"

/* A cursor in any of its three forms; `label` names it in errors. Writes *out on success. */
static int parse_cursor(const dctx *c, val v, const char *label, tw_cursor *out)
{
    char ex[32];
    const char *s;
    size_t n;
    uint64_t seq;
    tw_cursor cur;
    int rc;

    switch (val_kind(c, v)) {
    case V_STR: {
        size_t olen;
        val_str(c, v, &s, &n);
        if (parse_position(s, n, &olen, &seq))
            return fail(c, "%s: '%s' is not a position ORIGIN:SEQ", label, excerpt(ex, s, n));
        if (cursor_alloc(&cur, 1)) return fail_nomem(c);
        cursor_put(&cur, s, olen, seq);
        *out = cur;
        return 0;
    }
    case V_MAP:
        break;
    case V_NUM:
        return fail(c,
                    "%s must be " CURSOR_FORMS ", not a bare number (a seq means nothing "
                    "on another node)",
                    label);
    default:
        return fail(c, "%s must be " CURSOR_FORMS, label);
    }

    size_t count = map_count(c, v);
    if (count > c->lim->max_cursor_entries)
        return fail(c, "%s has more than %zu entries", label, c->lim->max_cursor_entries);
    if (cursor_alloc(&cur, count)) return fail_nomem(c);
    miter it;
    val sv;
    map_iter(c, v, &it);
    while (map_next(c, &it, &s, &n, &sv)) {
        if (!s) {
            rc = fail(c, "%s: origins must be strings", label);
            goto out_free;
        }
        if (!tw_origin_valid(s, n)) {
            rc = fail(c, "%s: '%s' is not an origin id NAME.EPOCH", label, excerpt(ex, s, n));
            goto out_free;
        }
        rc = val_u64(c, sv, &seq);
        if (rc) {
            rc = rc == -ENOMEM ? fail_nomem(c)
                               : fail(c, "%s: the seq of '%s' must be a non-negative integer",
                                      label, excerpt(ex, s, n));
            goto out_free;
        }
        for (size_t i = 0; i < cur.n; i++) {
            if (strlen(cur.entries[i].origin) == n && memcmp(cur.entries[i].origin, s, n) == 0) {
                rc = fail(c, "%s names origin '%s' twice", label, excerpt(ex, s, n));
                goto out_free;
            }
        }
        cursor_put(&cur, s, n, seq);
    }
    *out = cur;
    return 0;

out_free:
    tw_cursor_free(&cur);
    return rc;
}

static char *memdup_z(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Checks a channel name and copies it; `label` names it in errors. */
static int take_channel(const dctx *c, const char *s, size_t n, const char *label, char **out)
{
    size_t max = c->lim->max_channel_len;
    if (max > TW_STORE_CHANNEL_MAX) max = TW_STORE_CHANNEL_MAX;
    if (n == 0) return fail(c, "%s must not be empty", label);
    if (n > max) return fail(c, "%s is longer than %zu bytes", label, max);
    if (!tw_channel_valid(s, n, max))
        return fail(c, "%s may only hold visible ASCII characters (0x21-0x7e)", label);
    *out = memdup_z(s, n);
    return *out ? 0 : fail_nomem(c);
}

typedef struct fields {
    int have[F_COUNT];
    val v[F_COUNT];
} fields;

/* An optional field given as null counts as absent. */
static int present(const dctx *c, const fields *f, int i)
{
    return f->have[i] && val_kind(c, f->v[i]) != V_NULL;
}

static int get_channel(const dctx *c, const fields *f, tw_sub_args *sub)
{
    const char *s;
    size_t n;
    if (!f->have[F_CHANNEL]) return fail(c, "channel is required");
    if (val_kind(c, f->v[F_CHANNEL]) != V_STR) return fail(c, "channel must be a string");
    val_str(c, f->v[F_CHANNEL], &s, &n);
    int rc = take_channel(c, s, n, "channel", &sub->channel);
    if (!rc) sub->channel_len = n;
    return rc;
}

static int get_token(const dctx *c, const fields *f, int required, char **out)
{
    const char *s;
    size_t n;
    if (!present(c, f, F_TOKEN)) return required ? fail(c, "token is required") : 0;
    if (val_kind(c, f->v[F_TOKEN]) != V_STR) return fail(c, "token must be a string");
    val_str(c, f->v[F_TOKEN], &s, &n);
    if (n > c->lim->max_token_len)
        return fail(c, "token is longer than %zu bytes", c->lim->max_token_len);
    if (memchr(s, '\0', n)) return fail(c, "token must not contain NUL");
    *out = memdup_z(s, n);
    return *out ? 0 : fail_nomem(c);
}

static int get_subs(const dctx *c, const fields *f, tw_request *req)
{
    if (!present(c, f, F_SUBS)) return 0;
    val subs = f->v[F_SUBS];
    if (val_kind(c, subs) != V_MAP) return fail(c, "subs must be a map {channel: cursor or null}");
    size_t count = map_count(c, subs);
    if (count > c->lim->max_subs)
        return fail(c, "subs has more than %zu entries", c->lim->max_subs);
    if (count == 0) return 0;
    req->subs = calloc(count, sizeof *req->subs);
    if (!req->subs) return fail_nomem(c);

    miter it;
    const char *s;
    size_t n;
    val v;
    char label[48], ex[32];
    map_iter(c, subs, &it);
    while (map_next(c, &it, &s, &n, &v)) {
        if (!s) return fail(c, "subs: channels must be strings");
        snprintf(label, sizeof label, "subs['%s']", excerpt(ex, s, n));
        tw_sub_args *sub = &req->subs[req->nsubs++]; /* counted now: freed with the rest */
        int rc = take_channel(c, s, n, label, &sub->channel);
        if (rc) return rc;
        sub->channel_len = n;
        if (val_kind(c, v) != V_NULL) {
            rc = parse_cursor(c, v, label, &sub->since);
            if (rc) return rc;
            sub->has_since = 1;
        }
    }
    return 0;
}

/* Publish data, re-encoded compactly in the message's encoding. */
static int get_data(const dctx *c, const fields *f, tw_request *req)
{
    if (!f->have[F_DATA]) return fail(c, "data is required");
    val v = f->v[F_DATA];
    if (c->enc == TW_ENC_MSGPACK) {
        /* Already compact and validated: its bytes are the stored value. */
        int why;
        const uint8_t *e = mp_skip(v.m, c->mend, MAX_DEPTH, 0, &why);
        size_t n = (size_t)(e - v.m);
        req->data = malloc(n);
        if (!req->data) return fail_nomem(c);
        memcpy(req->data, v.m, n);
        req->data_len = n;
    } else if (c->jf) {
        /* Read in one pass: data already compact is stored as its own bytes. */
        size_t n = c->jf->data_len;
        if (!(c->jf->data_flags & (JS_ESCAPE | JS_SPACE))) {
            req->data = malloc(n);
            if (!req->data) return fail_nomem(c);
            memcpy(req->data, v.m, n);
            req->data_len = n;
        } else {
            tw_buf b;
            tw_buf_init(&b, 0);
            int rc = js_compact(&b, v.m, n);
            if (rc) {
                tw_buf_free(&b);
                return fail_nomem(c);
            }
            req->data = b.base; /* head is 0: base is the allocation */
            req->data_len = b.len;
        }
    } else {
        tw_buf b;
        tw_buf_init(&b, 0);
        int rc = json_print(&b, v.j, c->jd);
        if (rc) {
            tw_buf_free(&b);
            return fail_rc(c, rc, "data is not valid JSON");
        }
        req->data = b.base; /* head is 0: base is the allocation */
        req->data_len = b.len;
    }
    req->data_encoding = (uint8_t)c->enc;
    return 0;
}

static tw_op op_lookup(const char *s, size_t n)
{
    if (n == 0) return TW_OP_NONE;
    for (size_t i = 1; i < sizeof op_names / sizeof op_names[0]; i++)
        if (op_names[i] && op_names[i][0] == s[0] && strlen(op_names[i]) == n &&
            memcmp(op_names[i], s, n) == 0)
            return (tw_op)i;
    return TW_OP_NONE;
}

/*
 * Decodes the top-level map `root`. The id is read before anything else is checked, so
 * that every later error can carry it.
 */
static int decode_fields(const dctx *c, const fields *fp, int dup, const char *deferred,
                         tw_op implied, tw_request *req);

static int decode_request(const dctx *c, val root, const char *deferred, tw_op implied,
                          tw_request *req)
{
    fields f;
    miter it;
    const char *k;
    size_t kn;
    val v;
    int dup = -1;

    memset(&f, 0, sizeof f);
    map_iter(c, root, &it);
    while (map_next(c, &it, &k, &kn, &v)) {
        if (!k) {
            if (!deferred) deferred = "message keys must be strings";
            continue;
        }
        for (int i = 0; i < F_COUNT; i++) {
            if (strlen(field_names[i]) != kn || memcmp(field_names[i], k, kn) != 0) continue;
            if (f.have[i] && dup < 0) dup = i;
            f.have[i] = 1;
            f.v[i] = v;
            break;
        }
    }
    return decode_fields(c, &f, dup, deferred, implied, req);
}

/* Decodes the fields of a message (`dup`: the first field given twice, or -1). */
static int decode_fields(const dctx *c, const fields *fp, int dup, const char *deferred,
                         tw_op implied, tw_request *req)
{
    const fields f = *fp;
    char ex[32];

    if (present(c, &f, F_ID) && dup != F_ID) {
        int rc = val_i64(c, f.v[F_ID], &c->err->id);
        if (rc) return fail_rc(c, rc, "id must be an integer within int64");
        c->err->has_id = 1;
        req->has_id = 1;
        req->id = c->err->id;
    }
    if (deferred) return fail(c, "%s", deferred);
    if (dup >= 0) return fail(c, "duplicate field '%s'", field_names[dup]);

    const char *s = "";
    size_t n = 0;
    if (implied != TW_OP_NONE) {
        /* An HTTP API body: the endpoint says what it is; an `op` field is ignored. */
        req->op = implied;
    } else {
        if (!f.have[F_OP]) return fail(c, "op is required");
        if (val_kind(c, f.v[F_OP]) != V_STR) return fail(c, "op must be a string");
        val_str(c, f.v[F_OP], &s, &n);
        req->op = op_lookup(s, n);
    }

    int rc;
    switch (req->op) {
    case TW_OP_CONNECT:
        rc = get_token(c, &f, 0, &req->token);
        return rc ? rc : get_subs(c, &f, req);
    case TW_OP_REFRESH:
        return get_token(c, &f, 1, &req->token);
    case TW_OP_PING:
        return 0;
    case TW_OP_UNSUBSCRIBE:
    case TW_OP_PRESENCE:
        return get_channel(c, &f, &req->sub);
    case TW_OP_PUBLISH:
        rc = get_channel(c, &f, &req->sub);
        return rc ? rc : get_data(c, &f, req);
    case TW_OP_SUBSCRIBE:
        rc = get_channel(c, &f, &req->sub);
        if (rc) return rc;
        if (present(c, &f, F_SINCE)) {
            rc = parse_cursor(c, f.v[F_SINCE], "since", &req->sub.since);
            if (rc) return rc;
            req->sub.has_since = 1;
        }
        if (present(c, &f, F_LAST)) {
            uint64_t last;
            rc = val_u64(c, f.v[F_LAST], &last);
            if (rc || last > c->lim->max_last)
                return rc == -ENOMEM ? fail_nomem(c)
                                     : fail(c, "last must be an integer from 0 to %u",
                                            (unsigned)c->lim->max_last);
            req->sub.last = (uint32_t)last;
        }
        return 0;
    case TW_OP_NONE:
        break;
    }
    return fail(c, "unknown op '%s'", excerpt(ex, s, n));
}

int tw_proto__json_one_pass = 1;

/* The one-pass reader (see js_message): 0, or JS_UNSURE with *req and *c->err untouched. */
static int decode_json_one_pass(dctx *c, const uint8_t *msg, size_t len, tw_op implied,
                                tw_request *req)
{
    jfields jf;
    if (js_message(msg, len, &jf)) return JS_UNSURE;
    fields f;
    memset(&f, 0, sizeof f);
    for (int i = 0; i < F_COUNT; i++) {
        f.have[i] = jf.at[i] != NULL;
        f.v[i].m = jf.at[i];
    }
    tw_proto_error e = *c->err;
    dctx tc = *c;
    tc.jf = &jf;
    tc.mend = msg + len;
    tc.err = &e;
    if (decode_fields(&tc, &f, -1, NULL, implied, req) == 0) return 0;
    /* Refused: the reference reader gives the answer and its wording. */
    tw_request_free(req);
    return JS_UNSURE;
}

static int decode_json(dctx *c, const uint8_t *msg, size_t len, tw_op implied, tw_request *req)
{
    if (tw_proto__json_one_pass && decode_json_one_pass(c, msg, len, implied, req) == 0) return 0;
    jdoc d;
    const char *why;
    int rc = jdoc_load(&d, (const char *)msg, len, MAX_DEPTH, &why);
    if (rc) {
        rc = fail_rc(c, rc, why);
    } else if (!cJSON_IsObject(d.root)) {
        rc = fail(c, "message must be a JSON object");
    } else {
        c->jd = &d;
        rc = decode_request(c, (val){.j = d.root}, d.lex_err, implied, req);
    }
    jdoc_free(&d);
    return rc;
}

static int decode_msgpack(dctx *c, const uint8_t *msg, size_t len, tw_op implied,
                          tw_request *req)
{
    int why = 0;
    const uint8_t *end = msg + len;
    const uint8_t *e = mp_skip(msg, end, MAX_DEPTH, 0, &why);
    if (!e)
        return fail(c, why == MP_TOO_DEEP ? "message nests deeper than 32 levels"
                       : why == MP_KEY_NEST
                           ? "a map or array used as a map key may not have one as a key"
                           : "message is not valid MessagePack (truncated or bad byte)");
    if (e != end) return fail(c, "unexpected bytes after the MessagePack value");
    mp_val m;
    mp_head(msg, end, &m);
    if (m.kind != MP_MAP) return fail(c, "message must be a MessagePack map");
    c->mend = end;
    return decode_request(c, (val){.m = msg}, NULL, implied, req);
}

int tw_proto_decode_as(tw_encoding enc, tw_op implied, const uint8_t *msg, size_t len,
                       const tw_proto_limits *lim, tw_request *out, tw_proto_error *err)
{
    tw_request req;
    tw_proto_error e;
    memset(&req, 0, sizeof req);
    memset(&e, 0, sizeof e);
    dctx c = {.enc = enc, .lim = lim ? lim : &tw_proto_default_limits, .err = &e};
    int rc;
    static const uint8_t empty[1];
    if (len == 0) msg = empty; /* an empty WebSocket message comes as (NULL, 0) */
    if (enc == TW_ENC_JSON)
        rc = decode_json(&c, msg, len, implied, &req);
    else if (enc == TW_ENC_MSGPACK)
        rc = decode_msgpack(&c, msg, len, implied, &req);
    else
        rc = fail(&c, "unknown encoding");
    if (rc) {
        tw_request_free(&req);
        memset(out, 0, sizeof *out);
        *err = e;
        return rc;
    }
    *out = req;
    return 0;
}

int tw_proto_decode(tw_encoding enc, const uint8_t *msg, size_t len, const tw_proto_limits *lim,
                    tw_request *out, tw_proto_error *err)
{
    return tw_proto_decode_as(enc, TW_OP_NONE, msg, len, lim, out, err);
}

void tw_cursor_free(tw_cursor *c)
{
    free(c->entries);
    free(c->origins);
    c->entries = NULL;
    c->origins = NULL;
    c->n = 0;
}

static void sub_free(tw_sub_args *s)
{
    free(s->channel);
    tw_cursor_free(&s->since);
    memset(s, 0, sizeof *s);
}

void tw_request_free(tw_request *req)
{
    sub_free(&req->sub);
    for (size_t i = 0; i < req->nsubs; i++)
        sub_free(&req->subs[i]);
    free(req->subs);
    free(req->data);
    free(req->token);
    memset(req, 0, sizeof *req);
}

int tw_cursor_parse_json(const char *text, size_t len, const tw_proto_limits *lim, tw_cursor *out,
                         tw_proto_error *err)
{
    jdoc d;
    const char *why;
    tw_proto_error e;
    memset(&e, 0, sizeof e);
    dctx c = {.enc = TW_ENC_JSON, .lim = lim ? lim : &tw_proto_default_limits, .err = &e};
    int rc = jdoc_load(&d, text, len, MAX_DEPTH, &why);
    if (rc) {
        rc = fail_rc(&c, rc, why);
    } else if (d.lex_err) {
        rc = fail(&c, "%s", d.lex_err);
    } else {
        c.jd = &d;
        rc = parse_cursor(&c, (val){.j = d.root}, "cursor", out);
    }
    jdoc_free(&d);
    if (rc) *err = e;
    return rc;
}

/* ---- Data conversion -------------------------------------------------------------------- */

static int mp_write_buf(void *data, const char *p, size_t n)
{
    return tw_buf_append(data, p, n) ? -1 : 0;
}

/* Packs a JSON value: integers that fit 64 bits as integers, other numbers as float64. */
static int json_to_mp(msgpack_packer *pk, const cJSON *j, const jdoc *d)
{
    int rc;
    if (cJSON_IsNull(j)) return msgpack_pack_nil(pk);
    if (cJSON_IsFalse(j)) return msgpack_pack_false(pk);
    if (cJSON_IsTrue(j)) return msgpack_pack_true(pk);
    if (cJSON_IsNumber(j)) {
        num x;
        rc = json_num(d, j, &x);
        if (rc) return rc;
        if (x.kind == NUM_UINT) return msgpack_pack_uint64(pk, x.u);
        if (x.kind == NUM_INT) return msgpack_pack_int64(pk, x.i);
        return msgpack_pack_double(pk, x.d);
    }
    if (cJSON_IsString(j))
        return msgpack_pack_str_with_body(pk, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        int obj = cJSON_IsObject(j);
        size_t n = 0;
        for (const cJSON *ch = j->child; ch; ch = ch->next)
            n++;
        rc = obj ? msgpack_pack_map(pk, n) : msgpack_pack_array(pk, n);
        for (const cJSON *ch = j->child; ch && !rc; ch = ch->next) {
            if (obj) rc = msgpack_pack_str_with_body(pk, ch->string, strlen(ch->string));
            if (!rc) rc = json_to_mp(pk, ch, d);
        }
        return rc;
    }
    return -EINVAL;
}

/* A JSON string of the standard, padded base64 of s. */
static int append_base64_string(tw_buf *b, const uint8_t *s, size_t n)
{
    size_t out = 4 * (n / 3 + (n % 3 != 0));
    int rc = tw_buf_reserve(b, out + 2);
    if (rc) return rc;
    uint8_t *w = b->base + b->head + b->len;
    *w++ = '"';
    /* EVP_EncodeBlock takes an int length and writes a NUL after its output (overwritten by
     * the next chunk or the closing quote). */
    while (n) {
        size_t chunk = n > 3 * 65536 ? 3 * 65536 : n;
        w += EVP_EncodeBlock(w, s, (int)chunk);
        s += chunk;
        n -= chunk;
    }
    *w = '"';
    b->len += out + 2;
    return 0;
}

static int mp_to_json(tw_buf *b, const uint8_t **pp, const uint8_t *end, int depth, int in_key);

/* A map key as a JSON object key: strings as they are, anything else as its JSON text
 * (within which no key may be a map or array: see mp_skip). */
static int mp_key_to_json(tw_buf *b, const uint8_t **pp, const uint8_t *end, int depth, int in_key)
{
    mp_val k;
    const uint8_t *p = mp_head(*pp, end, &k);
    if (!p) return -EINVAL;
    if (k.kind == MP_STR) {
        *pp = p;
        return append_json_string_lossy(b, k.body, k.n);
    }
    if (in_key && (k.kind == MP_MAP || k.kind == MP_ARRAY)) return -EINVAL;
    tw_buf t;
    tw_buf_init(&t, 0);
    int rc = mp_to_json(&t, pp, end, depth, 1);
    if (!rc) rc = tw_buf_append_json_string(b, (const char *)tw_buf_data(&t), t.len);
    tw_buf_free(&t);
    return rc;
}

/*
 * Appends one MessagePack value at *pp as JSON in the documented forms and advances *pp.
 * Validates as it goes: -EINVAL for truncated or bad input, more than `depth` levels, or a
 * map or array as a key inside a non-string key (`in_key`; see mp_skip).
 * Strings that are not UTF-8 have each ill-formed sequence replaced by U+FFFD.
 */
static int mp_to_json(tw_buf *b, const uint8_t **pp, const uint8_t *end, int depth, int in_key)
{
    mp_val v;
    const uint8_t *p = mp_head(*pp, end, &v);
    int rc = 0;
    if (!p) return -EINVAL;
    switch (v.kind) {
    case MP_NIL:
        rc = tw_buf_append(b, "null", 4);
        break;
    case MP_BOOL:
        rc = v.v.b ? tw_buf_append(b, "true", 4) : tw_buf_append(b, "false", 5);
        break;
    case MP_UINT:
        rc = buf_u64(b, v.v.u);
        break;
    case MP_INT:
        rc = buf_i64(b, v.v.i);
        break;
    case MP_F32:
        rc = buf_json_float(b, v.v.f32, 1);
        break;
    case MP_F64:
        rc = buf_json_float(b, v.v.f64, 0);
        break;
    case MP_STR:
        rc = append_json_string_lossy(b, v.body, v.n);
        break;
    case MP_BIN:
        rc = tw_buf_append_str(b, "{\"$base64\":");
        if (!rc) rc = append_base64_string(b, v.body, v.n);
        if (!rc) rc = tw_buf_putc(b, '}');
        break;
    case MP_EXT:
        rc = tw_buf_append_str(b, "{\"$ext\":");
        if (!rc) rc = buf_i64(b, v.ext_type);
        if (!rc) rc = tw_buf_append_str(b, ",\"$base64\":");
        if (!rc) rc = append_base64_string(b, v.body, v.n);
        if (!rc) rc = tw_buf_putc(b, '}');
        break;
    case MP_ARRAY:
    case MP_MAP: {
        int map = v.kind == MP_MAP;
        if (depth <= 0 || (map ? 2 * (uint64_t)v.n : v.n) > (uint64_t)(end - p)) return -EINVAL;
        rc = tw_buf_putc(b, map ? '{' : '[');
        for (uint32_t i = 0; i < v.n && !rc; i++) {
            if (i) rc = tw_buf_putc(b, ',');
            if (map && !rc) rc = mp_key_to_json(b, &p, end, depth - 1, in_key);
            if (map && !rc) rc = tw_buf_putc(b, ':');
            if (!rc) rc = mp_to_json(b, &p, end, depth - 1, in_key);
        }
        if (!rc) rc = tw_buf_putc(b, map ? '}' : ']');
        break;
    }
    }
    *pp = p;
    return rc;
}

/* Converts without restoring *b on failure (the callers do). */
static int data_convert(tw_encoding from, const uint8_t *data, size_t len, tw_encoding to,
                        tw_buf *b)
{
    int rc;
    if (from == TW_ENC_MSGPACK && (to == TW_ENC_JSON || to == TW_ENC_MSGPACK)) {
        const uint8_t *p = data, *end = data + len;
        if (to == TW_ENC_JSON) {
            rc = mp_to_json(b, &p, end, DATA_MAX_DEPTH, 0);
        } else {
            int why;
            p = mp_skip(p, end, DATA_MAX_DEPTH, 0, &why);
            rc = p ? tw_buf_append(b, data, len) : -EINVAL;
        }
        return rc ? rc : p == end ? 0 : -EINVAL;
    }
    if (from == TW_ENC_JSON && (to == TW_ENC_JSON || to == TW_ENC_MSGPACK)) {
        jdoc d;
        const char *why;
        rc = jdoc_load(&d, (const char *)data, len, DATA_MAX_DEPTH, &why);
        if (!rc && d.lex_err) rc = -EINVAL;
        if (!rc && to == TW_ENC_JSON) {
            rc = json_print(b, d.root, &d);
        } else if (!rc) {
            msgpack_packer pk;
            msgpack_packer_init(&pk, b, mp_write_buf);
            rc = json_to_mp(&pk, d.root, &d);
            if (rc == -1) /* the packer's failure: only a write, so memory */
                rc = -ENOMEM;
        }
        jdoc_free(&d);
        return rc;
    }
    return -EINVAL;
}

int tw_data_convert(tw_encoding from, const uint8_t *data, size_t len, tw_encoding to, tw_buf *b)
{
    size_t start = b->len;
    int rc = data_convert(from, data, len, to, b);
    if (rc) b->len = start;
    return rc;
}

/* ---- Encoding --------------------------------------------------------------------------- */

/* Writes one server message as a JSON object or a MessagePack map, `op` first. The first
 * failure sticks, and wr_end() then drops what was written. */
typedef struct wr {
    tw_buf *b;
    size_t start;
    int rc;
    tw_encoding enc;
    size_t nfields, nkeys; /* declared in the map header; written */
    msgpack_packer pk;
} wr;

static void wr_check(wr *w, int rc)
{
    if (rc && !w->rc) w->rc = rc < -1 ? rc : -ENOMEM; /* msgpack-c returns -1: its write failed */
}

/* `nfields` counts op too; `hint` is the size expected, reserved up front. */
static void wr_begin(wr *w, tw_buf *b, tw_encoding enc, const char *op, size_t nfields, size_t hint)
{
    w->b = b;
    w->start = b->len;
    w->enc = enc;
    w->rc = 0;
    w->nfields = nfields;
    w->nkeys = 1;
    if (enc != TW_ENC_JSON && enc != TW_ENC_MSGPACK) {
        w->rc = -EINVAL;
        return;
    }
    wr_check(w, tw_buf_reserve(b, hint));
    if (w->rc) return;
    if (enc == TW_ENC_JSON) {
        wr_check(w, tw_buf_append(b, "{\"op\":\"", 7));
        wr_check(w, tw_buf_append_str(b, op));
        wr_check(w, tw_buf_putc(b, '"'));
    } else {
        msgpack_packer_init(&w->pk, b, mp_write_buf);
        wr_check(w, msgpack_pack_map(&w->pk, nfields));
        wr_check(w, msgpack_pack_str_with_body(&w->pk, "op", 2));
        wr_check(w, msgpack_pack_str_with_body(&w->pk, op, strlen(op)));
    }
}

static void wr_key(wr *w, const char *key, size_t n)
{
    w->nkeys++;
    if (w->rc) return;
    if (w->enc == TW_ENC_JSON) {
        int rc = tw_buf_reserve(w->b, n + 4);
        if (rc) {
            wr_check(w, rc);
            return;
        }
        uint8_t *p = w->b->base + w->b->head + w->b->len;
        p[0] = ',';
        p[1] = '"';
        memcpy(p + 2, key, n);
        p[n + 2] = '"';
        p[n + 3] = ':';
        w->b->len += n + 4;
    } else {
        wr_check(w, msgpack_pack_str_with_body(&w->pk, key, n));
    }
}

#define WR_KEY(w, lit) wr_key(w, lit, sizeof(lit) - 1)

static void wr_str(wr *w, const char *s, size_t n)
{
    if (w->rc) return;
    if (w->enc == TW_ENC_JSON)
        wr_check(w, tw_buf_append_json_string(w->b, s, n));
    else
        wr_check(w, msgpack_pack_str_with_body(&w->pk, s, n));
}

/* A string from elsewhere (an error message): ill-formed UTF-8 replaced by U+FFFD. */
static void wr_str_lossy(wr *w, const char *s, size_t n)
{
    if (w->rc) return;
    if (w->enc == TW_ENC_JSON) {
        wr_check(w, append_json_string_lossy(w->b, (const uint8_t *)s, n));
    } else if (utf8_valid((const uint8_t *)s, n)) {
        wr_str(w, s, n);
    } else {
        tw_buf t;
        tw_buf_init(&t, 0);
        wr_check(w, utf8_repair(&t, (const uint8_t *)s, n));
        wr_str(w, (const char *)tw_buf_data(&t), t.len);
        tw_buf_free(&t);
    }
}

static void wr_i64(wr *w, int64_t v)
{
    if (w->rc) return;
    if (w->enc == TW_ENC_JSON)
        wr_check(w, buf_i64(w->b, v));
    else
        wr_check(w, msgpack_pack_int64(&w->pk, v));
}

static void wr_bool(wr *w, int v)
{
    if (w->rc) return;
    if (w->enc == TW_ENC_JSON)
        wr_check(w, v ? tw_buf_append(w->b, "true", 4) : tw_buf_append(w->b, "false", 5));
    else
        wr_check(w, v ? msgpack_pack_true(&w->pk) : msgpack_pack_false(&w->pk));
}

/* A position "origin:seq". */
static void wr_pos(wr *w, const char *origin, uint64_t seq)
{
    char t[TW_STORE_ORIGIN_MAX + 24];
    size_t n = strlen(origin);
    if (n > TW_STORE_ORIGIN_MAX) {
        wr_check(w, -EINVAL);
        return;
    }
    memcpy(t, origin, n);
    t[n++] = ':';
    char *end = t + sizeof t, *d = u64_dec(end, seq);
    memmove(t + n, d, (size_t)(end - d));
    wr_str(w, t, n + (size_t)(end - d));
}

static void wr_cursor(wr *w, const tw_store_cursor_entry *e, size_t n)
{
    if (w->rc) return;
    if (w->enc == TW_ENC_JSON) {
        wr_check(w, tw_cursor_to_json(w->b, e, n));
        return;
    }
    wr_check(w, msgpack_pack_map(&w->pk, n));
    for (size_t i = 0; i < n && !w->rc; i++) {
        wr_check(w, msgpack_pack_str_with_body(&w->pk, e[i].origin, strlen(e[i].origin)));
        wr_check(w, msgpack_pack_uint64(&w->pk, e[i].seq));
    }
}

static void wr_id(wr *w, const int64_t *id)
{
    if (id) {
        WR_KEY(w, "id");
        wr_i64(w, *id);
    }
}

static int wr_end(wr *w)
{
    if (w->nkeys != w->nfields) /* an encoder miscounted its map: never send it */
        wr_check(w, -EINVAL);
    if (!w->rc && w->enc == TW_ENC_JSON) wr_check(w, tw_buf_putc(w->b, '}'));
    if (w->rc) w->b->len = w->start;
    return w->rc;
}

int tw_cursor_to_json(tw_buf *b, const tw_store_cursor_entry *entries, size_t n)
{
    size_t start = b->len;
    int rc = tw_buf_putc(b, '{');
    for (size_t i = 0; i < n && !rc; i++) {
        if (i) rc = tw_buf_putc(b, ',');
        if (!rc) rc = tw_buf_append_json_string(b, entries[i].origin, strlen(entries[i].origin));
        if (!rc) rc = tw_buf_putc(b, ':');
        if (!rc) rc = buf_u64(b, entries[i].seq);
    }
    if (!rc) rc = tw_buf_putc(b, '}');
    if (rc) b->len = start;
    return rc;
}

int tw_proto_encode_connected(tw_buf *b, tw_encoding enc, const int64_t *id, const char *node,
                              const char *session, unsigned ping_interval_s)
{
    wr w;
    size_t nn = strlen(node), sn = strlen(session);
    wr_begin(&w, b, enc, "connected", 4 + (id != NULL), 96 + nn + sn);
    wr_id(&w, id);
    WR_KEY(&w, "node");
    wr_str(&w, node, nn);
    WR_KEY(&w, "session");
    wr_str(&w, session, sn);
    WR_KEY(&w, "ping_interval");
    wr_i64(&w, ping_interval_s);
    return wr_end(&w);
}

int tw_proto_encode_subscribed(tw_buf *b, tw_encoding enc, const int64_t *id, const char *channel,
                               size_t channel_len, int recovered, int replayed,
                               const tw_store_cursor_entry *cursor, size_t cursor_n)
{
    wr w;
    wr_begin(&w, b, enc, "subscribed", 5 + (id != NULL),
             112 + channel_len + cursor_n * (TW_STORE_ORIGIN_MAX + 24));
    wr_id(&w, id);
    WR_KEY(&w, "channel");
    wr_str(&w, channel, channel_len);
    WR_KEY(&w, "recovered");
    wr_bool(&w, recovered);
    WR_KEY(&w, "replayed");
    wr_bool(&w, replayed);
    WR_KEY(&w, "cursor");
    wr_cursor(&w, cursor, cursor_n);
    return wr_end(&w);
}

int tw_proto_encode_unsubscribed(tw_buf *b, tw_encoding enc, const int64_t *id, const char *channel,
                                 size_t channel_len)
{
    wr w;
    wr_begin(&w, b, enc, "unsubscribed", 2 + (id != NULL), 64 + channel_len);
    wr_id(&w, id);
    WR_KEY(&w, "channel");
    wr_str(&w, channel, channel_len);
    return wr_end(&w);
}

int tw_proto_encode_ack(tw_buf *b, tw_encoding enc, const int64_t *id, const char *origin,
                        uint64_t seq)
{
    size_t on = strlen(origin);
    if (enc == TW_ENC_JSON && tw_origin_valid(origin, on)) {
        /* One per publish: laid out at once, the bytes the general path writes (an origin
         * id is [A-Za-z0-9_.-] and needs no escaping). */
        char t[80 + TW_STORE_ORIGIN_MAX], d[24], *e = d + sizeof d, *p = t, *n;
        memcpy(p, "{\"op\":\"ack\"", 11);
        p += 11;
        if (id) {
            memcpy(p, ",\"id\":", 6);
            p += 6;
            n = i64_dec(e, *id);
            memcpy(p, n, (size_t)(e - n));
            p += e - n;
        }
        memcpy(p, ",\"pos\":\"", 8);
        p += 8;
        memcpy(p, origin, on);
        p += on;
        *p++ = ':';
        n = u64_dec(e, seq);
        memcpy(p, n, (size_t)(e - n));
        p += e - n;
        memcpy(p, "\"}", 2);
        p += 2;
        return tw_buf_append(b, t, (size_t)(p - t));
    }
    wr w;
    wr_begin(&w, b, enc, "ack", 2 + (id != NULL), 64 + TW_STORE_ORIGIN_MAX);
    wr_id(&w, id);
    WR_KEY(&w, "pos");
    wr_pos(&w, origin, seq);
    return wr_end(&w);
}

int tw_proto_encode_pong(tw_buf *b, tw_encoding enc, const int64_t *id)
{
    wr w;
    wr_begin(&w, b, enc, "pong", 1 + (id != NULL), 48);
    wr_id(&w, id);
    return wr_end(&w);
}

int tw_proto_encode_error(tw_buf *b, tw_encoding enc, const int64_t *id, int code,
                          const char *message)
{
    wr w;
    size_t mn = strlen(message);
    wr_begin(&w, b, enc, "error", 3 + (id != NULL), 64 + mn);
    wr_id(&w, id);
    WR_KEY(&w, "code");
    wr_i64(&w, code);
    WR_KEY(&w, "message");
    wr_str_lossy(&w, message, mn);
    return wr_end(&w);
}

/* The digits of v in decimal: log10 from log2 (x 1233/4096), then one comparison. */
static size_t u64_digits(uint64_t v)
{
    static const uint64_t p10[20] = {1ULL,
                                     10ULL,
                                     100ULL,
                                     1000ULL,
                                     10000ULL,
                                     100000ULL,
                                     1000000ULL,
                                     10000000ULL,
                                     100000000ULL,
                                     1000000000ULL,
                                     10000000000ULL,
                                     100000000000ULL,
                                     1000000000000ULL,
                                     10000000000000ULL,
                                     100000000000000ULL,
                                     1000000000000000ULL,
                                     10000000000000000ULL,
                                     100000000000000000ULL,
                                     1000000000000000000ULL,
                                     10000000000000000000ULL};
    if (v == 0) return 1;
    unsigned t = ((unsigned)(64 - __builtin_clzll(v)) * 1233) >> 12;
    return t + (v >= p10[t]);
}

static size_t i64_digits(int64_t v)
{
    return v < 0 ? 1 + u64_digits((uint64_t)0 - (uint64_t)v) : u64_digits((uint64_t)v);
}

/* What msgpack-c's pack_str and pack_int64 write ahead of a str of n bytes, and for d. */
static size_t mp_str_head_len(size_t n)
{
    return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5;
}

static size_t mp_int_len(int64_t d)
{
    if (d < -(1LL << 5))
        return d < -(1LL << 31) ? 9 : d < -(1LL << 15) ? 5 : d < -(1LL << 7) ? 3 : 2;
    if (d < (1LL << 7)) return 1;
    return d < (1LL << 8) ? 2 : d < (1LL << 16) ? 3 : d < (1LL << 32) ? 5 : 9;
}

/* {"op":"event","channel":"..","pos":"origin:seq","ts":N,"data":DATA}, given the quoted
 * (escaped) lengths of the channel and the origin. */
static size_t event_json_len(size_t channel_q, size_t origin_q, uint64_t seq, int64_t ts_ms,
                             size_t data_len)
{
    return 24 + channel_q + 7 + origin_q + 1 + u64_digits(seq) + 6 + i64_digits(ts_ms) + 8 + 1 +
           data_len;
}

size_t tw_proto_event_len(tw_encoding enc, const char *channel, size_t channel_len,
                          const char *origin, uint64_t seq, int64_t ts_ms, size_t data_len)
{
    size_t on = strnlen(origin, TW_STORE_ORIGIN_MAX + 1), sd = u64_digits(seq);
    if (channel_len > SIZE_MAX / 8 || data_len > SIZE_MAX / 2) return SIZE_MAX;
    if (enc == TW_ENC_MSGPACK) {
        /* map5 "op" "event" "channel" str "pos" str "ts" int "data" data */
        return 1 + 3 + 6 + 8 + mp_str_head_len(channel_len) + channel_len + 4 +
               mp_str_head_len(on + 1 + sd) + on + 1 + sd + 3 + mp_int_len(ts_ms) + 5 + data_len;
    }
    return event_json_len(tw_json_string_len(channel, channel_len), tw_json_string_len(origin, on),
                          seq, ts_ms, data_len);
}

/* Appends the JSON string of s[0..n), whose quoted length q is known: most names need no
 * escape (q == n + 2) and are copied as they are. Room is reserved. */
static void put_json_string_q(tw_buf *b, const char *s, size_t n, size_t q)
{
    if (q != n + 2) {
        (void)tw_buf_append_json_string(b, s, n); /* cannot fail: the room is reserved */
        return;
    }
    uint8_t *p = b->base + b->head + b->len;
    *p++ = '"';
    memcpy(p, s, n);
    p[n] = '"';
    b->len += n + 2;
}

/* A JSON event whose data goes in as it is, laid out at once in room already reserved for
 * tw_proto_event_len() bytes: the bytes of the general path below (the same keys, escaping
 * and numbers; test_protocol compares them with the pieces that make them). */
static void event_json_direct(tw_buf *b, const char *channel, size_t channel_len, size_t channel_q,
                              const char *origin, size_t origin_len, size_t origin_q, uint64_t seq,
                              int64_t ts_ms, const uint8_t *data, size_t data_len)
{
    char t[24], *d;
    uint8_t *p = b->base + b->head + b->len;
    memcpy(p, "{\"op\":\"event\",\"channel\":", 24);
    b->len += 24;
    put_json_string_q(b, channel, channel_len, channel_q);
    p = b->base + b->head + b->len;
    memcpy(p, ",\"pos\":", 7);
    b->len += 7;
    put_json_string_q(b, origin, origin_len, origin_q);
    p = b->base + b->head + b->len - 1; /* over the closing quote: the seq goes inside */
    *p++ = ':';
    d = u64_dec(t + sizeof t, seq);
    memcpy(p, d, (size_t)(t + sizeof t - d));
    p += t + sizeof t - d;
    memcpy(p, "\",\"ts\":", 7);
    p += 7;
    d = i64_dec(t + sizeof t, ts_ms);
    memcpy(p, d, (size_t)(t + sizeof t - d));
    p += t + sizeof t - d;
    memcpy(p, ",\"data\":", 8);
    p += 8;
    memcpy(p, data, data_len);
    p += data_len;
    *p++ = '}';
    b->len = (size_t)(p - (b->base + b->head));
}

int tw_proto_encode_event(tw_buf *b, tw_encoding enc, const char *channel, size_t channel_len,
                          const char *origin, uint64_t seq, int64_t ts_ms, tw_encoding data_enc,
                          const uint8_t *data, size_t data_len)
{
    wr w;
    size_t on = strnlen(origin, TW_STORE_ORIGIN_MAX + 1);
    if (enc == TW_ENC_JSON && data_enc == enc && data_len > 0 && on <= TW_STORE_ORIGIN_MAX &&
        channel_len <= SIZE_MAX / 8 && data_len <= SIZE_MAX / 2) {
        /* The one message per event per encoding: no need for the general writer's checks,
         * and each name is scanned for escapes once (a replay frames millions of events). */
        size_t cq = tw_json_string_len(channel, channel_len), oq = tw_json_string_len(origin, on);
        int rc = tw_buf_reserve(b, event_json_len(cq, oq, seq, ts_ms, data_len));
        if (rc) return rc;
        event_json_direct(b, channel, channel_len, cq, origin, on, oq, seq, ts_ms, data, data_len);
        return 0;
    }
    /* Exact when the data goes in as it is; converting rarely changes its length by much.
     * Either way one reserve here means one allocation for a fresh buffer. */
    size_t n = tw_proto_event_len(enc, channel, channel_len, origin, seq, ts_ms, data_len);
    if (n == SIZE_MAX) return -ENOMEM;
    wr_begin(&w, b, enc, "event", 5, n);
    WR_KEY(&w, "channel");
    wr_str(&w, channel, channel_len);
    WR_KEY(&w, "pos");
    wr_pos(&w, origin, seq);
    WR_KEY(&w, "ts");
    wr_i64(&w, ts_ms);
    WR_KEY(&w, "data");
    if (!w.rc) {
        if (data_len == 0)
            wr_check(&w, -EINVAL); /* no value at all: neither encoding has an empty one */
        else if (data_enc == enc)
            wr_check(&w, tw_buf_append(b, data, data_len));
        else
            wr_check(&w, data_convert(data_enc, data, data_len, enc, b));
    }
    return wr_end(&w);
}
