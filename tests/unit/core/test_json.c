/* Unit tests for core/strbuf (buffer + JSON writer) and core/jsonparse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/jsonparse.h"
#include "core/strbuf.h"

#include <stdlib.h>
#include <string.h>

static void test_strbuf_grows_and_formats(void **state)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	for (int i = 0; i < 1000; i++)
		dv_strbuf_printf(&b, "%d,", i);
	assert_int_equal(strlen(b.data), b.len);
	assert_true(strncmp(b.data, "0,1,2,", 6) == 0);
	/* longer than the stack buffer of one printf */
	char big[1000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	dv_strbuf_reset(&b);
	dv_strbuf_printf(&b, "[%s]", big);
	assert_int_equal(b.len, 1001);
	assert_int_equal(b.data[1000], ']');
	char *s = dv_strbuf_steal(&b);
	assert_null(b.data);
	free(s);
	dv_strbuf_dispose(&b);
}

static void test_json_writer(void **state)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	struct dv_json j;
	dv_json_init(&j, &b);
	dv_json_object_begin(&j);
	dv_json_key(&j, "s");
	dv_json_string(&j, "a\"b\\c\n\x01\xc3\xa9\xff");
	dv_json_key(&j, "n");
	dv_json_int(&j, -5);
	dv_json_key(&j, "arr");
	dv_json_array_begin(&j);
	dv_json_uint(&j, 1);
	dv_json_bool(&j, true);
	dv_json_null(&j);
	dv_json_object_begin(&j);
	dv_json_object_end(&j);
	dv_json_array_end(&j);
	dv_json_key(&j, "null");
	dv_json_string(&j, NULL);
	dv_json_object_end(&j);
	assert_string_equal(b.data, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\xef\xbf\xbd\",\"n\":-5,"
	                            "\"arr\":[1,true,null,{}],\"null\":null}");
	/* what the writer wrote, the reader reads back */
	char *err = NULL;
	struct dv_jv *v = dv_jv_parse(b.data, b.len, &err);
	assert_non_null(v);
	assert_string_equal(dv_jv_str(v, "s", NULL), "a\"b\\c\n\x01\xc3\xa9\xef\xbf\xbd");
	assert_int_equal(dv_jv_int(v, "n", 0), -5);
	const struct dv_jv *arr = dv_jv_get(v, "arr");
	assert_int_equal(arr->type, DV_JV_ARRAY);
	assert_int_equal(arr->len, 4);
	assert_true(arr->items[1].boolean);
	assert_int_equal(dv_jv_get(v, "null")->type, DV_JV_NULL);
	dv_jv_free(v);
	dv_strbuf_dispose(&b);
}

static void test_json_reader_values(void **state)
{
	const char *text = " {\"a\": [1, 2.5, -3e2, \"x\\u00e9\\ud83d\\ude00\"], \"b\": {\"c\": false}, \"d\": \"\"} ";
	char *err = NULL;
	struct dv_jv *v = dv_jv_parse(text, strlen(text), &err);
	assert_non_null(v);
	const struct dv_jv *a = dv_jv_get(v, "a");
	assert_int_equal(a->len, 4);
	assert_int_equal(a->items[0].integer, 1);
	assert_true(a->items[1].number == 2.5);
	assert_int_equal(a->items[2].integer, -300);
	assert_string_equal(a->items[3].string, "x\xc3\xa9\xf0\x9f\x98\x80");
	assert_false(dv_jv_bool(dv_jv_get(v, "b"), "c", true));
	assert_string_equal(dv_jv_str(v, "d", "fallback"), "");
	assert_string_equal(dv_jv_str(v, "missing", "fallback"), "fallback");
	assert_int_equal(dv_jv_int(v, "d", 7), 7); /* wrong type: fallback */
	assert_null(dv_jv_get(a, "x"));             /* not an object */
	dv_jv_free(v);
}

static void test_json_reader_rejects(void **state)
{
	const char *bad[] = {
		"", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "tru", "\"abc", "\"\\x\"", "\"a\nb\"",
		"{} x", "[1 2]", "{1:2}", "\"\\u12\"", "nul", "[", "]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *err = NULL;
		struct dv_jv *v = dv_jv_parse(bad[i], strlen(bad[i]), &err);
		if (v)
			fail_msg("'%s' was accepted", bad[i]);
		assert_non_null(err);
		assert_non_null(strstr(err, "offset"));
		free(err);
	}
	/* nesting is bounded */
	char deep[300];
	memset(deep, '[', 200);
	char *err = NULL;
	assert_null(dv_jv_parse(deep, 200, &err));
	assert_non_null(strstr(err, "deeply"));
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strbuf_grows_and_formats),
		cmocka_unit_test(test_json_writer),
		cmocka_unit_test(test_json_reader_values),
		cmocka_unit_test(test_json_reader_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
