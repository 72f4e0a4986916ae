/* Unit tests for the pure parts of the docker driver (runtime/docker_api.h)
 * and the registry credential store (runtime/registry.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/jsonparse.h"
#include "core/strbuf.h"
#include "runtime/docker_api.h"
#include "runtime/registry.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_negotiate(void **state)
{
	char v[16];
	char *err = NULL;
	assert_int_equal(dv_docker_negotiate("1.41", "1.12", v, sizeof v, &err), 0);
	assert_string_equal(v, "1.41");
	/* newer engines: our newest */
	assert_int_equal(dv_docker_negotiate("1.45", "1.24", v, sizeof v, &err), 0);
	assert_string_equal(v, DV_DOCKER_API_MAX);
	/* minor versions compare as numbers: 1.9 < 1.40 */
	assert_int_equal(dv_docker_negotiate("1.9", NULL, v, sizeof v, &err), -1);
	assert_non_null(strstr(err, "older than"));
	free(err);
	err = NULL;
	/* an engine that needs something newer than we speak */
	assert_int_equal(dv_docker_negotiate("2.10", "2.0", v, sizeof v, &err), -1);
	assert_non_null(err);
	free(err);
	err = NULL;
	assert_int_equal(dv_docker_negotiate("banana", NULL, v, sizeof v, &err), -1);
	free(err);
}

static void test_names(void **state)
{
	char *n = dv_docker_container_name("shop", "api/v2", "r3-0");
	assert_string_equal(n, "davit_shop_api-v2_r3-0");
	free(n);
	n = dv_docker_image_tag("Shop", "Web_UI", "12");
	assert_string_equal(n, "davit/shop-web_ui:12");
	free(n);
	n = dv_docker_image_registry("registry.local:5000/team/api:1");
	assert_string_equal(n, "registry.local:5000");
	free(n);
	n = dv_docker_image_registry("localhost/x");
	assert_string_equal(n, "localhost");
	free(n);
	n = dv_docker_image_registry("redis:7");
	assert_string_equal(n, "docker.io");
	free(n);
	n = dv_docker_image_registry("team/api:1");
	assert_string_equal(n, "docker.io");
	free(n);
}

static void test_auth_header(void **state)
{
	char *h = dv_docker_auth_header("user", "p\"w", "127.0.0.1:5000");
	unsigned char bin[256];
	size_t len = 0;
	assert_int_equal(sodium_base642bin(bin, sizeof bin, h, strlen(h), NULL, &len, NULL, sodium_base64_VARIANT_URLSAFE),
	                 0);
	struct dv_jv *v = dv_jv_parse((const char *)bin, len, NULL);
	assert_non_null(v);
	assert_string_equal(dv_jv_str(v, "username", ""), "user");
	assert_string_equal(dv_jv_str(v, "password", ""), "p\"w");
	assert_string_equal(dv_jv_str(v, "serveraddress", ""), "127.0.0.1:5000");
	dv_jv_free(v);
	free(h);
}

static void test_create_json(void **state)
{
	char *env[] = {"A=1", "PORT=8000", NULL};
	char *cmd[] = {"httpd", "-f", NULL};
	char *aliases[] = {"api", "backend", NULL};
	char *health[] = {"CMD-SHELL", "wget -q -O- http://127.0.0.1:8000/", NULL};
	struct dv_container_network nets[] = {{.name = "shop_default", .aliases = aliases}, {.name = "shop_data"}};
	struct dv_container_mount mounts[] = {
		{.type = DV_MOUNT_VOLUME, .source = "shop_pg", .target = "/data"},
		{.type = DV_MOUNT_BIND, .source = "/srv/conf", .target = "/conf", .read_only = true},
		{.type = DV_MOUNT_TMPFS, .target = "/tmp", .tmpfs_size = 1 << 20},
	};
	struct dv_container_port ports[] = {{.host_ip = "0.0.0.0", .host_port = 8443, .target = 443}};
	struct dv_container_spec c = {
		.image = "davit/shop-api:3",
		.has_command = true,
		.command = cmd,
		.user = "nobody",
		.working_dir = "/app",
		.pids_limit = 100,
		.app_port = 8000,
		.loopback_port = 21000,
		.networks = nets,
		.n_networks = 2,
		.mounts = mounts,
		.n_mounts = 3,
		.ports = ports,
		.n_ports = 1,
		.health_set = true,
		.health_test = health,
		.health_interval_ms = 1500,
		.spec_hash = "abc",
	};
	struct dv_replica_spec spec = {
		.app = "shop", .service = "api", .release = "3", .index = 1, .name = "r3-1", .env = env,
		.stop_timeout_ms = 2500, .memory_limit = 64 << 20, .cpu_limit = 0.5, .container = &c,
	};
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_docker_create_json(&spec, "/var/lib/davit", &b);
	struct dv_jv *v = dv_jv_parse(b.data, b.len, NULL);
	assert_non_null(v);
	assert_string_equal(dv_jv_str(v, "Image", ""), "davit/shop-api:3");
	assert_string_equal(dv_jv_str(v, "User", ""), "nobody");
	assert_string_equal(dv_jv_str(v, "WorkingDir", ""), "/app");
	assert_int_equal(dv_jv_get(v, "Env")->len, 2);
	assert_null(dv_jv_get(v, "Entrypoint")); /* not given: the image's */
	assert_string_equal(dv_jv_get(v, "Cmd")->items[0].string, "httpd");
	assert_int_equal(dv_jv_int(v, "StopTimeout", 0), 3); /* rounded up to seconds */
	const struct dv_jv *l = dv_jv_get(v, "Labels");
	assert_string_equal(dv_jv_str(l, "davit.app", ""), "shop");
	assert_string_equal(dv_jv_str(l, "davit.service", ""), "api");
	assert_string_equal(dv_jv_str(l, "davit.release", ""), "3");
	assert_string_equal(dv_jv_str(l, "davit.replica", ""), "1");
	assert_string_equal(dv_jv_str(l, "davit.owner", ""), "/var/lib/davit");
	assert_string_equal(dv_jv_str(l, "davit.spec", ""), "abc");
	const struct dv_jv *h = dv_jv_get(v, "HostConfig");
	assert_true(dv_jv_bool(h, "Init", false));
	assert_int_equal(dv_jv_int(h, "Memory", 0), 64 << 20);
	assert_int_equal(dv_jv_int(h, "NanoCpus", 0), 500000000);
	assert_int_equal(dv_jv_int(h, "PidsLimit", 0), 100);
	assert_string_equal(dv_jv_str(dv_jv_get(h, "RestartPolicy"), "Name", ""), "no");
	assert_string_equal(dv_jv_str(h, "NetworkMode", ""), "shop_default");
	const struct dv_jv *pb = dv_jv_get(h, "PortBindings");
	const struct dv_jv *app = dv_jv_get(pb, "8000/tcp");
	assert_non_null(app);
	assert_string_equal(dv_jv_str(&app->items[0], "HostIp", ""), "127.0.0.1");
	assert_string_equal(dv_jv_str(&app->items[0], "HostPort", ""), "21000");
	assert_string_equal(dv_jv_str(&dv_jv_get(pb, "443/tcp")->items[0], "HostPort", ""), "8443");
	const struct dv_jv *m = dv_jv_get(h, "Mounts");
	assert_int_equal(m->len, 3);
	assert_string_equal(dv_jv_str(&m->items[0], "Type", ""), "volume");
	assert_string_equal(dv_jv_str(&m->items[0], "Source", ""), "shop_pg");
	assert_true(dv_jv_bool(&m->items[1], "ReadOnly", false));
	assert_int_equal(dv_jv_int(dv_jv_get(&m->items[2], "TmpfsOptions"), "SizeBytes", 0), 1 << 20);
	const struct dv_jv *ep = dv_jv_get(dv_jv_get(dv_jv_get(v, "NetworkingConfig"), "EndpointsConfig"), "shop_default");
	assert_int_equal(dv_jv_get(ep, "Aliases")->len, 2);
	const struct dv_jv *hc = dv_jv_get(v, "Healthcheck");
	assert_string_equal(dv_jv_get(hc, "Test")->items[0].string, "CMD-SHELL");
	assert_int_equal(dv_jv_int(hc, "Interval", 0), 1500000000);
	dv_jv_free(v);

	/* Without loopback publishing: no binding for the app port. */
	c.loopback_port = 0;
	c.n_ports = 0;
	dv_strbuf_reset(&b);
	dv_docker_create_json(&spec, NULL, &b);
	v = dv_jv_parse(b.data, b.len, NULL);
	assert_non_null(v);
	assert_int_equal(dv_jv_get(dv_jv_get(v, "HostConfig"), "PortBindings")->len, 0);
	assert_null(dv_jv_get(dv_jv_get(v, "Labels"), "davit.owner"));
	dv_jv_free(v);
	dv_strbuf_dispose(&b);
}

struct frames {
	struct dv_strbuf out, err;
};

static void frame_cb(int stream, const char *data, size_t len, void *arg)
{
	struct frames *f = arg;
	dv_strbuf_append(stream == 2 ? &f->err : &f->out, data, len);
}

static void test_demux_byte_by_byte(void **state)
{
	const unsigned char raw[] = {1, 0, 0, 0, 0, 0, 0, 6, 'h', 'e', 'l', 'l', 'o', '\n',
	                             2, 0, 0, 0, 0, 0, 0, 4, 'o', 'o', 'p', 's',
	                             1, 0, 0, 0, 0, 0, 0, 0,
	                             1, 0, 0, 0, 0, 0, 0, 2, 'o', 'k'};
	for (size_t step = 1; step <= sizeof raw; step++) {
		struct frames f;
		dv_strbuf_init(&f.out);
		dv_strbuf_init(&f.err);
		struct dv_docker_demux d = {0};
		for (size_t i = 0; i < sizeof raw; i += step)
			dv_docker_demux_feed(&d, (const char *)raw + i, i + step <= sizeof raw ? step : sizeof raw - i, frame_cb, &f);
		assert_string_equal(f.out.data, "hello\nok");
		assert_string_equal(f.err.data, "oops");
		dv_strbuf_dispose(&f.out);
		dv_strbuf_dispose(&f.err);
	}
}

static void line_cb(const char *line, size_t len, void *arg)
{
	struct dv_strbuf *b = arg;
	dv_strbuf_append(b, "[", 1);
	dv_strbuf_append(b, line, len);
	dv_strbuf_append(b, "]", 1);
}

static void test_json_lines(void **state)
{
	struct dv_strbuf buf, got;
	dv_strbuf_init(&buf);
	dv_strbuf_init(&got);
	dv_docker_json_lines(&buf, "{\"a\":1}\n{\"b\"", 12, line_cb, &got);
	assert_string_equal(got.data, "[{\"a\":1}]");
	dv_docker_json_lines(&buf, ":2}\n\n", 5, line_cb, &got);
	assert_string_equal(got.data, "[{\"a\":1}][{\"b\":2}]");
	assert_int_equal(buf.len, 0);
	dv_strbuf_dispose(&buf);
	dv_strbuf_dispose(&got);
}

static uint64_t octal_field(const unsigned char *f, size_t n)
{
	char tmp[16] = {0};
	memcpy(tmp, f, n);
	return strtoull(tmp, NULL, 8);
}

static void test_tar_header(void **state)
{
	unsigned char h[512];
	assert_int_equal(dv_tar_header(h, "dir/file.txt", 1234, 0644, '0', 1700000000), 0);
	assert_string_equal((char *)h, "dir/file.txt");
	assert_int_equal(octal_field(h + 124, 12), 1234);
	assert_int_equal(octal_field(h + 100, 8), 0644);
	assert_int_equal(h[156], '0');
	assert_memory_equal(h + 257, "ustar", 6);
	/* checksum: the header's bytes with the checksum field as spaces */
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += (i >= 148 && i < 156) ? ' ' : h[i];
	assert_int_equal(octal_field(h + 148, 7), sum);
	/* a long path goes into the ustar prefix */
	char longname[200];
	memset(longname, 'a', 120);
	memcpy(longname + 120, "/short.txt", 11);
	assert_int_equal(dv_tar_header(h, longname, 0, 0644, '0', 0), 0);
	assert_string_equal((char *)h, "short.txt");
	assert_int_equal(strnlen((char *)h + 345, 155), 120);
	/* a last component over 100 bytes cannot be written */
	char toolong[140];
	memset(toolong, 'b', 130);
	toolong[130] = '\0';
	assert_int_equal(dv_tar_header(h, toolong, 0, 0644, '0', 0), -1);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_tar_directory(void **state)
{
	char dir[] = "/tmp/davit-tar-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char p[256];
	snprintf(p, sizeof p, "%s/Dockerfile", dir);
	write_file(p, "FROM x\n");
	snprintf(p, sizeof p, "%s/src", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/src/app.js", dir);
	write_file(p, "console.log(1)\n");
	snprintf(p, sizeof p, "%s/node_modules", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/node_modules/big", dir);
	write_file(p, "x");
	snprintf(p, sizeof p, "%s/.dockerignore", dir);
	write_file(p, "# deps\nnode_modules/\n");
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	char *err = NULL;
	assert_int_equal(dv_tar_directory(dir, 1 << 20, true, &b, &err), 0);
	assert_int_equal(b.len % 512, 0);
	/* walk the entries: sorted names, node_modules left out, two zero blocks at the end */
	const char *want[] = {".dockerignore", "Dockerfile", "src/", "src/app.js"};
	size_t off = 0, k = 0;
	while (off + 512 <= b.len && b.data[off]) {
		const unsigned char *h = (const unsigned char *)b.data + off;
		assert_true(k < 4);
		assert_string_equal((const char *)h, want[k]);
		uint64_t size = octal_field(h + 124, 12);
		if (k == 3)
			assert_memory_equal(b.data + off + 512, "console.log(1)\n", 15);
		off += 512 + (size + 511) / 512 * 512;
		k++;
	}
	assert_int_equal(k, 4);
	assert_int_equal(b.len - off, 1024);
	/* without mtimes, touching a file does not change the archive (nor the release's digest) */
	struct dv_strbuf a1, a2;
	dv_strbuf_init(&a1);
	dv_strbuf_init(&a2);
	assert_int_equal(dv_tar_directory(dir, 1 << 20, false, &a1, &err), 0);
	snprintf(p, sizeof p, "%s/src/app.js", dir);
	struct timespec times[2] = {{.tv_sec = 1000000}, {.tv_sec = 1000000}};
	assert_int_equal(utimensat(AT_FDCWD, p, times, 0), 0);
	assert_int_equal(dv_tar_directory(dir, 1 << 20, false, &a2, &err), 0);
	assert_int_equal(a1.len, a2.len);
	assert_memory_equal(a1.data, a2.data, a1.len);
	dv_strbuf_reset(&a2);
	assert_int_equal(dv_tar_directory(dir, 1 << 20, true, &a2, &err), 0);
	assert_true(a1.len != a2.len || memcmp(a1.data, a2.data, a1.len) != 0);
	dv_strbuf_dispose(&a1);
	dv_strbuf_dispose(&a2);
	/* the size cap is an error that says what to do */
	dv_strbuf_reset(&b);
	assert_int_equal(dv_tar_directory(dir, 2048, true, &b, &err), -1);
	assert_non_null(strstr(err, ".dockerignore"));
	free(err);
	dv_strbuf_dispose(&b);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_registry_roundtrip(void **state)
{
	char dir[] = "/tmp/davit-reg-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *err = NULL, *user = NULL, *pass = NULL;
	assert_int_equal(dv_registry_load(dir, "127.0.0.1:5000", &user, &pass, &err), 0);
	assert_int_equal(dv_registry_save(dir, "127.0.0.1:5000", "alice", "pa ss\nword", &err), 0);
	assert_int_equal(dv_registry_load(dir, "127.0.0.1:5000", &user, &pass, &err), 1);
	assert_string_equal(user, "alice");
	assert_string_equal(pass, "pa ss\nword");
	free(user);
	free(pass);
	/* at rest: no plaintext; the key is private */
	char path[256];
	snprintf(path, sizeof path, "%s/registries/127.0.0.1:5000", dir);
	char buf[512];
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	assert_true(n > 0);
	assert_null(memmem(buf, (size_t)n, "alice", 5));
	assert_null(memmem(buf, (size_t)n, "word", 4));
	struct stat st;
	snprintf(path, sizeof path, "%s/registry.key", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* tampering is detected */
	snprintf(path, sizeof path, "%s/registries/127.0.0.1:5000", dir);
	buf[n - 1] ^= 1;
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, buf, (size_t)n), n);
	close(fd);
	assert_int_equal(dv_registry_load(dir, "127.0.0.1:5000", &user, &pass, &err), -1);
	assert_non_null(strstr(err, "log in"));
	free(err);
	err = NULL;
	assert_int_equal(dv_registry_forget(dir, "127.0.0.1:5000", &err), 1);
	assert_int_equal(dv_registry_forget(dir, "127.0.0.1:5000", &err), 0);
	/* host names */
	assert_true(dv_registry_host_valid("registry.example.com"));
	assert_true(dv_registry_host_valid("127.0.0.1:5000"));
	assert_false(dv_registry_host_valid("../etc"));
	assert_false(dv_registry_host_valid("a/b"));
	assert_false(dv_registry_host_valid("host:"));
	assert_false(dv_registry_host_valid("host:5x"));
	assert_int_equal(dv_registry_save(dir, "../x", "u", "p", &err), -1);
	free(err);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_negotiate),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_auth_header),
		cmocka_unit_test(test_create_json),
		cmocka_unit_test(test_demux_byte_by_byte),
		cmocka_unit_test(test_json_lines),
		cmocka_unit_test(test_tar_header),
		cmocka_unit_test(test_tar_directory),
		cmocka_unit_test(test_registry_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
