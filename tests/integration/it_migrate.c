/* it_migrate.c: `wallet-worker migrate` on the real server: an empty
 * database, twice, a database with the backend's old index set (the
 * duplicate single-field expiresAt index), two migrators at once, a changed
 * migration refused, --dry-run writing nothing, and AUTO_MIGRATE=false. */
#include <bson/bson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "migrate.h"

static h_env_t env;
static char out_path[256], err_path[256];

static int setup(void **state) {
    (void)state;
    h_env_init(&env, "migrate");
    snprintf(out_path, sizeof out_path, "/tmp/ww-it-%s.out", env.run_id);
    snprintf(err_path, sizeof err_path, "/tmp/ww-it-%s.err", env.run_id);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    h_env_destroy(&env);
    return 0;
}

static int cli(const char *const *args, const char *const *extra) {
    unlink(out_path);
    unlink(err_path);
    int st = h_run_cli(&env, args, extra, NULL, out_path, err_path, 120000);
    char *o = h_read_file(out_path), *e = h_read_file(err_path);
    print_message("exit %d\n%s%s", st, o ? o : "", e ? e : "");
    free(o);
    free(e);
    return st;
}

static void reset_db(void) {
    ww_error_t err;
    assert_true(ww_db_drop_database(env.db, &err));
}

typedef struct {
    char names[32][96];
    bool ttl[32];
    int n;
} indexes_t;

static void list_indexes(const char *coll, indexes_t *ix) {
    memset(ix, 0, sizeof *ix);
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_UTF8(&cmd, "listIndexes", coll);
    ww_error_t err;
    if (!ww_db_command(env.db, &cmd, &reply, &err)) {
        bson_destroy(&reply);
        bson_destroy(&cmd);
        return; /* no collection: no indexes */
    }
    bson_iter_t it, cur, batch;
    if (bson_iter_init_find(&it, &reply, "cursor") && bson_iter_recurse(&it, &cur) &&
        bson_iter_find(&cur, "firstBatch") && bson_iter_recurse(&cur, &batch))
        while (bson_iter_next(&batch) && ix->n < 32) {
            bson_iter_t f;
            if (!bson_iter_recurse(&batch, &f)) continue;
            while (bson_iter_next(&f)) {
                if (strcmp(bson_iter_key(&f), "name") == 0)
                    snprintf(ix->names[ix->n], 96, "%s", bson_iter_utf8(&f, NULL));
                if (strcmp(bson_iter_key(&f), "expireAfterSeconds") == 0) ix->ttl[ix->n] = true;
            }
            ix->n++;
        }
    bson_destroy(&reply);
    bson_destroy(&cmd);
}

static int find_index(const indexes_t *ix, const char *name) {
    for (int i = 0; i < ix->n; i++)
        if (strcmp(ix->names[i], name) == 0) return i;
    return -1;
}

static int64_t records(void) {
    bson_t q = BSON_INITIALIZER, ne;
    BSON_APPEND_DOCUMENT_BEGIN(&q, "_id", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "lock");
    bson_append_document_end(&q, &ne);
    int64_t n = h_count(&env, WW_SCHEMA_MIGRATIONS, &q);
    bson_destroy(&q);
    return n;
}

static void assert_full_index_set(void) {
    indexes_t ix;
    const char *tx[] = {"idempotencyKey_1", "walletId_1", "walletId_1_createdAt_-1"};
    list_indexes("transactions", &ix);
    for (int i = 0; i < 3; i++) assert_true(find_index(&ix, tx[i]) >= 0);
    list_indexes("wallets", &ix);
    assert_true(find_index(&ix, "ownerUserId_1") >= 0);
    const char *us[] = {"brandCode_1_roles_1_deletedAt_1", "mediatorCode_1_roles_1_deletedAt_1",
                        "roles_1_status_1_deletedAt_1"};
    list_indexes("users", &ix);
    for (int i = 0; i < 3; i++) assert_true(find_index(&ix, us[i]) >= 0);
    list_indexes("campaigns", &ix);
    assert_true(find_index(&ix, "allowedAgencyCodes_1") >= 0);
    list_indexes("invites", &ix);
    assert_true(find_index(&ix, "code_1") >= 0);
    assert_true(find_index(&ix, "parentCode_1_status_1_createdAt_-1") >= 0);
    assert_true(find_index(&ix, "status_1_expiresAt_1") >= 0);
    int ttl = find_index(&ix, "expiresAt_1");
    if (strcmp(env.mongo_impl, "ferretdb") == 0)
        assert_int_equal(ttl, -1); /* TTL/partial not supported: absent, with a warning */
    else
        assert_true(ttl >= 0 && ix.ttl[ttl]);
}

static void test_migrate_empty_database_then_twice(void **state) {
    (void)state;
    reset_db();
    const char *dry[] = {"migrate", "--dry-run", NULL};
    assert_int_equal(cli(dry, NULL), 0);
    char *o = h_read_file(out_path);
    assert_non_null(strstr(o, "4 migration(s) pending"));
    assert_non_null(strstr(o, "would create transactions idempotencyKey_1"));
    free(o);
    assert_int_equal(records(), 0); /* the dry run wrote nothing */
    /* --check: exit 3 while migrations are pending (a pipeline gates on it) */
    const char *check[] = {"migrate", "--check", NULL};
    assert_int_equal(cli(check, NULL), 3);
    assert_int_equal(h_count_in_file(out_path, "4 migration(s) pending"), 1);
    assert_int_equal(records(), 0); /* and writes nothing */
    indexes_t ix;
    list_indexes("transactions", &ix);
    assert_int_equal(find_index(&ix, "idempotencyKey_1"), -1);

    const char *run[] = {"migrate", NULL};
    assert_int_equal(cli(run, NULL), 0);
    assert_int_equal(records(), 4);
    assert_full_index_set();
    if (strcmp(env.mongo_impl, "ferretdb") == 0)
        assert_int_equal(h_count_in_file(err_path, "index not created: the server does not support"), 1);
    assert_int_equal(cli(run, NULL), 0);
    assert_true(h_count_in_file(out_path, "0 migration(s) applied now") >= 1);
    assert_int_equal(records(), 4);
    assert_int_equal(h_count_in_file(err_path, "not created"), 0); /* nothing re-done */
    assert_int_equal(cli(check, NULL), 0); /* nothing pending */
    assert_int_equal(h_count_in_file(out_path, "0 migration(s) pending"), 1);
}

static void test_migrate_drops_the_backends_old_duplicate_expiresat_index(void **state) {
    (void)state;
    reset_db();
    /* the old set: a plain single-field expiresAt index next to the others */
    bson_t cmd = BSON_INITIALIZER, reply, arr, ixd, key;
    BSON_APPEND_UTF8(&cmd, "createIndexes", "invites");
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &ixd);
    BSON_APPEND_DOCUMENT_BEGIN(&ixd, "key", &key);
    BSON_APPEND_INT32(&key, "expiresAt", 1);
    bson_append_document_end(&ixd, &key);
    BSON_APPEND_UTF8(&ixd, "name", "expiresAt_1");
    bson_append_document_end(&arr, &ixd);
    bson_append_array_end(&cmd, &arr);
    ww_error_t err;
    assert_true(ww_db_command(env.db, &cmd, &reply, &err));
    bson_destroy(&reply);
    bson_destroy(&cmd);
    indexes_t ix;
    list_indexes("invites", &ix);
    assert_true(find_index(&ix, "expiresAt_1") >= 0);
    assert_false(ix.ttl[find_index(&ix, "expiresAt_1")]);

    const char *run[] = {"migrate", NULL};
    assert_int_equal(cli(run, NULL), 0);
    assert_true(h_count_in_file(out_path, "dropping index invites.expiresAt_1") >= 1);
    assert_full_index_set(); /* the plain one is gone; the TTL one where supported */
    list_indexes("invites", &ix);
    int e = find_index(&ix, "expiresAt_1");
    assert_true(e == -1 || ix.ttl[e]);
}

static void test_migrate_two_at_once(void **state) {
    (void)state;
    reset_db();
    const char *args[] = {"migrate", NULL};
    char o2[300], e2[300];
    snprintf(o2, sizeof o2, "%s.2", out_path);
    snprintf(e2, sizeof e2, "%s.2", err_path);
    unlink(o2);
    unlink(e2);
    /* start both, then wait for both */
    pid_t a = fork();
    if (a == 0) _exit(h_run_cli(&env, args, NULL, NULL, out_path, err_path, 120000));
    pid_t b = fork();
    if (b == 0) _exit(h_run_cli(&env, args, NULL, NULL, o2, e2, 120000));
    int sa, sb;
    waitpid(a, &sa, 0);
    waitpid(b, &sb, 0);
    assert_int_equal(WEXITSTATUS(sa), 0);
    assert_int_equal(WEXITSTATUS(sb), 0);
    assert_int_equal(records(), 4); /* each recorded once */
    assert_full_index_set();
    unlink(o2);
    unlink(e2);
}

static void test_migrate_refuses_a_changed_migration_and_auto_migrate_off(void **state) {
    (void)state;
    reset_db();
    /* AUTO_MIGRATE=false on an unmigrated database: refuses to start */
    const char *off[] = {"AUTO_MIGRATE=false", NULL};
    assert_int_equal(cli(NULL, off), 1);
    assert_true(h_count_in_file(err_path, "run `wallet-worker migrate` first") >= 1);
    const char *run[] = {"migrate", NULL};
    assert_int_equal(cli(run, NULL), 0);
    /* a record whose checksum no longer matches this build */
    bson_t filter = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    BSON_APPEND_INT32(&filter, "_id", 2);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_UTF8(&set, "checksum", "0000000000000000000000000000000000000000000000000000000000000000");
    bson_append_document_end(&upd, &set);
    ww_error_t err;
    int64_t matched = 0;
    assert_true(ww_db_update_one(env.db, WW_SCHEMA_MIGRATIONS, &filter, &upd, NULL, &matched, NULL,
                                 &err));
    assert_int_equal(matched, 1);
    bson_destroy(&filter);
    bson_destroy(&upd);
    assert_int_equal(cli(run, NULL), 1);
    assert_true(h_count_in_file(err_path, "002_invite_indexes was applied with checksum") >= 1);
    /* and the worker will not run against it */
    assert_int_equal(cli(NULL, NULL), 1);
    assert_true(h_count_in_file(err_path, "refusing to run") >= 1);
}

/* migrate validated every setting, so a bad HTTP_ADDR (which it never uses)
 * stopped it with exit 2; and it waited for an unreachable database in
 * silence. It reads only the database settings now, and says every few
 * seconds how long it has waited of how long, without the URI's password. */
static void test_migrate_ignores_unused_settings_and_reports_its_wait(void **state) {
    (void)state;
    reset_db();
    const char *unused[] = {"HTTP_ADDR=bad", "KAFKA_SECURITY_PROTOCOL=nope",
                            "WORKER_THREADS=many", NULL};
    const char *run[] = {"migrate", NULL};
    assert_int_equal(cli(run, unused), 0);
    const char *doctor[] = {"doctor", NULL};
    int st = cli(doctor, unused);
    assert_true(st == 0 || st == 1); /* not 2: the settings were not its business */

    /* a closed port: bound, then released */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    char uri[200];
    snprintf(uri, sizeof uri, "MONGODB_URI=mongodb://wallet:s3cret-pw@127.0.0.1:%d/%s",
             ntohs(a.sin_port), env.db_name);
    const char *down[] = {uri, "HTTP_ADDR=bad", NULL};
    const char *wait[] = {"migrate", "--wait-s", "12", NULL};
    int64_t t0 = h_now_ms();
    assert_int_equal(cli(wait, down), 1);
    int64_t took = h_now_ms() - t0;
    assert_true(took >= 12000 && took < 60000);
    int lines = h_count_in_file(err_path, "wallet-worker: migrate: waiting for the database: ");
    assert_true(lines >= 2 && lines <= 4); /* one every 5 s */
    assert_true(h_count_in_file(err_path, " s of 12 s: ") == lines);
    assert_int_equal(h_count_in_file(err_path, "gave up waiting for the database"), 1);
    assert_int_equal(h_count_in_file(err_path, "s3cret-pw"), 0);
    /* a bad value of its own is still a usage error */
    const char *bad_wait[] = {"migrate", "--wait-s", "0", NULL};
    assert_int_equal(cli(bad_wait, NULL), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_empty_database_then_twice),
        cmocka_unit_test(test_migrate_drops_the_backends_old_duplicate_expiresat_index),
        cmocka_unit_test(test_migrate_two_at_once),
        cmocka_unit_test(test_migrate_refuses_a_changed_migration_and_auto_migrate_off),
        cmocka_unit_test(test_migrate_ignores_unused_settings_and_reports_its_wait),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
