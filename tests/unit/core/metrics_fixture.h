/*
 * Shared fixture of the tests of src/core/metrics*.c (test_metrics_*.c): a strict parser that
 * reads the exposition text back (HELP/TYPE before samples, escapes, cumulative buckets).
 *
 * Compiled once into the folder's fixture library (CMakeLists.txt); every name is mfx_.
 */
#ifndef TC_TEST_METRICS_FIXTURE_H
#define TC_TEST_METRICS_FIXTURE_H
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tailcut/metrics.h"

#define RENDER_MAX (1u << 20)

/* ---- a strict reader for the text format ----------------------------------------------------- */

typedef struct sample {
    char *name;
    char *labels; /* raw text between the braces, "" when none */
    double value;
} sample;

typedef struct parsed {
    sample *s;
    size_t n, cap;
    char *families[64]; /* names with a # TYPE line, in order */
    char types[64][16];
    size_t n_families;
} parsed;

/* Reads one quoted label value at *p (just after the opening quote), checking that only the
 * three escapes the format defines are used; writes the unescaped value to out. */
void mfx_read_label_value(const char **p, char *out, size_t out_size);

/* Parses the len bytes of text into out, asserting every rule of the format on the way. */
void mfx_parse(const char *text, size_t len, parsed *out);

void mfx_parsed_free(parsed *p);

/* The sample of this name and raw label text, or NULL; fails if it appears twice. */
const sample *mfx_find(const parsed *p, const char *name, const char *labels);

/* The value of that sample; fails if it is missing. */
double mfx_get(const parsed *p, const char *name, const char *labels);

/* Renders and parses; returns the text (caller frees). */
char *mfx_render_parse(tc_metrics_registry *reg, parsed *p);

/* Every histogram series in p: buckets cumulative, +Inf equal to _count. */
void mfx_check_histograms(const parsed *p);

#endif /* TC_TEST_METRICS_FIXTURE_H */
