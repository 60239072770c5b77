/*
 * What may stand in a request head that tailcut builds from a caller's words: a method or a
 * header name is an RFC 9110 token, a header value holds no CR or LF (nor NUL: it is a C
 * string). These are the rules the client applies to every request; `tailcut fetch` checks -X
 * and -H with them, so a value the command accepts is one the client sends.
 */
#ifndef TAILCUT_BASE_HTTP_TOKEN_H
#define TAILCUT_BASE_HTTP_TOKEN_H

#include <stddef.h>
#include <string.h>

/* One tchar: a visible ASCII byte that is not a delimiter. */
static inline int tc__http_tchar(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", ch) == NULL;
}

/* 1 when the n bytes at s are a token (n >= 1), else 0. */
static inline int tc__http_token_n(const char *s, size_t n)
{
    if (s == NULL || n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!tc__http_tchar((unsigned char)s[i]))
            return 0;
    return 1;
}

/* 1 when the string s is a token, else 0. */
static inline int tc__http_token(const char *s)
{
    return s != NULL && tc__http_token_n(s, strlen(s));
}

/* 1 when the n bytes at s may be a header value: no CR, LF or NUL. */
static inline int tc__http_value_n(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 0;
    return 1;
}

#endif /* TAILCUT_BASE_HTTP_TOKEN_H */
