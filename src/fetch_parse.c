/*
 * The parsers behind two of `tailcut fetch`'s options (fetch_internal.h): -H 'Name: value' and
 * --rate N. Pure functions, so that the unit tests pin every edge the command line can reach.
 */
#include <stdlib.h>
#include <string.h>

#include "fetch_internal.h"
#include "forward_internal.h" /* the header rules */
#include "tailcut/error.h"

#define RATE_MAX_DIGITS 16 /* digits in all: more is no rate anyone means */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int tc__fetch_header_parse(const char *arg, size_t *name_len, const char **value, size_t *value_len,
                           const char **why)
{
    const char *colon = arg != NULL ? strchr(arg, ':') : NULL;
    if (colon == NULL) {
        *why = "expected 'Name: value'";
        return TC_EINVAL;
    }
    size_t n = (size_t)(colon - arg);
    if (n == 0) {
        *why = "the header name is empty";
        return TC_EINVAL;
    }
    if (!tc__header_name_ok(arg, n)) {
        *why = "the header name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)";
        return TC_EINVAL;
    }
    const char *v = colon + 1, *end = v + strlen(v);
    while (v < end && is_ows(*v))
        v++;
    while (end > v && is_ows(end[-1]))
        end--;
    if (!tc__header_value_ok(v, (size_t)(end - v))) {
        *why = "the header value holds a CR or LF";
        return TC_EINVAL;
    }
    *name_len = n;
    *value = v;
    *value_len = (size_t)(end - v);
    return 0;
}

int tc__fetch_rate_parse(const char *s, double *rate, const char **why)
{
    size_t digits = 0, frac = 0;
    int dot = 0;
    *why = "expected a number greater than 0, such as 100 or 0.5";
    if (s == NULL || *s == '\0')
        return TC_EINVAL;
    for (const char *p = s; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            digits++;
            frac += (size_t)dot;
        } else if (*p == '.' && !dot && p != s) {
            dot = 1;
        } else {
            return TC_EINVAL;
        }
    }
    if ((dot && frac == 0) || digits > RATE_MAX_DIGITS)
        return TC_EINVAL;
    double v = strtod(s, NULL); /* the syntax is checked: strtod only converts */
    if (!(v > 0)) {
        return TC_EINVAL;
    }
    if (v > TC_FETCH_MAX_RATE) {
        *why = "more than 1000000 requests per second";
        return TC_EINVAL;
    }
    *rate = v;
    return 0;
}
