/* it_replay.c: batch reprocessing on the real stack: replay by offsets and by
 * timestamp, a whole-topic replay twice giving an identical database, the
 * live group's offsets left alone, dead-letter re-drive after a fix, and
 * apply over an NDJSON file with good and bad lines. */
#include <bson/bson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "invite.h"
#include "migrate.h"
#include "wallet.h"

static h_env_t env;
static char out_path[256], err_path[256], log_path[256];

static int setup(void **state) {
    (void)state;
    h_env_init(&env, "replay");
    snprintf(out_path, sizeof out_path, "/tmp/ww-it-%s.out", env.run_id);
    snprintf(err_path, sizeof err_path, "/tmp/ww-it-%s.err", env.run_id);
    snprintf(log_path, sizeof log_path, "/tmp/ww-it-%s.log", env.run_id);
    ww_error_t err;
    assert_true(ww_migrate_run(env.db, NULL, NULL, &err));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    h_env_destroy(&env);
    return 0;
}

static void seed(const char *owner_hex, int64_t balance) {
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, owner_hex);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_INT64(&doc, "availablePaise", balance);
    BSON_APPEND_INT64(&doc, "version", 0);
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, WW_WALLETS, &doc, &dup, &err));
    bson_destroy(&doc);
}

static void send(const char *key, const char *owner, const char *type, long amount) {
    char v[400];
    snprintf(v, sizeof v, "{\"type\":\"%s\",\"idempotencyKey\":\"%s-%s\",\"ownerUserId\":\"%s\","
             "\"amountPaise\":%ld}", type, env.run_id, key, owner, amount);
    h_produce(&env, env.commands_topic, owner, v);
}

static const char *const DIGEST[] = {WW_WALLETS, WW_TRANSACTIONS};

/* Runs the CLI with WW_PROGRESS=1 and up to two more settings (NULL: none). */
static int cli_with(const char *const *args, const char *set1, const char *set2) {
    unlink(out_path);
    unlink(err_path);
    const char *extra[] = {"WW_PROGRESS=1", set1, set2, NULL};
    int st = h_run_cli(&env, args, extra, NULL, out_path, err_path, 120000);
    char *o = h_read_file(out_path), *e = h_read_file(err_path);
    print_message("replay exit %d\n--- stdout\n%s--- stderr (tail)\n%s\n", st, o ? o : "",
                  e && strlen(e) > 600 ? e + strlen(e) - 600 : (e ? e : ""));
    free(o);
    free(e);
    return st;
}

static int cli(const char *const *args) { return cli_with(args, NULL, NULL); }

/* "  applied    12" in the summary */
static long summary_count(const char *path, const char *outcome) {
    char *text = h_read_file(path);
    assert_non_null(text);
    char needle[64];
    snprintf(needle, sizeof needle, "  %s ", outcome);
    const char *p = strstr(text, needle);
    long n = p ? strtol(p + strlen(needle), NULL, 10) : -1;
    free(text);
    return n;
}

#define O1 "e1000000000000000000000e"
#define O2 "e2000000000000000000000e"

static void test_replay_ranges_twice_identical_and_live_group_untouched(void **state) {
    (void)state;
    seed(O1, 10000);
    seed(O2, 10000);
    /* batch A, processed live */
    for (int i = 0; i < 12; i++) {
        char k[16];
        snprintf(k, sizeof k, "a%d", i);
        send(k, i % 2 ? O1 : O2, i % 3 ? "wallet.debit" : "wallet.credit", 100 + i);
    }
    h_produce(&env, env.commands_topic, "bad", "{\"broken\":");
    h_flush(&env);
    pid_t pid = h_worker_start(&env, log_path, NULL);
    int64_t deadline = h_now_ms() + 60000;
    while (h_count(&env, WW_TRANSACTIONS, NULL) < 12 && h_now_ms() < deadline) h_sleep_ms(100);
    assert_int_equal(h_count(&env, WW_TRANSACTIONS, NULL), 12);
    h_sleep_ms(1500); /* results acknowledged, offsets committed */
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    char *before = h_digest(&env, DIGEST, 2, NULL);

    /* the whole topic, twice: nothing changes */
    const char *all[] = {"replay", "--topic", env.commands_topic, "--from-beginning", NULL};
    assert_int_equal(cli(all), 0);
    assert_int_equal(summary_count(out_path, "duplicate"), 12);
    assert_int_equal(summary_count(out_path, "invalid"), 1);
    char *after1 = h_digest(&env, DIGEST, 2, NULL);
    assert_string_equal(before, after1);
    assert_int_equal(cli(all), 0);
    char *after2 = h_digest(&env, DIGEST, 2, NULL);
    assert_string_equal(before, after2);

    /* by offsets: partition ranges are [from, to) */
    const char *offs[] = {"replay", "--topic", env.commands_topic, "--from-offsets",
                          "0:0,1:0,2:0,3:0", "--to-offsets", "0:1,1:1,2:1,3:1", NULL};
    assert_int_equal(cli(offs), 0);
    long n_first = summary_count(out_path, "duplicate") + summary_count(out_path, "invalid") + 1;
    assert_true(n_first >= 2 && n_first <= 5); /* at most one message per partition */

    /* batch B after a timestamp, not processed by the live worker */
    h_sleep_ms(1200);
    char ts[40];
    ww_clock_format_iso8601(ww_clock_now_ms() - 200, ts, sizeof ts);
    h_sleep_ms(300);
    for (int i = 0; i < 5; i++) {
        char k[16];
        snprintf(k, sizeof k, "b%d", i);
        send(k, O1, "wallet.credit", 7);
    }
    h_flush(&env);
    const char *dry[] = {"replay", "--topic", env.commands_topic, "--from-timestamp", ts,
                         "--dry-run", NULL};
    assert_int_equal(cli(dry), 0);
    assert_int_equal(summary_count(out_path, "applied"), 5); /* predicted */
    assert_int_equal(h_count(&env, WW_TRANSACTIONS, NULL), 12);                    /* and nothing written */
    const char *from_ts[] = {"replay", "--topic", env.commands_topic, "--from-timestamp", ts, NULL};
    assert_int_equal(cli(from_ts), 0);
    assert_int_equal(summary_count(out_path, "applied"), 5);
    assert_int_equal(summary_count(out_path, "duplicate"), -1); /* batch A not read */
    assert_int_equal(h_count(&env, WW_TRANSACTIONS, NULL), 17);

    /* the live group resumes where it committed: it still reads batch B */
    unlink(log_path);
    const char *dbg[] = {"LOG_LEVEL=debug", NULL};
    pid = h_worker_start(&env, log_path, dbg);
    deadline = h_now_ms() + 60000;
    while (h_count_in_file(log_path, "module=wallet msg=duplicate key=") < 5 && h_now_ms() < deadline)
        h_sleep_ms(200);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    assert_int_equal(h_count_in_file(log_path, "module=wallet msg=duplicate key="), 5);
    assert_int_equal(h_count_in_file(log_path, "module=wallet msg=applied key="), 0);

    /* bad ranges are usage errors */
    const char *bad[] = {"replay", "--topic", env.commands_topic, "--from-offsets", "x", NULL};
    assert_int_equal(cli(bad), 2);
    const char *bad_ts[] = {"replay", "--topic", env.commands_topic, "--to-timestamp", "yesterday", NULL};
    assert_int_equal(cli(bad_ts), 2);
    bson_free(before);
    bson_free(after1);
    bson_free(after2);
}

/* A wallet whose stored balance the worker cannot use sends its commands to
 * the dead-letter topic; once the data is fixed, replaying that topic
 * applies them. */
static void test_replay_dead_letters_redriven_after_a_fix(void **state) {
    (void)state;
    const char *o = "e3000000000000000000000e";
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t id, owner;
    bson_oid_init(&id, NULL);
    bson_oid_init_from_string(&owner, o);
    BSON_APPEND_OID(&doc, "_id", &id);
    BSON_APPEND_OID(&doc, "ownerUserId", &owner);
    BSON_APPEND_DOUBLE(&doc, "availablePaise", 500.25); /* unusable: not whole paise */
    bool dup;
    ww_error_t err;
    assert_true(ww_db_insert_one(env.db, WW_WALLETS, &doc, &dup, &err));
    bson_destroy(&doc);
    send("redrive", o, "wallet.debit", 200);
    h_flush(&env);
    unlink(log_path);
    pid_t pid = h_worker_start(&env, log_path, NULL);
    int64_t deadline = h_now_ms() + 60000;
    while (h_count_in_file(log_path, "dead-lettering") < 1 && h_now_ms() < deadline)
        h_sleep_ms(100);
    h_sleep_ms(1500);
    assert_int_equal(h_worker_stop(pid, SIGTERM, 15000), 0);
    assert_int_equal(h_count_in_file(log_path, "dead-lettering"), 1);

    /* the fix */
    bson_t filter = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    BSON_APPEND_OID(&filter, "_id", &id);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_INT64(&set, "availablePaise", 500);
    bson_append_document_end(&upd, &set);
    assert_true(ww_db_update_one(env.db, WW_WALLETS, &filter, &upd, NULL, NULL, NULL, &err));
    bson_destroy(&filter);
    bson_destroy(&upd);

    const char *redrive[] = {"replay", "--topic", env.dlq_topic, NULL};
    assert_int_equal(cli(redrive), 0);
    assert_true(summary_count(out_path, "applied") >= 1);
    bson_t q = BSON_INITIALIZER, found_doc;
    char key[160];
    snprintf(key, sizeof key, "%s-redrive", env.run_id);
    BSON_APPEND_UTF8(&q, "idempotencyKey", key);
    bool found;
    assert_true(ww_db_find_one(env.db, WW_TRANSACTIONS, &q, NULL, &found_doc, &found, &err));
    assert_true(found);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &found_doc, "status"));
    assert_string_equal(bson_iter_utf8(&it, NULL), "applied");
    assert_true(bson_iter_init_find(&it, &found_doc, "balanceAfterPaise"));
    assert_int_equal(bson_iter_as_int64(&it), 300);
    bson_destroy(&found_doc);
    bson_destroy(&q);
}

static void test_replay_apply_file_with_good_and_bad_lines(void **state) {
    (void)state;
    const char *o = "e4000000000000000000000e";
    seed(o, 1000);
    char path[256];
    snprintf(path, sizeof path, "/tmp/ww-it-%s.ndjson", env.run_id);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-f1\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":100}\n", env.run_id, o);
    fprintf(f, "\n");
    fprintf(f, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-f2\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":\"100\"}\n", env.run_id, o);
    fprintf(f, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s-f3\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":5}", env.run_id, o); /* no final newline */
    fclose(f);
    const char *args[] = {"apply", "--file", path, NULL};
    assert_int_equal(cli(args), 0);
    char *out = h_read_file(out_path), *errs = h_read_file(err_path);
    /* results on stdout, one per message, blank line skipped */
    int lines = 0;
    for (const char *p = out; (p = strchr(p, '\n')); p++) lines++;
    assert_int_equal(lines, 3);
    assert_non_null(strstr(out, "\"status\":\"applied\""));
    /* the bad line named by its number */
    char want[300];
    snprintf(want, sizeof want, "%s:3: wrong_type: amountPaise", path);
    assert_non_null(strstr(errs, want));
    assert_int_equal(summary_count(err_path, "applied"), 2);
    assert_int_equal(summary_count(err_path, "invalid"), 1);
    free(out);
    free(errs);
    /* again: every line already decided */
    assert_int_equal(cli(args), 0);
    assert_int_equal(summary_count(err_path, "duplicate"), 2);
    /* standard input and a missing file */
    const char *stdin_args[] = {"apply", "--file", "-", NULL};
    unlink(out_path);
    assert_int_equal(h_run_cli(&env, stdin_args, NULL, path, out_path, err_path, 60000), 0);
    const char *missing[] = {"apply", "--file", "/nonexistent/x.ndjson", NULL};
    assert_int_equal(cli(missing), 1);
    unlink(path);
}

/* apply --dry-run printed no rejections at all (the real run prints
 * FILE:LINE: code: reason); apply exited 0 however many lines were rejected,
 * with no way for a pipeline to tell. --strict makes rejections exit 1. */
static void test_replay_apply_dry_run_and_strict_report_rejections(void **state) {
    (void)state;
    const char *o = "e6000000000000000000000e";
    seed(o, 1000);
    char path[256], good[256], want[300];
    snprintf(path, sizeof path, "/tmp/ww-it-%s-strict.ndjson", env.run_id);
    snprintf(good, sizeof good, "/tmp/ww-it-%s-good.ndjson", env.run_id);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s-s1\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":7}\n", env.run_id, o);
    fprintf(f, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-s2\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":\"100\"}\n", env.run_id, o);
    fprintf(f, "not json\n");
    fclose(f);
    f = fopen(good, "w");
    fprintf(f, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s-g1\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":3}\n", env.run_id, o);
    fclose(f);

    /* the dry run names the same lines as the real run, and writes nothing */
    const char *dry[] = {"apply", "--file", path, "--dry-run", NULL};
    assert_int_equal(cli(dry), 0);
    char *errs = h_read_file(err_path);
    snprintf(want, sizeof want, "%s:2: wrong_type: amountPaise", path);
    assert_non_null(strstr(errs, want));
    snprintf(want, sizeof want, "%s:3: invalid_json: ", path);
    assert_non_null(strstr(errs, want));
    free(errs);
    assert_int_equal(summary_count(err_path, "applied"), 1); /* predicted */
    char key[128];
    snprintf(key, sizeof key, "%s-s1", env.run_id);
    bson_t *q = BCON_NEW("idempotencyKey", BCON_UTF8(key));
    assert_int_equal(h_count(&env, WW_TRANSACTIONS, q), 0);

    /* --strict: the good line is applied, the run exits 1 for the rejected ones */
    const char *strict[] = {"apply", "--file", path, "--strict", NULL};
    assert_int_equal(cli(strict), 1);
    assert_int_equal(h_count(&env, WW_TRANSACTIONS, q), 1);
    bson_destroy(q);
    errs = h_read_file(err_path);
    snprintf(want, sizeof want, "%s:2: wrong_type: amountPaise", path);
    assert_non_null(strstr(errs, want));
    free(errs);
    const char *dry_strict[] = {"apply", "--file", path, "--dry-run", "--strict", NULL};
    assert_int_equal(cli(dry_strict), 1);
    /* without --strict rejections still exit 0 (the default is kept) */
    const char *lax[] = {"apply", "--file", path, NULL};
    assert_int_equal(cli(lax), 0);
    /* nothing rejected: --strict exits 0 */
    const char *clean[] = {"apply", "--file", good, "--strict", NULL};
    assert_int_equal(cli(clean), 0);
    /* usage errors exit 2: no --file, --strict on replay */
    const char *nofile[] = {"apply", "--strict", NULL};
    assert_int_equal(cli(nofile), 2);
    const char *replay_strict[] = {"replay", "--topic", env.commands_topic, "--strict", NULL};
    assert_int_equal(cli(replay_strict), 2);
    unlink(path);
    unlink(good);
}

/* The summary's outcome table ("name count" lines after the "outcome"
 * header), one "name=count;" per outcome: the same text for the same counts. */
static char *outcome_table(const char *path) {
    char *text = h_read_file(path);
    assert_non_null(text);
    const char *p = strstr(text, "  outcome ");
    assert_non_null(p);
    p = strchr(p, '\n');
    char *out = calloc(1, 4096);
    size_t n = 0;
    while (p && p[1] == ' ' && p[2] == ' ' && p[3] >= 'a' && p[3] <= 'z') {
        char name[64];
        long count = 0;
        const char *q = p + 3;
        size_t len = strcspn(q, " ");
        if (len >= sizeof name) break;
        memcpy(name, q, len);
        name[len] = '\0';
        count = strtol(q + len, NULL, 10);
        n += (size_t)snprintf(out + n, 4096 - n, "%s=%ld;", name, count);
        p = strchr(q, '\n');
    }
    free(text);
    return out;
}

static void line(FILE *f, const char *key, const char *owner, const char *type, long amount) {
    fprintf(f, "{\"type\":\"wallet.%s\",\"idempotencyKey\":\"%s-%s\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":%ld}\n", type, env.run_id, key, owner, amount);
}

/* A dry run predicted each command alone against the stored state, so the
 * commands of one file ignored each other: a debit after the credit that
 * pays for it was predicted insufficient_funds, the same key twice applied
 * twice, two debits that do not both fit both applied, a conflicting repeat
 * applied, a second wallet_not_found not a duplicate. The dry run must
 * predict what the real apply of the same file then does (in one batch and
 * one command per batch), and write nothing. */
static void test_replay_apply_dry_run_predicts_what_apply_does(void **state) {
    (void)state;
    const char *oa = "e700000000000000000000aa", *ob = "e700000000000000000000bb",
               *oc = "e700000000000000000000cc", *od = "e700000000000000000000dd",
               *oe = "e700000000000000000000ee"; /* no wallet */
    seed(oa, 0);
    seed(ob, 1000);
    seed(oc, 1000);
    seed(od, 1000);
    char path[256];
    snprintf(path, sizeof path, "/tmp/ww-it-%s-predict.ndjson", env.run_id);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    line(f, "dr1", oa, "credit", 500); /* pays for the next one */
    line(f, "dr2", oa, "debit", 300);
    line(f, "dr3", ob, "debit", 100);
    line(f, "dr3", ob, "debit", 100); /* the same command again: duplicate */
    line(f, "dr4", oc, "debit", 700);
    line(f, "dr5", oc, "debit", 700); /* does not fit after dr4 */
    line(f, "dr6", od, "debit", 50);
    line(f, "dr6", od, "debit", 60);  /* same key, other content: conflict */
    line(f, "dr7", oe, "debit", 10);  /* wallet_not_found */
    line(f, "dr7", oe, "debit", 10);  /* ... then a duplicate of it */
    fclose(f);
    char *before = h_digest(&env, DIGEST, 2, NULL);

    const char *dry[] = {"apply", "--file", path, "--dry-run", NULL};
    assert_int_equal(cli(dry), 0);
    char *dry_batch = outcome_table(err_path);
    assert_int_equal(cli_with(dry, "BATCH_MAX=1", "WORKER_THREADS=1"), 0);
    char *dry_single = outcome_table(err_path);
    char *after_dry = h_digest(&env, DIGEST, 2, NULL);
    assert_string_equal(before, after_dry); /* nothing written */

    const char *real[] = {"apply", "--file", path, NULL};
    assert_int_equal(cli(real), 0);
    assert_int_equal(summary_count(err_path, "applied"), 5);
    assert_int_equal(summary_count(err_path, "duplicate"), 2);
    assert_int_equal(summary_count(err_path, "insufficient_funds"), 1);
    assert_int_equal(summary_count(err_path, "conflict"), 1);
    assert_int_equal(summary_count(err_path, "wallet_not_found"), 1);
    char *applied = outcome_table(err_path);
    assert_string_equal(dry_batch, applied);
    assert_string_equal(dry_single, applied);

    /* again, after it was applied: everything is decided already */
    char *before2 = h_digest(&env, DIGEST, 2, NULL);
    assert_int_equal(cli(dry), 0);
    char *dry_again = outcome_table(err_path);
    char *after2 = h_digest(&env, DIGEST, 2, NULL);
    assert_string_equal(before2, after2);
    assert_int_equal(cli(real), 0);
    assert_int_equal(summary_count(err_path, "duplicate"), 9);
    char *applied_again = outcome_table(err_path);
    assert_string_equal(dry_again, applied_again);
    free(before);
    free(after_dry);
    free(dry_batch);
    free(dry_single);
    free(applied);
    free(before2);
    free(after2);
    free(dry_again);
    free(applied_again);
    unlink(path);
}

/* The same for invite events: an invite created earlier in the file was
 * "not found" for the events after it. */
/* How many times needle occurs in the file at path. */
static int occurrences(const char *path, const char *needle) {
    char *text = h_read_file(path);
    assert_non_null(text);
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle)) n++;
    free(text);
    return n;
}

static void test_replay_apply_invite_dry_run_predicts_what_apply_does(void **state) {
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "/tmp/ww-it-%s-invites.ndjson", env.run_id);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    const char *r = env.run_id;
    fprintf(f, "{\"type\":\"invite.created\",\"eventId\":\"%s-e1\",\"code\":\"%s-C1\","
            "\"parentCode\":\"ROOT\",\"role\":\"agent\",\"expiresAt\":\"2099-01-01T00:00:00Z\"}\n",
            r, r);
    for (int i = 0; i < 2; i++) /* the second one: duplicate */
        fprintf(f, "{\"type\":\"invite.used\",\"eventId\":\"%s-e2\",\"code\":\"%s-C1\","
                "\"usedByUserId\":\"5f0000000000000000000009\","
                "\"occurredAt\":\"2030-01-01T00:00:00Z\"}\n", r, r);
    fprintf(f, "{\"type\":\"invite.revoked\",\"eventId\":\"%s-e3\",\"code\":\"%s-C1\","
            "\"occurredAt\":\"2030-01-02T00:00:00Z\"}\n", r, r); /* after used: rejected */
    fprintf(f, "{\"type\":\"invite.used\",\"eventId\":\"%s-e4\",\"code\":\"%s-C2\","
            "\"usedByUserId\":\"5f0000000000000000000009\","
            "\"occurredAt\":\"2030-01-01T00:00:00Z\"}\n", r, r); /* no such invite */
    fprintf(f, "{\"type\":\"invite.created\",\"eventId\":\"%s-e5\",\"code\":\"%s-C3\","
            "\"parentCode\":\"ROOT\",\"role\":\"agent\",\"expiresAt\":\"2099-01-01T00:00:00Z\"}\n",
            r, r);
    fprintf(f, "{\"type\":\"invite.created\",\"eventId\":\"%s-e6\",\"code\":\"%s-C3\","
            "\"parentCode\":\"ROOT\",\"role\":\"admin\",\"expiresAt\":\"2099-01-01T00:00:00Z\"}\n",
            r, r); /* the same code, another role: conflict */
    fclose(f);
    static const char *const INV[] = {WW_INVITES};
    char *before = h_digest(&env, INV, 1, NULL);
    const char *dry[] = {"apply", "--kind", "invite", "--file", path, "--dry-run", NULL};
    /* the rejection line the real run prints, FILE:LINE: code: reason */
    char rejection[320];
    snprintf(rejection, sizeof rejection, "%s:5: invite_not_found:", path);
    assert_int_equal(cli(dry), 0);
    char *dry_batch = outcome_table(err_path);
    assert_int_equal(occurrences(err_path, rejection), 1);
    assert_int_equal(cli_with(dry, "BATCH_MAX=1", "WORKER_THREADS=1"), 0);
    char *dry_single = outcome_table(err_path);
    assert_int_equal(occurrences(err_path, rejection), 1);
    char *after_dry = h_digest(&env, INV, 1, NULL);
    assert_string_equal(before, after_dry);

    const char *real[] = {"apply", "--kind", "invite", "--file", path, NULL};
    assert_int_equal(cli(real), 0);
    assert_int_equal(occurrences(err_path, rejection), 1);
    assert_int_equal(summary_count(err_path, "applied"), 3);
    assert_int_equal(summary_count(err_path, "duplicate"), 1);
    assert_int_equal(summary_count(err_path, "rejected"), 2);
    assert_int_equal(summary_count(err_path, "invite_not_found"), 1);
    char *applied = outcome_table(err_path);
    assert_string_equal(dry_batch, applied);
    assert_string_equal(dry_single, applied);
    free(before);
    free(after_dry);
    free(dry_batch);
    free(dry_single);
    free(applied);
    unlink(path);
}

/* Writes one command line padded with spaces (JSON whitespace) to `size`
 * bytes, then `end` (a line terminator). */
static void padded_line(FILE *f, const char *key, const char *owner, size_t size,
                        const char *end) {
    char cmd[300];
    int n = snprintf(cmd, sizeof cmd,
                     "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s\",\"ownerUserId\":"
                     "\"%s\",\"amountPaise\":1}", key, owner);
    assert_true(n > 0 && (size_t)n <= size);
    fputs(cmd, f);
    for (size_t i = (size_t)n; i < size; i++) fputc(' ', f);
    fputs(end, f);
}

/* fgets + strlen read a line with a NUL as its prefix (applied as valid) and
 * swallowed the next line; a line of exactly the limit ending in \r\r\n was
 * called too large. Each line must be decided exactly once, on its real bytes. */
static void test_replay_apply_file_with_nul_and_cr_bytes(void **state) {
    (void)state;
    const char *o = "e5000000000000000000000e";
    seed(o, 1000);
    char path[256], key[160];
    snprintf(path, sizeof path, "/tmp/ww-it-%s-nul.ndjson", env.run_id);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    /* 1: a valid command, a NUL, then junk: invalid as a whole */
    fprintf(f, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-n1\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":100}", env.run_id, o);
    fputc('\0', f);
    fputs("junk\n", f);
    /* 2: valid, right after the NUL line */
    fprintf(f, "{\"type\":\"wallet.debit\",\"idempotencyKey\":\"%s-n2\",\"ownerUserId\":\"%s\","
            "\"amountPaise\":100}\n", env.run_id, o);
    /* 3: exactly the limit, CR CR LF: valid */
    snprintf(key, sizeof key, "%s-n3", env.run_id);
    padded_line(f, key, o, 512, "\r\r\n");
    /* 4: one byte over the limit: too large */
    snprintf(key, sizeof key, "%s-n4", env.run_id);
    padded_line(f, key, o, 513, "\n");
    /* 5: far over the limit: the rejection names its real size, not the
     * 513 bytes kept of it */
    snprintf(key, sizeof key, "%s-n5", env.run_id);
    padded_line(f, key, o, 2000, "\n");
    fclose(f);
    const char *args[] = {"apply", "--file", path, NULL};
    const char *extra[] = {"WW_PROGRESS=1", "MAX_MESSAGE_BYTES=512", NULL};
    unlink(out_path);
    unlink(err_path);
    assert_int_equal(h_run_cli(&env, args, extra, NULL, out_path, err_path, 120000), 0);
    char *out = h_read_file(out_path), *errs = h_read_file(err_path);
    print_message("--- stdout\n%s--- stderr\n%s\n", out, errs);
    char want[400];
    snprintf(want, sizeof want, "%s:1: invalid_encoding", path);
    assert_non_null(strstr(errs, want));
    snprintf(want, sizeof want, "%s:4: too_large: message of 513 bytes is larger than 512", path);
    assert_non_null(strstr(errs, want));
    snprintf(want, sizeof want, "%s:5: too_large: message of 2000 bytes is larger than 512", path);
    assert_non_null(strstr(errs, want));
    snprintf(want, sizeof want, "%s-n1", env.run_id);
    assert_null(strstr(out, want));
    snprintf(want, sizeof want, "\"%s-n2\"", env.run_id);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want, "\"%s-n3\"", env.run_id);
    assert_non_null(strstr(out, want));
    assert_int_equal(summary_count(err_path, "applied"), 2);
    assert_int_equal(summary_count(err_path, "invalid"), 3);
    /* apply's summary counts what it printed */
    assert_int_equal(summary_count(err_path, "results printed"), 5);
    assert_int_equal(summary_count(err_path, "rejections printed"), 3);
    free(out);
    free(errs);
    unlink(path);
}

/* Every replay published all its results and dead letters again, so the DLQ
 * grew by one copy of every invalid message per replay. --publish chooses;
 * the default (results) never writes dead letters, and the summary says what
 * was published. Counted on the topics themselves (watermarks). */
static void test_replay_publish_choice_decides_what_a_second_replay_adds(void **state) {
    (void)state;
    const char *o = "e7000000000000000000000e";
    seed(o, 1000);
    char topic[128];
    snprintf(topic, sizeof topic, "it.%s.publish", env.run_id);
    ww_error_t err;
    assert_true(ww_bus_create_topic(env.producer, topic, 2, 15000, &err));
    /* one key, one partition: the invalid message is seen first */
    h_produce(&env, topic, o, "{\"type\":\"wallet.credit\"}"); /* invalid: fields missing */
    for (int i = 0; i < 3; i++) {
        char v[300];
        snprintf(v, sizeof v, "{\"type\":\"wallet.credit\",\"idempotencyKey\":\"%s-p%d\","
                 "\"ownerUserId\":\"%s\",\"amountPaise\":1}", env.run_id, i, o);
        h_produce(&env, topic, o, v);
    }
    h_flush(&env);

    static const struct {
        const char *publish; /* NULL: the default */
        bool dry_run;
        int64_t results, dead_letters; /* what the run adds to each topic */
        const char *outcome;           /* and its main outcome */
    } runs[] = {
        {NULL, false, 4, 0, "applied"},   /* the first replay applies */
        {NULL, false, 4, 0, "duplicate"}, /* a second one adds results, never dead letters */
        {"none", false, 0, 0, "duplicate"},
        {"both", false, 4, 1, "duplicate"},
        {"both", false, 4, 1, "duplicate"},
        {"dead-letters", false, 0, 1, "duplicate"},
        {"results", false, 4, 0, "duplicate"},
        {"both", true, 0, 0, "duplicate"}, /* a dry run publishes nothing */
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        const char *args[10] = {"replay", "--topic", topic, "--kind", "wallet"};
        int n = 5;
        if (runs[r].publish) {
            args[n++] = "--publish";
            args[n++] = runs[r].publish;
        }
        if (runs[r].dry_run) args[n++] = "--dry-run";
        args[n] = NULL;
        int64_t results0 = h_topic_messages(&env, env.results_topic);
        int64_t dlq0 = h_topic_messages(&env, env.dlq_topic);
        print_message("run %zu: --publish %s%s\n", r, runs[r].publish ? runs[r].publish : "(default)",
                      runs[r].dry_run ? " --dry-run" : "");
        assert_int_equal(cli(args), 0);
        assert_int_equal(h_topic_messages(&env, env.results_topic) - results0, runs[r].results);
        assert_int_equal(h_topic_messages(&env, env.dlq_topic) - dlq0, runs[r].dead_letters);
        /* the summary says what it published */
        assert_int_equal(summary_count(out_path, "results published"), runs[r].results);
        assert_int_equal(summary_count(out_path, "dead letters written"), runs[r].dead_letters);
        assert_int_equal(summary_count(out_path, "dead letters not written"),
                         runs[r].dead_letters ? -1 : 1);
        assert_int_equal(summary_count(out_path, runs[r].outcome), 3);
        assert_int_equal(summary_count(out_path, "invalid"), 1);
        char want[80];
        snprintf(want, sizeof want, "--publish %s)",
                 runs[r].publish ? runs[r].publish : "results");
        assert_int_equal(h_count_in_file(out_path, runs[r].dry_run ? "published: nothing (dry run)"
                                                                   : want), 1);
        /* outcomes in alphabetical order, not in the order they came */
        char *text = h_read_file(out_path), row[40];
        snprintf(row, sizeof row, "  %s ", runs[r].outcome);
        char *first = strstr(text, row), *inv = strstr(text, "  invalid ");
        assert_true(first && inv && first < inv);
        free(text);
    }
    /* --publish is replay's: a bad value and apply --publish are usage errors */
    const char *bad[] = {"replay", "--topic", topic, "--kind", "wallet", "--publish", "all", NULL};
    assert_int_equal(cli(bad), 2);
    const char *apply[] = {"apply", "--file", "-", "--publish", "none", NULL};
    assert_int_equal(cli(apply), 2);
}

typedef struct {
    int n;
    char key[8][32], topic[8][256], partition[8][32], offset[8][32], ts[8][32], count[8][32];
} dlq_read_t;

static void copy_header(const ww_msg_t *m, const char *name, char *out, size_t cap) {
    const void *v;
    size_t len;
    if (ww_msg_header(m, name, &v, &len))
        snprintf(out, cap, "%.*s", (int)len, (const char *)v);
    else
        snprintf(out, cap, "-");
}

static void on_dlq(const ww_msg_t *m, void *ctx) {
    dlq_read_t *d = ctx;
    if (d->n >= 8) return;
    int i = d->n++;
    snprintf(d->key[i], sizeof d->key[i], "%.*s", (int)m->key_len, (const char *)m->key);
    copy_header(m, "ww.source.topic", d->topic[i], sizeof d->topic[i]);
    copy_header(m, "ww.source.partition", d->partition[i], sizeof d->partition[i]);
    copy_header(m, "ww.source.offset", d->offset[i], sizeof d->offset[i]);
    copy_header(m, "ww.source.timestamp", d->ts[i], sizeof d->ts[i]);
    copy_header(m, "ww.redrive.count", d->count[i], sizeof d->count[i]);
}

/* Re-driving a dead-letter topic dead-lettered a still-invalid message again
 * with the DLQ's own partition and offset as its source: where it first came
 * from was lost. It keeps the original ww.source.* now, with a count of
 * re-drives; forged headers are not trusted (the DLQ's own place then). */
static void test_replay_redrive_keeps_the_original_source_and_counts(void **state) {
    (void)state;
    char dlq[128], e_dlq[160];
    snprintf(dlq, sizeof dlq, "it.%s.redrive-dlq", env.run_id);
    snprintf(e_dlq, sizeof e_dlq, "WALLET_DLQ_TOPIC=%s", dlq);
    ww_error_t err;
    assert_true(ww_bus_create_topic(env.producer, dlq, 1, 15000, &err));
    /* A: as the live worker dead-letters; B: forged headers */
    ww_header_t a[] = {{"ww.error.code", "invalid_json", 12},
                       {"ww.source.topic", "wallet.commands", 15},
                       {"ww.source.partition", "3", 1},
                       {"ww.source.offset", "77", 2},
                       {"ww.source.timestamp", "1700000000000", 13}};
    ww_header_t b[] = {{"ww.source.topic", "wallet commands\n", 16},
                       {"ww.source.partition", "-1", 2},
                       {"ww.source.offset", "99999999999999999999999", 23},
                       {"ww.redrive.count", "x", 1}};
    assert_true(ww_bus_produce(env.producer, dlq, "A", 1, "{\"broken\":", 10, a, 5, NULL, &err));
    assert_true(ww_bus_produce(env.producer, dlq, "B", 1, "{\"broken\":", 10, b, 4, NULL, &err));
    h_flush(&env);

    const char *args[] = {"replay", "--topic", dlq, "--publish", "both", NULL};
    const char *extra[] = {e_dlq, NULL};
    for (int run = 1; run <= 2; run++) {
        unlink(out_path);
        assert_int_equal(h_run_cli(&env, args, extra, NULL, out_path, err_path, 120000), 0);
        assert_int_equal(summary_count(out_path, "dead letters written"), run == 1 ? 2 : 4);
    }
    /* run 1 read A, B and wrote A1, B1; run 2 read A, B, A1, B1 and wrote
     * A2, B2 (as A1, B1) and A11, B11 (re-driven twice) */
    dlq_read_t d;
    memset(&d, 0, sizeof d);
    assert_int_equal(h_read_topic(&env, dlq, 8, 30000, on_dlq, &d), 8);
    for (int i = 0; i < 8; i++)
        print_message("%d key=%s source=%s/%s/%s ts=%s count=%s\n", i, d.key[i], d.topic[i],
                      d.partition[i], d.offset[i], d.ts[i], d.count[i]);
    /* offsets 2..7 are the dead letters; keys run on different threads, so
     * they are checked by key and count, not by order */
    int a_counts[3] = {0}, b_counts[3] = {0};
    for (int i = 2; i < 8; i++) {
        long c = strtol(d.count[i], NULL, 10);
        assert_true(c == 1 || c == 2);
        if (strcmp(d.key[i], "A") == 0) {
            a_counts[c]++;
            assert_string_equal(d.topic[i], "wallet.commands"); /* the original */
            assert_string_equal(d.partition[i], "3");
            assert_string_equal(d.offset[i], "77");
            assert_string_equal(d.ts[i], "1700000000000");
        } else {
            assert_string_equal(d.key[i], "B");
            b_counts[c]++;
            /* B's forged origin is not trusted: the DLQ's own place of B (offset
             * 1), which B1 carries on into its own re-drive */
            assert_string_equal(d.topic[i], dlq);
            assert_string_equal(d.partition[i], "0");
            assert_string_equal(d.offset[i], "1");
        }
    }
    assert_int_equal(a_counts[1], 2);
    assert_int_equal(a_counts[2], 1);
    assert_int_equal(b_counts[1], 2);
    assert_int_equal(b_counts[2], 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_ranges_twice_identical_and_live_group_untouched),
        cmocka_unit_test(test_replay_dead_letters_redriven_after_a_fix),
        cmocka_unit_test(test_replay_apply_file_with_good_and_bad_lines),
        cmocka_unit_test(test_replay_apply_file_with_nul_and_cr_bytes),
        cmocka_unit_test(test_replay_apply_dry_run_and_strict_report_rejections),
        cmocka_unit_test(test_replay_apply_dry_run_predicts_what_apply_does),
        cmocka_unit_test(test_replay_apply_invite_dry_run_predicts_what_apply_does),
        cmocka_unit_test(test_replay_publish_choice_decides_what_a_second_replay_adds),
        cmocka_unit_test(test_replay_redrive_keeps_the_original_source_and_counts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
