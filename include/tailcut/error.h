/*
 * tailcut error codes.
 *
 * Every fallible libtailcut call returns 0 on success or one of the negative TC_E* codes below,
 * in the style of libuv: one table behind tc_strerror() and tc_err_name(). If a call returns an
 * error, the callback it was given is never called.
 */
#ifndef TAILCUT_ERROR_H
#define TAILCUT_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message) */
#define TC_ERRNO_MAP(X)                                                                            \
    X(EINVAL, -1, "invalid argument")                                                              \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(ECANCELED, -3, "operation cancelled")                                                        \
    X(ETIMEDOUT, -4, "timed out")                                                                  \
    X(ECONNREFUSED, -5, "connection refused")                                                      \
    X(ECONNRESET, -6, "connection reset by peer")                                                  \
    X(EDNS, -7, "could not resolve host")                                                          \
    X(ETOOLARGE, -8, "response body too large")                                                    \
    X(ETLS, -9, "TLS failure")                                                                     \
    X(EHTTP, -10, "unexpected HTTP status")                                                        \
    X(EPROTO, -11, "malformed response")                                                           \
    X(EIO, -12, "I/O error")                                                                       \
    X(EMISSING, -13, "key missing from result")                                                    \
    X(EALLFAILED, -14, "every attempt failed")                                                     \
    X(ECLOSED, -15, "object closed")                                                               \
    X(EBUSY, -16, "resource busy or over capacity")                                                \
    X(EADDRINUSE, -17, "address already in use")                                                   \
    X(EURL, -18, "malformed or unsupported URL")                                                   \
    X(EADDRNOTAVAIL, -19, "cannot assign requested address")                                       \
    X(EACCES, -20, "permission denied")                                                            \
    X(ESTALE, -21, "pooled connection closed before any answer")

typedef enum tc_errno {
#define TC_ERRNO_ENUM(name, value, message) TC_##name = value,
    TC_ERRNO_MAP(TC_ERRNO_ENUM)
#undef TC_ERRNO_ENUM
} tc_errno;

/* A static, human-readable message for err ("unknown error" for codes not in the table). */
const char *tc_strerror(int err);

/* The code's name without the TC_ prefix, e.g. "ETIMEDOUT" ("UNKNOWN" if not in the table). */
const char *tc_err_name(int err);

/* Maps a negative libuv error code to the nearest TC_E* code (TC_EIO when none is closer). */
int tc_err_from_uv(int uv_err);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_ERROR_H */
