/*
 * tailcut: the whole public API in one include.
 *
 *   #include <tailcut/tailcut.h>
 *
 * Each module also has a header of its own (tailcut/server.h, tailcut/client.h, ...), one page
 * each under docs/; this one includes them all, so a program that uses several modules, or does
 * not want to track which header declares what, needs only this line. Every name it brings in
 * starts with tc_ or TC_, and libuv's uv.h comes with it (the API takes uv_loop_t *).
 */
#ifndef TAILCUT_TAILCUT_H
#define TAILCUT_TAILCUT_H

#include "tailcut/version.h"  /* TC_VERSION_MAJOR/MINOR/PATCH, tc_version() */
#include "tailcut/error.h"    /* TC_E* codes, tc_strerror() */
#include "tailcut/future.h"   /* tc_future: one result, later; combinators */
#include "tailcut/server.h"   /* tc_server: HTTP/1.1 server on your loop */
#include "tailcut/client.h"   /* tc_client: pooled HTTP client on your loop */
#include "tailcut/hedge.h"    /* tc_hedge: hedged and fan-out upstream calls */
#include "tailcut/replica.h"  /* tc_replica_set: which copy of a service gets each attempt */
#include "tailcut/batch.h"    /* tc_batcher: coalesce lookups into batched calls */
#include "tailcut/fetch.h"    /* tc_fetch: many GETs at once, results as they arrive */
#include "tailcut/upstream.h" /* tc_upstream: a simulated slow, flaky upstream */
#include "tailcut/metrics.h"  /* tc_metrics: Prometheus counters, gauges, histograms */
#include "tailcut/json.h"     /* JSON validation and lookups without copying */
#include "tailcut/url.h"      /* URL and query helpers */

#endif /* TAILCUT_TAILCUT_H */
