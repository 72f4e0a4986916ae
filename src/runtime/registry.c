/* Registry credentials, encrypted at rest. See registry.h. */
#include "runtime/registry.h"

#include "core/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SECRET 8192

int dv_registry_host_valid(const char *host)
{
	if (!host || !*host || strlen(host) > 253 || host[0] == '.' || host[0] == '-' || host[0] == ':')
		return 0;
	const char *colon = strchr(host, ':');
	size_t n = colon ? (size_t)(colon - host) : strlen(host);
	for (size_t i = 0; i < n; i++) {
		char c = host[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
			return 0;
	}
	if (colon) {
		if (!colon[1])
			return 0;
		for (const char *p = colon + 1; *p; p++)
			if (*p < '0' || *p > '9')
				return 0;
	}
	return 1;
}

static int read_all(const char *path, unsigned char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	size_t got = 0;
	for (;;) {
		ssize_t n = read(fd, buf + got, cap - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == cap)
			break;
	}
	close(fd);
	*len = got;
	return 0;
}

static int write_file(const char *path, const unsigned char *data, size_t len, char **err)
{
	char *tmp = dv_xasprintf("%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int rc = -1;
	if (fd == -1) {
		*err = dv_xasprintf("cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (write(fd, data, len) != (ssize_t)len || fsync(fd) != 0) {
		*err = dv_xasprintf("cannot write %s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		*err = dv_xasprintf("cannot rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		goto out;
	}
	rc = 0;
out:
	free(tmp);
	return rc;
}

/* The key: read, or created once (0600) if missing. */
static int get_key(const char *state_dir, bool create, unsigned char key[crypto_secretbox_KEYBYTES], char **err)
{
	if (sodium_init() < 0) {
		*err = dv_xstrdup("libsodium cannot be initialised");
		return -1;
	}
	char *path = dv_xasprintf("%s/registry.key", state_dir);
	size_t len = 0;
	int rc = -1;
	if (read_all(path, key, crypto_secretbox_KEYBYTES, &len) == 0) {
		struct stat st;
		if (len != crypto_secretbox_KEYBYTES) {
			*err = dv_xasprintf("%s is not a davit key (%zu bytes): remove it and log in again", path, len);
			goto out;
		}
		if (stat(path, &st) == 0 && (st.st_mode & 077))
			chmod(path, 0600); /* someone loosened it: the key must stay private */
		rc = 0;
		goto out;
	}
	if (errno != ENOENT || !create) {
		if (errno == ENOENT) {
			rc = 1;
			goto out;
		}
		*err = dv_xasprintf("cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	crypto_secretbox_keygen(key);
	/* O_EXCL: two daemons racing keep one key */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1) {
		if (errno == EEXIST) {
			free(path);
			return get_key(state_dir, false, key, err);
		}
		*err = dv_xasprintf("cannot create %s: %s", path, strerror(errno));
		goto out;
	}
	if (write(fd, key, crypto_secretbox_KEYBYTES) != crypto_secretbox_KEYBYTES || fsync(fd) != 0) {
		*err = dv_xasprintf("cannot write %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		goto out;
	}
	close(fd);
	rc = 0;
out:
	free(path);
	return rc;
}

static char *entry_path(const char *state_dir, const char *host)
{
	return dv_xasprintf("%s/registries/%s", state_dir, host);
}

int dv_registry_save(const char *state_dir, const char *host, const char *user, const char *password, char **err)
{
	if (!dv_registry_host_valid(host)) {
		*err = dv_xasprintf("'%s' is not a registry host (like registry.example.com or 127.0.0.1:5000)", host);
		return -1;
	}
	if (strchr(user, '\n') || !*user) {
		*err = dv_xstrdup("the user name must be one non-empty line");
		return -1;
	}
	size_t plen = strlen(user) + 1 + strlen(password);
	if (plen > MAX_SECRET) {
		*err = dv_xstrdup("credentials too long");
		return -1;
	}
	unsigned char key[crypto_secretbox_KEYBYTES];
	if (get_key(state_dir, true, key, err) != 0)
		return -1;
	char *dir = dv_xasprintf("%s/registries", state_dir);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		*err = dv_xasprintf("cannot create %s: %s", dir, strerror(errno));
		free(dir);
		sodium_memzero(key, sizeof key);
		return -1;
	}
	free(dir);
	unsigned char *plain = dv_xmalloc(plen + 1);
	snprintf((char *)plain, plen + 1, "%s\n%s", user, password);
	size_t blen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plen;
	unsigned char *box = dv_xmalloc(blen);
	randombytes_buf(box, crypto_secretbox_NONCEBYTES);
	crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, plain, plen, box, key);
	sodium_memzero(plain, plen);
	sodium_memzero(key, sizeof key);
	free(plain);
	char *path = entry_path(state_dir, host);
	int rc = write_file(path, box, blen, err);
	free(path);
	free(box);
	return rc;
}

int dv_registry_load(const char *state_dir, const char *host, char **user, char **password, char **err)
{
	*user = *password = NULL;
	if (!dv_registry_host_valid(host))
		return 0;
	char *path = entry_path(state_dir, host);
	unsigned char box[crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + MAX_SECRET];
	size_t blen = 0;
	int rc = read_all(path, box, sizeof box, &blen);
	if (rc != 0) {
		rc = errno == ENOENT ? 0 : -1;
		if (rc)
			*err = dv_xasprintf("cannot read %s: %s", path, strerror(errno));
		free(path);
		return rc;
	}
	unsigned char key[crypto_secretbox_KEYBYTES];
	int k = get_key(state_dir, false, key, err);
	if (k != 0) {
		if (k == 1)
			*err = dv_xasprintf("%s exists but %s/registry.key is gone: log in to %s again", path, state_dir, host);
		free(path);
		return -1;
	}
	if (blen < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) {
		*err = dv_xasprintf("%s is damaged: log in to %s again", path, host);
		free(path);
		sodium_memzero(key, sizeof key);
		return -1;
	}
	size_t plen = blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
	unsigned char *plain = dv_xmalloc(plen + 1);
	if (crypto_secretbox_open_easy(plain, box + crypto_secretbox_NONCEBYTES, blen - crypto_secretbox_NONCEBYTES, box,
	                               key) != 0) {
		*err = dv_xasprintf("%s does not decrypt with %s/registry.key (damaged or another key): log in to %s again",
		                    path, state_dir, host);
		free(plain);
		free(path);
		sodium_memzero(key, sizeof key);
		return -1;
	}
	sodium_memzero(key, sizeof key);
	plain[plen] = '\0';
	char *nl = memchr(plain, '\n', plen);
	if (!nl) {
		*err = dv_xasprintf("%s holds no user name: log in to %s again", path, host);
		sodium_memzero(plain, plen);
		free(plain);
		free(path);
		return -1;
	}
	*user = dv_xstrndup((char *)plain, (size_t)(nl - (char *)plain));
	*password = dv_xstrdup(nl + 1);
	sodium_memzero(plain, plen);
	free(plain);
	free(path);
	return 1;
}

int dv_registry_forget(const char *state_dir, const char *host, char **err)
{
	if (!dv_registry_host_valid(host))
		return 0;
	char *path = entry_path(state_dir, host);
	int rc = 1;
	if (unlink(path) != 0) {
		rc = errno == ENOENT ? 0 : -1;
		if (rc)
			*err = dv_xasprintf("cannot remove %s: %s", path, strerror(errno));
	}
	free(path);
	return rc;
}
