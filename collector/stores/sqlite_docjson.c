/*
 * dw_doc(): one stored document as the API's JSON, inside SQLite.
 *
 * Why C: a GET /metrics page is rendered by SQLite in one statement
 * (sqlite_page.py). Written in SQL, each row took ~20 string
 * concatenations, four json_quote calls, strftime and printf: 5-6 us a
 * document, 80 % of an uncached page's CPU. Here the row is written once,
 * into one buffer: well under a microsecond.
 *
 * The output is views.doc_out's JSON, byte for byte, as orjson writes it
 * (tests/collector/test_sqlite_page.py holds the two together):
 *   {"id":"<id>","session":s,"seq":n,"kind":s,"name":s,"host":s|null,
 *    "tags":<as stored>,"timestamp":"YYYY-MM-DDTHH:MM:SS.mmmZ"
 *    [,"value":v][,"data":<as stored>]}
 * A row it cannot write exactly so answers NULL (the caller then renders
 * the page in Python), by the same rules as sqlite_page.ODD: a value that
 * is not 0 and not 1e-4 <= |v| < 1e15 or needs more than 15 digits, a time
 * before 1 s or from year 10000, a seq that is not an integer, a JSON null
 * as data, a column of an unexpected type.
 *
 * No sqlite3.h: the few entry points used are declared here (SQLite's C
 * interface is stable), so a C compiler is all the build needs. The library
 * linked is the one Python's sqlite3 module loaded (libsqlite3.so.0), and
 * dw_install() registers dw_doc for every connection opened after it
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
extern void sqlite3_result_text64(sqlite3_context *, const char *, uint64_t, void (*)(void *),
                                  unsigned char);
extern void sqlite3_result_error_nomem(sqlite3_context *);
extern void *sqlite3_malloc64(uint64_t);
extern void sqlite3_free(void *);
extern int sqlite3_auto_extension(void (*)(void));

enum { T_INTEGER = 1, T_FLOAT = 2, T_TEXT = 3, T_NULL = 5 };
enum { UTF8 = 1, DETERMINISTIC = 0x800, INNOCUOUS = 0x200000 };

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

/* dw_doc(id, session, seq, kind, name, host, tags, ts, value, data) */
static void dw_doc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    sqlite3_value *id = argv[0], *session = argv[1], *seq = argv[2], *kind = argv[3],
                  *name = argv[4], *host = argv[5], *tags = argv[6], *ts = argv[7],
                  *value = argv[8], *data = argv[9];
    int ts_type = sqlite3_value_type(ts), host_type = sqlite3_value_type(host);
    int value_type = sqlite3_value_type(value), data_type = sqlite3_value_type(data);
    if (sqlite3_value_type(id) != T_INTEGER || sqlite3_value_type(seq) != T_INTEGER ||
        sqlite3_value_type(session) != T_TEXT || sqlite3_value_type(kind) != T_TEXT ||
        sqlite3_value_type(name) != T_TEXT || sqlite3_value_type(tags) != T_TEXT ||
        (host_type != T_TEXT && host_type != T_NULL) ||
        (ts_type != T_FLOAT && ts_type != T_INTEGER) ||
        (value_type != T_FLOAT && value_type != T_NULL) ||
        (data_type != T_TEXT && data_type != T_NULL)) {
        sqlite3_result_null(ctx);
        return;
    }
    double t = sqlite3_value_double(ts);
    if (!(t >= 1 && t < TS_END)) {
        sqlite3_result_null(ctx);
        return;
    }
    /* text first, then its length (SQLite's documented order) */
    const unsigned char *s_session = sqlite3_value_text(session);
    int n_session = sqlite3_value_bytes(session);
    const unsigned char *s_kind = sqlite3_value_text(kind);
    int n_kind = sqlite3_value_bytes(kind);
    const unsigned char *s_name = sqlite3_value_text(name);
    int n_name = sqlite3_value_bytes(name);
    const unsigned char *s_host = host_type == T_TEXT ? sqlite3_value_text(host) : NULL;
    int n_host = host_type == T_TEXT ? sqlite3_value_bytes(host) : 0;
    const unsigned char *s_tags = sqlite3_value_text(tags);
    int n_tags = sqlite3_value_bytes(tags);
    const unsigned char *s_data = data_type == T_TEXT ? sqlite3_value_text(data) : NULL;
    int n_data = data_type == T_TEXT ? sqlite3_value_bytes(data) : 0;
    if (!s_session || !s_kind || !s_name || !s_tags || (host_type == T_TEXT && !s_host) ||
        (data_type == T_TEXT && !s_data)) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    if (s_data && n_data == 4 && memcmp(s_data, "null", 4) == 0) {
        sqlite3_result_null(ctx); /* doc_out leaves "data" out for null */
        return;
    }
    /* keys and punctuation < 128, two integers < 24 each, timestamp 26, value < 40 */
    uint64_t room = 256 + quoted_room(n_session) + quoted_room(n_kind) + quoted_room(n_name) +
                    quoted_room(n_host) + (uint64_t)n_tags + (uint64_t)n_data;
    char *buf = sqlite3_malloc64(room);
    if (!buf) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    char *out = buf;
    out = PUT_LIT(out, "{\"id\":\"");
    out = put_int(out, sqlite3_value_int64(id));
    out = PUT_LIT(out, "\",\"session\":");
    out = put_quoted(out, s_session, n_session);
    out = PUT_LIT(out, ",\"seq\":");
    out = put_int(out, sqlite3_value_int64(seq));
    out = PUT_LIT(out, ",\"kind\":");
    out = put_quoted(out, s_kind, n_kind);
    out = PUT_LIT(out, ",\"name\":");
    out = put_quoted(out, s_name, n_name);
    out = PUT_LIT(out, ",\"host\":");
    out = s_host ? put_quoted(out, s_host, n_host) : PUT_LIT(out, "null");
    out = PUT_LIT(out, ",\"tags\":");
    out = put_raw(out, (const char *)s_tags, (size_t)n_tags);
    out = PUT_LIT(out, ",\"timestamp\":");
    out = put_timestamp(out, t);
    if (value_type == T_FLOAT) {
        out = PUT_LIT(out, ",\"value\":");
        out = put_float(out, sqlite3_value_double(value));
        if (!out) {
            sqlite3_free(buf);
            sqlite3_result_null(ctx);
            return;
        }
    }
    if (s_data) {
        out = PUT_LIT(out, ",\"data\":");
        out = put_raw(out, (const char *)s_data, (size_t)n_data);
    }
    *out++ = '}';
    sqlite3_result_text64(ctx, buf, (uint64_t)(out - buf), sqlite3_free, UTF8);
}

static int dw_init(sqlite3 *db, char **err, const void *api) {
    (void)err;
    (void)api;
    return sqlite3_create_function_v2(db, "dw_doc", 10, UTF8 | DETERMINISTIC | INNOCUOUS, NULL,
                                      dw_doc, NULL, NULL, NULL);
}

/* Registers dw_doc for every connection opened from now on, in this
 * process; SQLite's result code (0: done). */
int dw_install(void) { return sqlite3_auto_extension((void (*)(void))dw_init); }
