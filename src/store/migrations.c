/* migrations: the schema of davit.db as numbered steps.
 *
 * Migration i (0-based) takes the schema from version i to i + 1; PRAGMA
 * user_version holds the version. dv_store_open() runs each pending one in
 * its own transaction (with foreign keys on), then sets user_version.
 *
 * Rules: never edit a migration that has shipped; append a new one. A
 * migration that rebuilds a table (SQLite's "create new, copy, drop, rename")
 * must keep foreign keys consistent itself, since PRAGMA foreign_keys cannot
 * change inside a transaction.
 *
 * Schema notes:
 * - Rows refer to each other by integer ids; names are looked up through
 *   apps/environments. Releases have an internal `id` (the row) and the
 *   `number` users see ("release 7"), drawn from environments.last_release
 *   so that a number is never reused, even if releases are pruned one day.
 * - Releases are immutable (a trigger refuses updates); a deployment in a
 *   final state cannot change state (a trigger as well); at most one
 *   unfinished deployment per environment (a partial unique index).
 * - Events name their app as text, without a foreign key: they outlive it.
 */
#include "store/store.h"

const char *const dv_store_migrations[] = {
	/* 1: the initial schema */
	"PRAGMA application_id = 1685479796;\n" /* 0x64766174, "dvat": see DV_STORE_APPLICATION_ID */
	"CREATE TABLE apps (\n"
	"  id INTEGER PRIMARY KEY,\n"
	"  name TEXT NOT NULL UNIQUE,\n"
	"  created_at INTEGER NOT NULL\n"
	");\n"
	"CREATE TABLE environments (\n"
	"  id INTEGER PRIMARY KEY,\n"
	"  app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,\n"
	"  name TEXT NOT NULL,\n"
	"  created_at INTEGER NOT NULL,\n"
	"  last_release INTEGER NOT NULL DEFAULT 0,\n"
	"  UNIQUE (app_id, name)\n"
	");\n"
	"CREATE TABLE releases (\n"
	"  id INTEGER PRIMARY KEY,\n"
	"  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,\n"
	"  number INTEGER NOT NULL,\n"
	"  hash TEXT NOT NULL,\n"
	"  compose_json TEXT NOT NULL CONSTRAINT compose_json_is_json CHECK (json_valid(compose_json)),\n"
	"  env_json TEXT NOT NULL CONSTRAINT env_json_is_json CHECK (json_valid(env_json)),\n"
	"  source TEXT NOT NULL DEFAULT '',\n"
	"  created_at INTEGER NOT NULL,\n"
	"  UNIQUE (env_id, number),\n"
	"  UNIQUE (env_id, hash)\n"
	");\n"
	"CREATE TRIGGER releases_immutable BEFORE UPDATE ON releases\n"
	"BEGIN SELECT RAISE(ABORT, 'releases are immutable'); END;\n"
	"CREATE TABLE current_releases (\n"
	"  env_id INTEGER PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,\n"
	"  release_id INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE,\n"
	"  deployment_id INTEGER REFERENCES deployments(id) ON DELETE SET NULL,\n"
	"  since INTEGER NOT NULL\n"
	");\n"
	"CREATE TABLE deployments (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,\n"
	"  release_id INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE,\n"
	"  previous_release_id INTEGER REFERENCES releases(id) ON DELETE SET NULL,\n"
	"  state TEXT NOT NULL CHECK (state IN ('planned', 'running', 'succeeded', 'failed',\n"
	"                                        'rolling_back', 'rolled_back')),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  started_at INTEGER,\n"
	"  finished_at INTEGER,\n"
	"  deadline_at INTEGER,\n"
	"  error TEXT\n"
	");\n"
	"CREATE UNIQUE INDEX deployments_one_unfinished ON deployments(env_id)\n"
	"  WHERE state IN ('planned', 'running', 'rolling_back');\n"
	"CREATE INDEX deployments_by_env ON deployments(env_id, id);\n"
	"CREATE INDEX deployments_by_release ON deployments(release_id);\n"
	"CREATE INDEX deployments_by_previous ON deployments(previous_release_id);\n"
	"CREATE INDEX current_by_release ON current_releases(release_id);\n"
	"CREATE INDEX current_by_deployment ON current_releases(deployment_id);\n"
	"CREATE TRIGGER deployments_final BEFORE UPDATE OF state ON deployments\n"
	"  WHEN OLD.state IN ('succeeded', 'failed', 'rolled_back')\n"
	"BEGIN SELECT RAISE(ABORT, 'a finished deployment cannot change state'); END;\n"
	"CREATE TABLE deployment_steps (\n"
	"  deployment_id INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,\n"
	"  seq INTEGER NOT NULL,\n"
	"  service TEXT NOT NULL,\n"
	"  state TEXT NOT NULL CHECK (state IN ('starting', 'waiting_healthy', 'switching', 'draining',\n"
	"                                        'stopping_old', 'done', 'failed')),\n"
	"  at INTEGER NOT NULL,\n"
	"  message TEXT,\n"
	"  PRIMARY KEY (deployment_id, seq)\n"
	") WITHOUT ROWID;\n"
	"CREATE TABLE replicas (\n"
	"  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,\n"
	"  service TEXT NOT NULL,\n"
	"  release_id INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE,\n"
	"  idx INTEGER NOT NULL CHECK (idx >= 0),\n"
	"  pid INTEGER,\n"
	"  proc_start INTEGER,\n"
	"  port INTEGER CHECK (port IS NULL OR port BETWEEN 1 AND 65535),\n"
	"  state TEXT NOT NULL CHECK (state IN ('starting', 'healthy', 'unhealthy', 'draining',\n"
	"                                        'stopping', 'stopped', 'crashed')),\n"
	"  started_at INTEGER,\n"
	"  restarts INTEGER NOT NULL DEFAULT 0,\n"
	"  updated_at INTEGER NOT NULL,\n"
	"  PRIMARY KEY (env_id, service, release_id, idx)\n"
	") WITHOUT ROWID;\n"
	"CREATE INDEX replicas_by_release ON replicas(release_id);\n"
	"CREATE TABLE events (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  at INTEGER NOT NULL,\n"
	"  app TEXT,\n"
	"  kind TEXT NOT NULL,\n"
	"  message TEXT NOT NULL,\n"
	"  data TEXT CONSTRAINT data_is_json CHECK (data IS NULL OR json_valid(data))\n"
	");\n"
	"CREATE INDEX events_by_at ON events(at);\n"
	"CREATE INDEX events_by_app ON events(app, id);\n",
};

const size_t dv_store_migrations_len = sizeof dv_store_migrations / sizeof dv_store_migrations[0];
