/*
 * The Retry-After parser of fetch_internal.h: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fetch_internal.h"
#include "tailcut/error.h"

static int month_index(const char *mon)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (strlen(mon) != 3)
        return -1;
    for (int i = 0; i < 12; i++)
        if (strncmp(names + (size_t)3 * i, mon, 3) == 0)
            return i;
    return -1;
}

/* Parses the three HTTP-date forms of RFC 9110 §5.6.7 into Unix seconds. */
static int http_date_parse(const char *s, time_t *out)
{
    char wd[16], mon[8];
    int d, y, H, M, S, n = -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", wd, &d, mon, &y, &H, &M, &S,
               &n) == 7 &&
        n > 0 && s[n] == '\0') { // NOLINT(bugprone-branch-clone): no fix-up, as for asctime
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    } else if (n = -1, sscanf(s, "%15[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n", wd, &d, mon,
                              &y, &H, &M, &S, &n) == 7 &&
                           n > 0 && s[n] == '\0') {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT; two-digit years: 70..99 are 19xx */
        y += y < 70 ? 2000 : 1900;
    } else if (n = -1, sscanf(s, "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wd, mon, &d, &H, &M,
                              &S, &y, &n) == 7 &&
                           n > 0 && s[n] == '\0') {
        /* asctime: Sun Nov  6 08:49:37 1994 */
    } else {
        return TC_EINVAL;
    }
    int m = month_index(mon);
    if (m < 0 || d < 1 || d > 31 || y < 1970 || y > 9999 || H > 23 || M > 59 || S > 60 || H < 0 ||
        M < 0 || S < 0)
        return TC_EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = m;
    tm.tm_mday = d;
    tm.tm_hour = H;
    tm.tm_min = M;
    tm.tm_sec = S;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return TC_EINVAL;
    *out = t;
    return 0;
}

int tc__retry_after_parse(const char *value, time_t now, uint64_t max_ms, uint64_t *ms)
{
    if (value == NULL || ms == NULL)
        return TC_EINVAL;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= 64)
        return TC_EINVAL;
    char v[64];
    memcpy(v, value, len);
    v[len] = '\0';
    uint64_t out;
    if (v[0] >= '0' && v[0] <= '9') {
        uint64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (v[i] < '0' || v[i] > '9')
                return TC_EINVAL;
            if (secs < UINT64_MAX / 10000)
                secs = secs * 10 + (uint64_t)(v[i] - '0');
        }
        out = secs >= UINT64_MAX / 1000 ? UINT64_MAX : secs * 1000;
    } else {
        time_t t;
        if (http_date_parse(v, &t) != 0)
            return TC_EINVAL;
        out = t > now ? (uint64_t)(t - now) * 1000 : 0;
    }
    *ms = out < max_ms ? out : max_ms;
    return 0;
}
