/*
 * The one table behind tc_strerror() and tc_err_name(), and the mapping from libuv's codes.
 */
#include <uv.h>

#include "tailcut/error.h"

const char *tc_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define TC__STRERROR_CASE(name, value, message)                                                    \
    case TC_##name:                                                                                \
        return message;
        TC_ERRNO_MAP(TC__STRERROR_CASE)
#undef TC__STRERROR_CASE
    }
    return "unknown error";
}

const char *tc_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define TC__ERR_NAME_CASE(name, value, message)                                                    \
    case TC_##name:                                                                                \
        return #name;
        TC_ERRNO_MAP(TC__ERR_NAME_CASE)
#undef TC__ERR_NAME_CASE
    }
    return "UNKNOWN";
}

int tc_err_from_uv(int uv_err)
{
    switch (uv_err) {
    case 0:
        return 0;
    case UV_ENOMEM:
        return TC_ENOMEM;
    case UV_EINVAL:
        return TC_EINVAL;
    case UV_ECANCELED:
        return TC_ECANCELED;
    case UV_ETIMEDOUT:
        return TC_ETIMEDOUT;
    case UV_ECONNREFUSED:
        return TC_ECONNREFUSED;
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_EOF:
        return TC_ECONNRESET;
    case UV_EAI_NONAME:
    case UV_EAI_AGAIN:
    case UV_EAI_FAIL:
        return TC_EDNS;
    case UV_EADDRINUSE:
        return TC_EADDRINUSE;
    case UV_EADDRNOTAVAIL:
        return TC_EADDRNOTAVAIL;
    case UV_EACCES:
    case UV_EPERM:
        return TC_EACCES;
    case UV_EBUSY:
    case UV_EMFILE:
    case UV_ENFILE:
        return TC_EBUSY;
    default:
        return TC_EIO;
    }
}
