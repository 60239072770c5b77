/*
 * The metrics tests' fixture (metrics_fixture.h). Compiled once into the folder's fixture library;
 * only the mfx_ names are shared.
 */
#include "metrics_fixture.h"

void mfx_read_label_value(const char **p, char *out, size_t out_size)
{
    size_t k = 0;
    const char *s = *p;
    for (;;) {
        assert_true(*s != '\0' && *s != '\n');
        if (*s == '"')
            break;
        char c = *s;
        if (c == '\\') {
            s++;
            if (*s == 'n')
                c = '\n';
            else if (*s == '\\' || *s == '"')
                c = *s;
            else
                fail_msg("bad escape \\%c in label value", *s);
        }
        assert_true(k + 1 < out_size);
        out[k++] = c;
        s++;
    }
    out[k] = '\0';
    *p = s + 1;
}

static int is_name_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

static char *dup_range(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    assert_non_null(d);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void mfx_parse(const char *text, size_t len, parsed *out)
{
    memset(out, 0, sizeof *out);
    assert_int_equal(strlen(text), len);
    assert_true(len == 0 || text[len - 1] == '\n');
    const char *cur_family = NULL, *cur_type = NULL;
    int have_help = 0;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        assert_non_null(eol);
        if (strncmp(line, "# HELP ", 7) == 0) {
            const char *name = line + 7;
            const char *sp = strchr(name, ' ');
            assert_true(sp && sp < eol);
            have_help = 1;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_true(have_help); /* we always print HELP first */
            have_help = 0;
            const char *name = line + 7;
            const char *sp = strchr(name, ' ');
            assert_true(sp && sp < eol);
            assert_true(out->n_families < 64);
            out->families[out->n_families] = dup_range(name, (size_t)(sp - name));
            size_t tl = (size_t)(eol - sp - 1);
            assert_true(tl < 16);
            memcpy(out->types[out->n_families], sp + 1, tl);
            out->types[out->n_families][tl] = '\0';
            assert_true(strcmp(out->types[out->n_families], "counter") == 0 ||
                        strcmp(out->types[out->n_families], "gauge") == 0 ||
                        strcmp(out->types[out->n_families], "histogram") == 0);
            cur_family = out->families[out->n_families];
            cur_type = out->types[out->n_families];
            out->n_families++;
        } else {
            assert_true(line[0] != '#');
            assert_non_null(cur_family);
            const char *p = line;
            assert_true(is_name_char(*p, 1));
            while (is_name_char(*p, 0))
                p++;
            char *name = dup_range(line, (size_t)(p - line));
            /* The sample belongs to the current family. */
            size_t fl = strlen(cur_family);
            if (strcmp(cur_type, "histogram") == 0) {
                assert_true(strncmp(name, cur_family, fl) == 0);
                const char *suffix = name + fl;
                assert_true(strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 ||
                            strcmp(suffix, "_count") == 0);
            } else {
                assert_string_equal(name, cur_family);
            }
            const char *lab_start = p, *lab_end = p;
            if (*p == '{') {
                p++;
                lab_start = p;
                while (*p != '}') {
                    assert_true(is_name_char(*p, 1) && *p != ':');
                    while (is_name_char(*p, 0))
                        p++;
                    assert_true(p[0] == '=' && p[1] == '"');
                    p += 2;
                    char v[256];
                    mfx_read_label_value(&p, v, sizeof v);
                    if (*p == ',')
                        p++;
                    else
                        assert_int_equal(*p, '}');
                }
                lab_end = p;
                p++;
            }
            assert_int_equal(*p, ' ');
            p++;
            char *num = dup_range(p, (size_t)(eol - p));
            char *endp;
            double v = strtod(num, &endp);
            assert_true(*num != '\0' && *endp == '\0');
            free(num);
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 64;
                out->s = realloc(out->s, out->cap * sizeof *out->s);
                assert_non_null(out->s);
            }
            out->s[out->n].name = name;
            out->s[out->n].labels = dup_range(lab_start, (size_t)(lab_end - lab_start));
            out->s[out->n].value = v;
            out->n++;
        }
        line = eol + 1;
    }
}

void mfx_parsed_free(parsed *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->s[i].name);
        free(p->s[i].labels);
    }
    free(p->s);
    for (size_t i = 0; i < p->n_families; i++)
        free(p->families[i]);
}

const sample *mfx_find(const parsed *p, const char *name, const char *labels)
{
    const sample *hit = NULL;
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->s[i].name, name) == 0 && strcmp(p->s[i].labels, labels) == 0) {
            if (hit)
                fail_msg("series %s{%s} appears twice", name, labels);
            hit = &p->s[i];
        }
    }
    return hit;
}

double mfx_get(const parsed *p, const char *name, const char *labels)
{
    const sample *s = mfx_find(p, name, labels);
    if (!s)
        fail_msg("series %s{%s} missing", name, labels);
    return s->value;
}

char *mfx_render_parse(tc_metrics_registry *reg, parsed *p)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    assert_non_null(text);
    mfx_parse(text, len, p);
    return text;
}

void mfx_check_histograms(const parsed *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const char *name = p->s[i].name;
        size_t nl = strlen(name);
        if (nl < 6 || strcmp(name + nl - 6, "_count") != 0)
            continue;
        char base[128];
        snprintf(base, sizeof base, "%.*s_bucket", (int)(nl - 6), name);
        double prev = 0, inf = -1;
        const char *labels = p->s[i].labels;
        for (size_t j = 0; j < p->n; j++) {
            if (strcmp(p->s[j].name, base) != 0)
                continue;
            /* Same series: labels are ours plus ,le="..." (or le= alone). */
            const char *lab = p->s[j].labels;
            size_t ll = strlen(labels);
            if (ll ? strncmp(lab, labels, ll) != 0 || strncmp(lab + ll, ",le=\"", 5) != 0
                   : strncmp(lab, "le=\"", 4) != 0)
                continue;
            assert_true(p->s[j].value >= prev);
            prev = p->s[j].value;
            if (strstr(lab, "le=\"+Inf\""))
                inf = p->s[j].value;
        }
        assert_true(inf >= 0);
        assert_true(inf == p->s[i].value);
    }
}
