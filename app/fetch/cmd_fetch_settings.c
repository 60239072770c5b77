/*
 * tailcut fetch's settings: every option once, with its range, its default, its --help line and
 * its man-page paragraph (app/common/settings.h says how a row is read). Each lands in the
 * fetch_options of the run; the order of the rows is the order of --help and the man page.
 * fetch has no configuration file: no row has a key.
 */
#include "cmd_fetch.h"
#include "common/commands.h"

/* -o and --summary-json: a file name. */
static int check_file_name(const setting *s, const char *value, void *field, settings_error *e)
{
    (void)s;
    (void)field;
    return *value == '\0' ? settings_invalid(e, value, "expected a file name") : 0;
}

/* -i: a file name, or - for stdin. */
static int check_input_name(const setting *s, const char *value, void *field, settings_error *e)
{
    (void)s;
    (void)field;
    return *value == '\0' ? settings_invalid(e, value, "expected a file name or -") : 0;
}

/* --rate N: requests per second, a decimal above 0 (the field is a double). */
static int parse_rate(const setting *s, const char *value, void *field, settings_error *e)
{
    const char *why = NULL;
    double rate;
    (void)s;
    if (tc__fetch_rate_parse(value, &rate, &why) != 0)
        return settings_invalid(e, value, "%s", why);
    *(double *)field = rate;
    return 0;
}

#define OPTION(member) SETTINGS_FIELD(fetch_options, member)
#define FETCH_MAX_CONCURRENCY 100000 /* -c and --per-host */

static const setting rows[] = {
    {.letter = 'i',
     .type = SETTINGS_TEXT,
     .check = check_input_name,
     .placeholder = "FILE",
     .help = "read URLs from FILE ('-' = stdin), one per line; blank\n"
             "lines and # comments are skipped",
     .man = "Read URLs from\n"
            ".I FILE\n"
            ".RB ( -\n"
            "for stdin), one a line; blank lines and\n"
            ".B #\n"
            "comments are skipped.",
     OPTION(input)},
    {.letter = 'X',
     .type = SETTINGS_TEXT,
     .check = fetch_check_method,
     .def = "GET, or POST with -d",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "METHOD",
     .help = "request method, an HTTP token such as GET, POST, PUT\n",
     .man = "The request method.",
     OPTION(method)},
    {.letter = 'H',
     .type = SETTINGS_CUSTOM,
     .check = fetch_header_add,
     .release = fetch_headers_free,
     .flags = SETTINGS_REPEATABLE,
     .placeholder = "'NAME: VALUE'",
     .help = "send this header with every request; NAME a token,\n"
             "VALUE without CR or LF; Content-Length and\n"
             "Transfer-Encoding are refused (set from -d)",
     .man = "Add a header to every request.",
     OPTION(headers)},
    {.letter = 'd',
     .type = SETTINGS_TEXT,
     .placeholder = "DATA|@FILE",
     .help = "request body: DATA as given, or the bytes of FILE\n"
             "verbatim (read once at start, at most 16 MiB);\n"
             "implies POST unless -X says otherwise",
     .man = "Send\n"
            ".I DATA\n"
            "as the request body, or the contents of\n"
            ".I FILE\n"
            "verbatim (read once at start, at most 16 MiB; an unreadable file is exit status 2); "
            "implies\n"
            "POST unless\n"
            ".B -X\n"
            "says otherwise.",
     OPTION(data)},
    {.name = "concurrency",
     .letter = 'c',
     .type = SETTINGS_UINT,
     .min = 1,
     .max = FETCH_MAX_CONCURRENCY,
     .def = SETTINGS_STR(TC_FETCH_DEFAULT_CONCURRENCY),
     .placeholder = "N",
     .help = "requests at once",
     .man = "Requests at once, which is also the connection cap.",
     OPTION(cfg.concurrency)},
    {.name = "per-host",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = FETCH_MAX_CONCURRENCY,
     .def = "0",
     .placeholder = "N",
     .help = "requests at once to one host:port, 0 = no limit",
     .man = "Requests at once to one host and port; 0 is no limit.",
     OPTION(cfg.per_host)},
    {.name = "timeout",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 86400000,
     .def = SETTINGS_STR(TC_FETCH_DEFAULT_TIMEOUT_MS),
     .placeholder = "MS",
     .help = "timeout of each attempt",
     .man = "Timeout of each attempt.",
     OPTION(cfg.timeout_ms)},
    {.name = "retries",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = 100,
     .def = "0",
     .placeholder = "N",
     .help = "retry connection errors, 429 and 5xx up to N times, with\n"
             "jittered exponential backoff or the 429's Retry-After;\n"
             "only GET, HEAD, PUT, DELETE, OPTIONS requests",
     .man = "Retry connection errors, 429 and 5xx up to\n"
            ".I N\n"
            "times, with jittered exponential backoff or the 429's\n"
            ".BR Retry-After .\n"
            "Only GET, HEAD, PUT, DELETE and OPTIONS are retried, unless\n"
            ".BR --retry-all .",
     OPTION(cfg.retries)},
    {.name = "retry-all",
     .type = SETTINGS_SWITCH,
     .min = 1,
     .help = "let --retries retry any method (POST, PATCH...)",
     .man = "Retry every method, POST included.",
     OPTION(cfg.retry_all)},
    {.name = "rate",
     .type = SETTINGS_CUSTOM,
     .check = parse_rate,
     .def = "off: as fast as -c allows",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "N",
     .help = "open loop: request i starts at i/N s (N > 0, decimals\n"
             "allowed: 0.5 is one every 2 s); one that finds -c in\n"
             "flight waits, and its ms counts from its scheduled\n"
             "time",
     .man = "Open loop: request i is scheduled at i/N s\n"
            ".RI ( N\n"
            "a decimal number above 0 and at most 1000000, such as 100 or 2.5).\n"
            "One that finds\n"
            ".B -c\n"
            "requests in flight waits, and its\n"
            ".B ms\n"
            "counts from its scheduled time, so a stalled server shows up as latency, not as a "
            "lower rate.",
     OPTION(cfg.rate)},
    {.name = "order",
     .type = SETTINGS_WORD,
     .words = (const settings_word[]){{"completion", TC_FETCH_COMPLETION},
                                      {"input", TC_FETCH_INPUT},
                                      {NULL, 0}},
     .def = "completion",
     .placeholder = "completion|input",
     .help = "output order",
     .man = "Output order.",
     OPTION(cfg.order)},
    {.letter = 'o',
     .type = SETTINGS_TEXT,
     .check = check_file_name,
     .def = "stdout",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "FILE",
     .help = "write the JSON lines to FILE",
     .man = "Write the JSON lines to\n"
            ".I FILE\n"
            "(created or truncated).",
     OPTION(output)},
    {.name = "body",
     .type = SETTINGS_SWITCH,
     .min = 1,
     .help = "include the response body (\"body\") in each line",
     .man = "Include the response body\n"
            ".RB ( \\(dqbody\\(dq )\n"
            "in each line.",
     OPTION(with_body)},
    {.name = "max-body",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 1024ULL * 1024 * 1024,
     .def = "1048576",
     .placeholder = "BYTES",
     .help = "a larger response body is an error",
     .man = "A larger response body is an error.",
     OPTION(cfg.max_body)},
    {.name = "progress",
     .type = SETTINGS_SWITCH,
     .min = FETCH_PROGRESS_ON,
     .help = "progress bar on stderr even when it is not a terminal",
     .man = "Progress bar on stderr even when it is not a terminal.",
     OPTION(progress)},
    {.name = "no-progress",
     .type = SETTINGS_SWITCH,
     .min = FETCH_PROGRESS_OFF,
     .def = "a bar when stderr is a terminal",
     .flags = SETTINGS_DEFAULT_TEXT,
     .help = "no progress bar",
     .man = "No progress bar.",
     OPTION(progress)},
    {SETTINGS_ROW_HTTP_ENGINE,
     .help = "client engine for http:// URLs (https:// always uses libcurl)",
     .man = "Client engine for http:// URLs; https:// always uses libcurl.",
     OPTION(cfg.http_engine)},
    {.name = "cacert",
     .type = SETTINGS_TEXT,
     .check = fetch_check_cacert,
     .def = "the system store",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "FILE",
     .help = "verify https:// servers with the PEM CA certificates in\n"
             "FILE",
     .man = "PEM CA bundle to verify https servers.",
     OPTION(cfg.ca_file)},
    {.name = "insecure",
     .type = SETTINGS_SWITCH,
     .min = 1,
     .help = "do not verify https:// certificates or host names",
     .man = "Do not verify https servers' certificates.",
     OPTION(cfg.insecure)},
    {.name = "summary-json",
     .type = SETTINGS_TEXT,
     .check = check_file_name,
     .placeholder = "FILE",
     .help = "also write the summary's figures to FILE as one JSON\n"
             "object (written at the end, also after SIGINT/SIGTERM)",
     .man = "Also write the summary's figures to\n"
            ".I FILE\n"
            "as one JSON object.",
     OPTION(summary_json)},
    {SETTINGS_ROW_HELP, .help = "show this help", .man = "Print the options and exit 0."},
};

const settings_table fetch_settings = {"fetch", rows, sizeof(rows) / sizeof(rows[0])};
