/* Unit tests of the state store (src/store). Each test gets its own
 * temporary directory (removed afterwards) and a store on a fake clock.
 * The tests open the database file with SQLite directly only to set up
 * situations the API cannot make (a too-new schema, a foreign database) and
 * to check what was written. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HASH_A "aaaaaaaaaaaaaaaa"
#define HASH_B "bbbbbbbbbbbbbbbb"
#define HASH_C "cccccccccccccccc"
#define HASH_D "dddddddddddddddd"
#define COMPOSE "{\"services\":{\"web\":{\"x-davit\":{\"run\":\"node server.js\"}}}}"

struct fixture {
	char *dir;
	char *path;
	struct dv_store *store;
	int64_t now;
};

static int64_t fake_now(void *arg)
{
	struct fixture *f = arg;

	return f->now;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static char *path_in(struct fixture *f, const char *name)
{
	char *p = NULL;

	assert_true(asprintf(&p, "%s/%s", f->dir, name) > 0);
	return p;
}

static void reopen(struct fixture *f)
{
	char *err = NULL;
	int rc;

	dv_store_close(f->store);
	f->store = NULL;
	rc = dv_store_open(f->path, &f->store, &err);
	if (rc)
		print_error("open %s: %s\n", f->path, err ? err : "(no message)");
	assert_int_equal(rc, 0);
	assert_null(err);
	dv_store_set_clock(f->store, fake_now, f);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char tmpl[] = "/tmp/dv-store-test-XXXXXX";

	assert_non_null(f);
	assert_non_null(mkdtemp(tmpl));
	f->dir = strdup(tmpl);
	f->path = path_in(f, "davit.db");
	f->now = 1700000000000;
	reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	dv_store_close(f->store);
	chmod(f->dir, 0700);
	nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->path);
	free(f->dir);
	free(f);
	return 0;
}

/* An integer read straight from the database file. */
static int64_t raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	int64_t v = -1;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return v;
}

static int raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	int code;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
	code = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return code;
}

/* Checks a failure and its message (read after the call: C leaves the order
 * of argument evaluation open), then frees the message and clears *err. */
static void expect_error(int rc, int want, char **err, const char *needle)
{
	if (rc != want || !*err || !strstr(*err, needle))
		print_error("rc %d (want %d), err: %s (want: ...%s...)\n", rc, want, *err ? *err : "(null)", needle);
	assert_int_equal(rc, want);
	assert_non_null(*err);
	assert_non_null(strstr(*err, needle));
	free(*err);
	*err = NULL;
}

static int64_t make_release(struct fixture *f, const char *app, const char *env, const char *hash)
{
	struct dv_store_release_spec spec = {.hash = hash, .compose_json = COMPOSE, .env_json = "{\"A\":\"1\"}",
	                                     .source = "test"};
	struct dv_store_release *r = NULL;
	char *err = NULL;
	int64_t id;

	assert_int_equal(dv_store_release_create(f->store, app, env, &spec, &r, NULL, &err), 0);
	assert_null(err);
	id = r->id;
	dv_store_release_free(r);
	return id;
}

static int64_t make_deployment(struct fixture *f, const char *app, const char *env, int64_t release)
{
	struct dv_store_deployment *d = NULL;
	char *err = NULL;
	int64_t id;

	assert_int_equal(dv_store_deployment_create(f->store, app, env, release, 0, &d, &err), 0);
	assert_null(err);
	id = d->id;
	dv_store_deployment_free(d);
	return id;
}

static void transition(struct fixture *f, int64_t id, enum dv_store_deploy_state to, const char *error)
{
	char *err = NULL;
	int rc = dv_store_deployment_transition(f->store, id, to, error, 0, NULL, &err);

	if (rc)
		print_error("transition to %s: %s\n", dv_store_deploy_state_name(to), err);
	assert_int_equal(rc, 0);
}

/* Deploys `release` all the way to succeeded. */
static int64_t deploy_ok(struct fixture *f, const char *app, const char *env, int64_t release)
{
	int64_t id = make_deployment(f, app, env, release);

	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	transition(f, id, DV_STORE_DEPLOY_SUCCEEDED, NULL);
	return id;
}

static int64_t current_release(struct fixture *f, const char *app, const char *env)
{
	struct dv_store_release *r = NULL;
	int64_t id;

	assert_int_equal(dv_store_release_current(f->store, app, env, &r, NULL), 0);
	id = r ? r->id : 0;
	dv_store_release_free(r);
	return id;
}

/* ---- opening and migrations ---------------------------------------------- */

static void test_open_fresh(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	char *wal = path_in(f, "davit.db-wal");

	assert_true(dv_store_schema_version() >= 1);
	assert_int_equal(dv_store_schema_version(), (int)dv_store_migrations_len);
	assert_int_equal(raw_int(f->path, "PRAGMA user_version"), dv_store_schema_version());
	assert_int_equal(raw_int(f->path, "PRAGMA application_id"), 0x64766174);
	/* WAL: the -wal file exists while a connection is open. */
	assert_int_equal(stat(wal, &st), 0);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'deployments'"), 1);
	free(wal);
}

static void test_reopen_idempotent(void **state)
{
	struct fixture *f = *state;
	struct dv_store *second = NULL;
	struct dv_store_app *app = NULL;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	reopen(f);
	reopen(f);
	assert_int_equal(raw_int(f->path, "PRAGMA user_version"), dv_store_schema_version());
	assert_int_equal(dv_store_app_get(f->store, "shop", &app, NULL), 0);
	assert_string_equal(app->name, "shop");
	assert_int_equal(app->created_at, 1700000000000);
	dv_store_app_free(app);
	/* A second connection to the same file at the same time. */
	assert_int_equal(dv_store_open(f->path, &second, NULL), 0);
	assert_int_equal(dv_store_app_get(second, "shop", NULL, NULL), 0);
	dv_store_close(second);
}

static void test_too_new_refused(void **state)
{
	struct fixture *f = *state;
	struct dv_store *s = (struct dv_store *)1;
	char sql[64], *err = NULL;
	int64_t newer = dv_store_schema_version() + 1;

	dv_store_close(f->store);
	f->store = NULL;
	snprintf(sql, sizeof sql, "PRAGMA user_version = %lld", (long long)newer);
	assert_int_equal(raw_exec(f->path, sql), SQLITE_OK);
	assert_int_equal(dv_store_open(f->path, &s, &err), -ENOTSUP);
	assert_null(s);
	assert_non_null(strstr(err, f->path));
	expect_error(-ENOTSUP, -ENOTSUP, &err, "newer davit");
	/* Not touched. */
	assert_int_equal(raw_int(f->path, "PRAGMA user_version"), newer);
	/* Back to a version this binary knows: it opens again. */
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", dv_store_schema_version());
	assert_int_equal(raw_exec(f->path, sql), SQLITE_OK);
	reopen(f);
}

static void test_foreign_files_refused(void **state)
{
	struct fixture *f = *state;
	struct dv_store *s = NULL;
	char *other = path_in(f, "other.db"), *junk = path_in(f, "junk.db"), *err = NULL;
	int fd;

	assert_int_equal(raw_exec(other, "CREATE TABLE t (x)"), SQLITE_OK);
	expect_error(dv_store_open(other, &s, &err), -EINVAL, &err, "not a davit state database");
	assert_null(s);
	dv_store_close(s);
	free(err);
	err = NULL;

	assert_int_equal(raw_exec(other, "DROP TABLE t; PRAGMA user_version = 1"), SQLITE_OK);
	expect_error(dv_store_open(other, &s, &err), -EINVAL, &err, "another application");

	fd = open(junk, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "this is not a database at all, just some text........", 53), 53);
	close(fd);
	expect_error(dv_store_open(junk, &s, &err), -EINVAL, &err, "not a database");
	assert_null(s);
	free(err);
	free(other);
	free(junk);
}

/* Runs in a child without root's powers: the directory `ro_path` lives in
 * is not writable; the file `ro_file` is not writable in a writable one. */
static int open_unwritable_as_nobody(const char *ro_path, const char *ro_file)
{
	struct dv_store *s = NULL;
	char *err = NULL;
	int rc;

	if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
		return 10;
	rc = dv_store_open(ro_path, &s, &err);
	if (rc != -EACCES || s || !err || !strstr(err, "not writable"))
		return 11;
	free(err);
	err = NULL;
	rc = dv_store_open(ro_file, &s, &err);
	if (rc != -EROFS || s || !err || !strstr(err, "read-only"))
		return 12;
	free(err);
	return 0;
}

static void test_bad_paths(void **state)
{
	struct fixture *f = *state;
	struct dv_store *s = NULL;
	char *err = NULL, *missing = path_in(f, "nope/davit.db"), *file = path_in(f, "file"),
	     *under_file = path_in(f, "file/davit.db"), *ro = path_in(f, "ro"), *ro_db = path_in(f, "ro/davit.db");
	int fd, status = -1;
	pid_t pid;

	expect_error(dv_store_open("", &s, &err), -EINVAL, &err, "empty");
	expect_error(dv_store_open(f->dir, &s, &err), -EISDIR, &err, "is a directory");
	expect_error(dv_store_open(missing, &s, &err), -ENOENT, &err, "does not exist");
	fd = open(file, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(dv_store_open(under_file, &s, &err), -ENOTDIR);
	assert_non_null(err);
	free(err);
	err = NULL;
	assert_null(s);

	/* Not writable. Root ignores permissions, so a child drops to nobody
	 * (the temporary directory must then be reachable by it). */
	assert_int_equal(mkdir(ro, 0555), 0);
	assert_int_equal(chmod(ro, 0555), 0);
	assert_int_equal(chmod(f->dir, 0777), 0);
	assert_int_equal(chmod(f->path, 0444), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(open_unwritable_as_nobody(ro_db, f->path));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(chmod(f->dir, 0700), 0);
	free(missing);
	free(file);
	free(under_file);
	free(ro);
	free(ro_db);
}

/* ---- apps and environments -------------------------------------------------- */

static void test_apps_and_envs(void **state)
{
	struct fixture *f = *state;
	struct dv_store_app *apps = NULL;
	struct dv_store_env *envs = NULL, *env = NULL;
	bool created = true;
	char *err = NULL;
	size_t n = 0;

	assert_int_equal(dv_store_app_create(f->store, "shop", &err), 0);
	f->now += 10;
	assert_int_equal(dv_store_app_create(f->store, "blog", &err), 0);
	assert_null(err);
	expect_error(dv_store_app_create(f->store, "shop", &err), -EEXIST, &err, "exists already");
	assert_int_equal(dv_store_app_ensure(f->store, "shop", &created, &err), 0);
	assert_false(created);
	assert_int_equal(dv_store_app_ensure(f->store, "wiki", &created, &err), 0);
	assert_true(created);
	expect_error(dv_store_app_create(f->store, "Bad Name", &err), -EINVAL, &err, "not a valid app name");
	expect_error(dv_store_app_create(f->store, NULL, &err), -EINVAL, &err, "required");

	assert_int_equal(dv_store_app_list(f->store, &apps, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(apps[0].name, "blog");
	assert_int_equal(apps[0].created_at, 1700000000010);
	assert_string_equal(apps[1].name, "shop");
	assert_string_equal(apps[2].name, "wiki");
	dv_store_app_array_free(apps, n);

	/* production comes with the app; more environments on demand. */
	assert_int_equal(dv_store_env_get(f->store, "shop", "production", &env, &err), 0);
	assert_string_equal(env->app, "shop");
	assert_string_equal(env->name, "production");
	assert_int_equal(env->current_release, 0);
	assert_int_equal(env->last_release, 0);
	dv_store_env_free(env);
	assert_int_equal(dv_store_env_create(f->store, "shop", "staging", &err), 0);
	assert_int_equal(dv_store_env_create(f->store, "shop", "preview-42", &err), 0);
	expect_error(dv_store_env_create(f->store, "shop", "staging", &err), -EEXIST, &err, "already");
	expect_error(dv_store_env_create(f->store, "ghost", "staging", &err), -ENOENT, &err, "no app named 'ghost'");
	expect_error(dv_store_env_get(f->store, "shop", "qa", NULL, &err), -ENOENT, &err, "has no environment 'qa'");
	assert_int_equal(dv_store_env_list(f->store, "shop", &envs, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(envs[0].name, "preview-42");
	assert_string_equal(envs[1].name, "production");
	assert_string_equal(envs[2].name, "staging");
	dv_store_env_array_free(envs, n);
	expect_error(dv_store_env_list(f->store, "ghost", &envs, &n, &err), -ENOENT, &err, "ghost");
	assert_null(envs);
	assert_int_equal(n, 0);
	free(err);
	err = NULL;

	assert_int_equal(dv_store_env_delete(f->store, "shop", "preview-42", &err), 0);
	assert_int_equal(dv_store_env_get(f->store, "shop", "preview-42", NULL, NULL), -ENOENT);
	assert_int_equal(dv_store_app_delete(f->store, "wiki", &err), 0);
	expect_error(dv_store_app_get(f->store, "wiki", NULL, &err), -ENOENT, &err, "no app named 'wiki'");
	assert_int_equal(dv_store_app_delete(f->store, "wiki", &err), -ENOENT);
	free(err);
}

/* ---- releases ---------------------------------------------------------------- */

static void test_releases(void **state)
{
	struct fixture *f = *state;
	struct dv_store_release_spec spec = {.hash = HASH_A, .compose_json = COMPOSE, .source = "cli"};
	struct dv_store_release *r = NULL, *list = NULL;
	bool created = false;
	char *err = NULL;
	size_t n = 0;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(dv_store_env_create(f->store, "shop", "staging", NULL), 0);
	assert_int_equal(dv_store_release_create(f->store, "shop", "production", &spec, &r, &created, &err), 0);
	assert_true(created);
	assert_int_equal(r->id, 1);
	assert_string_equal(r->app, "shop");
	assert_string_equal(r->env, "production");
	assert_string_equal(r->hash, HASH_A);
	assert_string_equal(r->compose_json, COMPOSE);
	assert_string_equal(r->env_json, "{}");
	assert_string_equal(r->source, "cli");
	assert_int_equal(r->created_at, f->now);
	dv_store_release_free(r);

	f->now += 1000;
	assert_int_equal(make_release(f, "shop", "production", HASH_B), 2);
	f->now += 1000;
	assert_int_equal(make_release(f, "shop", "production", HASH_C), 3);
	/* The same content again: the existing release, not a new one. */
	spec.source = "again";
	assert_int_equal(dv_store_release_create(f->store, "shop", "production", &spec, &r, &created, &err), 0);
	assert_false(created);
	assert_int_equal(r->id, 1);
	assert_string_equal(r->source, "cli");
	dv_store_release_free(r);
	assert_int_equal(dv_store_release_create(f->store, "shop", "production", &spec, NULL, NULL, &err), 0);
	/* Numbering is per environment. */
	assert_int_equal(make_release(f, "shop", "staging", HASH_C), 1);
	assert_int_equal(make_release(f, "shop", "staging", HASH_A), 2);

	assert_int_equal(dv_store_release_list(f->store, "shop", "production", 0, &list, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(list[0].id, 3);
	assert_int_equal(list[1].id, 2);
	assert_int_equal(list[2].id, 1);
	assert_string_equal(list[0].hash, HASH_C);
	assert_null(list[0].compose_json);
	assert_null(list[0].env_json);
	assert_int_equal(list[0].created_at, 1700000002000);
	dv_store_release_array_free(list, n);
	assert_int_equal(dv_store_release_list(f->store, "shop", "production", 2, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(list[1].id, 2);
	dv_store_release_array_free(list, n);

	assert_int_equal(dv_store_release_get(f->store, "shop", "production", 2, &r, &err), 0);
	assert_string_equal(r->hash, HASH_B);
	assert_string_equal(r->env_json, "{\"A\":\"1\"}");
	dv_store_release_free(r);
	expect_error(dv_store_release_get(f->store, "shop", "production", 9, &r, &err), -ENOENT, &err,
	             "shop/production has no release 9");
	assert_null(r);
	free(err);
	err = NULL;

	/* Nothing deployed yet. */
	assert_int_equal(dv_store_release_current(f->store, "shop", "production", &r, &err), 0);
	assert_null(r);

	/* Refusals. */
	spec.hash = "XYZ";
	expect_error(dv_store_release_create(f->store, "shop", "production", &spec, &r, &created, &err), -EINVAL, &err,
	             "not a valid release hash");
	assert_null(r);
	free(err);
	err = NULL;
	spec.hash = HASH_D;
	spec.compose_json = "{\"services\": ";
	expect_error(dv_store_release_create(f->store, "shop", "production", &spec, NULL, NULL, &err), -EINVAL, &err,
	             "compose JSON is not valid JSON");
	spec.compose_json = COMPOSE;
	spec.env_json = "[1,";
	expect_error(dv_store_release_create(f->store, "shop", "production", &spec, NULL, NULL, &err), -EINVAL, &err,
	             "environment JSON");
	spec.env_json = NULL;
	spec.compose_json = "\"\xff\xfe\"";
	expect_error(dv_store_release_create(f->store, "shop", "production", &spec, NULL, NULL, &err), -EINVAL, &err,
	             "UTF-8");
	spec.compose_json = COMPOSE;
	expect_error(dv_store_release_create(f->store, "ghost", "production", &spec, NULL, NULL, &err), -ENOENT, &err,
	             "no app named 'ghost'");
	/* The refusals consumed no number. */
	assert_int_equal(make_release(f, "shop", "production", HASH_D), 4);

	/* Releases are immutable, even to SQL. */
	dv_store_close(f->store);
	f->store = NULL;
	assert_int_not_equal(raw_exec(f->path, "UPDATE releases SET source = 'x'"), SQLITE_OK);
	reopen(f);
}

/* ---- deployments -------------------------------------------------------------- */

static void test_deploy_transitions(void **state)
{
	struct fixture *f = *state;
	struct dv_store_deployment *d = NULL;
	char *err = NULL;
	int64_t id;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	expect_error(dv_store_deployment_create(f->store, "shop", "production", 7, 0, &d, &err), -ENOENT, &err,
	             "no release 7");
	assert_null(d);
	free(err);
	err = NULL;
	expect_error(dv_store_deployment_create(f->store, "shop", "qa", 1, 0, &d, &err), -ENOENT, &err,
	             "no environment 'qa'");

	assert_int_equal(dv_store_deployment_create(f->store, "shop", "production", 1, f->now + 60000, &d, &err), 0);
	id = d->id;
	assert_int_equal(d->state, DV_STORE_DEPLOY_PLANNED);
	assert_int_equal(d->release, 1);
	assert_int_equal(d->previous_release, 0);
	assert_int_equal(d->created_at, f->now);
	assert_int_equal(d->started_at, 0);
	assert_int_equal(d->finished_at, 0);
	assert_int_equal(d->deadline, f->now + 60000);
	assert_null(d->error);
	dv_store_deployment_free(d);

	/* One unfinished deployment per app/env. */
	expect_error(dv_store_deployment_create(f->store, "shop", "production", 1, 0, &d, &err), -EBUSY, &err,
	             "still in progress");
	/* The state machine is enforced; nothing is written on refusal. */
	expect_error(dv_store_deployment_transition(f->store, id, DV_STORE_DEPLOY_SUCCEEDED, NULL, 0, &d, &err), -EINVAL,
	             &err, "cannot go from planned to succeeded");
	assert_null(d);
	free(err);
	err = NULL;
	expect_error(dv_store_deployment_transition(f->store, 999, DV_STORE_DEPLOY_RUNNING, NULL, 0, NULL, &err), -ENOENT,
	             &err, "no deployment 999");

	f->now += 5;
	assert_int_equal(dv_store_deployment_transition(f->store, id, DV_STORE_DEPLOY_RUNNING, NULL, f->now + 30000, &d,
	                                                &err),
	                 0);
	assert_int_equal(d->state, DV_STORE_DEPLOY_RUNNING);
	assert_int_equal(d->started_at, f->now);
	assert_int_equal(d->deadline, f->now + 30000);
	dv_store_deployment_free(d);
	assert_int_equal(dv_store_deployment_set_deadline(f->store, id, f->now + 90000, &err), 0);
	f->now += 5;
	assert_int_equal(dv_store_deployment_transition(f->store, id, DV_STORE_DEPLOY_ROLLING_BACK,
	                                                "web: health check failed", 0, NULL, &err),
	                 0);
	f->now += 5;
	assert_int_equal(dv_store_deployment_transition(f->store, id, DV_STORE_DEPLOY_ROLLED_BACK, NULL, 0, &d, &err), 0);
	assert_int_equal(d->state, DV_STORE_DEPLOY_ROLLED_BACK);
	assert_string_equal(d->error, "web: health check failed"); /* kept from rolling_back */
	assert_int_equal(d->started_at, 1700000000005);
	assert_int_equal(d->finished_at, 1700000000015);
	assert_int_equal(d->deadline, 0);
	dv_store_deployment_free(d);
	expect_error(dv_store_deployment_transition(f->store, id, DV_STORE_DEPLOY_RUNNING, NULL, 0, NULL, &err), -EINVAL,
	             &err, "cannot go from rolled_back to running");
	expect_error(dv_store_deployment_set_deadline(f->store, id, 1, &err), -EINVAL, &err, "is over");

	/* Finished: a new one may start; planned -> failed abandons it. */
	id = make_deployment(f, "shop", "production", 1);
	transition(f, id, DV_STORE_DEPLOY_FAILED, "cancelled");
	assert_int_equal(dv_store_deployment_get(f->store, id, &d, &err), 0);
	assert_int_equal(d->state, DV_STORE_DEPLOY_FAILED);
	assert_int_equal(d->started_at, 0);
	assert_string_equal(d->error, "cancelled");
	dv_store_deployment_free(d);
	assert_int_equal(dv_store_deployment_get(f->store, 12345, &d, &err), -ENOENT);
	assert_null(d);
	free(err);
}

static void test_current_pointer(void **state)
{
	struct fixture *f = *state;
	struct dv_store_deployment *d = NULL;
	struct dv_store_env *env = NULL;
	struct dv_store_release *r = NULL;
	int64_t id;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(dv_store_env_create(f->store, "shop", "staging", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	make_release(f, "shop", "production", HASH_B);
	make_release(f, "shop", "production", HASH_C);
	make_release(f, "shop", "staging", HASH_A);

	/* A first deploy that rolls back leaves nothing serving. */
	id = make_deployment(f, "shop", "production", 1);
	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	transition(f, id, DV_STORE_DEPLOY_ROLLING_BACK, "boom");
	transition(f, id, DV_STORE_DEPLOY_ROLLED_BACK, NULL);
	assert_int_equal(current_release(f, "shop", "production"), 0);

	deploy_ok(f, "shop", "production", 1);
	assert_int_equal(current_release(f, "shop", "production"), 1);
	assert_int_equal(current_release(f, "shop", "staging"), 0);
	assert_int_equal(dv_store_release_current(f->store, "shop", "production", &r, NULL), 0);
	assert_string_equal(r->compose_json, COMPOSE);
	dv_store_release_free(r);

	assert_int_equal(dv_store_deployment_create(f->store, "shop", "production", 2, 0, &d, NULL), 0);
	assert_int_equal(d->previous_release, 1);
	id = d->id;
	dv_store_deployment_free(d);
	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	/* Not switched until it succeeds. */
	assert_int_equal(current_release(f, "shop", "production"), 1);
	transition(f, id, DV_STORE_DEPLOY_SUCCEEDED, NULL);
	assert_int_equal(current_release(f, "shop", "production"), 2);

	/* Rolled back: the previous release serves again. */
	id = make_deployment(f, "shop", "production", 3);
	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	transition(f, id, DV_STORE_DEPLOY_ROLLING_BACK, "web unhealthy");
	transition(f, id, DV_STORE_DEPLOY_ROLLED_BACK, NULL);
	assert_int_equal(current_release(f, "shop", "production"), 2);
	/* Failed: unchanged. */
	id = make_deployment(f, "shop", "production", 3);
	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	transition(f, id, DV_STORE_DEPLOY_FAILED, "timeout");
	assert_int_equal(current_release(f, "shop", "production"), 2);
	/* Rollback to an earlier release = deploying it again. */
	deploy_ok(f, "shop", "production", 1);
	assert_int_equal(current_release(f, "shop", "production"), 1);

	assert_int_equal(dv_store_env_get(f->store, "shop", "production", &env, NULL), 0);
	assert_int_equal(env->current_release, 1);
	assert_int_equal(env->last_release, 3);
	dv_store_env_free(env);

	/* Survives a reopen. */
	reopen(f);
	assert_int_equal(current_release(f, "shop", "production"), 1);
}

static void test_crash_recovery(void **state)
{
	struct fixture *f = *state;
	struct dv_store_deployment *d = NULL, *list = NULL;
	struct dv_store_step *steps = NULL;
	char *err = NULL;
	size_t n = 0;
	int64_t id;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(dv_store_app_create(f->store, "blog", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	make_release(f, "shop", "production", HASH_B);
	make_release(f, "blog", "production", HASH_A);
	deploy_ok(f, "shop", "production", 1);
	assert_int_equal(dv_store_deployment_find_unfinished(f->store, "shop", "production", &d, &err), 0);
	assert_null(d);

	id = make_deployment(f, "shop", "production", 2);
	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	assert_int_equal(dv_store_step_append(f->store, id, "web", DV_STORE_STEP_STARTING, NULL, NULL, &err), 0);
	assert_int_equal(dv_store_step_append(f->store, id, "web", DV_STORE_STEP_WAITING_HEALTHY, "2 replicas", NULL,
	                                      &err),
	                 0);
	/* "kill -9": the process goes away mid-deploy; the next daemon opens the file. */
	dv_store_close(f->store);
	f->store = NULL;
	reopen(f);

	assert_int_equal(dv_store_deployment_find_unfinished(f->store, "shop", "production", &d, &err), 0);
	assert_non_null(d);
	assert_int_equal(d->id, id);
	assert_int_equal(d->state, DV_STORE_DEPLOY_RUNNING);
	assert_int_equal(d->release, 2);
	assert_int_equal(d->previous_release, 1);
	dv_store_deployment_free(d);
	assert_int_equal(dv_store_deployment_find_unfinished(f->store, "blog", "production", &d, &err), 0);
	assert_null(d);
	assert_int_equal(dv_store_deployment_list_unfinished(f->store, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(list[0].id, id);
	assert_string_equal(list[0].app, "shop");
	dv_store_deployment_array_free(list, n);
	assert_int_equal(dv_store_step_list(f->store, id, &steps, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(steps[1].state, DV_STORE_STEP_WAITING_HEALTHY);
	assert_string_equal(steps[1].message, "2 replicas");
	dv_store_step_array_free(steps, n);

	/* The recovering daemon decides to roll back. */
	transition(f, id, DV_STORE_DEPLOY_ROLLING_BACK, "daemon restarted mid-deploy");
	transition(f, id, DV_STORE_DEPLOY_ROLLED_BACK, NULL);
	assert_int_equal(current_release(f, "shop", "production"), 1);
	assert_int_equal(dv_store_deployment_find_unfinished(f->store, "shop", "production", &d, &err), 0);
	assert_null(d);
	expect_error(dv_store_deployment_find_unfinished(f->store, "ghost", "production", &d, &err), -ENOENT, &err,
	             "ghost");
	free(err);
}

static void test_deployment_list(void **state)
{
	struct fixture *f = *state;
	struct dv_store_deployment *list = NULL;
	char *err = NULL;
	size_t n = 0;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(dv_store_env_create(f->store, "shop", "staging", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	make_release(f, "shop", "staging", HASH_A);
	deploy_ok(f, "shop", "production", 1);
	deploy_ok(f, "shop", "staging", 1);
	deploy_ok(f, "shop", "production", 1);

	assert_int_equal(dv_store_deployment_list(f->store, "shop", NULL, 0, &list, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(list[0].id, 3);
	assert_string_equal(list[1].env, "staging");
	assert_int_equal(list[2].id, 1);
	assert_int_equal(list[0].previous_release, 1);
	dv_store_deployment_array_free(list, n);
	assert_int_equal(dv_store_deployment_list(f->store, "shop", "production", 1, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(list[0].id, 3);
	dv_store_deployment_array_free(list, n);
	assert_int_equal(dv_store_deployment_list(f->store, "ghost", NULL, 0, &list, &n, &err), -ENOENT);
	assert_null(list);
	free(err);
}

static void test_steps(void **state)
{
	struct fixture *f = *state;
	static const enum dv_store_step_state flow[] = {
		DV_STORE_STEP_STARTING, DV_STORE_STEP_WAITING_HEALTHY, DV_STORE_STEP_SWITCHING,
		DV_STORE_STEP_DRAINING, DV_STORE_STEP_STOPPING_OLD,    DV_STORE_STEP_DONE,
	};
	struct dv_store_step *steps = NULL;
	char *err = NULL;
	size_t n = 0, k = 0;
	int64_t id, other, seq = 0;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(dv_store_app_create(f->store, "blog", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	make_release(f, "blog", "production", HASH_A);
	id = make_deployment(f, "shop", "production", 1);
	other = make_deployment(f, "blog", "production", 1);
	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	for (const char *svc = "api"; svc; svc = strcmp(svc, "api") == 0 ? "web" : NULL) {
		for (size_t i = 0; i < sizeof flow / sizeof flow[0]; i++) {
			f->now++;
			assert_int_equal(dv_store_step_append(f->store, id, svc, flow[i], NULL, &seq, &err), 0);
			assert_int_equal(seq, (int64_t)++k);
			/* Interleaved: another deployment's steps do not disturb the numbering. */
			assert_int_equal(dv_store_step_append(f->store, other, "db", DV_STORE_STEP_STARTING, NULL, NULL, &err), 0);
		}
	}
	assert_int_equal(dv_store_step_append(f->store, id, "web", DV_STORE_STEP_FAILED, "bad \xff byte", &seq, &err), 0);
	assert_int_equal(dv_store_step_list(f->store, id, &steps, &n, &err), 0);
	assert_int_equal(n, 13);
	for (size_t i = 0; i < 12; i++) {
		assert_int_equal(steps[i].seq, (int64_t)i + 1);
		assert_int_equal(steps[i].deployment, id);
		assert_string_equal(steps[i].service, i < 6 ? "api" : "web");
		assert_int_equal(steps[i].state, flow[i % 6]);
		assert_int_equal(steps[i].at, 1700000000000 + (int64_t)i + 1);
		assert_null(steps[i].message);
	}
	assert_string_equal(steps[12].message, "bad \xef\xbf\xbd byte");
	dv_store_step_array_free(steps, n);

	expect_error(dv_store_step_append(f->store, id, "no spaces", DV_STORE_STEP_DONE, NULL, NULL, &err), -EINVAL, &err,
	             "not a valid service name");
	expect_error(dv_store_step_append(f->store, 4242, "web", DV_STORE_STEP_DONE, NULL, &seq, &err), -ENOENT, &err,
	             "no deployment 4242");
	assert_int_equal(seq, 0);
	free(err);
	err = NULL;
	transition(f, id, DV_STORE_DEPLOY_SUCCEEDED, NULL);
	expect_error(dv_store_step_append(f->store, id, "web", DV_STORE_STEP_DONE, NULL, NULL, &err), -EINVAL, &err,
	             "is over");
	free(err);
	assert_int_equal(dv_store_step_list(f->store, 4242, &steps, &n, NULL), 0);
	assert_int_equal(n, 0);
	assert_null(steps);
}

/* ---- replicas ------------------------------------------------------------------ */

static void test_replicas(void **state)
{
	struct fixture *f = *state;
	struct dv_store_replica r = {.app = "shop", .env = "production", .service = "web", .release = 1, .index = 0,
	                             .pid = 4242, .proc_start = 123456789, .port = 40001,
	                             .state = DV_STORE_REPLICA_STARTING, .started_at = 1700000000000};
	struct dv_store_replica *list = NULL;
	bool deleted = false;
	char *err = NULL;
	size_t n = 0;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(dv_store_app_create(f->store, "blog", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	make_release(f, "shop", "production", HASH_B);
	make_release(f, "blog", "production", HASH_A);

	assert_int_equal(dv_store_replica_upsert(f->store, &r, &err), 0);
	r.index = 1;
	r.pid = 4243;
	r.port = 40002;
	assert_int_equal(dv_store_replica_upsert(f->store, &r, &err), 0);
	r.release = 2; /* the new release's replica beside the old ones */
	r.index = 0;
	r.pid = 5000;
	r.port = 40003;
	assert_int_equal(dv_store_replica_upsert(f->store, &r, &err), 0);
	r.service = "api";
	r.release = 1;
	assert_int_equal(dv_store_replica_upsert(f->store, &r, &err), 0);
	r.app = "blog";
	r.service = "web";
	assert_int_equal(dv_store_replica_upsert(f->store, &r, &err), 0);

	/* Update in place: a crash and restart. */
	f->now += 500;
	r = (struct dv_store_replica){.app = "shop", .env = "production", .service = "web", .release = 1, .index = 1,
	                              .pid = 7777, .proc_start = 999, .port = 40002, .state = DV_STORE_REPLICA_HEALTHY,
	                              .started_at = f->now, .restarts = 1};
	assert_int_equal(dv_store_replica_upsert(f->store, &r, &err), 0);
	assert_null(err);

	assert_int_equal(dv_store_replica_list(f->store, "shop", &list, &n, &err), 0);
	assert_int_equal(n, 4);
	assert_string_equal(list[0].service, "api");
	assert_string_equal(list[1].service, "web");
	assert_int_equal(list[1].release, 1);
	assert_int_equal(list[1].index, 0);
	assert_int_equal(list[1].pid, 4242);
	assert_int_equal(list[1].proc_start, 123456789);
	assert_int_equal(list[1].port, 40001);
	assert_int_equal(list[1].state, DV_STORE_REPLICA_STARTING);
	assert_int_equal(list[2].index, 1);
	assert_int_equal(list[2].pid, 7777);
	assert_int_equal(list[2].proc_start, 999);
	assert_int_equal(list[2].state, DV_STORE_REPLICA_HEALTHY);
	assert_int_equal(list[2].restarts, 1);
	assert_int_equal(list[2].started_at, f->now);
	assert_int_equal(list[2].updated_at, f->now);
	assert_int_equal(list[3].release, 2);
	assert_string_equal(list[3].app, "shop");
	assert_string_equal(list[3].env, "production");
	dv_store_replica_array_free(list, n);
	assert_int_equal(dv_store_replica_list(f->store, NULL, &list, &n, &err), 0);
	assert_int_equal(n, 5);
	assert_string_equal(list[0].app, "blog");
	dv_store_replica_array_free(list, n);
	assert_int_equal(dv_store_replica_list(f->store, "ghost", &list, &n, &err), 0);
	assert_int_equal(n, 0);

	/* A replica with no process (crashed, waiting): pid and port 0. */
	r.pid = 0;
	r.port = 0;
	r.proc_start = 0;
	r.state = DV_STORE_REPLICA_CRASHED;
	assert_int_equal(dv_store_replica_upsert(f->store, &r, &err), 0);

	/* Refusals. */
	r.release = 9;
	expect_error(dv_store_replica_upsert(f->store, &r, &err), -ENOENT, &err, "no release 9");
	r.release = 1;
	r.port = 70000;
	expect_error(dv_store_replica_upsert(f->store, &r, &err), -EINVAL, &err, "not a port");
	r.port = 1;
	r.app = "ghost";
	expect_error(dv_store_replica_upsert(f->store, &r, &err), -ENOENT, &err, "no app named 'ghost'");

	/* The app cannot go while replicas are recorded. */
	expect_error(dv_store_app_delete(f->store, "shop", &err), -EBUSY, &err, "replica");

	assert_int_equal(dv_store_replica_delete(f->store, "shop", "production", "web", 1, 1, &deleted, &err), 0);
	assert_true(deleted);
	assert_int_equal(dv_store_replica_delete(f->store, "shop", "production", "web", 1, 1, &deleted, &err), 0);
	assert_false(deleted);
	assert_int_equal(dv_store_replica_delete(f->store, "shop", "production", "web", 99, 0, &deleted, &err), 0);
	assert_false(deleted);
	assert_int_equal(dv_store_replica_delete(f->store, "shop", "nope", "web", 1, 0, &deleted, &err), -ENOENT);
	free(err);
	err = NULL;
	assert_int_equal(dv_store_replica_list(f->store, "shop", &list, &n, &err), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(dv_store_replica_delete(f->store, list[i].app, list[i].env, list[i].service, list[i].release,
		                                         list[i].index, NULL, &err),
		                 0);
	dv_store_replica_array_free(list, n);
	assert_int_equal(dv_store_app_delete(f->store, "shop", &err), 0);
	assert_null(err);
}

/* ---- events --------------------------------------------------------------------- */

static void test_events(void **state)
{
	struct fixture *f = *state;
	struct dv_store_event_filter filter = {0};
	struct dv_store_event *ev = NULL;
	char *err = NULL, msg[32];
	size_t n = 0, deleted = 0;
	int64_t id = 0, last = 0;

	for (int i = 0; i < 10; i++) {
		snprintf(msg, sizeof msg, "event %d", i);
		f->now = 1000 * (i + 1);
		assert_int_equal(dv_store_event_add(f->store, i % 2 ? "shop" : "blog", i < 5 ? "deploy.started" : "replica.crashed",
		                                    msg, i == 3 ? "{\"release\":3}" : NULL, &id, &err),
		                 0);
		assert_true(id > last);
		last = id;
	}
	assert_int_equal(dv_store_event_add(f->store, NULL, "daemon.started", "up", NULL, NULL, &err), 0);
	assert_null(err);

	assert_int_equal(dv_store_event_list(f->store, NULL, &ev, &n, &err), 0);
	assert_int_equal(n, 11);
	assert_null(ev[0].app);
	assert_string_equal(ev[0].kind, "daemon.started");
	assert_string_equal(ev[1].message, "event 9");
	assert_int_equal(ev[1].at, 10000);
	assert_string_equal(ev[10].message, "event 0");
	assert_string_equal(ev[7].data, "{\"release\":3}");
	assert_null(ev[8].data);
	dv_store_event_array_free(ev, n);

	filter.app = "shop";
	assert_int_equal(dv_store_event_list(f->store, &filter, &ev, &n, &err), 0);
	assert_int_equal(n, 5);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(ev[i].app, "shop");
	dv_store_event_array_free(ev, n);
	filter.since = 6000;
	filter.kind = "replica.crashed";
	filter.limit = 2;
	assert_int_equal(dv_store_event_list(f->store, &filter, &ev, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(ev[0].message, "event 9");
	assert_string_equal(ev[1].message, "event 7");
	dv_store_event_array_free(ev, n);
	filter = (struct dv_store_event_filter){.after_id = last - 2};
	assert_int_equal(dv_store_event_list(f->store, &filter, &ev, &n, &err), 0);
	assert_int_equal(n, 3);
	dv_store_event_array_free(ev, n);

	expect_error(dv_store_event_add(f->store, "shop", "x", "m", "{nope", NULL, &err), -EINVAL, &err,
	             "event data is not valid JSON");
	expect_error(dv_store_event_add(f->store, "shop", "Bad Kind", "m", NULL, NULL, &err), -EINVAL, &err,
	             "not a valid event kind");

	/* Prune: older than 4000 ms (events 0..2), then keep the newest 5. */
	assert_int_equal(dv_store_event_prune(f->store, 4000, 0, &deleted, &err), 0);
	assert_int_equal(deleted, 3);
	assert_int_equal(dv_store_event_prune(f->store, 0, 5, &deleted, &err), 0);
	assert_int_equal(deleted, 3);
	assert_int_equal(dv_store_event_prune(f->store, 0, 5, &deleted, &err), 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(dv_store_event_list(f->store, NULL, &ev, &n, &err), 0);
	assert_int_equal(n, 5);
	assert_string_equal(ev[4].message, "event 6");
	dv_store_event_array_free(ev, n);
	/* Ids are not reused after a prune (followers rely on after_id). */
	assert_int_equal(dv_store_event_prune(f->store, 0, 1, NULL, &err), 0);
	assert_int_equal(dv_store_event_add(f->store, NULL, "x", "m", NULL, &id, &err), 0);
	assert_int_equal(id, last + 2);
	assert_null(err);
}

/* ---- the rest ---------------------------------------------------------------------- */

static void test_state_names(void **state)
{
	enum dv_store_deploy_state d;
	enum dv_store_step_state s;
	enum dv_store_replica_state r;

	for (int i = DV_STORE_DEPLOY_PLANNED; i <= DV_STORE_DEPLOY_ROLLED_BACK; i++) {
		assert_int_equal(dv_store_deploy_state_parse(dv_store_deploy_state_name(i), &d), 0);
		assert_int_equal(d, i);
	}
	for (int i = DV_STORE_STEP_STARTING; i <= DV_STORE_STEP_FAILED; i++) {
		assert_int_equal(dv_store_step_state_parse(dv_store_step_state_name(i), &s), 0);
		assert_int_equal(s, i);
	}
	for (int i = DV_STORE_REPLICA_STARTING; i <= DV_STORE_REPLICA_CRASHED; i++) {
		assert_int_equal(dv_store_replica_state_parse(dv_store_replica_state_name(i), &r), 0);
		assert_int_equal(r, i);
	}
	assert_string_equal(dv_store_deploy_state_name(DV_STORE_DEPLOY_ROLLING_BACK), "rolling_back");
	assert_string_equal(dv_store_step_state_name(DV_STORE_STEP_WAITING_HEALTHY), "waiting_healthy");
	assert_string_equal(dv_store_deploy_state_name((enum dv_store_deploy_state)42), "?");
	assert_int_equal(dv_store_deploy_state_parse("bogus", &d), -EINVAL);
	assert_int_equal(dv_store_deploy_state_parse(NULL, &d), -EINVAL);
	assert_true(dv_store_deploy_state_final(DV_STORE_DEPLOY_SUCCEEDED));
	assert_false(dv_store_deploy_state_final(DV_STORE_DEPLOY_ROLLING_BACK));
	assert_true(dv_store_deploy_transition_allowed(DV_STORE_DEPLOY_RUNNING, DV_STORE_DEPLOY_ROLLING_BACK));
	assert_false(dv_store_deploy_transition_allowed(DV_STORE_DEPLOY_PLANNED, DV_STORE_DEPLOY_ROLLING_BACK));
	assert_false(dv_store_deploy_transition_allowed(DV_STORE_DEPLOY_SUCCEEDED, DV_STORE_DEPLOY_RUNNING));
}

static void test_long_and_bad_text(void **state)
{
	struct fixture *f = *state;
	struct dv_store_deployment *d = NULL;
	size_t big = DV_STORE_TEXT_MAX + 1000;
	char *text = malloc(big + 1);
	int64_t id;

	assert_non_null(text);
	memset(text, 'x', big);
	/* A multi-byte character across the cut. */
	memcpy(text + DV_STORE_TEXT_MAX - 1, "\xc3\xa9", 2);
	text[big] = '\0';
	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	id = make_deployment(f, "shop", "production", 1);
	transition(f, id, DV_STORE_DEPLOY_FAILED, text);
	assert_int_equal(dv_store_deployment_get(f->store, id, &d, NULL), 0);
	assert_int_equal(strlen(d->error), DV_STORE_TEXT_MAX - 1);
	dv_store_deployment_free(d);
	free(text);

	id = make_deployment(f, "shop", "production", 1);
	transition(f, id, DV_STORE_DEPLOY_FAILED, "exit \xc0\xaf\xed\xa0\x80 ok \xf0\x9f\x9a\x80");
	assert_int_equal(dv_store_deployment_get(f->store, id, &d, NULL), 0);
	/* Overlong and surrogate bytes replaced, the emoji kept. */
	assert_string_equal(d->error, "exit \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd ok \xf0\x9f\x9a\x80");
	dv_store_deployment_free(d);
}

static void test_delete_cascades(void **state)
{
	struct fixture *f = *state;
	struct dv_store_event *ev = NULL;
	char *err = NULL;
	size_t n = 0;
	int64_t id;

	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(dv_store_env_create(f->store, "shop", "staging", NULL), 0);
	make_release(f, "shop", "production", HASH_A);
	make_release(f, "shop", "staging", HASH_A);
	deploy_ok(f, "shop", "production", 1);
	id = make_deployment(f, "shop", "staging", 1);
	transition(f, id, DV_STORE_DEPLOY_RUNNING, NULL);
	assert_int_equal(dv_store_step_append(f->store, id, "web", DV_STORE_STEP_STARTING, NULL, NULL, NULL), 0);
	assert_int_equal(dv_store_event_add(f->store, "shop", "app.created", "hello", NULL, NULL, NULL), 0);

	expect_error(dv_store_env_delete(f->store, "shop", "staging", &err), -EBUSY, &err, "deployment in progress");
	expect_error(dv_store_app_delete(f->store, "shop", &err), -EBUSY, &err, "deployment in progress");
	transition(f, id, DV_STORE_DEPLOY_FAILED, "stop");
	assert_int_equal(dv_store_app_delete(f->store, "shop", &err), 0);
	assert_null(err);
	dv_store_close(f->store);
	f->store = NULL;
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM releases"), 0);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM deployments"), 0);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM deployment_steps"), 0);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM current_releases"), 0);
	assert_int_equal(raw_int(f->path, "SELECT count(*) FROM environments"), 0);
	assert_int_equal(raw_int(f->path, "PRAGMA foreign_key_check"), -1); /* no violations: no rows */
	reopen(f);
	/* Events outlive the app. */
	assert_int_equal(dv_store_event_list(f->store, NULL, &ev, &n, NULL), 0);
	assert_int_equal(n, 1);
	dv_store_event_array_free(ev, n);
	/* The name can be reused; numbering starts over for the new app. */
	assert_int_equal(dv_store_app_create(f->store, "shop", NULL), 0);
	assert_int_equal(make_release(f, "shop", "production", HASH_B), 1);
}

/* One store per thread, as store.h asks: writers wait for each other. */
struct writer {
	const char *path;
	int index;
	int failures;
};

#define WRITES 50

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct dv_store *s = NULL;
	char *err = NULL, msg[32];

	if (dv_store_open(w->path, &s, &err) != 0) {
		w->failures = WRITES;
		free(err);
		return NULL;
	}
	for (int i = 0; i < WRITES; i++) {
		snprintf(msg, sizeof msg, "writer %d #%d", w->index, i);
		if (dv_store_event_add(s, NULL, "test", msg, NULL, NULL, &err) != 0) {
			w->failures++;
			free(err);
			err = NULL;
		}
	}
	dv_store_close(s);
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *f = *state;
	struct writer writers[4];
	pthread_t threads[4];
	struct dv_store_event_filter all = {.limit = 1000};
	struct dv_store_event *ev = NULL;
	size_t n = 0;

	for (int i = 0; i < 4; i++) {
		writers[i] = (struct writer){.path = f->path, .index = i};
		assert_int_equal(pthread_create(&threads[i], NULL, writer_main, &writers[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(threads[i], NULL), 0);
		assert_int_equal(writers[i].failures, 0);
	}
	assert_int_equal(dv_store_event_list(f->store, &all, &ev, &n, NULL), 0);
	assert_int_equal(n, 4 * WRITES);
	dv_store_event_array_free(ev, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_fresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_new_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_files_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apps_and_envs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_releases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deploy_transitions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_current_pointer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deployment_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replicas, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup, teardown),
		cmocka_unit_test(test_state_names),
		cmocka_unit_test_setup_teardown(test_long_and_bad_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_cascades, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
