/* store: davit's persistent state in SQLite (see store.h).
 *
 * Shape of every function here: validate the arguments (names, UTF-8, JSON
 * sizes) before touching the database; look names up to row ids; run the
 * writes in one BEGIN IMMEDIATE transaction (taking the write lock up front
 * means a writer never has to upgrade a read lock, which is what deadlocks
 * between two connections in SQLite); reset every statement before leaving.
 * Statements are prepared once per connection and cached by the address of
 * their SQL text (each text is a literal at one call site).
 */
#include "store/store.h"

#include "core/alloc.h"
#include "core/log.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DV_STORE_APPLICATION_ID 0x64766174 /* "dvat", set by migration 1 */
#define BUSY_TIMEOUT_MS 5000
#define MIN_SQLITE_VERSION 3038000 /* json_valid() built in, RETURNING, UPSERT */
#define EVENT_LIMIT_DEFAULT 100
#define EVENT_LIMIT_MAX 10000
#define HASH_MIN 8
#define HASH_MAX 128

/* The states of a deployment that is not over, as SQL (for IN lists). */
#define UNFINISHED_SQL "('planned', 'running', 'rolling_back')"

struct cached_stmt {
	const char *sql; /* identity: the address of the literal */
	sqlite3_stmt *stmt;
};

struct dv_store {
	sqlite3 *db;
	char *path;
	int64_t (*now_ms)(void *arg);
	void *now_arg;
	struct cached_stmt *cache;
	size_t n_cache, cap_cache;
};

/* ---- errors ---------------------------------------------------------------- */

__attribute__((format(printf, 2, 0))) static void set_errv(char **err, const char *fmt, va_list ap)
{
	va_list copy;
	int len;

	if (!err || *err)
		return;
	va_copy(copy, ap);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0) {
		*err = dv_xstrdup("(cannot format the error message)");
		return;
	}
	*err = dv_xmalloc((size_t)len + 1);
	vsnprintf(*err, (size_t)len + 1, fmt, ap);
}

__attribute__((format(printf, 2, 3))) static void set_err(char **err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_errv(err, fmt, ap);
	va_end(ap);
}

/* Sets *err (if wanted) and returns rc, for one-line failures. */
__attribute__((format(printf, 3, 4))) static int fail(char **err, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_errv(err, fmt, ap);
	va_end(ap);
	return rc;
}

/* A negative errno value for an SQLite (extended) result code. */
static int code_to_errno(int code)
{
	switch (code) {
	case SQLITE_CONSTRAINT_UNIQUE:
	case SQLITE_CONSTRAINT_PRIMARYKEY:
		return -EEXIST;
	default:
		break;
	}
	switch (code & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
	case SQLITE_NOTADB:
		return -EINVAL;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
	case SQLITE_CANTOPEN:
		return -EACCES;
	case SQLITE_TOOBIG:
		return -EFBIG;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/* Fails with the connection's last error: *err = "<what>: <sqlite message>".
 * Call it right after the failing SQLite call (the message is per call). */
__attribute__((format(printf, 4, 5))) static int fail_db(struct dv_store *s, int code, char **err,
                                                          const char *fmt, ...)
{
	va_list ap;
	char *what = NULL;

	if (err && !*err) {
		va_start(ap, fmt);
		set_errv(&what, fmt, ap);
		va_end(ap);
		set_err(err, "%s: %s", what, sqlite3_errmsg(s->db));
		free(what);
	}
	return code_to_errno(code);
}

/* ---- text checks ---------------------------------------------------------------- */

/* The length of the valid UTF-8 sequence at p (at most `avail` bytes), or 0
 * if it is not one (overlong forms, surrogates and values above U+10FFFF are
 * invalid). */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
	size_t len;
	uint32_t cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (avail < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static bool utf8_valid(const char *text, size_t len)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t i = 0, n;

	while (i < len) {
		n = utf8_seq(p + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* A copy of free text with each invalid UTF-8 byte replaced by U+FFFD, cut
 * on a character boundary at DV_STORE_TEXT_MAX bytes. NULL for NULL; the
 * caller frees the copy. */
static char *clean_text(const char *text)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t len, cap, i = 0, o = 0, n;
	char *out;

	if (!text)
		return NULL;
	len = strlen(text);
	cap = len > DV_STORE_TEXT_MAX / 3 ? DV_STORE_TEXT_MAX : len * 3;
	out = dv_xmalloc(cap + 1);
	while (i < len) {
		n = utf8_seq(p + i, len - i);
		if (n == 0) {
			if (o + 3 > cap)
				break;
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		if (o + n > cap)
			break;
		memcpy(out + o, p + i, n);
		o += n;
		i += n;
	}
	out[o] = '\0';
	return out;
}

static bool is_lower_or_digit(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_or_digit(c) || (c >= 'A' && c <= 'Z');
}

/* App and environment names: [a-z0-9][a-z0-9_-]*. */
static bool valid_name(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	if (len == 0 || len > DV_STORE_NAME_MAX || !is_lower_or_digit(s[0]))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!is_lower_or_digit(s[i]) && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

/* Service names: [A-Za-z0-9][A-Za-z0-9._-]*. */
static bool valid_service(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	if (len == 0 || len > DV_STORE_NAME_MAX || !is_alnum(s[0]))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

/* Event kinds: [a-z0-9][a-z0-9._-]*. */
static bool valid_kind(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	if (len == 0 || len > DV_STORE_NAME_MAX || !is_lower_or_digit(s[0]))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!is_lower_or_digit(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

/* Content hashes: lower-case hex, HASH_MIN..HASH_MAX digits. */
static bool valid_hash(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	if (len < HASH_MIN || len > HASH_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* 0, or -EINVAL with a message naming `what` ("app", "environment"). */
static int check_name(const char *what, const char *name, char **err)
{
	if (!name || !*name)
		return fail(err, -EINVAL, "an %s name is required", what);
	if (!valid_name(name))
		return fail(err, -EINVAL,
		            "'%s' is not a valid %s name: use at most %d lower-case letters, digits, '-' and '_', "
		            "starting with a letter or digit",
		            name, what, DV_STORE_NAME_MAX);
	return 0;
}

static int check_app_env(const char *app, const char *env, char **err)
{
	int rc = check_name("app", app, err);

	if (rc == 0)
		rc = check_name("environment", env, err);
	return rc;
}

static int check_service(const char *service, char **err)
{
	if (!valid_service(service))
		return fail(err, -EINVAL,
		            "'%s' is not a valid service name: use at most %d letters, digits, '.', '_' and '-', "
		            "starting with a letter or digit",
		            service ? service : "", DV_STORE_NAME_MAX);
	return 0;
}

/* 0, or -EINVAL/-EFBIG: `json` (described by `what`) must be UTF-8 of at most
 * DV_STORE_JSON_MAX bytes; json_valid() is checked by the caller's SQL. */
static int check_json_text(const char *what, const char *json, char **err)
{
	size_t len = strlen(json);

	if (len > DV_STORE_JSON_MAX)
		return fail(err, -EFBIG, "%s is %zu bytes: the limit is %d", what, len, DV_STORE_JSON_MAX);
	if (!utf8_valid(json, len))
		return fail(err, -EINVAL, "%s is not valid UTF-8", what);
	return 0;
}

/* ---- statements ------------------------------------------------------------------ */

/* The cached statement for `sql` (a string literal), prepared on first use.
 * The statement belongs to the store; give it back with done(). */
static int prepare(struct dv_store *s, const char *sql, sqlite3_stmt **out, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int code, rc = 0;

	for (size_t i = 0; i < s->n_cache; i++) {
		if (s->cache[i].sql == sql) {
			*out = s->cache[i].stmt;
			goto out;
		}
	}
	code = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
	if (code != SQLITE_OK) {
		rc = fail_db(s, code, err, "cannot prepare a statement of the state database");
		goto out;
	}
	if (s->n_cache == s->cap_cache) {
		s->cap_cache = s->cap_cache ? s->cap_cache * 2 : 32;
		s->cache = dv_xrealloc(s->cache, s->cap_cache * sizeof *s->cache);
	}
	s->cache[s->n_cache].sql = sql;
	s->cache[s->n_cache].stmt = stmt;
	s->n_cache++;
	*out = stmt;
out:
	return rc;
}

/* Resets a statement from prepare() (NULL is fine) and drops its bindings,
 * which point into the caller's strings. */
static void done(sqlite3_stmt *stmt)
{
	if (stmt) {
		sqlite3_reset(stmt);
		sqlite3_clear_bindings(stmt);
	}
}

/* Binds parameters ?1, ?2, ... from the arguments, one per letter of
 * `types`: 't' const char * (NULL binds NULL; the text must outlive the
 * statement's use), 'i' int64_t, 'z' int64_t where 0 binds NULL. */
static int bind(struct dv_store *s, sqlite3_stmt *stmt, char **err, const char *types, ...)
{
	va_list ap;
	int code = SQLITE_OK;

	va_start(ap, types);
	for (int i = 0; types[i] && code == SQLITE_OK; i++) {
		const char *text;
		int64_t value;

		switch (types[i]) {
		case 't':
			text = va_arg(ap, const char *);
			code = text ? sqlite3_bind_text(stmt, i + 1, text, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, i + 1);
			break;
		case 'i':
			code = sqlite3_bind_int64(stmt, i + 1, va_arg(ap, int64_t));
			break;
		case 'z':
			value = va_arg(ap, int64_t);
			code = value ? sqlite3_bind_int64(stmt, i + 1, value) : sqlite3_bind_null(stmt, i + 1);
			break;
		default:
			assert(!"bad bind type");
			code = SQLITE_MISUSE;
		}
	}
	va_end(ap);
	return code == SQLITE_OK ? 0 : fail_db(s, code, err, "cannot bind a parameter");
}

/* Steps a statement: 1 for a row, 0 when done, or a negative errno value
 * with *err = "<what>: <sqlite message>". */
static int step(struct dv_store *s, sqlite3_stmt *stmt, char **err, const char *what)
{
	int code = sqlite3_step(stmt);

	if (code == SQLITE_ROW)
		return 1;
	if (code == SQLITE_DONE)
		return 0;
	return fail_db(s, code, err, "%s", what);
}

/* Runs SQL without parameters or results (one or more statements). */
static int exec(struct dv_store *s, const char *sql, char **err, const char *what)
{
	int code = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

	return code == SQLITE_OK ? 0 : fail_db(s, code, err, "%s", what);
}

static int tx_begin(struct dv_store *s, char **err)
{
	return exec(s, "BEGIN IMMEDIATE", err, "cannot start a write transaction on the state database");
}

static int tx_commit(struct dv_store *s, char **err)
{
	return exec(s, "COMMIT", err, "cannot commit to the state database");
}

/* Rolls back the open transaction, if any (after a failure). */
static void tx_rollback(struct dv_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* A copy of a text column; NULL for SQL NULL. */
static char *col_text(sqlite3_stmt *stmt, int col)
{
	const unsigned char *text = sqlite3_column_text(stmt, col);

	return text ? dv_xstrdup((const char *)text) : NULL;
}

/* Runs a query that yields one integer (NULL reads as 0). *found (optional)
 * says whether there was a row; without a row *value is 0. */
static int query_int(struct dv_store *s, sqlite3_stmt *stmt, int64_t *value, bool *found, char **err,
                     const char *what)
{
	int rc = step(s, stmt, err, what);

	*value = rc == 1 ? sqlite3_column_int64(stmt, 0) : 0;
	if (found)
		*found = rc == 1;
	done(stmt);
	return rc < 0 ? rc : 0;
}

typedef void (*row_reader)(sqlite3_stmt *stmt, void *item);

/* Reads every row of a bound statement into a new array of `size`-byte
 * items (NULL when there is none); on failure frees what was read, with
 * `clear` per item. Resets the statement. */
static int collect(struct dv_store *s, sqlite3_stmt *stmt, size_t size, row_reader read, void (*clear)(void *),
                   void **items, size_t *n, char **err, const char *what)
{
	char *array = NULL;
	size_t len = 0, cap = 0;
	int rc;

	while ((rc = step(s, stmt, err, what)) == 1) {
		if (len == cap) {
			cap = cap ? cap * 2 : 8;
			array = dv_xrealloc(array, cap * size);
		}
		memset(array + len * size, 0, size);
		read(stmt, array + len * size);
		len++;
	}
	done(stmt);
	if (rc < 0) {
		for (size_t i = 0; i < len; i++)
			clear(array + i * size);
		free(array);
		array = NULL;
		len = 0;
	}
	*items = array;
	*n = len;
	return rc < 0 ? rc : 0;
}

/* A LIMIT value: 0 means no limit (-1 for SQLite). */
static int64_t sql_limit(size_t limit)
{
	return limit == 0 ? -1 : limit > INT64_MAX ? INT64_MAX : (int64_t)limit;
}

/* ---- time -------------------------------------------------------------------- */

static int64_t realtime_ms(void *arg)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dv_store_set_clock(struct dv_store *store, int64_t (*now_ms)(void *arg), void *arg)
{
	store->now_ms = now_ms ? now_ms : realtime_ms;
	store->now_arg = now_ms ? arg : NULL;
}

int64_t dv_store_now_ms(struct dv_store *store)
{
	return store->now_ms(store->now_arg);
}

/* ---- opening ----------------------------------------------------------------- */

int dv_store_schema_version(void)
{
	return (int)dv_store_migrations_len;
}

/* The directory part of a path ("." for a bare name); the caller frees it. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return dv_xstrdup(".");
	if (slash == path)
		return dv_xstrdup("/");
	return dv_xstrndup(path, (size_t)(slash - path));
}

/* Checks what SQLite would report badly: the path is a directory, its
 * directory is missing or not writable (WAL creates PATH-wal and PATH-shm
 * beside the database, even when the database file exists). */
static int check_path(const char *path, char **err)
{
	struct stat st;
	char *dir = dir_of(path);
	int rc = 0;

	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode)) {
			rc = fail(err, -EISDIR, "the state database '%s' is a directory: give the path of the database file "
			                        "(for example %s/davit.db)", path, path);
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			rc = fail(err, -EINVAL, "the state database '%s' is not a regular file", path);
			goto out;
		}
	} else if (errno != ENOENT) {
		rc = -errno;
		set_err(err, "cannot open the state database '%s': %s", path, strerror(-rc));
		goto out;
	}
	if (stat(dir, &st) != 0) {
		rc = -errno;
		if (rc == -ENOENT)
			set_err(err, "cannot open the state database '%s': the directory '%s' does not exist (create it first)",
			        path, dir);
		else
			set_err(err, "cannot open the state database '%s': directory '%s': %s", path, dir, strerror(-rc));
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		rc = fail(err, -ENOTDIR, "cannot open the state database '%s': '%s' is not a directory", path, dir);
		goto out;
	}
	if (access(dir, W_OK | X_OK) != 0) {
		rc = -errno;
		set_err(err, "cannot open the state database '%s': the directory '%s' is not writable by this user (%s); "
		             "davit needs to create the database and its -wal and -shm files there",
		        path, dir, strerror(-rc));
		goto out;
	}
out:
	free(dir);
	return rc;
}

/* Reads a PRAGMA (or any one-integer query) without caching the statement. */
static int pragma_int(struct dv_store *s, const char *sql, int64_t *value, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int code, rc = 0;

	*value = 0;
	code = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
	if (code != SQLITE_OK) {
		rc = fail_db(s, code, err, "cannot read the state database '%s'", s->path);
		goto out;
	}
	code = sqlite3_step(stmt);
	if (code == SQLITE_ROW)
		*value = sqlite3_column_int64(stmt, 0);
	else if (code != SQLITE_DONE)
		rc = fail_db(s, code, err, "cannot read the state database '%s'", s->path);
out:
	sqlite3_finalize(stmt);
	return rc;
}

/* Refuses a database this binary cannot use: written by a newer davit, or
 * not davit's. *version is its schema version. */
static int check_schema(struct dv_store *s, int64_t *version, char **err)
{
	int64_t app_id = 0, objects = 0;
	int rc;

	rc = pragma_int(s, "PRAGMA user_version", version, err);
	if (rc)
		goto out;
	if (*version > dv_store_schema_version()) {
		rc = fail(err, -ENOTSUP,
		          "the state database '%s' has schema version %lld, but this davit knows versions up to %d: it "
		          "was written by a newer davit; run that version (or restore a backup made by this one)",
		          s->path, (long long)*version, dv_store_schema_version());
		goto out;
	}
	if (*version < 0) {
		rc = fail(err, -EINVAL, "the state database '%s' has a negative schema version (%lld): it is not davit's",
		          s->path, (long long)*version);
		goto out;
	}
	if (*version > 0) {
		rc = pragma_int(s, "PRAGMA application_id", &app_id, err);
		if (rc == 0 && app_id != DV_STORE_APPLICATION_ID)
			rc = fail(err, -EINVAL, "'%s' is an SQLite database of another application (application_id %lld), "
			                        "not a davit state database", s->path, (long long)app_id);
	} else {
		rc = pragma_int(s, "SELECT count(*) FROM sqlite_schema", &objects, err);
		if (rc == 0 && objects > 0)
			rc = fail(err, -EINVAL, "'%s' is an SQLite database with tables but no davit schema: it is not a davit "
			                        "state database", s->path);
	}
out:
	return rc;
}

/* Applies the pending migrations, each in its own transaction. The version
 * is read again inside each transaction: another process may be migrating
 * the same file. */
static int migrate(struct dv_store *s, char **err)
{
	int64_t version = 0;
	char pragma[64];
	int rc = 0;

	for (;;) {
		rc = tx_begin(s, err);
		if (rc)
			goto out;
		rc = check_schema(s, &version, err);
		if (rc)
			goto out;
		if (version >= dv_store_schema_version()) {
			rc = tx_commit(s, err);
			goto out;
		}
		if (sqlite3_exec(s->db, dv_store_migrations[version], NULL, NULL, NULL) != SQLITE_OK) {
			rc = fail_db(s, sqlite3_extended_errcode(s->db), err,
			             "cannot migrate the state database '%s' to schema version %lld", s->path,
			             (long long)version + 1);
			goto out;
		}
		snprintf(pragma, sizeof pragma, "PRAGMA user_version = %lld", (long long)version + 1);
		rc = exec(s, pragma, err, "cannot record the schema version");
		if (rc == 0)
			rc = tx_commit(s, err);
		if (rc)
			goto out;
		dv_log_info("store", "%s: schema migrated to version %lld", s->path, (long long)version + 1);
	}
out:
	if (rc)
		tx_rollback(s);
	return rc;
}

/* Per-connection settings and the schema checks that must come before
 * anything is written (a too-new database is not touched). */
static int configure(struct dv_store *s, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t version = 0, fk = 0;
	const char *mode;
	int code, rc;

	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	sqlite3_extended_result_codes(s->db, 1);
	rc = exec(s, "PRAGMA foreign_keys = ON", err, "cannot enable foreign keys");
	if (rc == 0)
		rc = pragma_int(s, "PRAGMA foreign_keys", &fk, err);
	if (rc == 0 && fk != 1)
		rc = fail(err, -ENOTSUP, "this SQLite library does not enforce foreign keys");
	if (rc == 0)
		rc = check_schema(s, &version, err);
	if (rc)
		goto out;
	code = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
	if (code == SQLITE_OK)
		code = sqlite3_step(stmt);
	if (code != SQLITE_ROW) {
		rc = fail_db(s, code, err, "cannot switch the state database '%s' to WAL mode", s->path);
		goto out;
	}
	mode = (const char *)sqlite3_column_text(stmt, 0);
	if (!mode || strcmp(mode, "wal") != 0) {
		rc = fail(err, -EIO, "cannot switch the state database '%s' to WAL mode (it stays in '%s' mode)", s->path,
		          mode ? mode : "?");
		goto out;
	}
	/* FULL: a transition that returned has reached the disk before the
	 * caller acts on it (NORMAL could lose it on power loss). */
	rc = exec(s, "PRAGMA synchronous = FULL", err, "cannot set synchronous mode");
out:
	sqlite3_finalize(stmt);
	return rc;
}

int dv_store_open(const char *path, struct dv_store **out, char **err)
{
	struct dv_store *s = NULL;
	int code, rc = 0, sys;

	*out = NULL;
	if (!path || !*path) {
		rc = fail(err, -EINVAL, "the path of the state database is empty");
		goto out;
	}
	if (sqlite3_libversion_number() < MIN_SQLITE_VERSION) {
		rc = fail(err, -ENOTSUP, "SQLite %s is too old: davit needs 3.38 or later", sqlite3_libversion());
		goto out;
	}
	rc = check_path(path, err);
	if (rc)
		goto out;
	s = dv_xcalloc(1, sizeof *s);
	s->path = dv_xstrdup(path);
	s->now_ms = realtime_ms;
	code = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (code != SQLITE_OK) {
		sys = s->db ? sqlite3_system_errno(s->db) : 0;
		rc = sys ? -sys : code_to_errno(code);
		set_err(err, "cannot open the state database '%s': %s", path,
		        sys ? strerror(sys) : s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(code));
		goto out;
	}
	/* SQLite silently falls back to read-only when the file is not writable. */
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		rc = fail(err, -EROFS, "the state database '%s' is read-only for this user: davit needs to write it", path);
		goto out;
	}
	rc = configure(s, err);
	if (rc == 0)
		rc = migrate(s, err);
	if (rc)
		goto out;
	*out = s;
	s = NULL;
out:
	dv_store_close(s);
	return rc;
}

void dv_store_close(struct dv_store *store)
{
	if (!store)
		return;
	for (size_t i = 0; i < store->n_cache; i++)
		sqlite3_finalize(store->cache[i].stmt);
	if (store->db && sqlite3_close(store->db) != SQLITE_OK)
		dv_log_error("store", "%s: cannot close: %s", store->path, sqlite3_errmsg(store->db));
	free(store->cache);
	free(store->path);
	free(store);
}

/* ---- lookups ----------------------------------------------------------------- */

/* The row id of app `name`; -ENOENT (with a message) if there is none. */
static int lookup_app(struct dv_store *s, const char *name, int64_t *app_id, char **err)
{
	sqlite3_stmt *stmt = NULL;
	bool found = false;
	int rc;

	rc = check_name("app", name, err);
	if (rc == 0)
		rc = prepare(s, "SELECT id FROM apps WHERE name = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "t", name);
	if (rc == 0)
		rc = query_int(s, stmt, app_id, &found, err, "cannot look up an app");
	if (rc == 0 && !found)
		rc = fail(err, -ENOENT, "there is no app named '%s'", name);
	done(stmt);
	return rc;
}

/* The row id of environment app/env; -ENOENT (saying which is missing). */
static int lookup_env(struct dv_store *s, const char *app, const char *env, int64_t *env_id, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t app_id = 0;
	bool found = false;
	int rc;

	rc = check_app_env(app, env, err);
	if (rc == 0)
		rc = lookup_app(s, app, &app_id, err);
	if (rc == 0)
		rc = prepare(s, "SELECT id FROM environments WHERE app_id = ?1 AND name = ?2", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "it", app_id, env);
	if (rc == 0)
		rc = query_int(s, stmt, env_id, &found, err, "cannot look up an environment");
	if (rc == 0 && !found)
		rc = fail(err, -ENOENT, "app '%s' has no environment '%s'", app, env);
	done(stmt);
	return rc;
}

/* The row id of release `number` of an environment; -ENOENT if none. */
static int lookup_release(struct dv_store *s, int64_t env_id, int64_t number, const char *app, const char *env,
                          int64_t *release_id, char **err)
{
	sqlite3_stmt *stmt = NULL;
	bool found = false;
	int rc;

	rc = prepare(s, "SELECT id FROM releases WHERE env_id = ?1 AND number = ?2", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "ii", env_id, number);
	if (rc == 0)
		rc = query_int(s, stmt, release_id, &found, err, "cannot look up a release");
	if (rc == 0 && !found)
		rc = fail(err, -ENOENT, "%s/%s has no release %lld", app, env, (long long)number);
	done(stmt);
	return rc;
}

/* ---- apps ---------------------------------------------------------------------- */

static void app_clear(void *item)
{
	struct dv_store_app *app = item;

	free(app->name);
}

static void app_read(sqlite3_stmt *stmt, void *item)
{
	struct dv_store_app *app = item;

	app->name = col_text(stmt, 0);
	app->created_at = sqlite3_column_int64(stmt, 1);
}

void dv_store_app_free(struct dv_store_app *app)
{
	if (app) {
		app_clear(app);
		free(app);
	}
}

void dv_store_app_array_free(struct dv_store_app *apps, size_t n)
{
	for (size_t i = 0; apps && i < n; i++)
		app_clear(&apps[i]);
	free(apps);
}

/* Inserts an environment row (inside the caller's transaction). */
static int env_insert(struct dv_store *s, int64_t app_id, const char *env, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	rc = prepare(s, "INSERT INTO environments (app_id, name, created_at) VALUES (?1, ?2, ?3)", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "iti", app_id, env, dv_store_now_ms(s));
	if (rc == 0)
		rc = step(s, stmt, err, "cannot create an environment");
	done(stmt);
	return rc;
}

/* Creates app `name` with its default environment, or, with exist_ok, leaves
 * an existing one alone. */
static int app_create(struct dv_store *s, const char *name, bool exist_ok, bool *created, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t app_id = 0;
	bool found = false;
	int rc;

	if (created)
		*created = false;
	rc = check_name("app", name, err);
	if (rc)
		goto out;
	rc = tx_begin(s, err);
	if (rc)
		goto out;
	rc = prepare(s, "SELECT id FROM apps WHERE name = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "t", name);
	if (rc == 0)
		rc = query_int(s, stmt, &app_id, &found, err, "cannot look up an app");
	if (rc)
		goto out;
	if (found) {
		if (!exist_ok)
			rc = fail(err, -EEXIST, "an app named '%s' exists already", name);
		goto out;
	}
	rc = prepare(s, "INSERT INTO apps (name, created_at) VALUES (?1, ?2)", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "ti", name, dv_store_now_ms(s));
	if (rc == 0)
		rc = step(s, stmt, err, "cannot create an app");
	done(stmt);
	if (rc)
		goto out;
	app_id = sqlite3_last_insert_rowid(s->db);
	rc = env_insert(s, app_id, DV_STORE_DEFAULT_ENV, err);
	if (rc)
		goto out;
	if (created)
		*created = true;
out:
	done(stmt);
	if (rc == 0)
		rc = tx_commit(s, err);
	if (rc) {
		tx_rollback(s);
		if (created)
			*created = false;
	}
	return rc;
}

int dv_store_app_create(struct dv_store *store, const char *name, char **err)
{
	return app_create(store, name, false, NULL, err);
}

int dv_store_app_ensure(struct dv_store *store, const char *name, bool *created, char **err)
{
	return app_create(store, name, true, created, err);
}

int dv_store_app_get(struct dv_store *store, const char *name, struct dv_store_app **out, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	if (out)
		*out = NULL;
	rc = check_name("app", name, err);
	if (rc == 0)
		rc = prepare(store, "SELECT name, created_at FROM apps WHERE name = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "t", name);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot read an app");
	if (rc == 0)
		rc = fail(err, -ENOENT, "there is no app named '%s'", name);
	if (rc == 1) {
		rc = 0;
		if (out) {
			*out = dv_xcalloc(1, sizeof **out);
			app_read(stmt, *out);
		}
	}
	done(stmt);
	return rc;
}

int dv_store_app_list(struct dv_store *store, struct dv_store_app **apps, size_t *n, char **err)
{
	sqlite3_stmt *stmt = NULL;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = prepare(store, "SELECT name, created_at FROM apps ORDER BY name", &stmt, err);
	if (rc == 0)
		rc = collect(store, stmt, sizeof **apps, app_read, app_clear, &items, n, err, "cannot list apps");
	*apps = items;
	return rc;
}

/* -EBUSY if the app (env_id 0) or environment has an unfinished deployment
 * or recorded replicas. */
static int check_deletable(struct dv_store *s, int64_t app_id, int64_t env_id, const char *label, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t count = 0;
	int rc;

	rc = prepare(s,
	             "SELECT count(*) FROM deployments d JOIN environments e ON e.id = d.env_id "
	             "WHERE e.app_id = ?1 AND (?2 IS NULL OR e.id = ?2) AND d.state IN " UNFINISHED_SQL,
	             &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "iz", app_id, env_id);
	if (rc == 0)
		rc = query_int(s, stmt, &count, NULL, err, "cannot count deployments");
	if (rc)
		goto out;
	if (count > 0) {
		rc = fail(err, -EBUSY, "%s has a deployment in progress: let it finish (or roll it back) first", label);
		goto out;
	}
	rc = prepare(s,
	             "SELECT count(*) FROM replicas p JOIN environments e ON e.id = p.env_id "
	             "WHERE e.app_id = ?1 AND (?2 IS NULL OR e.id = ?2)",
	             &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "iz", app_id, env_id);
	if (rc == 0)
		rc = query_int(s, stmt, &count, NULL, err, "cannot count replicas");
	if (rc == 0 && count > 0)
		rc = fail(err, -EBUSY, "%s still has %lld replica(s) recorded: stop them first", label, (long long)count);
out:
	done(stmt);
	return rc;
}

int dv_store_app_delete(struct dv_store *store, const char *name, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t app_id = 0;
	char *label = NULL;
	int rc;

	rc = check_name("app", name, err);
	if (rc)
		goto out;
	rc = tx_begin(store, err);
	if (rc)
		goto out;
	rc = lookup_app(store, name, &app_id, err);
	if (rc)
		goto out;
	label = dv_xasprintf("app '%s'", name);
	rc = check_deletable(store, app_id, 0, label, err);
	if (rc == 0)
		rc = prepare(store, "DELETE FROM apps WHERE id = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", app_id);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot delete an app");
	done(stmt);
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	if (rc)
		tx_rollback(store);
	free(label);
	return rc;
}

/* ---- environments ---------------------------------------------------------------- */

#define ENV_SELECT                                                                                      \
	"SELECT a.name, e.name, e.created_at, r.number, e.last_release FROM environments e "           \
	"JOIN apps a ON a.id = e.app_id LEFT JOIN current_releases c ON c.env_id = e.id "               \
	"LEFT JOIN releases r ON r.id = c.release_id "

static void env_clear(void *item)
{
	struct dv_store_env *env = item;

	free(env->app);
	free(env->name);
}

static void env_read(sqlite3_stmt *stmt, void *item)
{
	struct dv_store_env *env = item;

	env->app = col_text(stmt, 0);
	env->name = col_text(stmt, 1);
	env->created_at = sqlite3_column_int64(stmt, 2);
	env->current_release = sqlite3_column_int64(stmt, 3);
	env->last_release = sqlite3_column_int64(stmt, 4);
}

void dv_store_env_free(struct dv_store_env *env)
{
	if (env) {
		env_clear(env);
		free(env);
	}
}

void dv_store_env_array_free(struct dv_store_env *envs, size_t n)
{
	for (size_t i = 0; envs && i < n; i++)
		env_clear(&envs[i]);
	free(envs);
}

int dv_store_env_create(struct dv_store *store, const char *app, const char *env, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t app_id = 0, env_id = 0;
	bool found = false;
	int rc;

	rc = check_app_env(app, env, err);
	if (rc)
		goto out;
	rc = tx_begin(store, err);
	if (rc)
		goto out;
	rc = lookup_app(store, app, &app_id, err);
	if (rc == 0)
		rc = prepare(store, "SELECT id FROM environments WHERE app_id = ?1 AND name = ?2", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "it", app_id, env);
	if (rc == 0)
		rc = query_int(store, stmt, &env_id, &found, err, "cannot look up an environment");
	if (rc == 0 && found)
		rc = fail(err, -EEXIST, "app '%s' has an environment '%s' already", app, env);
	if (rc == 0)
		rc = env_insert(store, app_id, env, err);
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	if (rc)
		tx_rollback(store);
	return rc;
}

int dv_store_env_get(struct dv_store *store, const char *app, const char *env, struct dv_store_env **out,
                     char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t env_id = 0;
	int rc;

	if (out)
		*out = NULL;
	rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0 && out) {
		rc = prepare(store, ENV_SELECT "WHERE e.id = ?1", &stmt, err);
		if (rc == 0)
			rc = bind(store, stmt, err, "i", env_id);
		if (rc == 0)
			rc = step(store, stmt, err, "cannot read an environment");
		if (rc == 0)
			rc = fail(err, -ENOENT, "app '%s' has no environment '%s'", app, env);
		if (rc == 1) {
			rc = 0;
			*out = dv_xcalloc(1, sizeof **out);
			env_read(stmt, *out);
		}
	}
	done(stmt);
	return rc;
}

int dv_store_env_list(struct dv_store *store, const char *app, struct dv_store_env **envs, size_t *n, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t app_id = 0;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = lookup_app(store, app, &app_id, err);
	if (rc == 0)
		rc = prepare(store, ENV_SELECT "WHERE e.app_id = ?1 ORDER BY e.name", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", app_id);
	if (rc == 0)
		rc = collect(store, stmt, sizeof **envs, env_read, env_clear, &items, n, err, "cannot list environments");
	done(stmt);
	*envs = items;
	return rc;
}

int dv_store_env_delete(struct dv_store *store, const char *app, const char *env, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t app_id = 0, env_id = 0;
	char *label = NULL;
	int rc;

	rc = check_app_env(app, env, err);
	if (rc)
		goto out;
	rc = tx_begin(store, err);
	if (rc)
		goto out;
	rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = lookup_app(store, app, &app_id, err);
	if (rc)
		goto out;
	label = dv_xasprintf("%s/%s", app, env);
	rc = check_deletable(store, app_id, env_id, label, err);
	if (rc == 0)
		rc = prepare(store, "DELETE FROM environments WHERE id = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", env_id);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot delete an environment");
	done(stmt);
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	if (rc)
		tx_rollback(store);
	free(label);
	return rc;
}

/* ---- releases ------------------------------------------------------------------ */

/* Columns 4 and 5 (the content) are NULL in lists. */
#define RELEASE_COLS "SELECT a.name, e.name, r.number, r.hash, "
#define RELEASE_FROM                                                                                        \
	" , r.source, r.created_at FROM releases r JOIN environments e ON e.id = r.env_id "               \
	"JOIN apps a ON a.id = e.app_id "

static void release_clear(void *item)
{
	struct dv_store_release *release = item;

	free(release->app);
	free(release->env);
	free(release->hash);
	free(release->compose_json);
	free(release->env_json);
	free(release->source);
}

static void release_read(sqlite3_stmt *stmt, void *item)
{
	struct dv_store_release *release = item;

	release->app = col_text(stmt, 0);
	release->env = col_text(stmt, 1);
	release->id = sqlite3_column_int64(stmt, 2);
	release->hash = col_text(stmt, 3);
	release->compose_json = col_text(stmt, 4);
	release->env_json = col_text(stmt, 5);
	release->source = col_text(stmt, 6);
	release->created_at = sqlite3_column_int64(stmt, 7);
}

void dv_store_release_free(struct dv_store_release *release)
{
	if (release) {
		release_clear(release);
		free(release);
	}
}

void dv_store_release_array_free(struct dv_store_release *releases, size_t n)
{
	for (size_t i = 0; releases && i < n; i++)
		release_clear(&releases[i]);
	free(releases);
}

/* Reads release `number` of env_id with content into a new *out; -ENOENT
 * if there is none. */
static int release_read_one(struct dv_store *s, int64_t env_id, int64_t number, const char *app, const char *env,
                            struct dv_store_release **out, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	*out = NULL;
	rc = prepare(s, RELEASE_COLS "r.compose_json, r.env_json" RELEASE_FROM "WHERE r.env_id = ?1 AND r.number = ?2",
	             &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "ii", env_id, number);
	if (rc == 0)
		rc = step(s, stmt, err, "cannot read a release");
	if (rc == 0)
		rc = fail(err, -ENOENT, "%s/%s has no release %lld", app, env, (long long)number);
	if (rc == 1) {
		rc = 0;
		*out = dv_xcalloc(1, sizeof **out);
		release_read(stmt, *out);
	}
	done(stmt);
	return rc;
}

/* -EINVAL unless `json` (described by `what`) is JSON (SQLite's json_valid). */
static int check_json(struct dv_store *s, const char *what, const char *json, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	rc = prepare(s, "SELECT json_valid(?1)", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "t", json);
	if (rc == 0)
		rc = step(s, stmt, err, "cannot check JSON");
	if (rc == 1)
		rc = sqlite3_column_int(stmt, 0) ? 0 : fail(err, -EINVAL, "%s is not valid JSON", what);
	done(stmt);
	return rc;
}

int dv_store_release_create(struct dv_store *store, const char *app, const char *env,
                            const struct dv_store_release_spec *spec, struct dv_store_release **out,
                            bool *created, char **err)
{
	sqlite3_stmt *stmt = NULL;
	const char *env_json = spec && spec->env_json ? spec->env_json : "{}";
	char *source = NULL;
	int64_t env_id = 0, number = 0;
	bool found = false;
	int rc;

	if (out)
		*out = NULL;
	if (created)
		*created = false;
	rc = check_app_env(app, env, err);
	if (rc)
		goto out;
	if (!spec || !valid_hash(spec->hash)) {
		rc = fail(err, -EINVAL, "'%s' is not a valid release hash: use %d to %d lower-case hex digits",
		          spec && spec->hash ? spec->hash : "", HASH_MIN, HASH_MAX);
		goto out;
	}
	if (!spec->compose_json) {
		rc = fail(err, -EINVAL, "a release needs its compose JSON");
		goto out;
	}
	rc = check_json_text("the release's compose JSON", spec->compose_json, err);
	if (rc == 0)
		rc = check_json_text("the release's environment JSON", env_json, err);
	if (rc == 0)
		rc = check_json(store, "the release's compose JSON", spec->compose_json, err);
	if (rc == 0)
		rc = check_json(store, "the release's environment JSON", env_json, err);
	if (rc)
		goto out;
	source = clean_text(spec->source ? spec->source : "");
	rc = tx_begin(store, err);
	if (rc == 0)
		rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = prepare(store, "SELECT number FROM releases WHERE env_id = ?1 AND hash = ?2", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "it", env_id, spec->hash);
	if (rc == 0)
		rc = query_int(store, stmt, &number, &found, err, "cannot look up a release by hash");
	if (rc || found)
		goto read;
	/* The number comes from a counter, not max(number) + 1, so that it is
	 * never reused. */
	rc = prepare(store, "UPDATE environments SET last_release = last_release + 1 WHERE id = ?1 RETURNING last_release",
	             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", env_id);
	if (rc == 0)
		rc = query_int(store, stmt, &number, NULL, err, "cannot number a release");
	if (rc == 0)
		rc = prepare(store,
		             "INSERT INTO releases (env_id, number, hash, compose_json, env_json, source, created_at) "
		             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "iitttti", env_id, number, spec->hash, spec->compose_json, env_json, source,
		          dv_store_now_ms(store));
	if (rc == 0)
		rc = step(store, stmt, err, "cannot create a release");
	done(stmt);
	if (rc == 0 && created)
		*created = true;
read:
	if (rc == 0 && out)
		rc = release_read_one(store, env_id, number, app, env, out, err);
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	done(stmt);
	if (rc) {
		tx_rollback(store);
		if (out) {
			dv_store_release_free(*out);
			*out = NULL;
		}
		if (created)
			*created = false;
	}
	free(source);
	return rc;
}

int dv_store_release_get(struct dv_store *store, const char *app, const char *env, int64_t id,
                         struct dv_store_release **out, char **err)
{
	int64_t env_id = 0;
	int rc;

	*out = NULL;
	rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = release_read_one(store, env_id, id, app, env, out, err);
	return rc;
}

int dv_store_release_current(struct dv_store *store, const char *app, const char *env,
                             struct dv_store_release **out, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t env_id = 0;
	int rc;

	*out = NULL;
	rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = prepare(store,
		             RELEASE_COLS "r.compose_json, r.env_json" RELEASE_FROM
		             "JOIN current_releases c ON c.release_id = r.id WHERE c.env_id = ?1",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", env_id);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot read the current release");
	if (rc == 1) {
		rc = 0;
		*out = dv_xcalloc(1, sizeof **out);
		release_read(stmt, *out);
	}
	done(stmt);
	return rc;
}

int dv_store_release_list(struct dv_store *store, const char *app, const char *env, size_t limit,
                          struct dv_store_release **releases, size_t *n, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t env_id = 0;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = prepare(store, RELEASE_COLS "NULL, NULL" RELEASE_FROM "WHERE r.env_id = ?1 ORDER BY r.number DESC LIMIT ?2",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "ii", env_id, sql_limit(limit));
	if (rc == 0)
		rc = collect(store, stmt, sizeof **releases, release_read, release_clear, &items, n, err,
		             "cannot list releases");
	done(stmt);
	*releases = items;
	return rc;
}

/* ---- deployments ---------------------------------------------------------------- */

static const char *const deploy_state_names[] = {
	[DV_STORE_DEPLOY_PLANNED] = "planned",           [DV_STORE_DEPLOY_RUNNING] = "running",
	[DV_STORE_DEPLOY_SUCCEEDED] = "succeeded",       [DV_STORE_DEPLOY_FAILED] = "failed",
	[DV_STORE_DEPLOY_ROLLING_BACK] = "rolling_back", [DV_STORE_DEPLOY_ROLLED_BACK] = "rolled_back",
};

static const char *const step_state_names[] = {
	[DV_STORE_STEP_STARTING] = "starting",   [DV_STORE_STEP_WAITING_HEALTHY] = "waiting_healthy",
	[DV_STORE_STEP_SWITCHING] = "switching", [DV_STORE_STEP_DRAINING] = "draining",
	[DV_STORE_STEP_STOPPING_OLD] = "stopping_old", [DV_STORE_STEP_DONE] = "done",
	[DV_STORE_STEP_FAILED] = "failed",
};

static const char *const replica_state_names[] = {
	[DV_STORE_REPLICA_STARTING] = "starting", [DV_STORE_REPLICA_HEALTHY] = "healthy",
	[DV_STORE_REPLICA_UNHEALTHY] = "unhealthy", [DV_STORE_REPLICA_DRAINING] = "draining",
	[DV_STORE_REPLICA_STOPPING] = "stopping", [DV_STORE_REPLICA_STOPPED] = "stopped",
	[DV_STORE_REPLICA_CRASHED] = "crashed",
};

static const char *name_of(const char *const *names, size_t n, unsigned value)
{
	return value < n ? names[value] : "?";
}

static int parse_name(const char *const *names, size_t n, const char *name, unsigned *value)
{
	for (size_t i = 0; name && i < n; i++) {
		if (strcmp(names[i], name) == 0) {
			*value = (unsigned)i;
			return 0;
		}
	}
	return -EINVAL;
}

#define NAMES_LEN(a) (sizeof(a) / sizeof((a)[0]))

const char *dv_store_deploy_state_name(enum dv_store_deploy_state state)
{
	return name_of(deploy_state_names, NAMES_LEN(deploy_state_names), (unsigned)state);
}

const char *dv_store_step_state_name(enum dv_store_step_state state)
{
	return name_of(step_state_names, NAMES_LEN(step_state_names), (unsigned)state);
}

const char *dv_store_replica_state_name(enum dv_store_replica_state state)
{
	return name_of(replica_state_names, NAMES_LEN(replica_state_names), (unsigned)state);
}

int dv_store_deploy_state_parse(const char *name, enum dv_store_deploy_state *out)
{
	unsigned value = 0;
	int rc = parse_name(deploy_state_names, NAMES_LEN(deploy_state_names), name, &value);

	if (rc == 0)
		*out = (enum dv_store_deploy_state)value;
	return rc;
}

int dv_store_step_state_parse(const char *name, enum dv_store_step_state *out)
{
	unsigned value = 0;
	int rc = parse_name(step_state_names, NAMES_LEN(step_state_names), name, &value);

	if (rc == 0)
		*out = (enum dv_store_step_state)value;
	return rc;
}

int dv_store_replica_state_parse(const char *name, enum dv_store_replica_state *out)
{
	unsigned value = 0;
	int rc = parse_name(replica_state_names, NAMES_LEN(replica_state_names), name, &value);

	if (rc == 0)
		*out = (enum dv_store_replica_state)value;
	return rc;
}

bool dv_store_deploy_state_final(enum dv_store_deploy_state state)
{
	return state == DV_STORE_DEPLOY_SUCCEEDED || state == DV_STORE_DEPLOY_FAILED ||
	       state == DV_STORE_DEPLOY_ROLLED_BACK;
}

bool dv_store_deploy_transition_allowed(enum dv_store_deploy_state from, enum dv_store_deploy_state to)
{
	switch (from) {
	case DV_STORE_DEPLOY_PLANNED:
		return to == DV_STORE_DEPLOY_RUNNING || to == DV_STORE_DEPLOY_FAILED;
	case DV_STORE_DEPLOY_RUNNING:
		return to == DV_STORE_DEPLOY_SUCCEEDED || to == DV_STORE_DEPLOY_FAILED ||
		       to == DV_STORE_DEPLOY_ROLLING_BACK;
	case DV_STORE_DEPLOY_ROLLING_BACK:
		return to == DV_STORE_DEPLOY_ROLLED_BACK || to == DV_STORE_DEPLOY_FAILED;
	default:
		return false;
	}
}

#define DEPLOY_SELECT                                                                                        \
	"SELECT d.id, a.name, e.name, r.number, p.number, d.state, d.created_at, d.started_at, "           \
	"d.finished_at, d.deadline_at, d.error FROM deployments d JOIN environments e ON e.id = d.env_id " \
	"JOIN apps a ON a.id = e.app_id JOIN releases r ON r.id = d.release_id "                           \
	"LEFT JOIN releases p ON p.id = d.previous_release_id "

static void deployment_clear(void *item)
{
	struct dv_store_deployment *d = item;

	free(d->app);
	free(d->env);
	free(d->error);
}

static void deployment_read(sqlite3_stmt *stmt, void *item)
{
	struct dv_store_deployment *d = item;

	d->id = sqlite3_column_int64(stmt, 0);
	d->app = col_text(stmt, 1);
	d->env = col_text(stmt, 2);
	d->release = sqlite3_column_int64(stmt, 3);
	d->previous_release = sqlite3_column_int64(stmt, 4);
	d->state = DV_STORE_DEPLOY_FAILED; /* the schema's CHECK keeps this from being needed */
	dv_store_deploy_state_parse((const char *)sqlite3_column_text(stmt, 5), &d->state);
	d->created_at = sqlite3_column_int64(stmt, 6);
	d->started_at = sqlite3_column_int64(stmt, 7);
	d->finished_at = sqlite3_column_int64(stmt, 8);
	d->deadline = sqlite3_column_int64(stmt, 9);
	d->error = col_text(stmt, 10);
}

void dv_store_deployment_free(struct dv_store_deployment *deployment)
{
	if (deployment) {
		deployment_clear(deployment);
		free(deployment);
	}
}

void dv_store_deployment_array_free(struct dv_store_deployment *deployments, size_t n)
{
	for (size_t i = 0; deployments && i < n; i++)
		deployment_clear(&deployments[i]);
	free(deployments);
}

/* Reads deployment `id` into a new *out; -ENOENT if there is none. */
static int deployment_read_one(struct dv_store *s, int64_t id, struct dv_store_deployment **out, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	*out = NULL;
	rc = prepare(s, DEPLOY_SELECT "WHERE d.id = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "i", id);
	if (rc == 0)
		rc = step(s, stmt, err, "cannot read a deployment");
	if (rc == 0)
		rc = fail(err, -ENOENT, "there is no deployment %lld", (long long)id);
	if (rc == 1) {
		rc = 0;
		*out = dv_xcalloc(1, sizeof **out);
		deployment_read(stmt, *out);
	}
	done(stmt);
	return rc;
}

int dv_store_deployment_create(struct dv_store *store, const char *app, const char *env, int64_t release,
                               int64_t deadline, struct dv_store_deployment **out, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t env_id = 0, release_id = 0, previous_id = 0, busy_id = 0, id = 0;
	bool busy = false;
	int rc;

	if (out)
		*out = NULL;
	rc = check_app_env(app, env, err);
	if (rc)
		goto out;
	rc = tx_begin(store, err);
	if (rc == 0)
		rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = lookup_release(store, env_id, release, app, env, &release_id, err);
	if (rc == 0)
		rc = prepare(store, "SELECT id FROM deployments WHERE env_id = ?1 AND state IN " UNFINISHED_SQL, &stmt,
		             err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", env_id);
	if (rc == 0)
		rc = query_int(store, stmt, &busy_id, &busy, err, "cannot look for a deployment in progress");
	if (rc == 0 && busy)
		rc = fail(err, -EBUSY, "deployment %lld of %s/%s is still in progress: let it finish (or roll it back) first",
		          (long long)busy_id, app, env);
	if (rc == 0)
		rc = prepare(store, "SELECT release_id FROM current_releases WHERE env_id = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", env_id);
	if (rc == 0)
		rc = query_int(store, stmt, &previous_id, NULL, err, "cannot read the current release");
	if (rc == 0)
		rc = prepare(store,
		             "INSERT INTO deployments (env_id, release_id, previous_release_id, state, created_at, deadline_at) "
		             "VALUES (?1, ?2, ?3, 'planned', ?4, ?5)",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "iiziz", env_id, release_id, previous_id, dv_store_now_ms(store), deadline);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot record a deployment");
	done(stmt);
	if (rc)
		goto out;
	id = sqlite3_last_insert_rowid(store->db);
	if (out)
		rc = deployment_read_one(store, id, out, err);
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	done(stmt);
	if (rc) {
		tx_rollback(store);
		if (out) {
			dv_store_deployment_free(*out);
			*out = NULL;
		}
	}
	return rc;
}

/* Points app/env's current release at release_id (0: nothing serves), in
 * the caller's transaction. `since` changes only if the release does. */
static int set_current(struct dv_store *s, int64_t env_id, int64_t release_id, int64_t deployment_id, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	if (release_id == 0) {
		rc = prepare(s, "DELETE FROM current_releases WHERE env_id = ?1", &stmt, err);
		if (rc == 0)
			rc = bind(s, stmt, err, "i", env_id);
	} else {
		rc = prepare(s,
		             "INSERT INTO current_releases (env_id, release_id, deployment_id, since) VALUES (?1, ?2, ?3, ?4) "
		             "ON CONFLICT (env_id) DO UPDATE SET release_id = excluded.release_id, "
		             "deployment_id = excluded.deployment_id, since = excluded.since "
		             "WHERE current_releases.release_id IS NOT excluded.release_id",
		             &stmt, err);
		if (rc == 0)
			rc = bind(s, stmt, err, "iiii", env_id, release_id, deployment_id, dv_store_now_ms(s));
	}
	if (rc == 0)
		rc = step(s, stmt, err, "cannot update the current release");
	done(stmt);
	return rc;
}

/* What a transition needs to know of the row. */
struct deploy_row {
	int64_t env_id, release_id, previous_id, started_at;
	enum dv_store_deploy_state state;
};

/* Reads the row of deployment `id` (in the caller's transaction). */
static int deploy_row_read(struct dv_store *s, int64_t id, struct deploy_row *row, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	rc = prepare(s,
	             "SELECT env_id, release_id, previous_release_id, started_at, state FROM deployments WHERE id = ?1",
	             &stmt, err);
	if (rc == 0)
		rc = bind(s, stmt, err, "i", id);
	if (rc == 0)
		rc = step(s, stmt, err, "cannot read a deployment");
	if (rc == 0)
		rc = fail(err, -ENOENT, "there is no deployment %lld", (long long)id);
	if (rc == 1) {
		row->env_id = sqlite3_column_int64(stmt, 0);
		row->release_id = sqlite3_column_int64(stmt, 1);
		row->previous_id = sqlite3_column_int64(stmt, 2);
		row->started_at = sqlite3_column_int64(stmt, 3);
		row->state = DV_STORE_DEPLOY_FAILED;
		rc = dv_store_deploy_state_parse((const char *)sqlite3_column_text(stmt, 4), &row->state);
		if (rc)
			rc = fail(err, -EIO, "deployment %lld has an unknown state '%s'", (long long)id,
			          (const char *)sqlite3_column_text(stmt, 4));
	}
	done(stmt);
	return rc;
}

int dv_store_deployment_transition(struct dv_store *store, int64_t id, enum dv_store_deploy_state to,
                                   const char *error, int64_t deadline, struct dv_store_deployment **out,
                                   char **err)
{
	sqlite3_stmt *stmt = NULL;
	struct deploy_row row = {0};
	char *error_text = clean_text(error);
	int64_t now = dv_store_now_ms(store), finished_at = 0;
	bool final = dv_store_deploy_state_final(to);
	int rc;

	if (out)
		*out = NULL;
	if (strcmp(dv_store_deploy_state_name(to), "?") == 0) {
		rc = fail(err, -EINVAL, "%d is not a deployment state", (int)to);
		goto out;
	}
	rc = tx_begin(store, err);
	if (rc == 0)
		rc = deploy_row_read(store, id, &row, err);
	if (rc)
		goto out;
	if (!dv_store_deploy_transition_allowed(row.state, to)) {
		rc = fail(err, -EINVAL, "deployment %lld cannot go from %s to %s", (long long)id,
		          dv_store_deploy_state_name(row.state), dv_store_deploy_state_name(to));
		goto out;
	}
	if (to == DV_STORE_DEPLOY_RUNNING && row.started_at == 0)
		row.started_at = now;
	if (final) {
		finished_at = now;
		deadline = 0;
	}
	rc = prepare(store,
	             "UPDATE deployments SET state = ?2, started_at = ?3, finished_at = ?4, deadline_at = ?5, "
	             "error = coalesce(?6, error) WHERE id = ?1",
	             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "itzzzt", id, dv_store_deploy_state_name(to), row.started_at, finished_at,
		          deadline, error_text);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot record a deployment's state");
	done(stmt);
	if (rc == 0 && to == DV_STORE_DEPLOY_SUCCEEDED)
		rc = set_current(store, row.env_id, row.release_id, id, err);
	else if (rc == 0 && to == DV_STORE_DEPLOY_ROLLED_BACK)
		rc = set_current(store, row.env_id, row.previous_id, id, err);
	if (rc == 0 && out)
		rc = deployment_read_one(store, id, out, err);
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	done(stmt);
	if (rc) {
		tx_rollback(store);
		if (out) {
			dv_store_deployment_free(*out);
			*out = NULL;
		}
	}
	free(error_text);
	return rc;
}

int dv_store_deployment_set_deadline(struct dv_store *store, int64_t id, int64_t deadline, char **err)
{
	sqlite3_stmt *stmt = NULL;
	struct deploy_row row = {0};
	int rc;

	rc = tx_begin(store, err);
	if (rc == 0)
		rc = deploy_row_read(store, id, &row, err);
	if (rc == 0 && dv_store_deploy_state_final(row.state))
		rc = fail(err, -EINVAL, "deployment %lld is over (%s): it has no deadline", (long long)id,
		          dv_store_deploy_state_name(row.state));
	if (rc == 0)
		rc = prepare(store, "UPDATE deployments SET deadline_at = ?2 WHERE id = ?1", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "iz", id, deadline);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot record a deadline");
	done(stmt);
	if (rc == 0)
		rc = tx_commit(store, err);
	if (rc)
		tx_rollback(store);
	return rc;
}

int dv_store_deployment_get(struct dv_store *store, int64_t id, struct dv_store_deployment **out, char **err)
{
	return deployment_read_one(store, id, out, err);
}

int dv_store_deployment_find_unfinished(struct dv_store *store, const char *app, const char *env,
                                        struct dv_store_deployment **out, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t env_id = 0;
	int rc;

	*out = NULL;
	rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = prepare(store, DEPLOY_SELECT "WHERE d.env_id = ?1 AND d.state IN " UNFINISHED_SQL, &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", env_id);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot look for a deployment in progress");
	if (rc == 1) {
		rc = 0;
		*out = dv_xcalloc(1, sizeof **out);
		deployment_read(stmt, *out);
	}
	done(stmt);
	return rc;
}

int dv_store_deployment_list_unfinished(struct dv_store *store, struct dv_store_deployment **deployments,
                                        size_t *n, char **err)
{
	sqlite3_stmt *stmt = NULL;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = prepare(store, DEPLOY_SELECT "WHERE d.state IN " UNFINISHED_SQL " ORDER BY d.id", &stmt, err);
	if (rc == 0)
		rc = collect(store, stmt, sizeof **deployments, deployment_read, deployment_clear, &items, n, err,
		             "cannot list deployments in progress");
	*deployments = items;
	return rc;
}

int dv_store_deployment_list(struct dv_store *store, const char *app, const char *env, size_t limit,
                             struct dv_store_deployment **deployments, size_t *n, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t app_id = 0, env_id = 0;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = env ? lookup_env(store, app, env, &env_id, err) : 0;
	if (rc == 0)
		rc = lookup_app(store, app, &app_id, err);
	if (rc == 0)
		rc = prepare(store, DEPLOY_SELECT "WHERE e.app_id = ?1 AND (?2 IS NULL OR d.env_id = ?2) ORDER BY d.id DESC "
		                                  "LIMIT ?3",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "izi", app_id, env_id, sql_limit(limit));
	if (rc == 0)
		rc = collect(store, stmt, sizeof **deployments, deployment_read, deployment_clear, &items, n, err,
		             "cannot list deployments");
	done(stmt);
	*deployments = items;
	return rc;
}

/* ---- steps -------------------------------------------------------------------- */

static void step_clear(void *item)
{
	struct dv_store_step *st = item;

	free(st->service);
	free(st->message);
}

static void step_read(sqlite3_stmt *stmt, void *item)
{
	struct dv_store_step *st = item;

	st->deployment = sqlite3_column_int64(stmt, 0);
	st->seq = sqlite3_column_int64(stmt, 1);
	st->service = col_text(stmt, 2);
	st->state = DV_STORE_STEP_FAILED;
	dv_store_step_state_parse((const char *)sqlite3_column_text(stmt, 3), &st->state);
	st->at = sqlite3_column_int64(stmt, 4);
	st->message = col_text(stmt, 5);
}

void dv_store_step_array_free(struct dv_store_step *steps, size_t n)
{
	for (size_t i = 0; steps && i < n; i++)
		step_clear(&steps[i]);
	free(steps);
}

int dv_store_step_append(struct dv_store *store, int64_t deployment, const char *service,
                         enum dv_store_step_state state, const char *message, int64_t *seq, char **err)
{
	sqlite3_stmt *stmt = NULL;
	struct deploy_row row = {0};
	char *message_text = clean_text(message);
	int64_t number = 0;
	int rc;

	rc = check_service(service, err);
	if (rc == 0 && strcmp(dv_store_step_state_name(state), "?") == 0)
		rc = fail(err, -EINVAL, "%d is not a step state", (int)state);
	if (rc)
		goto out;
	rc = tx_begin(store, err);
	if (rc == 0)
		rc = deploy_row_read(store, deployment, &row, err);
	if (rc == 0 && dv_store_deploy_state_final(row.state))
		rc = fail(err, -EINVAL, "deployment %lld is over (%s): no more steps can be recorded", (long long)deployment,
		          dv_store_deploy_state_name(row.state));
	if (rc == 0)
		rc = prepare(store,
		             "INSERT INTO deployment_steps (deployment_id, seq, service, state, at, message) "
		             "SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM deployment_steps "
		             "WHERE deployment_id = ?1 RETURNING seq",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "ittit", deployment, service, dv_store_step_state_name(state),
		          dv_store_now_ms(store), message_text);
	if (rc == 0)
		rc = query_int(store, stmt, &number, NULL, err, "cannot record a deployment step");
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	done(stmt);
	if (rc)
		tx_rollback(store);
	if (seq)
		*seq = rc == 0 ? number : 0;
	free(message_text);
	return rc;
}

int dv_store_step_list(struct dv_store *store, int64_t deployment, struct dv_store_step **steps, size_t *n,
                       char **err)
{
	sqlite3_stmt *stmt = NULL;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = prepare(store,
	             "SELECT deployment_id, seq, service, state, at, message FROM deployment_steps "
	             "WHERE deployment_id = ?1 ORDER BY seq",
	             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "i", deployment);
	if (rc == 0)
		rc = collect(store, stmt, sizeof **steps, step_read, step_clear, &items, n, err,
		             "cannot list deployment steps");
	done(stmt);
	*steps = items;
	return rc;
}

/* ---- replicas ------------------------------------------------------------------ */

static void replica_clear(void *item)
{
	struct dv_store_replica *r = item;

	free(r->app);
	free(r->env);
	free(r->service);
}

static void replica_read(sqlite3_stmt *stmt, void *item)
{
	struct dv_store_replica *r = item;

	r->app = col_text(stmt, 0);
	r->env = col_text(stmt, 1);
	r->service = col_text(stmt, 2);
	r->release = sqlite3_column_int64(stmt, 3);
	r->index = sqlite3_column_int64(stmt, 4);
	r->pid = sqlite3_column_int64(stmt, 5);
	r->proc_start = (uint64_t)sqlite3_column_int64(stmt, 6);
	r->port = sqlite3_column_int(stmt, 7);
	r->state = DV_STORE_REPLICA_CRASHED;
	dv_store_replica_state_parse((const char *)sqlite3_column_text(stmt, 8), &r->state);
	r->started_at = sqlite3_column_int64(stmt, 9);
	r->restarts = sqlite3_column_int64(stmt, 10);
	r->updated_at = sqlite3_column_int64(stmt, 11);
}

void dv_store_replica_array_free(struct dv_store_replica *replicas, size_t n)
{
	for (size_t i = 0; replicas && i < n; i++)
		replica_clear(&replicas[i]);
	free(replicas);
}

int dv_store_replica_upsert(struct dv_store *store, const struct dv_store_replica *replica, char **err)
{
	const struct dv_store_replica *r = replica;
	sqlite3_stmt *stmt = NULL;
	int64_t env_id = 0, release_id = 0;
	int rc;

	rc = check_app_env(r->app, r->env, err);
	if (rc == 0)
		rc = check_service(r->service, err);
	if (rc)
		goto out;
	if (r->index < 0 || r->pid < 0 || r->restarts < 0 || r->proc_start > INT64_MAX) {
		rc = fail(err, -EINVAL, "replica %s/%s/%s#%lld: index, pid, restarts and start time must not be negative",
		          r->app, r->env, r->service, (long long)r->index);
		goto out;
	}
	if (r->port < 0 || r->port > 65535) {
		rc = fail(err, -EINVAL, "replica %s/%s/%s#%lld: %d is not a port", r->app, r->env, r->service,
		          (long long)r->index, r->port);
		goto out;
	}
	if (strcmp(dv_store_replica_state_name(r->state), "?") == 0) {
		rc = fail(err, -EINVAL, "%d is not a replica state", (int)r->state);
		goto out;
	}
	rc = tx_begin(store, err);
	if (rc == 0)
		rc = lookup_env(store, r->app, r->env, &env_id, err);
	if (rc == 0)
		rc = lookup_release(store, env_id, r->release, r->app, r->env, &release_id, err);
	if (rc == 0)
		rc = prepare(store,
		             "INSERT INTO replicas (env_id, service, release_id, idx, pid, proc_start, port, state, "
		             "started_at, restarts, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
		             "ON CONFLICT (env_id, service, release_id, idx) DO UPDATE SET pid = excluded.pid, "
		             "proc_start = excluded.proc_start, port = excluded.port, state = excluded.state, "
		             "started_at = excluded.started_at, restarts = excluded.restarts, updated_at = excluded.updated_at",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "itiizzztzii", env_id, r->service, release_id, r->index, r->pid,
		          (int64_t)r->proc_start, (int64_t)r->port, dv_store_replica_state_name(r->state), r->started_at,
		          r->restarts, dv_store_now_ms(store));
	if (rc == 0)
		rc = step(store, stmt, err, "cannot record a replica");
	done(stmt);
	if (rc == 0)
		rc = tx_commit(store, err);
out:
	if (rc)
		tx_rollback(store);
	return rc;
}

int dv_store_replica_delete(struct dv_store *store, const char *app, const char *env, const char *service,
                            int64_t release, int64_t index, bool *deleted, char **err)
{
	sqlite3_stmt *stmt = NULL;
	int64_t env_id = 0;
	int rc;

	if (deleted)
		*deleted = false;
	rc = lookup_env(store, app, env, &env_id, err);
	if (rc == 0)
		rc = check_service(service, err);
	if (rc == 0)
		rc = prepare(store,
		             "DELETE FROM replicas WHERE env_id = ?1 AND service = ?2 AND idx = ?4 AND release_id = "
		             "(SELECT id FROM releases WHERE env_id = ?1 AND number = ?3)",
		             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "itii", env_id, service, release, index);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot delete a replica");
	if (rc == 0 && deleted)
		*deleted = sqlite3_changes(store->db) > 0;
	done(stmt);
	return rc;
}

int dv_store_replica_list(struct dv_store *store, const char *app, struct dv_store_replica **replicas, size_t *n,
                          char **err)
{
	sqlite3_stmt *stmt = NULL;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = prepare(store,
	             "SELECT a.name, e.name, p.service, r.number, p.idx, p.pid, p.proc_start, p.port, p.state, "
	             "p.started_at, p.restarts, p.updated_at FROM replicas p JOIN environments e ON e.id = p.env_id "
	             "JOIN apps a ON a.id = e.app_id JOIN releases r ON r.id = p.release_id "
	             "WHERE ?1 IS NULL OR a.name = ?1 ORDER BY a.name, e.name, p.service, r.number, p.idx",
	             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "t", app);
	if (rc == 0)
		rc = collect(store, stmt, sizeof **replicas, replica_read, replica_clear, &items, n, err,
		             "cannot list replicas");
	done(stmt);
	*replicas = items;
	return rc;
}

/* ---- events ---------------------------------------------------------------------- */

static void event_clear(void *item)
{
	struct dv_store_event *ev = item;

	free(ev->app);
	free(ev->kind);
	free(ev->message);
	free(ev->data);
}

static void event_read(sqlite3_stmt *stmt, void *item)
{
	struct dv_store_event *ev = item;

	ev->id = sqlite3_column_int64(stmt, 0);
	ev->at = sqlite3_column_int64(stmt, 1);
	ev->app = col_text(stmt, 2);
	ev->kind = col_text(stmt, 3);
	ev->message = col_text(stmt, 4);
	ev->data = col_text(stmt, 5);
}

void dv_store_event_array_free(struct dv_store_event *events, size_t n)
{
	for (size_t i = 0; events && i < n; i++)
		event_clear(&events[i]);
	free(events);
}

int dv_store_event_add(struct dv_store *store, const char *app, const char *kind, const char *message,
                       const char *data_json, int64_t *id, char **err)
{
	sqlite3_stmt *stmt = NULL;
	char *message_text = clean_text(message ? message : "");
	int rc = 0;

	if (id)
		*id = 0;
	if (app)
		rc = check_name("app", app, err);
	if (rc == 0 && !valid_kind(kind))
		rc = fail(err, -EINVAL,
		          "'%s' is not a valid event kind: use lower-case letters, digits, '.', '_' and '-', starting with a "
		          "letter or digit",
		          kind ? kind : "");
	if (rc == 0 && data_json)
		rc = check_json_text("the event data", data_json, err);
	if (rc == 0 && data_json)
		rc = check_json(store, "the event data", data_json, err);
	if (rc)
		goto out;
	rc = prepare(store, "INSERT INTO events (at, app, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5)", &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "itttt", dv_store_now_ms(store), app, kind, message_text, data_json);
	if (rc == 0)
		rc = step(store, stmt, err, "cannot record an event");
	if (rc == 0 && id)
		*id = sqlite3_last_insert_rowid(store->db);
out:
	done(stmt);
	free(message_text);
	return rc;
}

int dv_store_event_list(struct dv_store *store, const struct dv_store_event_filter *filter,
                        struct dv_store_event **events, size_t *n, char **err)
{
	static const struct dv_store_event_filter all = {0};
	const struct dv_store_event_filter *f = filter ? filter : &all;
	sqlite3_stmt *stmt = NULL;
	size_t limit = f->limit == 0 ? EVENT_LIMIT_DEFAULT : f->limit > EVENT_LIMIT_MAX ? EVENT_LIMIT_MAX : f->limit;
	void *items = NULL;
	int rc;

	*n = 0;
	rc = prepare(store,
	             "SELECT id, at, app, kind, message, data FROM events WHERE (?1 IS NULL OR app = ?1) "
	             "AND (?2 IS NULL OR kind = ?2) AND at >= ?3 AND id > ?4 ORDER BY id DESC LIMIT ?5",
	             &stmt, err);
	if (rc == 0)
		rc = bind(store, stmt, err, "ttiii", f->app, f->kind, f->since, f->after_id, (int64_t)limit);
	if (rc == 0)
		rc = collect(store, stmt, sizeof **events, event_read, event_clear, &items, n, err, "cannot list events");
	done(stmt);
	*events = items;
	return rc;
}

int dv_store_event_prune(struct dv_store *store, int64_t before, size_t keep, size_t *deleted, char **err)
{
	sqlite3_stmt *stmt = NULL;
	size_t count = 0;
	int rc;

	rc = tx_begin(store, err);
	if (rc == 0 && before > 0) {
		rc = prepare(store, "DELETE FROM events WHERE at < ?1", &stmt, err);
		if (rc == 0)
			rc = bind(store, stmt, err, "i", before);
		if (rc == 0)
			rc = step(store, stmt, err, "cannot prune events");
		if (rc == 0)
			count += (size_t)sqlite3_changes(store->db);
		done(stmt);
	}
	if (rc == 0 && keep > 0) {
		/* Ids increase with time: everything up to the (keep+1)-th newest goes. */
		rc = prepare(store,
		             "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
		             &stmt, err);
		if (rc == 0)
			rc = bind(store, stmt, err, "i", sql_limit(keep));
		if (rc == 0)
			rc = step(store, stmt, err, "cannot prune events");
		if (rc == 0)
			count += (size_t)sqlite3_changes(store->db);
		done(stmt);
	}
	if (rc == 0)
		rc = tx_commit(store, err);
	if (rc) {
		tx_rollback(store);
		count = 0;
	}
	if (deleted)
		*deleted = count;
	return rc;
}
