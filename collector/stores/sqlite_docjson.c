/*
 * dw_page(): a page of stored documents as the API's JSON, inside SQLite.
 *
 * Why C: a GET /metrics page is rendered by SQLite in one statement
 * (sqlite_page.py). Written in SQL, each row took ~20 string
 * concatenations, four json_quote calls, strftime and printf: ~5 us a
 * document, 80 % of an uncached page's CPU. Here each row is written once,
 * into the page's one buffer.
 *
 * Each document is views.doc_out's JSON, byte for byte, as orjson writes it
 * (tests/collector/test_sqlite_page.py holds the two together):
 *   {"id":"<id>","session":s,"seq":n,"kind":s,"name":s,"host":s|null,
 *    "tags":<as stored>,"timestamp":"YYYY-MM-DDTHH:MM:SS.mmmZ"
 *    [,"value":v][,"data":<as stored>]}
 * A row it cannot write exactly so makes the page NULL (the caller then
 * renders it in Python), by the same rules as sqlite_page.ODD: a value
 * that is not 0 and not 1e-4 <= |v| < 1e15 or needs more than 15 digits, a
 * time before 1 s or from year 10000, a seq that is not an integer, a JSON
 * null as data, a column of an unexpected type.
 *
 * No sqlite3.h: the few entry points used are declared here (SQLite's C
 * interface is stable), so a C compiler is all the build needs. The library
 * linked is the one Python's sqlite3 module loaded (libsqlite3.so.0), and
 * dw_install() registers dw_page for every connection opened after it
 * (sqlite3_auto_extension): no handle is taken from Python's objects.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_context sqlite3_context;
typedef struct sqlite3_value sqlite3_value;

extern int sqlite3_create_function_v2(
    sqlite3 *, const char *, int, int, void *,
    void (*)(sqlite3_context *, int, sqlite3_value **),
    void (*)(sqlite3_context *, int, sqlite3_value **), void (*)(sqlite3_context *),
    void (*)(void *));
extern int sqlite3_value_type(sqlite3_value *);
extern const unsigned char *sqlite3_value_text(sqlite3_value *);
extern int sqlite3_value_bytes(sqlite3_value *);
extern double sqlite3_value_double(sqlite3_value *);
extern int64_t sqlite3_value_int64(sqlite3_value *);
extern void sqlite3_result_null(sqlite3_context *);
extern void sqlite3_result_error_nomem(sqlite3_context *);
extern void sqlite3_result_blob64(sqlite3_context *, const void *, uint64_t, void (*)(void *));
extern void *sqlite3_aggregate_context(sqlite3_context *, int);
extern void *sqlite3_realloc64(void *, uint64_t);
extern void *sqlite3_malloc64(uint64_t);
extern void sqlite3_free(void *);
extern int sqlite3_auto_extension(void (*)(void));

enum { T_INTEGER = 1, T_FLOAT = 2, T_TEXT = 3, T_NULL = 5 };
enum { UTF8 = 1, INNOCUOUS = 0x200000 };

/* 253402300800 is 10000-01-01 (rfc3339 and SQLite stop at 9999); below 1 s
 * the milliseconds' rounding is not checked. */
#define TS_END 253402300800.0

/* Room a string needs escaped: at most 6 bytes (\u00XX) per byte, quotes. */
static uint64_t quoted_room(int n) { return 6 * (uint64_t)n + 2; }

/* s as orjson writes a str: '"' and '\' escaped, control characters as
 * \b \t \n \f \r or \u00XX (lower-case hex), everything else (DEL and
 * UTF-8 included) as it is. */
static char *put_quoted(char *out, const unsigned char *s, int n) {
    static const char hex[] = "0123456789abcdef";
    *out++ = '"';
    for (int i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\t': *out++ = 't'; break;
        case '\n': *out++ = 'n'; break;
        case '\f': *out++ = 'f'; break;
        case '\r': *out++ = 'r'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out++ = '"';
    return out;
}

static char *put_raw(char *out, const char *s, size_t n) {
    memcpy(out, s, n);
    return out + n;
}

#define PUT_LIT(out, lit) put_raw((out), (lit), sizeof(lit) - 1)

static char *put_int(char *out, int64_t v) {
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *out++ = '-';
    while (n) *out++ = tmp[--n];
    return out;
}

static char *put_digits(char *out, int v, int width) {
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return out + width;
}

/* Epoch seconds as rfc3339's "YYYY-MM-DDTHH:MM:SS.mmmZ", quoted: milliseconds
 * rounded half to even (Python's round(ts * 1000)), days to a civil date in
 * the proleptic Gregorian calendar (the eras-of-400-years method). */
static char *put_timestamp(char *out, double ts) {
    int64_t ms = (int64_t)nearbyint(ts * 1000.0);
    int64_t sec = ms / 1000, days = sec / 86400, rem = sec % 86400;
    int64_t z = days + 719468, era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    int year = (int)(yoe + era * 400 + (month <= 2));
    *out++ = '"';
    out = put_digits(out, year, 4);
    *out++ = '-';
    out = put_digits(out, month, 2);
    *out++ = '-';
    out = put_digits(out, day, 2);
    *out++ = 'T';
    out = put_digits(out, (int)(rem / 3600), 2);
    *out++ = ':';
    out = put_digits(out, (int)(rem / 60 % 60), 2);
    *out++ = ':';
    out = put_digits(out, (int)(rem % 60), 2);
    *out++ = '.';
    out = put_digits(out, (int)(ms % 1000), 3);
    *out++ = 'Z';
    *out++ = '"';
    return out;
}

/* v as orjson writes a float, or NULL where this cannot be sure to (the
 * caller answers NULL): 15 significant digits at most, fixed notation. A
 * decimal of <= 15 digits that reads back as v is the only one so near it,
 * so %.15g (correctly rounded by the C library) writes exactly the shortest
 * digits, which is what orjson writes. */
static char *put_float(char *out, double v) {
    if (v == 0) return signbit(v) ? PUT_LIT(out, "-0.0") : PUT_LIT(out, "0.0");
    double a = fabs(v);
    if (!(a >= 1e-4 && a < 1e15)) return NULL;
    if (v == trunc(v)) { /* whole: exact as an integer, < 2^53 here */
        out = put_int(out, (int64_t)v);
        return PUT_LIT(out, ".0");
    }
    char buf[40];
    int n = snprintf(buf, sizeof buf, "%.15g", v);
    if (n <= 0 || n >= (int)sizeof buf || strtod(buf, NULL) != v) return NULL;
    out = put_raw(out, buf, (size_t)n);
    if (!memchr(buf, '.', (size_t)n)) out = PUT_LIT(out, ".0");
    return out;
}

/* The columns of one row, read and checked: what write_row needs. */
struct row {
    const unsigned char *session, *kind, *name, *host, *tags, *data; /* host, data: may be NULL */
    int n_session, n_kind, n_name, n_host, n_tags, n_data;
    int64_t id, seq;
    double ts, value;
    int has_value;
};

enum { ROW_OK, ROW_ODD, ROW_NOMEM };

/* argv: id, session, seq, kind, name, host, tags, ts, value, data.
 * selecting: fields= (a JSON null as data is then simply not selected). */
static int read_row(sqlite3_value **argv, struct row *r, int selecting) {
    int host_type = sqlite3_value_type(argv[5]), ts_type = sqlite3_value_type(argv[7]);
    int value_type = sqlite3_value_type(argv[8]), data_type = sqlite3_value_type(argv[9]);
    if (sqlite3_value_type(argv[0]) != T_INTEGER || sqlite3_value_type(argv[2]) != T_INTEGER ||
        sqlite3_value_type(argv[1]) != T_TEXT || sqlite3_value_type(argv[3]) != T_TEXT ||
        sqlite3_value_type(argv[4]) != T_TEXT || sqlite3_value_type(argv[6]) != T_TEXT ||
        (host_type != T_TEXT && host_type != T_NULL) ||
        (ts_type != T_FLOAT && ts_type != T_INTEGER) ||
        (value_type != T_FLOAT && value_type != T_NULL) ||
        (data_type != T_TEXT && data_type != T_NULL))
        return ROW_ODD;
    r->ts = sqlite3_value_double(argv[7]);
    if (!(r->ts >= 1 && r->ts < TS_END)) return ROW_ODD;
    r->id = sqlite3_value_int64(argv[0]);
    r->seq = sqlite3_value_int64(argv[2]);
    r->has_value = value_type == T_FLOAT;
    r->value = r->has_value ? sqlite3_value_double(argv[8]) : 0;
    /* text first, then its length (SQLite's documented order) */
    r->session = sqlite3_value_text(argv[1]);
    r->n_session = sqlite3_value_bytes(argv[1]);
    r->kind = sqlite3_value_text(argv[3]);
    r->n_kind = sqlite3_value_bytes(argv[3]);
    r->name = sqlite3_value_text(argv[4]);
    r->n_name = sqlite3_value_bytes(argv[4]);
    r->host = host_type == T_TEXT ? sqlite3_value_text(argv[5]) : NULL;
    r->n_host = host_type == T_TEXT ? sqlite3_value_bytes(argv[5]) : 0;
    r->tags = sqlite3_value_text(argv[6]);
    r->n_tags = sqlite3_value_bytes(argv[6]);
    r->data = data_type == T_TEXT ? sqlite3_value_text(argv[9]) : NULL;
    r->n_data = data_type == T_TEXT ? sqlite3_value_bytes(argv[9]) : 0;
    if (!r->session || !r->kind || !r->name || !r->tags || (host_type == T_TEXT && !r->host) ||
        (data_type == T_TEXT && !r->data))
        return ROW_NOMEM;
    if (!selecting && r->data && r->n_data == 4 && memcmp(r->data, "null", 4) == 0)
        return ROW_ODD; /* doc_out leaves "data" out for null */
    return ROW_OK;
}

/* fields=: the paths of data to keep, as a tree. The spec (sqlite_page.
 * path_spec) is one line a path, its keys separated by tabs, each key as
 * orjson writes it, quotes included: a member of the stored data (orjson's
 * text) is matched by its key's bytes, no unescaping. Children keep the
 * order the paths first name them, which is the order they are written in
 * (as views.select_paths builds its dict). */
struct node {
    const char *key; /* in the tree's copy of the spec; NULL for the root */
    int n_key, child, next, leaf; /* child, next: node indexes, -1 for none */
    const char *span;             /* per row: the member's value, NULL: absent */
    int n_span;
};

struct tree {
    char *spec;
    struct node *nodes;
    int count;
    uint64_t room; /* the most keys and punctuation a selection adds */
};

static void free_tree(struct tree *t) {
    sqlite3_free(t->spec);
    sqlite3_free(t->nodes);
    t->spec = NULL;
    t->nodes = NULL;
}

/* The child of node at with this key, made if missing (leaf as given); -1
 * where a path would run through or end at a path of another depth (a and
 * a.b: the caller declines those), -2 out of memory. */
static int tree_child(struct tree *t, int at, const char *key, int n_key, int leaf) {
    int last = -1;
    for (int c = t->nodes[at].child; c >= 0; c = t->nodes[c].next) {
        if (t->nodes[c].n_key == n_key && memcmp(t->nodes[c].key, key, (size_t)n_key) == 0)
            return t->nodes[c].leaf == leaf ? c : -1;
        last = c;
    }
    int n = t->count++;
    struct node *grown = sqlite3_realloc64(t->nodes, (uint64_t)t->count * sizeof *grown);
    if (!grown) return -2;
    t->nodes = grown;
    t->nodes[n] = (struct node){key, n_key, -1, -1, leaf, NULL, 0};
    if (last < 0) t->nodes[at].child = n;
    else t->nodes[last].next = n;
    t->room += (uint64_t)n_key + 4; /* the key, ':', ',' and an object's braces */
    return n;
}

/* The tree of spec (n bytes); 0, or ROW_ODD for paths it declines, or
 * ROW_NOMEM. */
static int parse_tree(struct tree *t, const unsigned char *spec, int n) {
    t->spec = sqlite3_malloc64((uint64_t)n + 1);
    t->nodes = sqlite3_malloc64(sizeof *t->nodes);
    if (!t->spec || !t->nodes) return ROW_NOMEM;
    memcpy(t->spec, spec, (size_t)n);
    t->spec[n] = '\n'; /* every path ends with a newline */
    t->nodes[0] = (struct node){NULL, 0, -1, -1, 0, NULL, 0};
    t->count = 1;
    t->room = 4;
    const char *p = t->spec, *end = t->spec + n + 1;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        int at = 0;
        while (p < eol) {
            const char *tab = memchr(p, '\t', (size_t)(eol - p));
            const char *stop = tab ? tab : eol;
            if (stop - p < 3 || *p != '"') return ROW_ODD; /* not a key as orjson writes one */
            at = tree_child(t, at, p, (int)(stop - p), stop == eol);
            if (at == -2) return ROW_NOMEM;
            if (at < 0) return ROW_ODD;
            p = stop == eol ? eol : stop + 1;
        }
        p = eol + 1;
    }
    return 0;
}

/* JSON text scanning, for orjson's text (compact, valid; spaces allowed
 * anyway). Each answers where what starts at p ends, NULL if malformed. */
static const char *skip_space(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static const char *skip_string(const char *p, const char *end) { /* p at '"' */
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end) {
    if (p >= end) return NULL;
    if (*p == '"') return skip_string(p, end);
    if (*p != '{' && *p != '[') { /* a number, true, false or null */
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ') p++;
        return p;
    }
    int depth = 0;
    while (p < end) {
        if (*p == '"') {
            p = skip_string(p, end);
            if (!p) return NULL;
            continue;
        }
        if (*p == '{' || *p == '[') depth++;
        else if (*p == '}' || *p == ']') {
            if (--depth == 0) return p + 1;
        }
        p++;
    }
    return NULL;
}

/* The members of the object at p (its text up to end) that node at's
 * children name, as an object written at out in the children's order: the
 * end, or NULL where none of them is present (nothing to write). *bad: the
 * text is not JSON as expected (the page is then written in Python). */
static char *put_selected(struct node *nodes, int at, const char *p, const char *end, char *out,
                          int *bad) {
    for (int c = nodes[at].child; c >= 0; c = nodes[c].next) nodes[c].span = NULL;
    p = skip_space(p + 1, end); /* past '{' */
    if (p < end && *p == '}') return NULL;
    for (;;) {
        if (p >= end || *p != '"') goto malformed;
        const char *key = p;
        p = skip_string(p, end);
        if (!p) goto malformed;
        int n_key = (int)(p - key);
        p = skip_space(p, end);
        if (p >= end || *p != ':') goto malformed;
        p = skip_space(p + 1, end);
        const char *value = p;
        p = skip_value(p, end);
        if (!p) goto malformed;
        for (int c = nodes[at].child; c >= 0; c = nodes[c].next) {
            if (nodes[c].n_key == n_key && memcmp(nodes[c].key, key, (size_t)n_key) == 0) {
                nodes[c].span = value; /* a repeated key: the last one, as json.loads */
                nodes[c].n_span = (int)(p - value);
                break;
            }
        }
        p = skip_space(p, end);
        if (p < end && *p == ',') {
            p = skip_space(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') break;
        goto malformed;
    }
    char *start = out;
    *out++ = '{';
    for (int c = nodes[at].child; c >= 0; c = nodes[c].next) {
        struct node *n = &nodes[c];
        if (!n->span) continue;
        if (!n->leaf && *n->span != '{') continue; /* a path through a non-object: absent */
        char *mark = out;
        if (out > start + 1) *out++ = ',';
        out = put_raw(out, n->key, (size_t)n->n_key);
        *out++ = ':';
        if (n->leaf) {
            out = put_raw(out, n->span, (size_t)n->n_span);
            continue;
        }
        char *inner = put_selected(nodes, c, n->span, n->span + n->n_span, out, bad);
        if (*bad) return NULL;
        out = inner ? inner : mark; /* none of its paths present: not written */
    }
    if (out == start + 1) return NULL;
    *out++ = '}';
    return out;
malformed:
    *bad = 1;
    return NULL;
}

/* The most write_row may write for r: keys and punctuation < 128, two
 * integers < 24 each, the timestamp 26, a value < 40. */
static uint64_t row_room(const struct row *r, const struct tree *t) {
    return 256 + quoted_room(r->n_session) + quoted_room(r->n_kind) + quoted_room(r->n_name) +
           quoted_room(r->n_host) + (uint64_t)r->n_tags + (uint64_t)r->n_data +
           (t ? t->room : 0);
}

/* r as doc_out's JSON at out (row_room bytes free), its data's paths of t
 * only where t is given (fields=); the end, or NULL where the value cannot
 * be written exactly or the data is not JSON as expected. */
static char *write_row(char *out, const struct row *r, struct tree *t) {
    out = PUT_LIT(out, "{\"id\":\"");
    out = put_int(out, r->id);
    out = PUT_LIT(out, "\",\"session\":");
    out = put_quoted(out, r->session, r->n_session);
    out = PUT_LIT(out, ",\"seq\":");
    out = put_int(out, r->seq);
    out = PUT_LIT(out, ",\"kind\":");
    out = put_quoted(out, r->kind, r->n_kind);
    out = PUT_LIT(out, ",\"name\":");
    out = put_quoted(out, r->name, r->n_name);
    out = PUT_LIT(out, ",\"host\":");
    out = r->host ? put_quoted(out, r->host, r->n_host) : PUT_LIT(out, "null");
    out = PUT_LIT(out, ",\"tags\":");
    out = put_raw(out, (const char *)r->tags, (size_t)r->n_tags);
    out = PUT_LIT(out, ",\"timestamp\":");
    out = put_timestamp(out, r->ts);
    if (r->has_value) {
        out = PUT_LIT(out, ",\"value\":");
        out = put_float(out, r->value);
        if (!out) return NULL;
    }
    if (r->data && !t) {
        out = PUT_LIT(out, ",\"data\":");
        out = put_raw(out, (const char *)r->data, (size_t)r->n_data);
    } else if (r->data && r->n_data && r->data[0] == '{') { /* else: no path present */
        char *mark = out;
        int bad = 0;
        out = PUT_LIT(out, ",\"data\":");
        const char *data = (const char *)r->data;
        char *end = put_selected(t->nodes, 0, data, data + r->n_data, out, &bad);
        if (bad) return NULL;
        out = end ? end : mark;
    }
    *out++ = '}';
    return out;
}

/* dw_page(limit, id, session, seq, kind, name, host, tags, ts, value, data,
 * paths, order): an aggregate over the rows of a page query (at least
 * limit + 1 of them where that many match), in their order: the first limit
 * documents' JSON joined with commas (the
 * bytes the answer sends), then a trailer of 32 bytes in the machine's
 * order: int64 how many documents, double ts and int64 id of the last one,
 * double ts of the row after it (NaN if none: no further page). NULL where
 * any document cannot be written exactly (the caller writes the page).
 * paths: NULL for whole documents, or fields='s paths of data (struct
 * tree's spec): each document's data then holds only those.
 * order: 1 (or -1) when the rows must come in ascending (or descending)
 * (ts, id) order, every one of them: else NULL (the caller writes the
 * page), so a page never rests on the order a query plan happens to feed
 * the rows in; 0: not checked.
 *
 * One buffer for the page: group_concat over a per-row function allocated,
 * copied and freed a string per row, and the (ts, id) of the page's edge
 * took a second walk of the index (together ~45 % of the statement). */
struct page {
    char *buf;
    uint64_t len, cap;
    int64_t count, last_id;
    double last_ts, beyond_ts;
    int beyond, odd, nomem;
    int started, selecting; /* started: the paths read (at the first row) */
    int order, seen;        /* seen: prev_ts and prev_id hold the row before */
    double prev_ts;
    int64_t prev_id;
    struct tree tree;
};

#define TRAILER 32

static int reserve(struct page *p, uint64_t need) {
    if (need <= p->cap) return 1;
    uint64_t cap = p->cap ? p->cap : 16384;
    while (cap < need) cap *= 2;
    char *grown = sqlite3_realloc64(p->buf, cap);
    if (!grown) return 0;
    p->buf = grown;
    p->cap = cap;
    return 1;
}

static void dw_page_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    struct page *p = sqlite3_aggregate_context(ctx, (int)sizeof *p);
    if (!p) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    if (!p->started) {
        p->started = 1;
        int64_t order = sqlite3_value_int64(argv[12]);
        p->order = order > 0 ? 1 : order < 0 ? -1 : 0;
        if (sqlite3_value_type(argv[11]) != T_NULL) {
            const unsigned char *spec = sqlite3_value_text(argv[11]);
            int rc = spec ? parse_tree(&p->tree, spec, sqlite3_value_bytes(argv[11])) : ROW_NOMEM;
            p->selecting = 1;
            p->odd = rc == ROW_ODD;
            p->nomem = rc == ROW_NOMEM;
        }
    }
    if (p->odd || p->nomem) return; /* the answer is settled */
    if (p->order) { /* each row strictly after the one before, in the page's order */
        double ts = sqlite3_value_double(argv[8]);
        int64_t id = sqlite3_value_int64(argv[1]);
        if (p->seen) {
            int later = ts > p->prev_ts || (ts == p->prev_ts && id > p->prev_id);
            int earlier = ts < p->prev_ts || (ts == p->prev_ts && id < p->prev_id);
            if (!(p->order > 0 ? later : earlier)) {
                p->odd = 1;
                return;
            }
        }
        p->seen = 1;
        p->prev_ts = ts;
        p->prev_id = id;
    }
    if (p->beyond) return; /* past the row after the page: only checked */
    if (p->count >= sqlite3_value_int64(argv[0])) { /* the row after the page */
        p->beyond = 1;
        p->beyond_ts = sqlite3_value_double(argv[8]);
        return;
    }
    struct row r;
    int rc = read_row(argv + 1, &r, p->selecting);
    if (rc != ROW_OK) {
        p->odd = rc == ROW_ODD;
        p->nomem = rc == ROW_NOMEM;
        return;
    }
    struct tree *t = p->selecting ? &p->tree : NULL;
    if (!reserve(p, p->len + 1 + row_room(&r, t) + TRAILER)) {
        p->nomem = 1;
        return;
    }
    char *out = p->buf + p->len;
    if (p->count) *out++ = ',';
    out = write_row(out, &r, t);
    if (!out) {
        p->odd = 1;
        return;
    }
    p->len = (uint64_t)(out - p->buf);
    p->count++;
    p->last_ts = r.ts;
    p->last_id = r.id;
}

static void dw_page_final(sqlite3_context *ctx) {
    struct page empty = {0}, *p = sqlite3_aggregate_context(ctx, 0);
    if (!p) p = &empty; /* no rows */
    free_tree(&p->tree);
    if (p->nomem || p->odd) {
        sqlite3_free(p->buf);
        if (p->nomem) sqlite3_result_error_nomem(ctx);
        else sqlite3_result_null(ctx);
        return;
    }
    if (!reserve(p, p->len + TRAILER)) {
        sqlite3_free(p->buf);
        sqlite3_result_error_nomem(ctx);
        return;
    }
    double beyond_ts = p->beyond ? p->beyond_ts : NAN;
    char *out = p->buf + p->len;
    memcpy(out, &p->count, 8);
    memcpy(out + 8, &p->last_ts, 8);
    memcpy(out + 16, &p->last_id, 8);
    memcpy(out + 24, &beyond_ts, 8);
    sqlite3_result_blob64(ctx, p->buf, p->len + TRAILER, sqlite3_free); /* SQLite frees it */
}

static int dw_init(sqlite3 *db, char **err, const void *api) {
    (void)err;
    (void)api;
    return sqlite3_create_function_v2(db, "dw_page", 13, UTF8 | INNOCUOUS, NULL, NULL,
                                      dw_page_step, dw_page_final, NULL);
}

/* Registers dw_page for every connection opened from now on, in this
 * process; SQLite's result code (0: done). */
int dw_install(void) { return sqlite3_auto_extension((void (*)(void))dw_init); }
