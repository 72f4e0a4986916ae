/* registry: image registry credentials (`davit registry login HOST`), stored
 * encrypted at rest.
 *
 * <state_dir>/registry.key holds a random 32-byte key (mode 0600, created
 * on first use); <state_dir>/registries/<host> holds a libsodium secretbox
 * (XSalsa20-Poly1305: a 24-byte nonce, then the box) of "user\npassword".
 * Used by the docker driver to send X-Registry-Auth on pulls. Thread-safe
 * (files only; no shared state). */
#ifndef DV_RUNTIME_REGISTRY_H
#define DV_RUNTIME_REGISTRY_H

/* Stores the credentials for `host`. Returns 0, or -1 with *err. */
int dv_registry_save(const char *state_dir, const char *host, const char *user, const char *password, char **err);

/* Looks them up: 1 with *user and *password (caller frees; wipe the
 * password), 0 if none are stored, -1 with *err (unreadable, tampered). */
int dv_registry_load(const char *state_dir, const char *host, char **user, char **password, char **err);

/* Removes them: 1 if there were some, 0 if not, -1 with *err. */
int dv_registry_forget(const char *state_dir, const char *host, char **err);

/* True if `host` is a usable registry host name ("registry.example.com",
 * "127.0.0.1:5000"): letters, digits, '.', '-', one ':' and a port. */
int dv_registry_host_valid(const char *host);

#endif
