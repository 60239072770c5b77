/*
 * tailcut serve: the transparent hedging proxy (kind: proxy routes, CONTRACT section 8). Private
 * to app/serve.
 *
 * A proxy route's request is taken at its head (the server's head filter), its body read as it
 * arrives, sent to its attempts (buffered, up to body_replay_limit_bytes, when the request may be
 * hedged; else streamed to its one attempt), and the winner's response streamed back with
 * back-pressure. The hedge, budget, adaptive delay and replica choice are the route's, as for
 * /api/smart (src/policy/hedge.c in head mode); the request and response rules are
 * src/http/proxy_rules.c's.
 */
#ifndef TAILCUT_APP_CMD_SERVE_PROXY_H
#define TAILCUT_APP_CMD_SERVE_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "common/settings.h"
#include "tailcut/hedge.h"
#include "tailcut/server.h"

/* A failed response passed on when every attempt failed: its body at most this. */
#define SERVE_PROXY_FAILED_BODY_MAX ((size_t)64 * 1024)
/* The client stops being fed (the upstream is not read) while this much waits to be written. */
#define SERVE_PROXY_WRITE_HIGH ((size_t)64 * 1024)
/* ... and is fed again once it is down to this. */
#define SERVE_PROXY_WRITE_LOW ((size_t)16 * 1024)

/* A kind: proxy route's own keys (the proxy block of cmd_serve_settings.c, where their defaults
 * are), then what serve_proxy_conf_finish derives from them. */
typedef struct serve_proxy_conf {
    int strip_prefix;
    int preserve_host;
    int hedge_idempotency_key;
    settings_list hedge_methods;
    uint64_t body_replay_limit_bytes;
    uint64_t max_request_body_bytes;
    uint64_t body_idle_timeout_ms;
    settings_uints failure_statuses;
    int failing_v[SETTINGS_LIST_MAX]; /* failure_statuses as the hedge's judge reads them */
    tc_hedge_statuses failing;
} serve_proxy_conf;

/* After the route's keys were read: the views that depend on them. */
void serve_proxy_conf_finish(serve_proxy_conf *pc);

struct serve_worker;
struct serve_route;

/* A kind: proxy route's request, at its head (or whole, when it came so): answers it. */
void serve_handle_proxy(struct serve_worker *sw, const struct serve_route *route, tc_request *req);

#endif /* TAILCUT_APP_CMD_SERVE_PROXY_H */
