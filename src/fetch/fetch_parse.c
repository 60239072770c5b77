/*
 * The parser behind `tailcut fetch --rate N` (fetch_internal.h; -H is tc__header_line_parse in
 * forward.c). A pure function, so that the unit tests pin every edge the command line can reach.
 */
#include <stdlib.h>
#include <string.h>

#include "fetch_internal.h"
#include "tailcut/error.h"

#define RATE_MAX_DIGITS 16 /* digits in all: more is no rate anyone means */

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
