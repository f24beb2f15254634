/* moechat's fast routing capture: a ggml scheduler eval callback compiled against the headers that
 * the llama-cpp-python wheel installs. The scheduler asks about every graph node (~1,500 per token);
 * this answers in nanoseconds and copies only the wanted tensors (e.g. "ffn_moe_logits-7").
 * Python reads the records after each llama_decode and resets the buffers. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-backend.h"

#define MC_MAX_KINDS 8
#define MC_MAX_KIND_LEN 48

typedef struct {
    int32_t kind;    /* index of the wanted name */
    int32_t layer;   /* the "-N" suffix, or -1 for an unnumbered name */
    int32_t type;    /* ggml_type: GGML_TYPE_F32 or GGML_TYPE_I32 */
    int32_t ne0;     /* values per row */
    int64_t rows;    /* ne1 * ne2 * ne3 */
    int64_t offset;  /* first value's index in data */
} mc_record;

typedef struct {
    int32_t n_kinds;
    char kinds[MC_MAX_KINDS][MC_MAX_KIND_LEN];
    size_t kind_len[MC_MAX_KINDS];
    mc_record *records;
    int64_t n_records, cap_records;
    uint32_t *data; /* 4-byte values, float or int32 by the record's type */
    int64_t n_data, cap_data;
    int32_t n_skipped; /* wanted tensors of an unsupported type or layout */
} mc_capture;

size_t mc_tensor_size(void) { return sizeof(struct ggml_tensor); }

mc_capture *mc_new(void) { return calloc(1, sizeof(mc_capture)); }

void mc_free(mc_capture *c) {
    if (!c) return;
    free(c->records);
    free(c->data);
    free(c);
}

int mc_set_kinds(mc_capture *c, int n, const char **names) {
    if (n < 0 || n > MC_MAX_KINDS) return -1;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len == 0 || len >= MC_MAX_KIND_LEN) return -1;
        memcpy(c->kinds[i], names[i], len + 1);
        c->kind_len[i] = len;
    }
    c->n_kinds = n;
    return 0;
}

void mc_reset(mc_capture *c) {
    c->n_records = 0;
    c->n_data = 0;
    c->n_skipped = 0;
}

int64_t mc_n_records(const mc_capture *c) { return c->n_records; }
const mc_record *mc_records(const mc_capture *c) { return c->records; }
const uint32_t *mc_data(const mc_capture *c) { return c->data; }
int32_t mc_n_skipped(const mc_capture *c) { return c->n_skipped; }

/* Exact match of "kind" or "kind-<digits>"; derived names such as "ffn_moe_probs-0 (reshaped)" fail. */
static int match(const mc_capture *c, const char *name, int32_t *layer) {
    for (int k = 0; k < c->n_kinds; k++) {
        size_t len = c->kind_len[k];
        if (strncmp(name, c->kinds[k], len) != 0) continue;
        const char *rest = name + len;
        if (*rest == '\0') { *layer = -1; return k; }
        if (*rest != '-' || rest[1] < '0' || rest[1] > '9') continue;
        char *end = NULL;
        long v = strtol(rest + 1, &end, 10);
        if (*end == '\0') { *layer = (int32_t) v; return k; }
    }
    return -1;
}

static bool reserve(mc_capture *c, int64_t values) {
    if (c->n_records == c->cap_records) {
        int64_t cap = c->cap_records ? 2 * c->cap_records : 256;
        mc_record *r = realloc(c->records, (size_t) cap * sizeof(mc_record));
        if (!r) return false;
        c->records = r;
        c->cap_records = cap;
    }
    if (c->n_data + values > c->cap_data) {
        int64_t cap = c->cap_data ? 2 * c->cap_data : 65536;
        while (cap < c->n_data + values) cap *= 2;
        uint32_t *d = realloc(c->data, (size_t) cap * sizeof(uint32_t));
        if (!d) return false;
        c->data = d;
        c->cap_data = cap;
    }
    return true;
}

/* Copy row by row through the strides, so views (e.g. the top-k view) read correctly. */
static void copy_rows(const struct ggml_tensor *t, uint32_t *dst) {
    const size_t row = (size_t) t->ne[0] * sizeof(uint32_t);
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++) {
            size_t off = (size_t) (i2 * t->nb[2] + i3 * t->nb[3]);
            ggml_backend_tensor_get_2d(t, dst, off, row, (size_t) t->ne[1], t->nb[1], row);
            dst += t->ne[0] * t->ne[1];
        }
    }
}

bool mc_callback(struct ggml_tensor *t, bool ask, void *user_data) {
    mc_capture *c = (mc_capture *) user_data;
    int32_t layer = -1;
    int k = match(c, t->name, &layer);
    if (ask) return k >= 0;
    if (k < 0) return true;
    /* Always return true after reading: false makes the scheduler skip the rest of the graph. */
    if ((t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_I32) || t->nb[0] != 4) {
        c->n_skipped++;
        return true;
    }
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    int64_t values = t->ne[0] * rows;
    if (!reserve(c, values)) {
        c->n_skipped++;
        return true;
    }
    mc_record *r = &c->records[c->n_records++];
    r->kind = k;
    r->layer = layer;
    r->type = t->type;
    r->ne0 = (int32_t) t->ne[0];
    r->rows = rows;
    r->offset = c->n_data;
    if (ggml_is_contiguous(t)) {
        ggml_backend_tensor_get(t, c->data + c->n_data, 0, (size_t) values * sizeof(uint32_t));
    } else {
        copy_rows(t, c->data + c->n_data);
    }
    c->n_data += values;
    return true;
}
