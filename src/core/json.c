/*
 * Strict RFC 8259 validation, and raw member access, for upstream JSON bodies.
 *
 * Every upstream response passes through tc_json_valid(), so it is one forward pass with no
 * allocation, no tree and no recursion. The one idea: the only state a JSON validator needs
 * besides the position is "which kind of container am I in, at each level", and that is one bit
 * per level. A 64-byte bit stack gives TC_JSON_MAX_DEPTH (512) levels, and the grammar becomes a
 * small goto state machine (value -> after_value -> member key -> value ...) whose hot loops
 * (whitespace, string bodies, digits) are plain inline loops; string bodies go eight bytes at a
 * time while no byte needs attention.
 *
 * The readers (tc_json_iter_next, tc_json_object_get) trust that the buffer was validated: they
 * skip a value by counting brackets outside strings rather than re-validating it. They still
 * bounds-check every read, so an unvalidated buffer gives TC_EPROTO or a wrong range, never a
 * read outside the buffer.
 */
#include <stdint.h>
#include <string.h>

#include "base/fmt.h"
#include "tailcut/json.h"

/* Byte classes inside a string body. */
enum { S_PLAIN = 0, S_QUOTE, S_ESCAPE, S_CONTROL, S_HIGH };

/* Built at compile time so tc_json_valid() stays thread-safe with no initialisation step. */
#define R4(x) x, x, x, x
#define R16(x) R4(x), R4(x), R4(x), R4(x)
static const uint8_t string_class[256] = {
    /* 0x00-0x1f */ R16(S_CONTROL),
    R16(S_CONTROL),
    /* 0x20-0x2f */ S_PLAIN,
    S_PLAIN,
    S_QUOTE,
    S_PLAIN,
    R4(S_PLAIN),
    R4(S_PLAIN),
    R4(S_PLAIN),
    /* 0x30-0x5b */ R16(S_PLAIN),
    R16(S_PLAIN),
    R4(S_PLAIN),
    R4(S_PLAIN),
    R4(S_PLAIN),
    /* 0x5c */ S_ESCAPE,
    /* 0x5d-0x7f */ S_PLAIN,
    S_PLAIN,
    S_PLAIN,
    R16(S_PLAIN),
    R16(S_PLAIN),
    /* 0x80-0xff */ R16(S_HIGH),
    R16(S_HIGH),
    R16(S_HIGH),
    R16(S_HIGH),
    R16(S_HIGH),
    R16(S_HIGH),
    R16(S_HIGH),
    R16(S_HIGH)};
#undef R4
#undef R16

static inline int is_ws(uint8_t ch)
{
    return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t';
}

static inline int is_digit(uint8_t ch)
{
    return (uint8_t)(ch - '0') < 10;
}

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* SWAR: nonzero if any of the 8 bytes in x is < 0x20, '"', '\\' or >= 0x80. Exact about whether
 * such a byte exists (not about which), which is all the fast path needs. */
static inline uint64_t needs_attention(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = x ^ (ones * '"'), bslash = x ^ (ones * '\\');
    uint64_t lt20 = (x - ones * 0x20) & ~x;
    uint64_t zq = (quote - ones) & ~quote;
    uint64_t zb = (bslash - ones) & ~bslash;
    return (lt20 | zq | zb | x) & highs;
}

/* Validates one UTF-8 sequence starting with the non-ASCII byte at p (RFC 3629 table). Returns
 * the position after it, or NULL if it is ill-formed or truncated. */
static inline const uint8_t *scan_utf8(const uint8_t *p, const uint8_t *end)
{
    uint8_t ch = p[0];
    size_t avail = (size_t)(end - p);
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    size_t n;
    if (ch >= 0xC2 && ch <= 0xDF) {
        n = 2;
    } else if (ch >= 0xE0 && ch <= 0xEF) {
        n = 3;
        if (ch == 0xE0)
            lo = 0xA0; /* no overlong 3-byte forms */
        else if (ch == 0xED)
            hi = 0x9F; /* no UTF-16 surrogates */
    } else if (ch >= 0xF0 && ch <= 0xF4) {
        n = 4;
        if (ch == 0xF0)
            lo = 0x90; /* no overlong 4-byte forms */
        else if (ch == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return NULL; /* 0x80..0xC1 (continuation, overlong 2-byte lead), 0xF5..0xFF */
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return NULL;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return NULL;
    return p + n;
}

/* p is just after an opening quote. Returns the position after the closing quote, or NULL. */
static inline const uint8_t *scan_string(const uint8_t *p, const uint8_t *end)
{
    for (;;) {
        while ((size_t)(end - p) >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            if (needs_attention(x))
                break;
            p += 8;
        }
        while (p < end && string_class[*p] == S_PLAIN)
            p++;
        if (p >= end)
            return NULL;
        switch (string_class[*p]) {
        case S_QUOTE:
            return p + 1;
        case S_ESCAPE:
            if (end - p < 2)
                return NULL;
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                break;
            case 'u':
                if (end - p < 6 || tc__hex_value(p[2]) < 0 || tc__hex_value(p[3]) < 0 ||
                    tc__hex_value(p[4]) < 0 || tc__hex_value(p[5]) < 0)
                    return NULL;
                p += 6;
                break;
            default:
                return NULL;
            }
            break;
        case S_HIGH:
            p = scan_utf8(p, end);
            if (!p)
                return NULL;
            break;
        default: /* S_CONTROL */
            return NULL;
        }
    }
}

/* p is at '-' or a digit. Returns the position after the number, or NULL. What follows is
 * checked by the caller (a number must be followed by a delimiter, so "01" and "1x" fail). */
static inline const uint8_t *scan_number(const uint8_t *p, const uint8_t *end)
{
    if (*p == '-' && ++p == end)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (is_digit(*p)) {
        while (++p < end && is_digit(*p))
            ;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        if (++p == end || !is_digit(*p))
            return NULL;
        while (++p < end && is_digit(*p))
            ;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return NULL;
        while (++p < end && is_digit(*p))
            ;
    }
    return p;
}

/* The validator: a goto state machine over a bit stack of container kinds (1 = object). */
int tc_json_valid(const char *buf, size_t len)
{
    uint8_t kinds[TC_JSON_MAX_DEPTH / 8] = {0};
    unsigned depth = 0;

    if (len == 0)
        return 0;
    const uint8_t *p = (const uint8_t *)buf, *end = p + len;

value:
    p = skip_ws(p, end);
    if (p == end)
        return 0;
    switch (*p) {
    case '{':
        if (depth == TC_JSON_MAX_DEPTH)
            return 0;
        kinds[depth / 8] |= (uint8_t)(1u << (depth % 8));
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == '}') {
            p++;
            depth--;
            goto after_value;
        }
        goto member;
    case '[':
        if (depth == TC_JSON_MAX_DEPTH)
            return 0;
        kinds[depth / 8] &= (uint8_t) ~(1u << (depth % 8));
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']') {
            p++;
            depth--;
            goto after_value;
        }
        goto value;
    case '"':
        p = scan_string(p + 1, end);
        if (!p)
            return 0;
        goto after_value;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0)
            return 0;
        p += 4;
        goto after_value;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0)
            return 0;
        p += 5;
        goto after_value;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0)
            return 0;
        p += 4;
        goto after_value;
    default:
        p = scan_number(p, end);
        if (!p)
            return 0;
        goto after_value;
    }

member: /* whitespace skipped; expecting "key": */
    if (p == end || *p != '"')
        return 0;
    p = scan_string(p + 1, end);
    if (!p)
        return 0;
    p = skip_ws(p, end);
    if (p == end || *p != ':')
        return 0;
    p++;
    goto value;

after_value:
    p = skip_ws(p, end);
    if (depth == 0)
        return p == end;
    if (p == end)
        return 0;
    if (kinds[(depth - 1) / 8] & (1u << ((depth - 1) % 8))) {
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            goto member;
        }
        if (*p != '}')
            return 0;
    } else {
        if (*p == ',') {
            p++;
            goto value;
        }
        if (*p != ']')
            return 0;
    }
    p++;
    depth--;
    goto after_value;
}

/* ---- readers for validated buffers ---------------------------------------------------------- */

/* p is just after an opening quote. Returns the position after the closing quote, or NULL. Does
 * not validate the contents. */
static const uint8_t *skip_string(const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        if (*p == '"')
            return p + 1;
        if (*p == '\\' && ++p == end)
            return NULL;
        p++;
    }
    return NULL;
}

/* Skips one value starting at p (whitespace already skipped). Containers are skipped by counting
 * brackets outside strings. Returns the position after the value, or NULL. */
static const uint8_t *skip_value(const uint8_t *p, const uint8_t *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p + 1, end);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            switch (*p) {
            case '"':
                p = skip_string(p + 1, end);
                if (!p)
                    return NULL;
                continue;
            case '{':
            case '[':
                depth++;
                break;
            case '}':
            case ']':
                if (--depth == 0)
                    return p + 1;
                break;
            }
            p++;
        }
        return NULL;
    }
    const uint8_t *start = p;
    while (p < end && !is_ws(*p) && *p != ',' && *p != '}' && *p != ']' && *p != ':' && *p != '{' &&
           *p != '[' && *p != '"')
        p++;
    return p == start ? NULL : p;
}

int tc_json_iter_init(tc_json_iter *it, const char *buf, size_t len)
{
    it->p = it->end = buf;
    it->state = 2;
    if (len == 0)
        return TC_EINVAL;
    const uint8_t *p = (const uint8_t *)buf, *end = p + len;
    p = skip_ws(p, end);
    it->end = (const char *)end;
    if (p == end || *p != '{')
        return TC_EINVAL;
    it->p = (const char *)(p + 1);
    it->state = 0;
    return 0;
}

int tc_json_iter_next(tc_json_iter *it, tc_json_member *mem)
{
    const uint8_t *p = (const uint8_t *)it->p, *end = (const uint8_t *)it->end;
    const uint8_t *key, *val;

    if (it->state == 2)
        return 0;
    p = skip_ws(p, end);
    if (p == end)
        goto malformed;
    if (*p == '}') {
        it->state = 2;
        it->p = (const char *)(p + 1);
        return 0;
    }
    if (it->state == 1) {
        if (*p != ',')
            goto malformed;
        p = skip_ws(p + 1, end);
        if (p == end)
            goto malformed;
    }
    if (*p != '"')
        goto malformed;
    key = p + 1;
    p = skip_string(key, end);
    if (!p)
        goto malformed;
    mem->key = (const char *)key;
    mem->key_len = (size_t)(p - 1 - key);
    p = skip_ws(p, end);
    if (p == end || *p != ':')
        goto malformed;
    val = skip_ws(p + 1, end);
    p = skip_value(val, end);
    if (!p)
        goto malformed;
    mem->value = (const char *)val;
    mem->value_len = (size_t)(p - val);
    it->p = (const char *)p;
    it->state = 1;
    return 1;

malformed:
    it->state = 2;
    return TC_EPROTO;
}

/* Appends the UTF-8 (generalised, for lone surrogates) form of cp to out; returns its length. */
static size_t put_utf8(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads "\uXXXX" at p (p[0] == '\\'); returns the 16-bit value or -1. */
static long read_u_escape(const uint8_t *p, const uint8_t *end)
{
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    long v = 0;
    for (int i = 2; i < 6; i++) {
        int digit = tc__hex_value(p[i]);
        if (digit < 0)
            return -1;
        v = v << 4 | digit;
    }
    return v;
}

int tc_json_key_equal(const char *raw, size_t raw_len, const char *key, size_t key_len)
{
    const uint8_t *p = (const uint8_t *)raw, *end = p + raw_len;
    const uint8_t *kp = (const uint8_t *)key, *kend = kp + key_len;

    while (p < end) {
        /* Raw bytes: compare directly. */
        if (*p != '\\') {
            if (kp == kend || *kp != *p)
                return 0;
            p++;
            kp++;
            continue;
        }
        if (end - p < 2)
            return 0;
        uint8_t one;
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
            one = p[1];
            break;
        case 'b':
            one = '\b';
            break;
        case 'f':
            one = '\f';
            break;
        case 'n':
            one = '\n';
            break;
        case 'r':
            one = '\r';
            break;
        case 't':
            one = '\t';
            break;
        case 'u': {
            long cp = read_u_escape(p, end);
            if (cp < 0)
                return 0;
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                long lo = read_u_escape(p, end);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            uint8_t u[4];
            size_t n = put_utf8((uint32_t)cp, u);
            if ((size_t)(kend - kp) < n || memcmp(kp, u, n) != 0)
                return 0;
            kp += n;
            continue;
        }
        default:
            return 0;
        }
        if (kp == kend || *kp != one)
            return 0;
        p += 2;
        kp++;
    }
    return kp == kend;
}

int tc_json_object_get(const char *buf, size_t len, const char *key, size_t key_len,
                       const char **val, size_t *val_len)
{
    tc_json_iter it;
    tc_json_member m;
    const char *found = NULL;
    size_t found_len = 0;
    int rc = tc_json_iter_init(&it, buf, len);
    if (rc < 0)
        return rc;
    while ((rc = tc_json_iter_next(&it, &m)) == 1) {
        if (tc_json_key_equal(m.key, m.key_len, key, key_len)) {
            found = m.value;
            found_len = m.value_len;
        }
    }
    if (rc < 0)
        return rc;
    if (!found)
        return TC_EMISSING;
    *val = found;
    *val_len = found_len;
    return 0;
}
