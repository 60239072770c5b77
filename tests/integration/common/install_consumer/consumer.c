/*
 * A program built against an installed libtailcut (tests/integration/test_install.py builds it
 * once with pkg-config and once with find_package(tailcut)): prints the version of the headers
 * and of the library it runs with, then waits on a future that never completes with a 20 ms
 * timeout and prints how that ended. Exit status 0 when everything went as documented.
 */
#include <stdio.h>

#include <tailcut/tailcut.h>

static void on_done(tc_future *f, void *data)
{
    int *status = data;
    int err = tc_future_error(f);
    printf("with_timeout: %s (%s)\n", tc_err_name(err), tc_strerror(err));
    *status = err == TC_ETIMEDOUT ? 0 : 1;
}

int main(void)
{
    printf("headers %d.%d.%d %s\n", TC_VERSION_MAJOR, TC_VERSION_MINOR, TC_VERSION_PATCH,
           TC_VERSION_STRING);
    printf("library %s 0x%06x match=%d\n", tc_version_string(), tc_version(),
           tc_version() == TC_VERSION_NUMBER);

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return 1;
    int status = 1;
    tc_future *never = NULL;
    tc_future *bounded = NULL;
    if (tc_future_new(&never) != 0 || tc_with_timeout(&bounded, &loop, never, 20) != 0 ||
        tc_future_on_done(bounded, on_done, &status) != 0)
        return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    printf("inner: %s\n", tc_future_state_of(never) == TC_FUTURE_CANCELLED ? "cancelled" : "other");
    tc_future_unref(bounded);
    tc_future_unref(never);
    return uv_loop_close(&loop) == 0 ? status : 1;
}
