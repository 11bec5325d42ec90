/* test_db.c: the parts of db.c that need no server: how a MongoDB URI is
 * shown. The property tests draw thousands of passwords and credential
 * option values from a seeded PRNG (so a failure replays) and check that no
 * printed form of the URI ever contains one: not ww_db_redact_uri, not the
 * start-up settings lines, not what ww_db_new and its monitors log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"

/* ---- helpers --------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* Characters that break text scanners: URI delimiters, escapes, separators. */
static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "??@@//::%%&&==,;+!$*()'~-._ #";

/* A random secret, 10..29 characters, with at least one of ?@/:%&= in it. */
static void random_secret(char *out) {
    size_t n = 10 + rng() % 20;
    for (size_t i = 0; i < n; i++) out[i] = alphabet[rng() % (sizeof alphabet - 1)];
    static const char special[] = "?@/:%&=";
    out[rng() % n] = special[rng() % (sizeof special - 1)];
    out[n] = '\0';
}

/* Appends s to out as a URI would carry it: each character either as written
 * or %-escaped, at random (users write both; the unescaped ones are what
 * text scanners got wrong). Copies what was appended to written. */
static void append_uri_text(char *out, size_t cap, const char *s, char *written, size_t wcap) {
    size_t start = strlen(out), len = start;
    for (; *s && len + 4 < cap; s++) {
        bool plain = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9');
        if (plain || rng() % 4 == 0) out[len++] = *s;
        else len += (size_t)snprintf(out + len, cap - len, "%%%02X", (unsigned char)*s);
    }
    out[len] = '\0';
    snprintf(written, wcap, "%s", out + start);
}

typedef struct {
    char secret[32], value[32];           /* the password and a credential option value */
    char secret_text[96], value_text[96]; /* each as written in the URI */
} secrets_t;

/* A URI with a random password and a random credential option value. */
static void random_uri(char *uri, size_t cap, secrets_t *s) {
    static const char *const options[] = {"tlsCertificateKeyFilePassword=", "sslClientCertificateKeyPassword=",
                                          "authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:",
                                          "authMechanismProperties=SERVICE_NAME:"};
    snprintf(uri, cap, "%s", rng() % 8 ? "mongodb://user:" : "mongodb+srv://user:");
    random_secret(s->secret);
    random_secret(s->value);
    append_uri_text(uri, cap, s->secret, s->secret_text, sizeof s->secret_text);
    size_t len = strlen(uri);
    snprintf(uri + len, cap - len, "@%s/wallet?appname=w&%s", rng() % 2 ? "db1:27017,db2" : "db.example.com",
             options[rng() % 4]);
    append_uri_text(uri, cap, s->value, s->value_text, sizeof s->value_text);
}

/* Fails when shown carries either secret, decoded or as written. */
static void assert_hidden(const char *shown, const secrets_t *s, const char *uri) {
    const char *const all[] = {s->secret, s->value, s->secret_text, s->value_text};
    for (size_t i = 0; i < 4; i++)
        if (strstr(shown, all[i])) fail_msg("secret \"%s\" of %s shown in:\n%s", all[i], uri, shown);
}

static char *capture_stderr_begin(int *saved, char *path) {
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    *saved = dup(2);
    dup2(fd, 2);
    close(fd);
    return path;
}

static char *capture_stderr_end(int saved, const char *path) {
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    assert_non_null(text);
    text[fread(text, 1, (size_t)n, f)] = '\0';
    fclose(f);
    unlink(path);
    return text;
}

/* ---- table ----------------------------------------------------------- */

static void test_db_redact_uri_cases(void **state) {
    (void)state;
    static const struct {
        const char *uri, *want;
    } cases[] = {
        /* issue 14: the old scanner stopped at the first '?' */
        {"mongodb://user:s3c?retPW@host/db", "mongodb://user:***@host:27017/db"},
        {"mongodb://user:s3c%3FretPW@h1,h2:27018/db?replicaSet=rs&maxPoolSize=5",
         "mongodb://user:***@h1:27017,h2:27018/db?replicaset=rs&maxpoolsize=5"},
        {"mongodb://h/db?tlsCertificateKeyFilePassword=TlsPw&tls=true&appname=app",
         "mongodb://h:27017/db?tlscertificatekeyfilepassword=***&tls=true&appname=app"},
        {"mongodb://h/db?sslClientCertificateKeyPassword=SslPw",
         "mongodb://h:27017/db?tlscertificatekeyfilepassword=***"},
        {"mongodb://AKIA:sec@h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:Tok%3Fen",
         "mongodb://AKIA:***@h:27017/?authmechanism=MONGODB-AWS&authmechanismproperties=***"},
        {"mongodb+srv://u:p%40ss@cluster0.example.com/wallet", "mongodb+srv://u:***@cluster0.example.com/wallet?tls=true"},
        {"mongodb://127.0.0.1:27017/wallet", "mongodb://127.0.0.1:27017/wallet"},
        {"mongodb://u@h/db?authSource=admin", "mongodb://u@h:27017/db?authsource=admin"},
        {"mongodb://u:pw@%2Ftmp%2Fmongodb-27017.sock/db", "mongodb://u:***@/tmp/mongodb-27017.sock/db"},
        {"mongodb://u:@h/db", "mongodb://u:***@h:27017/db"}, /* an empty password is one */
        {"mongodb://walletapp:Sup3rS3cretPw@127.0.0.1:27017/wallet?authSource=admin",
         "mongodb://walletapp:***@127.0.0.1:27017/wallet?authsource=admin"},
        {"mongodb+srv://app:s3cret@cluster0.example.net/wallet?retryWrites=true",
         "mongodb+srv://app:***@cluster0.example.net/wallet?retrywrites=true&tls=true"},
        {"mongodb://h/db?authMechanismProperties=SERVICE_NAME:a@b", "mongodb://h:27017/db?authmechanismproperties=***"},
        /* what libmongoc makes of these: user "h", password "27017?x=a", host "b" */
        {"mongodb://h:27017?x=a@b", "mongodb://h:***@b:27017/"},
        {"mongodb://h?authSource=a@b", "mongodb://***@b:27017/"},
        /* unparseable, or parsed into a host that holds half the password */
        {"mongodb://user:p@ss@host/db", "(not a valid MongoDB URI, not shown)"},
        {"mongodb://user:p:ss@host/db", "(not a valid MongoDB URI, not shown)"},
        {"mongodb://u:p/q@h/db", "(not a valid MongoDB URI, not shown)"},
        {"mongodb://h/db?w=majority&readPreference=Hunter2", "(not a valid MongoDB URI, not shown)"},
        {"postgres://user:pw@h/db", "(not a valid MongoDB URI, not shown)"},
        {"", "(not a valid MongoDB URI, not shown)"},
        {NULL, "(not a valid MongoDB URI, not shown)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[512];
        ww_db_redact_uri(cases[i].uri, out, sizeof out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("%s\n  shown as %s\n  want     %s", cases[i].uri ? cases[i].uri : "NULL", out, cases[i].want);
    }
    /* truncation keeps the buffer terminated and never writes past it */
    char small[12];
    memset(small, 'x', sizeof small);
    ww_db_redact_uri("mongodb://user:s3c?retPW@host/db", small, 10);
    assert_string_equal(small, "mongodb:/");
    assert_int_equal(small[10], 'x');
    ww_db_redact_uri("mongodb://h/db", small, 0);
    assert_int_equal(small[0], 'm');
}

/* ---- properties ------------------------------------------------------ */

static void test_db_redact_uri_never_shows_a_secret(void **state) {
    (void)state;
    rng_state = 0x14C0FFEE14ULL;
    int parsed = 0;
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        secrets_t s;
        char uri[512], shown[512];
        random_uri(uri, sizeof uri, &s);
        ww_db_redact_uri(uri, shown, sizeof shown);
        assert_hidden(shown, &s, uri);
        parsed += strncmp(shown, "mongodb", 7) == 0;
    }
    /* both paths are exercised: most parse, many do not */
    if (parsed < N / 10 || parsed > N - N / 10) fail_msg("%d of %d URIs parsed", parsed, N);
}

static void test_db_config_log_never_shows_a_secret(void **state) {
    (void)state;
    rng_state = 0x14DEADBEEFULL;
    ww_log_set_level(WW_LOG_INFO);
    for (int i = 0; i < 1000; i++) {
        secrets_t s;
        ww_config_t cfg;
        ww_config_defaults(&cfg);
        random_uri(cfg.mongodb_uri, sizeof cfg.mongodb_uri, &s);
        char path[] = "/tmp/ww-test-db-log-XXXXXX";
        int saved;
        capture_stderr_begin(&saved, path);
        ww_config_log(&cfg);
        char *text = capture_stderr_end(saved, path);
        assert_non_null(strstr(text, "setting MONGODB_URI="));
        assert_hidden(text, &s, cfg.mongodb_uri);
        free(text);
    }
}

/* ww_db_new's own lines: the parse, the pool, the monitors' "error host=..."
 * line for a server that is not there, the error for a URI it refuses. */
static void test_db_new_never_logs_a_secret(void **state) {
    (void)state;
    rng_state = 0x14BADC0DEULL;
    ww_log_set_level(WW_LOG_DEBUG);
    int created = 0;
    for (int i = 0; i < 40; i++) {
        secrets_t s;
        char uri[512];
        random_secret(s.secret);
        random_secret(s.value);
        snprintf(uri, sizeof uri, "mongodb://user:");
        append_uri_text(uri, sizeof uri, s.secret, s.secret_text, sizeof s.secret_text);
        size_t len = strlen(uri);
        /* port 1 on loopback: refused at once, so the monitors log an error */
        snprintf(uri + len, sizeof uri - len,
                 "@127.0.0.1:1/wallet?serverSelectionTimeoutMS=200&heartbeatFrequencyMS=500&"
                 "tlsCertificateKeyFilePassword=");
        append_uri_text(uri, sizeof uri, s.value, s.value_text, sizeof s.value_text);
        char path[] = "/tmp/ww-test-db-new-XXXXXX";
        int saved;
        capture_stderr_begin(&saved, path);
        ww_error_t err;
        ww_error_clear(&err);
        ww_db_t *db = ww_db_new(uri, NULL, &err);
        if (db) {
            created++;
            ww_error_t ping_err;
            assert_false(ww_db_ping(db, &ping_err)); /* waits out one server selection */
            ww_log_emit(WW_LOG_ERROR, "test", ping_err.message, NULL, 0);
            ww_db_destroy(db);
        } else {
            ww_log_emit(WW_LOG_ERROR, "test", err.message, NULL, 0);
        }
        char *text = capture_stderr_end(saved, path);
        assert_hidden(text, &s, uri);
        free(text);
    }
    assert_true(created > 0);
    ww_log_set_level(WW_LOG_WARN);
}

int main(void) {
    ww_log_set_level(WW_LOG_WARN);
    ww_db_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_db_redact_uri_cases),
        cmocka_unit_test(test_db_redact_uri_never_shows_a_secret),
        cmocka_unit_test(test_db_config_log_never_shows_a_secret),
        cmocka_unit_test(test_db_new_never_logs_a_secret),
    };
    int rc = cmocka_run_group_tests_name("db", tests, NULL, NULL);
    ww_db_global_cleanup();
    return rc;
}
