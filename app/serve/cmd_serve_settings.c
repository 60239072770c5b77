/*
 * tailcut serve's settings: every flag (and configuration-file key) once, with its range, its
 * default, its --help line and its man-page paragraph (app/common/settings.h says how a row is
 * read). Global rows land in the serve_config of the process, route rows in a serve_route; keys
 * are CONTRACT section 8's names. The order of the rows is the order of --help and the man page.
 */
#include <stdio.h>
#include <string.h>

#include "cmd_serve.h"
#include "common/commands.h"

/* --upstream-ca: the file must be readable now, not at the first https:// attempt. */
static int check_ca_file(const setting *s, const char *value, void *field, settings_error *e)
{
    (void)field;
    FILE *f = fopen(value, "r");
    if (f == NULL) {
        char why[SETTINGS_WHY_MAX], flag[64];
        (void)snprintf(why, sizeof(why), "cannot read file '%s'", value);
        return settings_failed(e, why, "cannot read %s file '%s'",
                               settings_flag(s, flag, sizeof(flag)), value);
    }
    (void)fclose(f);
    return 0;
}

const settings_word serve_discovery_words[] = {
    {"off", SERVE_DISCOVERY_OFF}, {"dns", SERVE_DISCOVERY_DNS}, {NULL, 0}};

/* --eject-latency-factor: a decimal (digits, optionally '.' and digits) from 1.5 to 100, or off
 * (stored as 0). Strict like every value: no sign, exponent or blank. */
int serve_latency_factor_parse(const setting *s, const char *value, void *field, settings_error *e)
{
    (void)s;
    double *factor = field;
    if (strcmp(value, "off") == 0) {
        *factor = 0;
        return 0;
    }
    const char *p = value;
    double v = 0, scale = 1;
    int digits = 0, frac = 0;
    for (; *p != '\0'; p++) {
        if (*p == '.' && !frac && digits > 0) {
            frac = 1;
            continue;
        }
        if (*p < '0' || *p > '9' || digits > 12)
            break;
        digits++;
        if (frac) {
            scale /= 10;
            v += (*p - '0') * scale;
        } else {
            v = v * 10 + (*p - '0');
        }
    }
    if (*p != '\0' || digits == 0 || p[-1] == '.' || v < 1.5 || v > 100)
        return settings_invalid(e, value, "expected a decimal from 1.5 to 100, or off");
    *factor = v;
    return 0;
}

#define GLOBAL(member) .scope = SETTINGS_GLOBAL, SETTINGS_FIELD(serve_config, member)
#define ROUTE(member) .scope = SETTINGS_ROUTE, SETTINGS_FIELD(serve_route, member)

static const setting rows[] = {
    {.name = "listen",
     .key = "listen",
     .type = SETTINGS_ADDR,
     .def = "127.0.0.1:8080",
     .placeholder = "HOST:PORT",
     .help = "address to listen on; port 0 picks a free port",
     .man = "Address to listen on; port 0 picks a free port.\n"
            "HOST is an IPv4 or IPv6 address, or localhost (127.0.0.1); a name is a bad value.\n"
            "IPv6 addresses are written in brackets.",
     GLOBAL(listen)},
    {.name = "admin-listen",
     .key = "admin_listen",
     .type = SETTINGS_ADDR,
     .def = "none: the main listener",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "HOST:PORT",
     .help = "serve /metrics, /dashboard and /dashboard/stats (and\n"
             "/healthz, /readyz) on this address instead; the main listener\n"
             "then answers those three 404",
     .man = "Serve /metrics, /dashboard and /dashboard/stats on their own listener instead, "
            "announced as\n"
            ".BI \"tailcut: admin listening on http://\" HOST : PORT\\fR;\n"
            "the main listener then answers them 404.\n"
            "The admin listener also answers /healthz and /readyz, and stays open until the "
            "process exits.\n"
            "HOST as for\n"
            ".BR --listen .",
     GLOBAL(admin)},
    {.name = "upstream",
     .key = "upstreams",
     .type = SETTINGS_URL,
     .def = "embedded simulator's /api/work",
     .flags = SETTINGS_REPEATABLE | SETTINGS_DEFAULT_TEXT,
     .placeholder = "URL",
     .help = "the URL each attempt GETs; each one given is one replica\n"
             "of the service (an extra attempt goes to another one)\n",
     .man = "The http:// or https:// URL each attempt GETs.\n"
            "Each URL given is one replica of the same service (their paths and queries may "
            "differ): each attempt goes to a\n"
            "replica chosen for it, and an extra attempt to one its request has not tried; see\n"
            ".BR REPLICAS .",
     ROUTE(upstreams)},
    {.name = "metadata-upstream",
     .key = "metadata_upstreams",
     .type = SETTINGS_URL,
     .def = "embedded simulator's /api/metadata\n"
            "without --upstream; else none: /api/metadata answers 404",
     .flags = SETTINGS_REPEATABLE | SETTINGS_DEFAULT_TEXT,
     .placeholder = "URL",
     .help = "batch lookups go here; each one given is one replica\n",
     .man = "Where batched ID lookups go, as\n"
            ".IB URL ?id= A & id= B ...\n"
            "Each URL given is one replica, chosen as for\n"
            ".BR --upstream ;\n"
            "a call whose reused connection dies before any answer byte goes once more, to "
            "another replica when there is one.",
     ROUTE(metadata_upstreams)},
    {.name = "upstream-discovery",
     .key = "discovery",
     .type = SETTINGS_WORD,
     .words = serve_discovery_words,
     .def = "off",
     .placeholder = "off|dns",
     .help = "dns: an upstream URL whose host is a name is one replica per\n"
             "address it resolves to (A and AAAA), re-resolved every\n"
             "--dns-refresh",
     .man = "With\n"
            ".BR dns ,\n"
            "each upstream URL (of both upstreams) whose host is a DNS name is one replica per "
            "address the name\n"
            "resolves to (A and AAAA, through the system resolver, so /etc/hosts, a Kubernetes "
            "headless Service\n"
            "or Consul DNS work), re-resolved every\n"
            ".BR --dns-refresh .\n"
            "An address that appears becomes a replica; one that disappears gets no new attempts "
            "and its connections\n"
            "close once idle; a failed or empty resolution keeps the last good set.\n"
            "The Host header (and TLS server name) stays the URL's host.",
     ROUTE(discovery)},
    {.name = "dns-refresh",
     .key = "dns_refresh_ms",
     .type = SETTINGS_UINT,
     .min = 1000,
     .max = SETTINGS_MAX_MS,
     .def = "30000",
     .placeholder = "MS",
     .help = "how often --upstream-discovery dns resolves the names again",
     .man = "How often\n"
            ".B --upstream-discovery dns\n"
            "resolves the upstream names again.\n"
            "A name whose first resolution fails is tried again every second until it resolves.",
     ROUTE(dns_refresh_ms)},
    {.name = "eject-failures",
     .key = "ejection.failures",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 1000,
     .def = "5",
     .placeholder = "N",
     .help = "a replica is ejected after N failed attempts in a row",
     .man = "A replica is ejected (gets no new attempts) after\n"
            ".I N\n"
            "consecutive failed attempts (refused, reset, connect timeout, 5xx, 429, an invalid or "
            "oversized body),\n"
            "for 10 s times the times it has been ejected (at most 300 s); then it is probed with "
            "one attempt at a time.",
     ROUTE(eject_failures)},
    {.name = "eject-latency-factor",
     .key = "ejection.latency_factor",
     .type = SETTINGS_CUSTOM,
     .check = serve_latency_factor_parse,
     .def = "5",
     .placeholder = "F|off",
     .help = "a replica whose average latency stays above F x the median\n"
             "of the others for 2 s is ejected (3 replicas or more);\n"
             "F from 1.5 to 100, or off",
     .man = "A replica whose average attempt latency stays above\n"
            ".I F\n"
            "times the median average of the available replicas for 2 s is ejected (only with at "
            "least 3 replicas).\n"
            ".I F\n"
            "is a decimal from 1.5 to 100;\n"
            ".B off\n"
            "never ejects on latency.",
     ROUTE(eject_latency_factor)},
    {.name = "max-ejected",
     .key = "ejection.max_percent",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = 100,
     .def = "50",
     .placeholder = "PCT",
     .help = "at most PCT% of the replicas (rounded down) are ejected at\n"
             "once; 0 never ejects",
     .man = "At most\n"
            ".I PCT\n"
            "percent of the replicas (rounded down) are ejected or probing at once; 0 never "
            "ejects, and a single replica\n"
            "is never ejected.\n"
            "When no replica is eligible, attempts go to the ejected ones (panic).",
     ROUTE(max_ejected_pct)},
    {.name = "upstream-ca",
     .type = SETTINGS_TEXT,
     .check = check_ca_file,
     .def = "system store",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "FILE",
     .help = "PEM CA bundle to verify an https upstream",
     .man = "PEM CA bundle to verify an https upstream.\n"
            "Peers are always verified.",
     GLOBAL(upstream_ca)},
    {SETTINGS_ROW_HTTP_ENGINE, .key = "http_engine",
     .help = "client engine for http:// upstreams (https:// always uses libcurl)",
     .man = "Client engine for http:// upstreams: tailcut's own HTTP/1.1 engine or libcurl.\n"
            "https:// always uses libcurl, and so does a URL with credentials\n"
            ".RI ( user : password @host),\n"
            "which libcurl sends as Basic authentication.",
     GLOBAL(http_engine)},
    {.name = "forward-header",
     .key = "forward_headers",
     .type = SETTINGS_CUSTOM,
     .check = serve_forward_header_add,
     .release = serve_names_free,
     .flags = SETTINGS_REPEATABLE,
     .placeholder = "NAME",
     .help = "copy this request header (each occurrence) to every attempt;\n"
             "never Host, Connection, Proxy-* and other hop-by-hop ones",
     .man = "Copy the request header\n"
            ".I NAME\n"
            "(every occurrence, in the order received) to every attempt, unless the request's\n"
            ".B Connection\n"
            "header lists it or\n"
            ".B --upstream-header\n"
            "sets it.\n"
            "Never forwarded, and an error (exit status 2) when named:\n"
            ".BR Host ,\n"
            ".BR Content-Length ,\n"
            ".BR Transfer-Encoding ,\n"
            ".B Connection\n"
            "and the headers it lists,\n"
            ".BR Keep-Alive ,\n"
            ".BR TE ,\n"
            ".BR Trailer ,\n"
            ".BR Upgrade ,\n"
            ".BR Proxy-* ,\n"
            ".B X-Tailcut-Attempt\n"
            "(tailcut sets it); a value holding CR, LF or NUL is dropped.\n"
            "Naming\n"
            ".B X-Request-Id\n"
            "is accepted and changes nothing: it is always sent.",
     ROUTE(forward_headers)},
    {.name = "upstream-header",
     .key = "upstream_headers",
     .type = SETTINGS_CUSTOM,
     .check = serve_upstream_header_add,
     .release = serve_headers_free,
     .flags = SETTINGS_REPEATABLE,
     .placeholder = "'NAME: VALUE'|@FILE",
     .help = "add this header to every call of both upstreams; @FILE reads\n"
             "one a line (blank lines and # comments skipped)",
     .man = "Add a header to every call of both upstreams (attempts and metadata batches).\n"
            ".BI @ FILE\n"
            "reads one header a line, so that credentials stay out of\n"
            ".BR ps (1).\n"
            "Wherever an upstream URL is printed (stderr, logs, /dashboard/stats), its userinfo "
            "and query are\n"
            "redacted.",
     ROUTE(upstream_headers)},
    /* The file form of upstream_headers in a configuration file (the flag says @FILE). */
    {.key = "upstream_headers_file",
     .type = SETTINGS_CUSTOM,
     .check = serve_upstream_header_file,
     .release = serve_headers_free,
     .placeholder = "FILE",
     .help = "headers to add, one 'Name: value' a line",
     ROUTE(upstream_headers)},
    {.name = "hedge-delay",
     .key = "hedge.delay",
     .type = SETTINGS_DELAY,
     .min = 0,
     .max = SETTINGS_MAX_MS,
     .def = "300",
     .placeholder = "MS|pNN",
     .help = "/api/smart fires the extra attempts after MS, all at once;\n"
             "or pNN (p50..p99.9): extra k at k x the NNth percentile of\n"
             "recent attempt latencies (about the last 10 s)",
     .man = "When /api/smart fires its extra attempts.\n"
            ".I MS\n"
            "(a whole number): all\n"
            ".B --hedge-extra\n"
            "attempts at once after\n"
            ".I MS\n"
            "milliseconds, or as soon as the first attempt fails if sooner.\n"
            ".BI p NN\n"
            "(NN from 50 to 99.9, at most one decimal:\n"
            ".BR p50 ,\n"
            ".BR p95 ,\n"
            ".BR p99 ,\n"
            ".BR p99.9 ):\n"
            "extra attempt k is due k times the NNth percentile of recent attempt latencies "
            "(about the last\n"
            "10 s); whenever no attempt is in flight, the next extra fires at once.",
     ROUTE(hedge_delay)},
    {.name = "hedge-delay-fallback",
     .key = "hedge.fallback_ms",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = SETTINGS_MAX_MS,
     .def = "300",
     .placeholder = "MS",
     .help = "the pNN delay until 100 attempts were recorded, and while\n"
             "none is recent",
     .man = "The\n"
            ".BI p NN\n"
            "delay until 100 attempts were recorded, and while none is recent.",
     ROUTE(hedge_fallback_ms)},
    {.name = "hedge-budget",
     .key = "hedge.budget_percent",
     .type = SETTINGS_PERCENT,
     .def = "off",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "PCT",
     .help = "extra attempts fired in any 1 s stay within\n"
             "floor(PCT x /api/smart requests in it / 100) + 1",
     .man = "Extra attempts fired in any 1 s stay within floor(PCT x R / 100) + 1, R being the "
            "/api/smart\n"
            "requests admitted in that second; one budget for the whole process, shared by all "
            "workers.\n"
            "A denied extra attempt is dropped.\n"
            ".I PCT\n"
            "is digits[.digits], 0 < PCT <= 100.",
     ROUTE(hedge_budget_e6)},
    {.name = "hedge-extra",
     .key = "hedge.extra",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = TC_HEDGE_MAX_ATTEMPTS - 1,
     .def = "2",
     .placeholder = "N",
     .help = "extra attempts fired by the hedge",
     .man = "Extra attempts /api/smart may fire.",
     ROUTE(hedge_extra)},
    {.name = "max-timeout",
     .key = "max_timeout_ms",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = SETTINGS_MAX_MS,
     .def = "60000",
     .placeholder = "MS",
     .help = "largest timeout a request may ask for, and the default",
     .man = "Largest\n"
            ".B timeout\n"
            "a request may ask for, and the bound of a request without one.",
     ROUTE(max_timeout_ms)},
    {.name = "upstream-connections",
     .key = "upstream_connections",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 100000,
     .def = "1024",
     .placeholder = "N",
     .help = "upstream connections per worker and per replica",
     .man = "Upstream connections, per worker and per replica (of both upstreams).",
     GLOBAL(upstream_connections)},
    {.name = "batch-max",
     .key = "batch_max",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 1000,
     .def = "50",
     .placeholder = "N",
     .help = "IDs per batched metadata call",
     .man = "Distinct IDs per batched metadata call.",
     ROUTE(batch_max)},
    {.name = "batch-wait",
     .key = "batch_wait_ms",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = 60000,
     .def = "10",
     .placeholder = "MS",
     .help = "longest a batch waits for more IDs",
     .man = "Longest a batch waits for more IDs after its first one.",
     ROUTE(batch_wait_ms)},
    {.name = "workers",
     .key = "workers",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 256,
     .def = "online CPUs",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "N",
     .help = "worker threads, each with its own loop",
     .man = "Worker threads, each with its own event loop, listening socket (SO_REUSEPORT), "
            "upstream pool and\n"
            "batches.",
     GLOBAL(workers)},
    {.name = "max-connections",
     .key = "max_connections",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 1000000,
     .def = "10000",
     .placeholder = "N",
     .help = "open client connections before 503 overloaded",
     .man = "Open client connections, over all workers, before 503\n"
            ".BR overloaded .",
     GLOBAL(max_connections)},
    {.name = "max-body",
     .key = "max_body_bytes",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 1u << 30,
     .def = "1048576",
     .placeholder = "BYTES",
     .help = "largest request or upstream body",
     .man = "Largest request body and largest upstream body.",
     ROUTE(max_body)},
    {SETTINGS_ROW_DRAIN_TIMEOUT, .key = "drain_timeout_ms",
     .help = "on SIGTERM/SIGINT, time to finish in-flight requests",
     .man = "After the shutdown delay, time to finish the requests in flight.",
     GLOBAL(drain_timeout_ms)},
    {SETTINGS_ROW_ACCESS_LOG, .key = "access_log",
     .help = "one line per request; SIGUSR1 reopens FILE",
     .man = "Where the access log goes: stdout, a file (appended, reopened on SIGUSR1) or "
            "nowhere.",
     GLOBAL(access_log_path)},
    {SETTINGS_ROW_ACCESS_LOG_FORMAT, .key = "access_log_format",
     .help = "access-log lines: text (TIME CLIENT \"REQUEST\" STATUS BYTES\n"
             "DURATION_US ATTEMPTS REQUEST_ID) or one JSON object",
     .man = "Format of the access log, see\n"
            ".BR \"ACCESS LOG\" .",
     GLOBAL(access_log_format)},
    {.name = "shutdown-delay",
     .key = "shutdown_delay_ms",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = SETTINGS_MAX_MS,
     .def = "0",
     .placeholder = "MS",
     .help = "after SIGTERM/SIGINT, go on serving this long with /readyz\n"
             "at 503 and Connection: close, then drain",
     .man = "After the first SIGTERM or SIGINT, go on accepting and answering for\n"
            ".IR MS ,\n"
            "with /readyz at 503 and\n"
            ".B Connection: close\n"
            "on every answer, so that load balancers stop sending new requests; then drain.",
     GLOBAL(shutdown_delay_ms)},
    {.name = "header-timeout",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = SETTINGS_MAX_MS,
     .def = SETTINGS_STR(TC_SERVER_HEADER_TIMEOUT_MS),
     .placeholder = "MS",
     .help = "a request must be complete this soon after its first byte\n",
     .man = "A request must be complete (headers and body) this soon after its first byte; else "
            "408 and close.",
     GLOBAL(header_timeout_ms)},
    {.name = "idle-timeout",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = SETTINGS_MAX_MS,
     .def = SETTINGS_STR(TC_SERVER_IDLE_TIMEOUT_MS),
     .placeholder = "MS",
     .help = "close idle keep-alive connections after this long",
     .man = "Close idle keep-alive connections after this long.",
     GLOBAL(idle_timeout_ms)},
    {SETTINGS_ROW_HELP, .help = "this text", .man = "Print the options and exit 0."},
};

const settings_table serve_settings = {"serve", rows, sizeof(rows) / sizeof(rows[0])};
