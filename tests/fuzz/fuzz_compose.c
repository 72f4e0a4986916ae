/* libFuzzer target for the compose loader: any bytes as a compose file must
 * load or fail with a message, never crash, leak or hang; a loaded project
 * serialises to JSON that the engine's JSON reader accepts.
 * fuzz-sources and fuzz-libs tell tests/fuzz/run.sh how to build it. */
// fuzz-sources: src/compose/*.c src/core/alloc.c src/core/jsonparse.c src/core/strbuf.c
// fuzz-libs: -lyaml -lm
#include "compose/compose.h"
#include "core/jsonparse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const env[] = {"PORT_BASE=3000", "NAME=fuzz", NULL};
	struct dv_compose_options opts = {.environ = env, .env_file = ""};
	struct dv_compose_project *p = NULL;
	char *err = NULL;
	int rc = dv_compose_load_buffer("fuzz.yml", (const char *)data, size, "/tmp", &opts, &p, &err);
	if (rc == 0) {
		if (!p || err)
			abort();
		size_t len = 0;
		char *json = dv_compose_project_to_json(p, &len);
		if (!json || strlen(json) != len)
			abort();
		struct dv_jv *v = dv_jv_parse(json, len, NULL);
		if (!v)
			abort(); /* canonical JSON must be valid JSON */
		dv_jv_free(v);
		free(json);
		dv_compose_project_free(p);
	} else {
		if (p || !err || !*err)
			abort(); /* a failure always says why */
		free(err);
	}
	return 0;
}
