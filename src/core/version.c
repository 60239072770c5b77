/*
 * The library's own version, for programs that compare the headers they were built with
 * (TC_VERSION_NUMBER) with the library they run with.
 */
#include "tailcut/version.h"

unsigned tc_version(void)
{
    return TC_VERSION_NUMBER;
}

const char *tc_version_string(void)
{
    return TC_VERSION_STRING;
}
