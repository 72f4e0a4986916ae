/* docker_api: the pure parts of the Docker driver (docker.h), without I/O, so
 * that unit tests cover them: names and labels, the container-create JSON,
 * API version negotiation, the log stream's frame format, registry auth
 * headers, image references and a tar writer for build contexts. */
#ifndef DV_RUNTIME_DOCKER_API_H
#define DV_RUNTIME_DOCKER_API_H

#include "core/strbuf.h"
#include "runtime/runtime.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The API versions this driver speaks: the engine's own version is used,
 * capped at MAX; an engine older than MIN is refused. */
#define DV_DOCKER_API_MIN "1.40"
#define DV_DOCKER_API_MAX "1.43"

/* Picks the API version from the engine's GET /version fields ApiVersion
 * (its newest) and MinAPIVersion (may be NULL). Writes "1.41" into out and
 * returns 0, or -1 with *err (engine too old, unparsable). */
int dv_docker_negotiate(const char *server_api, const char *server_min, char *out, size_t size, char **err);

/* "davit_<app>_<service>_<name>": the container name (characters outside
 * [A-Za-z0-9_.-] become '-'). Caller frees. */
char *dv_docker_container_name(const char *app, const char *service, const char *name);

/* "davit/<app>-<service>:<release>" in lower case with characters Docker
 * refuses in a repository replaced by '-'. Caller frees. */
char *dv_docker_image_tag(const char *app, const char *service, const char *release);

/* The registry host of an image reference ("registry.local:5000/team/api:1"
 * -> "registry.local:5000"; "redis:7" -> "docker.io"). Caller frees. */
char *dv_docker_image_registry(const char *ref);

/* The X-Registry-Auth value: base64url of {"username","password","serveraddress"}. Caller frees. */
char *dv_docker_auth_header(const char *user, const char *password, const char *server);

/* The body of POST /containers/create for a replica: labels davit.app,
 * davit.service, davit.release, davit.replica, davit.owner (the daemon's
 * state directory: daemons never touch each other's containers), davit.spec; env, entrypoint, command,
 * user, working dir, limits, Init, stop timeout, ports, mounts, the primary
 * network (others are connected after creation), health check. */
void dv_docker_create_json(const struct dv_replica_spec *spec, const char *owner, struct dv_strbuf *out);

/* The log stream of a container without a TTY is framed: an 8-byte header
 * (stream 1/2, 3 zero bytes, a big-endian 32-bit length) before each chunk. */
struct dv_docker_demux {
	unsigned char hdr[8];
	size_t hdr_len;
	int stream;        /* of the current frame */
	size_t remaining;  /* bytes of it still to come */
};
typedef void (*dv_docker_demux_cb)(int stream, const char *data, size_t len, void *arg);
/* Feeds bytes as they come; cb gets each frame's payload (in pieces). */
void dv_docker_demux_feed(struct dv_docker_demux *d, const char *data, size_t len, dv_docker_demux_cb cb, void *arg);

/* Docker answers build and pull with a stream of JSON objects (one per
 * line). Splits buffered text into complete lines: calls cb for each and
 * keeps the unfinished rest in buf. */
void dv_docker_json_lines(struct dv_strbuf *buf, const char *data, size_t len,
                          void (*cb)(const char *line, size_t len, void *arg), void *arg);

/* ---- tar (ustar), for build contexts ---- */

/* Writes one 512-byte ustar header. type '0' file, '5' directory. Names
 * longer than 100 bytes are split into prefix/name at a '/'; returns -1 if
 * that is impossible (a name over 255 bytes, or a last component over 100). */
int dv_tar_header(unsigned char hdr[512], const char *name, uint64_t size, unsigned mode, char type, int64_t mtime);

/* Appends the directory tree at `dir` as a tar archive (files, directories,
 * symlinks as files they point to are skipped; paths relative to dir; the
 * .dockerignore file's plain entries are left out) to out. At most
 * max_bytes of archive. mtimes false: every entry's time is 0, so that the
 * archive (and its digest) depends on names, modes and contents only.
 * Returns 0, or -1 with *err. */
int dv_tar_directory(const char *dir, uint64_t max_bytes, bool mtimes, struct dv_strbuf *out, char **err);

#endif
