/* Unit tests of the compose loader (src/compose). Fixtures are in
 * $DV_TEST_FIXTURES, else tests/unit/compose/fixtures (run from the repo
 * root). Every load passes its own variables (test_env) so the process
 * environment cannot change a result. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "compose/compose.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const test_env[] = {"FROM_PROC=process", "EMPTY_PROC=", "HOME=/home/tester", NULL};

static const char *fixtures_dir(void)
{
	const char *dir = getenv("DV_TEST_FIXTURES");
	return dir && *dir ? dir : "tests/unit/compose/fixtures";
}

static char *fixture(const char *name)
{
	char *path = NULL;
	assert_true(asprintf(&path, "%s/%s", fixtures_dir(), name) > 0);
	return path;
}

/* The absolute fixtures directory (what relative paths resolve against). */
static char *fixtures_abs(void)
{
	char *abs = realpath(fixtures_dir(), NULL);
	assert_non_null(abs);
	return abs;
}

static struct dv_compose_project *load_with(const char *name, const struct dv_compose_options *opts)
{
	struct dv_compose_project *p = NULL;
	char *err = NULL, *path = fixture(name);
	int rc = dv_compose_load(path, opts, &p, &err);
	if (rc != 0)
		print_error("loading %s failed: %s\n", path, err ? err : "(no message)");
	assert_int_equal(rc, 0);
	assert_null(err);
	assert_non_null(p);
	free(path);
	return p;
}

static struct dv_compose_project *load(const char *name)
{
	struct dv_compose_options opts = {.environ = test_env};
	return load_with(name, &opts);
}

/* Loads a file that must fail; returns the message (the caller frees it). */
static char *load_error(const char *name, const struct dv_compose_options *opts, int want_rc)
{
	struct dv_compose_project *p = (void *)1;
	char *err = NULL, *path = fixture(name);
	int rc = dv_compose_load(path, opts, &p, &err);
	assert_int_equal(rc, want_rc);
	assert_null(p);
	assert_non_null(err);
	free(path);
	return err;
}

static const struct dv_compose_service *svc(const struct dv_compose_project *p, const char *name)
{
	const struct dv_compose_service *s = dv_compose_project_service(p, name);
	if (!s)
		print_error("no service '%s'\n", name);
	assert_non_null(s);
	return s;
}

static void assert_prefix(const char *s, const char *prefix)
{
	if (strncmp(s, prefix, strlen(prefix)) != 0)
		print_error("expected prefix '%s' in '%s'\n", prefix, s);
	assert_true(strncmp(s, prefix, strlen(prefix)) == 0);
}

static void assert_contains(const char *s, const char *needle)
{
	if (!strstr(s, needle))
		print_error("expected '%s' in '%s'\n", needle, s);
	assert_non_null(strstr(s, needle));
}

static void assert_env(const struct dv_compose_service *s, const char *name, const char *value)
{
	const char *got = dv_compose_service_env(s, name);
	if (!got || strcmp(got, value) != 0)
		print_error("%s: %s = '%s', expected '%s'\n", s->name, name, got ? got : "(unset)", value);
	assert_non_null(got);
	assert_string_equal(got, value);
}

static void assert_domain(const struct dv_compose_service *s, size_t i, const char *env, const char *host,
                          const char *path)
{
	assert_true(i < s->n_domains);
	if (env)
		assert_string_equal(s->domains[i].environment, env);
	else
		assert_null(s->domains[i].environment);
	assert_string_equal(s->domains[i].host, host);
	assert_string_equal(s->domains[i].path, path);
}

static void assert_start_order(const struct dv_compose_project *p, const char *const *names)
{
	size_t n = 0;
	while (names[n])
		n++;
	assert_int_equal(p->n_services, n);
	for (size_t i = 0; i < n; i++) {
		const char *got = p->services[p->start_order[i]].name;
		if (strcmp(got, names[i]) != 0)
			print_error("start_order[%zu] = %s, expected %s\n", i, got, names[i]);
		assert_string_equal(got, names[i]);
	}
}

/* The warning that starts with FILE:prefix (NULL if none). */
static const char *find_warning(const struct dv_compose_project *p, const char *file, const char *prefix)
{
	char *full = fixture(file), *want = NULL;
	const char *hit = NULL;
	assert_true(asprintf(&want, "%s:%s", full, prefix) > 0);
	for (size_t i = 0; i < p->n_warnings && !hit; i++)
		if (strncmp(p->warnings[i], want, strlen(want)) == 0)
			hit = p->warnings[i];
	if (!hit) {
		print_error("no warning starting with '%s'; warnings:\n", want);
		for (size_t i = 0; i < p->n_warnings; i++)
			print_error("  %s\n", p->warnings[i]);
	}
	free(full);
	free(want);
	return hit;
}

/* ---- the Penpal AI stack ------------------------------------------------ */

static void test_penpal(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("penpal.yml");
	char *dir = fixtures_abs(), *expect = NULL;

	assert_string_equal(p->name, "penpal-ai");
	assert_string_equal(p->dir, dir);
	assert_int_equal(p->n_services, 9);
	assert_int_equal(p->n_warnings, 0);

	/* dependencies first, ties by name: the manual's deployment order */
	static const char *const order[] = {"mongodb", "redis", "db", "ai", "auth", "notify", "payment",
	                                    "monitoring", "frontend", NULL};
	assert_start_order(p, order);

	const struct dv_compose_service *db = svc(p, "db");
	assert_int_equal(db->kind, DV_COMPOSE_KIND_NATIVE);
	assert_null(db->image);
	assert_null(db->build.context);
	assert_string_equal(db->run, "node dist/main.js --port $PORT"); /* $$PORT -> $PORT */
	assert_int_equal(db->port, 3001);
	assert_true(asprintf(&expect, "%s/services/db-service", dir) > 0);
	assert_string_equal(db->working_dir, expect);
	free(expect);
	assert_int_equal(db->restart, DV_COMPOSE_RESTART_UNLESS_STOPPED);
	assert_int_equal(db->deploy.replicas, 2);
	assert_int_equal(db->deploy.update_order, DV_COMPOSE_ORDER_START_FIRST);
	assert_int_equal(db->deploy.failure_action, DV_COMPOSE_FAILURE_ROLLBACK);
	/* env_file, then environment (with a nested merge key) over it */
	assert_int_equal(db->n_environment, 6);
	assert_env(db, "NODE_ENV", "production");
	assert_env(db, "LOG_FORMAT", "json");
	assert_env(db, "DB_POOL_SIZE", "10");
	assert_env(db, "CACHE_URL", "redis://redis:6379/0");
	assert_env(db, "MONGODB_URI", "mongodb://penpal:s3cret@mongodb:27017/penpal-ai");
	assert_env(db, "REDIS_HOST", "redis");
	assert_int_equal(db->env_files.len, 1);
	assert_true(asprintf(&expect, "%s/penpal-db.env", dir) > 0);
	assert_string_equal(db->env_files.items[0], expect);
	free(expect);
	assert_int_equal(db->n_depends_on, 2);
	assert_string_equal(db->depends_on[0].service, "mongodb");
	assert_int_equal(db->depends_on[0].condition, DV_COMPOSE_COND_HEALTHY);
	assert_string_equal(db->depends_on[1].service, "redis");
	assert_int_equal(db->depends_on[1].condition, DV_COMPOSE_COND_HEALTHY);
	assert_true(db->depends_on[1].required);
	/* map form of domains: sorted by environment whatever the file order */
	assert_int_equal(db->n_domains, 2);
	assert_domain(db, 0, "production", "prod.db-service.penpal-ai.maksou.dev", "/");
	assert_domain(db, 1, "staging", "staging.db-service.penpal-ai.maksou.dev", "/");
	assert_true(dv_compose_domain_applies(&db->domains[0], "production"));
	assert_false(dv_compose_domain_applies(&db->domains[0], "staging"));
	assert_false(dv_compose_domain_applies(&db->domains[0], NULL));
	assert_true(db->health.present);
	assert_string_equal(db->health.path, "/api/v1/health");
	assert_null(db->health.cmd);
	assert_int_equal(db->n_networks, 2);
	assert_string_equal(db->networks[0].name, "backend");
	assert_string_equal(db->networks[1].name, "default");

	const struct dv_compose_service *auth = svc(p, "auth");
	assert_int_equal(auth->port, 3002);
	assert_int_equal(auth->health.interval_ms, 30000);
	assert_int_equal(auth->health.timeout_ms, 5000);
	assert_int_equal(auth->health.retries, 3);
	assert_int_equal(auth->health.start_period_ms, 90000);
	assert_int_equal(auth->n_depends_on, 1);
	assert_string_equal(auth->depends_on[0].service, "db");
	assert_int_equal(auth->depends_on[0].condition, DV_COMPOSE_COND_STARTED);
	assert_true(dv_compose_service_depends_on(auth, "db"));
	assert_false(dv_compose_service_depends_on(auth, "redis"));
	/* merged from x-node: environment as a whole (merge keys are shallow) */
	assert_int_equal(auth->n_environment, 2);
	assert_env(auth, "NODE_ENV", "production");

	static const struct {
		const char *name;
		unsigned port;
	} natives[] = {{"ai", 3003}, {"payment", 3004}, {"monitoring", 3005}, {"notify", 3007}, {"frontend", 3000}};
	for (size_t i = 0; i < sizeof natives / sizeof natives[0]; i++) {
		const struct dv_compose_service *s = svc(p, natives[i].name);
		assert_int_equal(s->kind, DV_COMPOSE_KIND_NATIVE);
		assert_int_equal(s->port, natives[i].port);
		assert_true(s->health.present);
		assert_true(dv_compose_service_depends_on(s, "db"));
		assert_true(s->n_domains >= 2);
	}
	const struct dv_compose_service *monitoring = svc(p, "monitoring");
	assert_int_equal(monitoring->n_depends_on, 5);
	assert_string_equal(monitoring->depends_on[0].service, "ai");
	assert_string_equal(monitoring->depends_on[4].service, "payment");

	const struct dv_compose_service *frontend = svc(p, "frontend");
	assert_string_equal(frontend->run, "npm run start -- --port $PORT");
	assert_int_equal(frontend->n_environment, 3);
	assert_env(frontend, "NEXT_PUBLIC_AUTH_SERVICE_URL", "https://prod.auth-service.penpal-ai.maksou.dev/api/v1");
	assert_int_equal(frontend->n_domains, 3);
	assert_domain(frontend, 0, "production", "app.penpal-ai.maksou.dev", "/");
	assert_domain(frontend, 1, "production", "penpal-ai.maksou.dev", "/");
	assert_domain(frontend, 2, "staging", "staging.app.penpal-ai.maksou.dev", "/");
	assert_string_equal(frontend->health.path, "/api/health");
	assert_int_equal(frontend->health.interval_ms, 30000);
	assert_int_equal(frontend->n_depends_on, 6);

	const struct dv_compose_service *mongodb = svc(p, "mongodb");
	assert_int_equal(mongodb->kind, DV_COMPOSE_KIND_CONTAINER);
	assert_string_equal(mongodb->image, "mongo:7.0");
	assert_null(mongodb->working_dir);
	assert_true(mongodb->healthcheck.present);
	assert_false(mongodb->healthcheck.disabled);
	assert_false(mongodb->healthcheck.shell);
	assert_int_equal(mongodb->healthcheck.test.len, 4);
	assert_string_equal(mongodb->healthcheck.test.items[0], "mongosh");
	assert_string_equal(mongodb->healthcheck.test.items[3], "db.adminCommand('ping')");
	assert_int_equal(mongodb->healthcheck.interval_ms, 10000);
	assert_int_equal(mongodb->healthcheck.timeout_ms, 5000);
	assert_int_equal(mongodb->healthcheck.retries, 5);
	assert_int_equal(mongodb->healthcheck.start_period_ms, 20000);
	assert_int_equal(mongodb->n_volumes, 1);
	assert_int_equal(mongodb->volumes[0].type, DV_COMPOSE_MOUNT_VOLUME);
	assert_string_equal(mongodb->volumes[0].source, "mongo-data");
	assert_string_equal(mongodb->volumes[0].target, "/data/db");
	assert_int_equal(mongodb->restart, DV_COMPOSE_RESTART_UNSET);
	assert_int_equal(mongodb->deploy.replicas, 1);

	const struct dv_compose_service *redis = svc(p, "redis");
	assert_true(redis->has_command);
	assert_int_equal(redis->command.len, 5);
	assert_string_equal(redis->command.items[0], "redis-server");
	assert_string_equal(redis->command.items[4], "60 1");
	assert_true(redis->healthcheck.shell);
	assert_string_equal(redis->healthcheck.test.items[0], "redis-cli ping");

	assert_int_equal(p->n_networks, 2);
	assert_string_equal(p->networks[0].key, "backend");
	assert_string_equal(p->networks[0].name, "penpal-ai_backend");
	assert_true(p->networks[0].internal);
	assert_string_equal(p->networks[1].key, "default");
	assert_string_equal(p->networks[1].name, "penpal-ai_default");
	assert_int_equal(p->n_volumes, 2);
	assert_string_equal(dv_compose_project_volume(p, "redis-data")->name, "penpal-ai_redis-data");
	assert_null(dv_compose_project_volume(p, "nope"));
	assert_non_null(dv_compose_project_network(p, "backend"));

	free(dir);
	dv_compose_project_free(p);
}

/* ---- the Oracle Lumira stack -------------------------------------------- */

static void test_lumira(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("lumira.yml");
	char *dir = fixtures_abs(), *expect = NULL;

	/* no name: the directory's name */
	assert_string_equal(p->name, "fixtures");
	assert_int_equal(p->n_services, 7);
	static const char *const order[] = {"expert-desk", "main-app", "mongo", "mysql", "dolibarr", "redis",
	                                    "api-backend", NULL};
	assert_start_order(p, order);

	const struct dv_compose_service *main_app = svc(p, "main-app");
	assert_int_equal(main_app->kind, DV_COMPOSE_KIND_CONTAINER);
	{
		char *parent = strdup(dir);
		*strrchr(parent, '/') = '\0';
		assert_true(asprintf(&expect, "%s/apps/main-app", parent) > 0);
		assert_string_equal(main_app->build.context, expect);
		free(expect);
		free(parent);
	}
	assert_int_equal(main_app->restart, DV_COMPOSE_RESTART_UNLESS_STOPPED);
	assert_int_equal(main_app->deploy.replicas, 3);
	assert_int_equal(main_app->deploy.limits.memory, 512ull << 20);
	assert_int_equal(main_app->deploy.limits.cpus_milli, 500);
	assert_int_equal(main_app->deploy.reservations.memory, 256ull << 20);
	assert_int_equal(main_app->deploy.reservations.cpus_milli, 250);
	assert_int_equal(main_app->n_domains, 2);
	assert_domain(main_app, 0, NULL, "oraclelumira.com", "/");
	assert_domain(main_app, 1, NULL, "www.oraclelumira.com", "/");
	assert_int_equal(main_app->port, 80);
	assert_string_equal(dv_compose_service_label(main_app, "traefik.enable"), "true");
	assert_null(dv_compose_service_label(main_app, "traefik.nope"));
	assert_true(main_app->healthcheck.shell);
	assert_int_equal(main_app->healthcheck.test.len, 1);
	assert_string_equal(main_app->healthcheck.test.items[0], "curl -fsS http://localhost/health.json || exit 1");

	const struct dv_compose_service *desk = svc(p, "expert-desk");
	assert_string_equal(desk->build.dockerfile, "Dockerfile.prod");
	assert_int_equal(desk->build.n_args, 1);
	assert_string_equal(desk->build.args[0].key, "NODE_VERSION");
	assert_string_equal(desk->build.args[0].value, "20");
	assert_int_equal(desk->n_domains, 1);
	assert_domain(desk, 0, NULL, "desk.oraclelumira.com", "/");
	assert_int_equal(desk->port, 80);

	const struct dv_compose_service *api = svc(p, "api-backend");
	assert_int_equal(api->restart, DV_COMPOSE_RESTART_ON_FAILURE);
	assert_int_equal(api->restart_max, 5);
	assert_env(api, "MONGODB_URI", "mongodb://root:s3cret@mongo:27017/lumira-mvp?authSource=admin");
	assert_null(dv_compose_service_env(api, "NODE_ENV")); /* bare name, unset: left out */
	assert_int_equal(api->n_environment, 2);
	assert_int_equal(api->expose.len, 1);
	assert_string_equal(api->expose.items[0], "3000/tcp");
	assert_int_equal(api->n_domains, 1);
	assert_domain(api, 0, NULL, "oraclelumira.com", "/api");
	assert_int_equal(api->port, 3000);
	assert_int_equal(api->deploy.replicas, 2);
	assert_int_equal(api->deploy.limits.memory, 1ull << 30);
	assert_int_equal(api->deploy.limits.cpus_milli, 1000);
	assert_int_equal(api->n_depends_on, 3);
	assert_string_equal(api->depends_on[0].service, "mongo");
	assert_string_equal(api->depends_on[1].service, "mysql");
	assert_string_equal(api->depends_on[2].service, "redis");

	const struct dv_compose_service *crm = svc(p, "dolibarr");
	assert_string_equal(crm->image, "dolibarr/dolibarr:17");
	assert_env(crm, "DOLI_DB_PASSWORD", "p@ss $word"); /* single quotes in .env: literal */
	assert_env(crm, "DOLI_URL_ROOT", "https://crm.oraclelumira.com");
	assert_domain(crm, 0, NULL, "crm.oraclelumira.com", "/");
	assert_int_equal(crm->n_volumes, 1);
	assert_string_equal(crm->volumes[0].source, "dolibarr_data");

	const struct dv_compose_service *mysql = svc(p, "mysql");
	assert_env(mysql, "MYSQL_ROOT_PASSWORD", "changeme");
	assert_int_equal(mysql->n_volumes, 2);
	assert_int_equal(mysql->volumes[1].type, DV_COMPOSE_MOUNT_BIND);
	assert_true(asprintf(&expect, "%s/mysql/init", dir) > 0);
	assert_string_equal(mysql->volumes[1].source, expect);
	free(expect);
	assert_string_equal(mysql->volumes[1].target, "/docker-entrypoint-initdb.d");
	assert_true(mysql->volumes[1].read_only);
	assert_string_equal(mysql->healthcheck.test.items[0], "mysqladmin");

	const struct dv_compose_service *mongo = svc(p, "mongo");
	assert_int_equal(mongo->n_ports, 1);
	assert_string_equal(mongo->ports[0].host_ip, "127.0.0.1");
	assert_int_equal(mongo->ports[0].published, 27017);
	assert_int_equal(mongo->ports[0].target, 27017);
	assert_string_equal(mongo->ports[0].protocol, "tcp");
	assert_string_equal(mongo->volumes[0].source, "mongodb_data");

	const struct dv_compose_service *redis = svc(p, "redis");
	assert_int_equal(redis->command.len, 3);
	assert_int_equal(redis->ports[0].target, 6379);
	assert_int_equal(redis->ports[0].published, 6380);
	assert_int_equal(redis->volumes[0].type, DV_COMPOSE_MOUNT_TMPFS);
	assert_int_equal(redis->volumes[0].tmpfs_size, 64ull << 20);

	assert_int_equal(p->n_volumes, 3);
	assert_string_equal(p->volumes[0].name, "fixtures_dolibarr_data");
	assert_int_equal(p->n_networks, 1);

	/* version and container_name are reported, not fatal */
	assert_non_null(find_warning(p, "lumira.yml", "2:1: 'version' is obsolete"));
	assert_non_null(find_warning(p, "lumira.yml", "6:5: 'container_name' in service 'main-app' is not supported"));
	assert_int_equal(p->n_warnings, 3);

	free(dir);
	dv_compose_project_free(p);
}

/* ---- interpolation, .env ------------------------------------------------ */

static void test_interpolation(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("interp.yml");
	const struct dv_compose_service *app = svc(p, "app");

	assert_string_equal(app->image, "registry.example.com/app:latest");
	assert_env(app, "DEFAULT_UNSET", "fallback");
	assert_env(app, "DEFAULT_EMPTY_COLON", "colon-default");
	assert_env(app, "DEFAULT_EMPTY_NOCOLON", "");
	assert_env(app, "DEFAULT_UNSET_NOCOLON", "dash");
	assert_env(app, "ALT_SET", "alt");
	assert_env(app, "ALT_UNSET", "");
	assert_env(app, "NESTED", "deep");
	assert_env(app, "DOLLAR", "cost: $5 and ${NOT_A_VAR}");
	assert_env(app, "BARE", "process/bin");
	assert_env(app, "PROC_WINS", "process"); /* the process wins over .env */
	assert_env(app, "DOTENV_SINGLE", "p@ss $word");
	assert_env(app, "DOTENV_DOUBLE", "line1\nline2 \"quoted\" $HOME");
	assert_env(app, "DOTENV_EXPORT", "yes");
	assert_env(app, "DOTENV_COMMENT", "value");
	assert_env(app, "DOTENV_HASH", "a#b");
	assert_env(app, "DOTENV_EMPTY", "was-empty");
	assert_env(app, "DOTENV_REF", "https://penpal-ai.maksou.dev/x");
	assert_env(app, "DOTENV_MULTI", "first\nsecond");
	assert_env(app, "UNSET_PLAIN", "xy");
	assert_env(app, "REQUIRED_OK", "penpal-ai.maksou.dev");
	assert_env(app, "FROM_PROC", "process"); /* KEY: with no value: from the variables */
	assert_null(dv_compose_service_env(app, "FROM_NOWHERE"));
	assert_env(app, "NUMBER", "42");
	assert_env(app, "BOOL", "true");
	assert_env(app, "QUOTED_NUMBER", "007");

	const char *w = find_warning(p, "interp.yml", "24:20: variable TOTALLY_UNSET is not set");
	assert_non_null(w);

	/* values are escaped in the canonical JSON */
	char *json = dv_compose_service_to_json(app, NULL);
	assert_contains(json, "\"DOTENV_DOUBLE\":\"line1\\nline2 \\\"quoted\\\" $HOME\"");
	free(json);
	dv_compose_project_free(p);
}

static void test_run_empty_variable_warning(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("interp.yml");
	const struct dv_compose_service *worker = svc(p, "worker");

	assert_int_equal(worker->kind, DV_COMPOSE_KIND_NATIVE);
	assert_string_equal(worker->run, "./worker --port  --name  --home $HOME --tag dev");
	const char *w = find_warning(p, "interp.yml", "33:12: x-davit.run: variable PORT is not set");
	assert_non_null(w);
	assert_contains(w, "write $$PORT");
	assert_non_null(find_warning(p, "interp.yml", "33:12: x-davit.run: variable WORKER_NAME is not set"));
	/* $$HOME and ${TAG:-dev} are not warned about; neither is PORT twice */
	assert_int_equal(p->n_warnings, 3);
	dv_compose_project_free(p);

	/* set but empty is just as wrong */
	static const char *const env_empty_port[] = {"PORT=", "WORKER_NAME=w", NULL};
	struct dv_compose_options opts = {.environ = env_empty_port};
	p = load_with("interp.yml", &opts);
	w = find_warning(p, "interp.yml", "33:12: x-davit.run: variable PORT is empty");
	assert_non_null(w);
	assert_string_equal(svc(p, "worker")->run, "./worker --port  --name w --home $HOME --tag dev");
	dv_compose_project_free(p);
}

static void test_required_variable(void **state)
{
	(void)state;
	struct dv_compose_options opts = {.environ = test_env};
	char *err = load_error("bad-required-var.yml", &opts, -EINVAL), *prefix = fixture("bad-required-var.yml:3:12: ");
	assert_prefix(err, prefix);
	assert_contains(err, "required variable RELEASE_TAG is not set: set RELEASE_TAG to the tag to deploy");
	free(err);
	free(prefix);

	/* and once set, the same file loads */
	static const char *const env_tag[] = {"RELEASE_TAG=v1.2.3", NULL};
	opts.environ = env_tag;
	struct dv_compose_project *p = load_with("bad-required-var.yml", &opts);
	assert_string_equal(svc(p, "web")->image, "app:v1.2.3");
	dv_compose_project_free(p);
}

static void test_dotenv_errors(void **state)
{
	(void)state;
	char *env = fixture("bad-quote.env"), *prefix = NULL, *err;
	struct dv_compose_options opts = {.environ = test_env, .env_file = env};

	err = load_error("merge.yml", &opts, -EINVAL);
	assert_true(asprintf(&prefix, "%s:3:5: ", env) > 0);
	assert_prefix(err, prefix);
	assert_contains(err, "unterminated double quote");
	free(err);
	free(prefix);
	free(env);

	env = fixture("bad-line.env");
	opts.env_file = env;
	err = load_error("merge.yml", &opts, -EINVAL);
	assert_true(asprintf(&prefix, "%s:2:5: ", env) > 0);
	assert_prefix(err, prefix);
	assert_contains(err, "expected '=' after NOT");
	free(err);
	free(prefix);
	free(env);

	/* an env file named by the caller must exist */
	opts.env_file = "/nonexistent/davit.env";
	err = load_error("merge.yml", &opts, -EINVAL);
	assert_prefix(err, "/nonexistent/davit.env: ");
	assert_contains(err, "not found");
	free(err);

	/* "" turns the .env file off: MONGO_PASSWORD is then unset */
	opts.env_file = "";
	struct dv_compose_project *p = load_with("lumira.yml", &opts);
	assert_env(svc(p, "api-backend"), "MONGODB_URI", "mongodb://root:@mongo:27017/lumira-mvp?authSource=admin");
	dv_compose_project_free(p);
}

static void test_env_file_optional(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("envfile-optional.yml");
	const struct dv_compose_service *web = svc(p, "web");
	assert_env(web, "DB_POOL_SIZE", "20"); /* environment: beats env_file */
	assert_env(web, "NODE_ENV", "development");
	assert_int_equal(web->env_files.len, 2);
	dv_compose_project_free(p);
}

/* ---- warnings ----------------------------------------------------------- */

static void test_unknown_key_warnings(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("warnings.yml");
	static const char *const expected[] = {
		"2:1: unknown key 'unknown_top' in the top level",
		"7:5: unknown key 'imagee' in service 'web' (ignored; check the spelling)",
		"8:5: 'container_name' in service 'web' is not supported by davit (ignored)",
		"12:7: unknown key 'intervall' in healthcheck",
		"15:7: unknown key 'bogus' in x-davit",
		"17:9: Traefik rule traefik.http.routers.web.rule: davit routes by Host() and PathPrefix() only; "
		"ignored: Method",
	};
	char *file = fixture("warnings.yml");
	assert_int_equal(p->n_warnings, sizeof expected / sizeof expected[0]);
	for (size_t i = 0; i < p->n_warnings; i++) {
		char *want = NULL;
		assert_true(asprintf(&want, "%s:%s", file, expected[i]) > 0);
		assert_prefix(p->warnings[i], want); /* in file order */
		free(want);
	}
	const struct dv_compose_service *web = svc(p, "web");
	assert_string_equal(web->image, "nginx");
	assert_int_equal(web->port, 8080);
	assert_domain(web, 0, NULL, "a.example.com", "/");
	free(file);
	dv_compose_project_free(p);
}

/* ---- YAML anchors and merge keys ---------------------------------------- */

static void test_merge_keys(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("merge.yml");

	const struct dv_compose_service *one = svc(p, "one");
	assert_string_equal(one->image, "base:1");
	/* the first merge source wins over later ones */
	assert_int_equal(one->restart, DV_COMPOSE_RESTART_ALWAYS);
	assert_string_equal(dv_compose_service_label(one, "x"), "1");
	/* explicit keys win, and merging is shallow */
	assert_int_equal(one->n_environment, 1);
	assert_env(one, "B", "2");

	const struct dv_compose_service *two = svc(p, "two");
	assert_int_equal(two->restart, DV_COMPOSE_RESTART_ON_FAILURE);
	assert_int_equal(two->restart_max, 3);
	assert_env(two, "A", "1");
	assert_int_equal(two->n_labels, 0);

	/* an alias of a whole service */
	const struct dv_compose_service *three = svc(p, "three");
	assert_string_equal(three->image, "base:1");
	assert_env(three, "B", "2");

	const struct dv_compose_service *four = svc(p, "four");
	assert_string_equal(four->image, "base:2");
	assert_int_equal(four->restart, DV_COMPOSE_RESTART_ALWAYS);

	/* three is one under another name: same JSON once the name is equal */
	char *j1 = dv_compose_service_to_json(one, NULL), *j3 = dv_compose_service_to_json(three, NULL);
	char *n1 = strstr(j1, "\"name\":\"one\""), *n3 = strstr(j3, "\"name\":\"three\"");
	assert_non_null(n1);
	assert_non_null(n3);
	assert_int_equal(n1 - j1, n3 - j3);
	assert_memory_equal(j1, j3, (size_t)(n1 - j1));
	assert_string_equal(n1 + strlen("\"name\":\"one\""), n3 + strlen("\"name\":\"three\""));
	free(j1);
	free(j3);
	assert_int_equal(p->n_warnings, 0);
	dv_compose_project_free(p);
}

/* ---- canonical JSON ----------------------------------------------------- */

static void test_canonical_json(void **state)
{
	(void)state;
	struct dv_compose_project *a = load("canon-a.yml"), *b = load("canon-b.yml"), *c = load("canon-c.yml");
	size_t la, lb;
	char *ja = dv_compose_project_to_json(a, &la), *jb = dv_compose_project_to_json(b, &lb);
	char *jc = dv_compose_project_to_json(c, NULL);

	assert_int_equal(la, strlen(ja));
	assert_int_equal(la, lb);
	assert_string_equal(ja, jb);
	assert_string_not_equal(ja, jc);
	assert_contains(ja, "\"start_order\":[\"api\",\"web\"]");
	assert_contains(ja, "\"environment\":{\"A\":\"1\",\"B\":\"2\"}");
	assert_contains(jc, "\"environment\":{\"A\":\"1\",\"B\":\"3\"}");

	/* per service too: api is unchanged between a and c, web is not */
	char *sa = dv_compose_service_to_json(svc(a, "api"), NULL), *sc = dv_compose_service_to_json(svc(c, "api"), NULL);
	assert_string_equal(sa, sc);
	free(sa);
	free(sc);
	sa = dv_compose_service_to_json(svc(a, "web"), NULL);
	sc = dv_compose_service_to_json(svc(c, "web"), NULL);
	assert_string_not_equal(sa, sc);
	char *sb = dv_compose_service_to_json(svc(b, "web"), NULL);
	assert_string_equal(sa, sb);
	/* every field is present; sorted keys */
	assert_prefix(sa, "{\"build\":null,\"command\":null,\"depends_on\":[{\"condition\":\"service_started\"");
	assert_contains(sa, "\"deploy\":{\"failure_action\":null,\"limits\":{\"cpus_milli\":500,\"memory\":536870912}");
	assert_contains(sa, "\"working_dir\":null}");
	free(sa);
	free(sb);
	free(sc);

	/* loading twice gives the same bytes */
	struct dv_compose_project *a2 = load("canon-a.yml");
	char *ja2 = dv_compose_project_to_json(a2, NULL);
	assert_string_equal(ja, ja2);
	free(ja2);
	dv_compose_project_free(a2);

	free(ja);
	free(jb);
	free(jc);
	dv_compose_project_free(a);
	dv_compose_project_free(b);
	dv_compose_project_free(c);
}

/* ---- syntax variants ---------------------------------------------------- */

static void test_ports_volumes_networks(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("variants.yml");
	const struct dv_compose_service *s = svc(p, "ports");
	char *dir = fixtures_abs(), *expect = NULL;

	assert_int_equal(s->n_ports, 9);
	assert_int_equal(s->ports[0].target, 3000);
	assert_int_equal(s->ports[0].published, 0);
	for (unsigned i = 0; i < 3; i++) { /* 8000-8002:9000-9002, expanded */
		assert_int_equal(s->ports[1 + i].published, 8000 + i);
		assert_int_equal(s->ports[1 + i].published_end, 8000 + i);
		assert_int_equal(s->ports[1 + i].target, 9000 + i);
	}
	assert_string_equal(s->ports[4].host_ip, "::1");
	assert_int_equal(s->ports[4].published, 8080);
	assert_int_equal(s->ports[4].target, 80);
	assert_int_equal(s->ports[5].published, 9000); /* a host range for one port */
	assert_int_equal(s->ports[5].published_end, 9005);
	assert_int_equal(s->ports[5].target, 80);
	assert_string_equal(s->ports[6].protocol, "udp");
	assert_string_equal(s->ports[7].host_ip, "127.0.0.1");
	assert_int_equal(s->ports[7].published, 0);
	assert_int_equal(s->ports[7].target, 5000);
	assert_string_equal(s->ports[8].mode, "host");
	assert_int_equal(s->ports[8].published, 8443);
	assert_null(s->ports[8].host_ip);

	assert_int_equal(s->expose.len, 2);
	assert_string_equal(s->expose.items[0], "3000/tcp");
	assert_string_equal(s->expose.items[1], "4000-4002/udp");

	assert_int_equal(s->n_volumes, 5);
	assert_int_equal(s->volumes[0].type, DV_COMPOSE_MOUNT_BIND);
	assert_string_equal(s->volumes[0].source, "/home/tester/config");
	assert_true(s->volumes[0].read_only);
	assert_int_equal(s->volumes[1].type, DV_COMPOSE_MOUNT_VOLUME);
	assert_null(s->volumes[1].source);
	assert_string_equal(s->volumes[1].target, "/data");
	{
		char *parent = strdup(dir);
		*strrchr(parent, '/') = '\0';
		assert_true(asprintf(&expect, "%s/shared/files", parent) > 0);
		assert_string_equal(s->volumes[2].source, expect);
		free(expect);
		free(parent);
	}
	assert_false(s->volumes[2].read_only);
	assert_true(asprintf(&expect, "%s/certs", dir) > 0);
	assert_string_equal(s->volumes[3].source, expect);
	free(expect);
	assert_string_equal(s->volumes[3].target, "/certs");
	assert_true(s->volumes[3].read_only);
	assert_false(s->volumes[3].create_host_path);
	assert_true(s->volumes[0].create_host_path);
	assert_null(s->volumes[4].source);

	assert_int_equal(s->n_networks, 2);
	assert_string_equal(s->networks[0].name, "back");
	assert_string_equal(s->networks[1].name, "front");
	assert_int_equal(s->networks[1].aliases.len, 2);
	assert_string_equal(s->networks[1].aliases.items[1], "www");
	const struct dv_compose_resource *back = dv_compose_project_network(p, "back");
	assert_non_null(back);
	assert_true(back->external);
	assert_string_equal(back->name, "shared-back");
	assert_string_equal(back->driver, "bridge");
	assert_string_equal(dv_compose_project_network(p, "front")->name, "variants_front");
	assert_non_null(dv_compose_project_network(p, "default"));

	const struct dv_compose_service *site = svc(p, "site");
	assert_int_equal(site->kind, DV_COMPOSE_KIND_STATIC);
	assert_true(asprintf(&expect, "%s/dist", dir) > 0);
	assert_string_equal(site->static_dir, expect);
	free(expect);
	assert_domain(site, 0, NULL, "www.example.com", "/");

	const struct dv_compose_service *job = svc(p, "job");
	assert_true(job->has_command);
	assert_int_equal(job->command.len, 0);
	assert_false(job->has_entrypoint);
	assert_string_equal(job->working_dir, "/work");
	assert_int_equal(job->restart, DV_COMPOSE_RESTART_ON_FAILURE);
	assert_int_equal(job->restart_max, 0);

	free(dir);
	dv_compose_project_free(p);
}

static void test_healthcheck_and_depends_variants(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("variants.yml");

	static const char *const disabled[] = {"health-none", "health-none-list", "health-disable"};
	for (size_t i = 0; i < 3; i++) {
		const struct dv_compose_service *s = svc(p, disabled[i]);
		assert_true(s->healthcheck.present);
		assert_true(s->healthcheck.disabled);
		assert_int_equal(s->healthcheck.test.len, 0);
	}
	const struct dv_compose_service *sh = svc(p, "health-shell");
	assert_true(sh->healthcheck.shell);
	assert_int_equal(sh->healthcheck.test.len, 1);
	assert_string_equal(sh->healthcheck.test.items[0], "curl -f http://localhost/");
	assert_int_equal(sh->healthcheck.start_interval_ms, 500);
	assert_int_equal(sh->healthcheck.start_period_ms, 1500);
	/* a string command is split like a shell would */
	static const char *const argv[] = {"echo", "a b", "c d", "", "e"};
	assert_int_equal(sh->command.len, 5);
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(sh->command.items[i], argv[i]);
	assert_true(sh->has_entrypoint);
	assert_string_equal(sh->entrypoint.items[1], "-c");

	const struct dv_compose_service *opt = svc(p, "optional");
	assert_int_equal(opt->restart, DV_COMPOSE_RESTART_NO);
	assert_int_equal(opt->n_depends_on, 1); /* the optional unknown one is dropped */
	assert_string_equal(opt->depends_on[0].service, "ports");
	assert_int_equal(opt->depends_on[0].condition, DV_COMPOSE_COND_COMPLETED);
	assert_true(opt->depends_on[0].restart);
	assert_non_null(find_warning(p, "variants.yml", "58:7: optional dependency 'ghost' is not a service"));

	static const char *const order[] = {"health-disable", "health-none", "health-none-list", "health-shell",
	                                    "job", "ports", "optional", "site", NULL};
	assert_start_order(p, order);
	dv_compose_project_free(p);
}

static void test_traefik_rules(void **state)
{
	(void)state;
	struct dv_compose_project *p = load("traefik.yml");

	const struct dv_compose_service *api = svc(p, "api");
	/* x-davit.domains first, then the routers in label order */
	assert_int_equal(api->n_domains, 7);
	assert_domain(api, 0, NULL, "api.example.com", "/");
	assert_domain(api, 1, NULL, "admin.example.com", "/");
	assert_domain(api, 2, NULL, "ops.example.com", "/");
	assert_domain(api, 3, NULL, "a.example.com", "/api");
	assert_domain(api, 4, NULL, "a.example.com", "/v2");
	assert_domain(api, 5, NULL, "b.example.com", "/api"); /* lower-cased */
	assert_domain(api, 6, NULL, "b.example.com", "/v2");
	assert_int_equal(api->port, 8080);
	assert_non_null(find_warning(p, "traefik.yml", "7:9: Traefik rule traefik.http.routers.api-admin.rule: davit "
	                                               "routes by Host() and PathPrefix() only; ignored: ClientIP, "
	                                               "negations (!)"));
	assert_non_null(find_warning(p, "traefik.yml", "8:9: Traefik rule traefik.http.routers.api-re.rule has a part "
	                                               "without Host()"));

	/* traefik.enable=false: not routed */
	assert_int_equal(svc(p, "hidden")->n_domains, 0);
	assert_int_equal(svc(p, "hidden")->port, 0);

	/* x-davit.port wins over the Traefik port label */
	const struct dv_compose_service *native = svc(p, "native");
	assert_int_equal(native->port, 5000);
	assert_domain(native, 0, NULL, "native.example.com", "/");
	dv_compose_project_free(p);
}

/* ---- malformed files ---------------------------------------------------- */

struct malformed {
	const char *file;
	const char *position;         /* "LINE:COLUMN" */
	const char *words[4];         /* must all appear in the message */
};

static const struct malformed malformed[] = {
	{"bad-yaml.yml", "5:5", {"invalid YAML", "did not find expected ',' or ']'", "line 4, column 12"}},
	{"bad-tab.yml", "3:1", {"invalid YAML", "tabs", "use spaces"}},
	{"bad-two-docs.yml", "4:1", {"second YAML document"}},
	{"bad-empty.yml", "1:1", {"file is empty", "services"}},
	{"bad-not-mapping.yml", "1:1", {"must be a mapping", "not a list"}},
	{"bad-no-services.yml", "1:1", {"no 'services:' key"}},
	{"bad-service-not-mapping.yml", "2:8", {"service 'web' must be a mapping", "not a string"}},
	{"bad-duplicate.yml", "5:5", {"duplicate key 'image'", "first defined at line 3, column 5"}},
	{"bad-alias.yml", "3:9", {"alias '*defaults'", "define '&defaults' earlier"}},
	{"bad-merge.yml", "1:10", {"merge key '<<' needs a mapping"}},
	{"bad-restart.yml", "4:14", {"unknown restart policy 'sometimes'", "on-failure:N", "unless-stopped"}},
	{"bad-port.yml", "6:9", {"bad port '8080:http'", "container port", "\"8080:80\""}},
	{"bad-port-long.yml", "7:19", {"ports.protocol", "tcp, udp or sctp", "'tcpp'"}},
	{"bad-duration.yml", "6:17", {"bad duration '10'", "healthcheck.interval", "30s"}},
	{"bad-memory.yml", "7:19", {"bad size '512X'", "memory", "512M"}},
	{"bad-replicas.yml", "5:17", {"deploy.replicas", "positive integer", "'0'"}},
	{"bad-update-order.yml", "6:16", {"start-first or stop-first", "'rolling'"}},
	{"bad-depends-unknown.yml", "6:9", {"depends_on names 'cache'", "not a service", "services: db, web"}},
	{"bad-condition.yml", "5:23", {"unknown depends_on condition 'service_ready'", "service_healthy"}},
	{"bad-cycle.yml", "12:18", {"depends_on cycle: a -> b -> c -> a"}},
	{"bad-self-dep.yml", "4:18", {"depends_on cycle: web -> web"}},
	{"bad-nothing.yml", "4:3", {"service 'worker' has nothing to run", "image", "x-davit.run"}},
	{"bad-run-and-image.yml", "5:12", {"x-davit.run", "native", "image", "keep one"}},
	{"bad-run-and-static.yml", "5:12", {"x-davit.run and x-davit.static exclude each other"}},
	{"bad-env-file.yml", "6:9", {"env file './missing.env'", "not found", "required: false"}},
	{"bad-env-dup.yml", "7:9", {"environment variable 'A' is set twice", "line 5, column 9"}},
	{"bad-required-var.yml", "3:12", {"required variable RELEASE_TAG is not set"}},
	{"bad-interp.yml", "5:14", {"invalid interpolation", "$$"}},
	{"bad-healthcheck.yml", "5:14", {"healthcheck.test must start with \"CMD\"", "'CURL'"}},
	{"bad-volume.yml", "5:9", {"volume 'pgdata' is not declared", "top-level 'volumes:'"}},
	{"bad-volume-target.yml", "5:9", {"target 'usr/share/nginx/html'", "absolute path"}},
	{"bad-network.yml", "4:16", {"network 'frontend' is not declared"}},
	{"bad-traefik.yml", "5:7", {"bad Traefik rule", "traefik.http.routers.web.rule", "')'"}},
	{"bad-domain.yml", "5:35", {"bad domain 'bad_host.example.com'"}},
	{"bad-davit-port.yml", "5:13", {"x-davit.port", "1 to 65535", "'70000'"}},
	{"bad-davit-health.yml", "5:15", {"exactly one of 'path:'", "'cmd:'"}},
	{"bad-command.yml", "4:14", {"command: unterminated double quote"}},
	{"bad-name.yml", "1:7", {"project name 'My App' is invalid"}},
	{"bad-laughs.yml", "7:6", {"aliases expand this list to more than", "not a plausible"}},
};

static void test_malformed(void **state)
{
	const struct malformed *m = *state;
	struct dv_compose_options opts = {.environ = test_env};
	char *err = load_error(m->file, &opts, -EINVAL), *path = fixture(m->file), *prefix = NULL;

	assert_true(asprintf(&prefix, "%s:%s: ", path, m->position) > 0);
	assert_prefix(err, prefix);
	for (size_t i = 0; i < 4 && m->words[i]; i++)
		assert_contains(err, m->words[i]);
	free(prefix);
	free(path);
	free(err);
}

/* ---- everything else ---------------------------------------------------- */

static void test_missing_file(void **state)
{
	(void)state;
	struct dv_compose_project *p = (void *)1;
	char *err = NULL, *path = fixture("does-not-exist.yml"), *prefix = NULL;
	assert_int_equal(dv_compose_load(path, NULL, &p, &err), -ENOENT);
	assert_null(p);
	assert_true(asprintf(&prefix, "%s: cannot read the compose file: ", path) > 0);
	assert_prefix(err, prefix);
	free(err);
	free(prefix);

	/* err may be NULL */
	assert_int_equal(dv_compose_load(path, NULL, &p, NULL), -ENOENT);
	free(path);

	path = fixture("bad-restart.yml");
	assert_int_equal(dv_compose_load(path, NULL, &p, NULL), -EINVAL);
	assert_null(p);
	free(path);
	dv_compose_project_free(NULL);
}

static void test_project_name(void **state)
{
	(void)state;
	char tmpl[] = "/tmp/dv-compose-XXXXXX";
	char *dir = NULL, *file = NULL, *err = NULL;
	struct dv_compose_project *p = NULL;
	static const char *const none[] = {NULL};
	struct dv_compose_options opts = {.environ = none};

	assert_non_null(mkdtemp(tmpl));
	assert_true(asprintf(&dir, "%s/_My Cool.App-2", tmpl) > 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_true(asprintf(&file, "%s/compose.yaml", dir) > 0);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fputs("services:\n  web:\n    image: nginx\n    volumes: [./html:/usr/share/nginx/html]\n", f);
	fclose(f);

	assert_int_equal(dv_compose_load(file, &opts, &p, &err), 0);
	assert_string_equal(p->name, "mycoolapp-2");
	assert_string_equal(p->networks[0].name, "mycoolapp-2_default");
	dv_compose_project_free(p);

	opts.project_name = "override";
	assert_int_equal(dv_compose_load(file, &opts, &p, &err), 0);
	assert_string_equal(p->name, "override");
	dv_compose_project_free(p);

	opts.project_name = "Bad Name";
	assert_int_equal(dv_compose_load(file, &opts, &p, &err), -EINVAL);
	assert_contains(err, "project name 'Bad Name' (given by the caller) is invalid");
	free(err);

	assert_int_equal(unlink(file), 0);
	assert_int_equal(rmdir(dir), 0);
	assert_int_equal(rmdir(tmpl), 0);
	free(file);
	free(dir);
}

static void test_load_buffer(void **state)
{
	(void)state;
	/* the trailing garbage is outside len: it must not be read */
	static const char good[] = "services:\n  web:\n    image: nginx:${MONGO_PASSWORD}\n"
	                           "    volumes: [./data:/data]\n@@@ not yaml";
	static const char bad[] = "services:\n  web:\n    image: nginx\n    env_file: /dev/null\n";
	struct dv_compose_options opts = {.environ = test_env};
	struct dv_compose_project *p = NULL;
	char *err = NULL, *dir = fixtures_abs(), *expect = NULL;

	assert_int_equal(dv_compose_load_buffer("upload.yml", good, strlen(good) - strlen("@@@ not yaml"),
	                                        fixtures_dir(), &opts, &p, &err), 0);
	assert_string_equal(p->name, "fixtures");
	assert_string_equal(p->file, "upload.yml");
	assert_string_equal(svc(p, "web")->image, "nginx:s3cret"); /* the directory's .env */
	assert_true(asprintf(&expect, "%s/data", dir) > 0);
	assert_string_equal(svc(p, "web")->volumes[0].source, expect);
	free(expect);
	dv_compose_project_free(p);

	/* env_file must be a regular file (a FIFO or a device would hang or never end) */
	assert_int_equal(dv_compose_load_buffer("upload.yml", bad, strlen(bad), fixtures_dir(), &opts, &p, &err),
	                 -EINVAL);
	assert_null(p);
	assert_prefix(err, "upload.yml:4:15: cannot read env file '/dev/null': not a regular file");
	free(err);

	assert_int_equal(dv_compose_load_buffer("upload.yml", good, strlen(good), "/nonexistent/dir", &opts, &p, &err),
	                 -ENOENT);
	assert_prefix(err, "upload.yml: cannot resolve the project directory '/nonexistent/dir'");
	free(err);
	free(dir);
}

static void test_warning_cap(void **state)
{
	(void)state;
	struct dv_compose_options opts = {.environ = test_env};
	struct dv_compose_project *p = NULL;
	char *err = NULL, *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	fputs("services:\n  web:\n    image: nginx\n", f);
	for (int i = 0; i < 1100; i++)
		fprintf(f, "    unknown%d: x\n", i);
	fclose(f);
	assert_int_equal(dv_compose_load_buffer("many.yml", text, len, fixtures_dir(), &opts, &p, &err), 0);
	assert_int_equal(p->n_warnings, 1000);
	assert_prefix(p->warnings[0], "many.yml:4:5: unknown key 'unknown0'");
	assert_string_equal(p->warnings[999], "many.yml: 101 more warnings not shown");
	dv_compose_project_free(p);
	free(text);
}

static void test_units(void **state)
{
	(void)state;
	uint64_t v = 0;
	static const struct {
		const char *text;
		uint64_t ms;
	} durations[] = {{"0", 0}, {"10s", 10000}, {"500ms", 500}, {"1m30s", 90000}, {"1h", 3600000},
	                 {"1.5s", 1500}, {"2h45m", 9900000}, {"1000us", 1}, {"3000000ns", 3}, {"0.5m", 30000}};
	for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
		assert_int_equal(dv_compose_parse_duration(durations[i].text, &v), 0);
		assert_int_equal(v, durations[i].ms);
	}
	static const char *const bad_durations[] = {"", "10", "s", "1x", "-1s", "1.s5", "10 s", "100us", "1.5",
	                                            "99999999999999999999h"};
	for (size_t i = 0; i < sizeof bad_durations / sizeof bad_durations[0]; i++)
		assert_int_not_equal(dv_compose_parse_duration(bad_durations[i], &v), 0);

	static const struct {
		const char *text;
		uint64_t bytes;
	} sizes[] = {{"0", 0}, {"1024", 1024}, {"512M", 512ull << 20}, {"1g", 1ull << 30}, {"2GiB", 2ull << 30},
	             {"1.5g", 3ull << 29}, {"64m", 64ull << 20}, {"10kb", 10240}, {"100b", 100}, {"1 G", 1ull << 30}};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		assert_int_equal(dv_compose_parse_size(sizes[i].text, &v), 0);
		assert_int_equal(v, sizes[i].bytes);
	}
	static const char *const bad_sizes[] = {"", "M", "12X", "1gg", "-1", "1 ", "99999999999p"};
	for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++)
		assert_int_not_equal(dv_compose_parse_size(bad_sizes[i], &v), 0);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_penpal),
		cmocka_unit_test(test_lumira),
		cmocka_unit_test(test_interpolation),
		cmocka_unit_test(test_run_empty_variable_warning),
		cmocka_unit_test(test_required_variable),
		cmocka_unit_test(test_dotenv_errors),
		cmocka_unit_test(test_env_file_optional),
		cmocka_unit_test(test_unknown_key_warnings),
		cmocka_unit_test(test_merge_keys),
		cmocka_unit_test(test_canonical_json),
		cmocka_unit_test(test_ports_volumes_networks),
		cmocka_unit_test(test_healthcheck_and_depends_variants),
		cmocka_unit_test(test_traefik_rules),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_project_name),
		cmocka_unit_test(test_load_buffer),
		cmocka_unit_test(test_warning_cap),
		cmocka_unit_test(test_units),
	};
	size_t n_fixed = sizeof fixed / sizeof fixed[0], n_bad = sizeof malformed / sizeof malformed[0];
	struct CMUnitTest *tests = calloc(n_fixed + n_bad, sizeof *tests);
	char **names = calloc(n_bad, sizeof *names);
	int failed;

	memcpy(tests, fixed, sizeof fixed);
	for (size_t i = 0; i < n_bad; i++) {
		if (asprintf(&names[i], "malformed: %s", malformed[i].file) < 0)
			abort();
		tests[n_fixed + i].name = names[i];
		tests[n_fixed + i].test_func = test_malformed;
		tests[n_fixed + i].initial_state = (void *)&malformed[i];
	}
	failed = _cmocka_run_group_tests("compose", tests, n_fixed + n_bad, NULL, NULL);
	for (size_t i = 0; i < n_bad; i++)
		free(names[i]);
	free(names);
	free(tests);
	return failed;
}
