/* units: compose durations ("1m30s") and sizes ("512M"). */
#include "compose/compose.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define NS_PER_MS 1000000ull

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Reads "DIGITS[.DIGITS]" at *pp: the integer part in *whole, at most 9
 * fraction digits as *frac / 10^*frac_digits (later digits are dropped).
 * Returns 0, -EINVAL when no digit is there, -ERANGE when the integer part
 * overflows. */
static int read_decimal(const char **pp, uint64_t *whole, uint64_t *frac, unsigned *frac_digits)
{
	const char *p = *pp;
	bool any = false;
	int rc = 0;

	*whole = 0;
	*frac = 0;
	*frac_digits = 0;
	while (is_digit(*p)) {
		unsigned d = (unsigned)(*p - '0');
		if (*whole > (UINT64_MAX - d) / 10)
			rc = -ERANGE;
		else
			*whole = *whole * 10 + d;
		any = true;
		p++;
	}
	if (*p == '.') {
		p++;
		while (is_digit(*p)) {
			if (*frac_digits < 9) {
				*frac = *frac * 10 + (unsigned)(*p - '0');
				(*frac_digits)++;
			}
			any = true;
			p++;
		}
	}
	if (!any)
		rc = -EINVAL;
	*pp = p;
	return rc;
}

static uint64_t pow10u(unsigned n)
{
	uint64_t v = 1;
	while (n--)
		v *= 10;
	return v;
}

/* whole * unit + frac / 10^digits * unit, in *out; -ERANGE on overflow. */
static int scale(uint64_t whole, uint64_t frac, unsigned digits, uint64_t unit, uint64_t *out)
{
	unsigned __int128 v = (unsigned __int128)whole * unit;
	int rc = 0;
	v += (unsigned __int128)frac * unit / pow10u(digits);
	if (v > UINT64_MAX)
		rc = -ERANGE;
	else
		*out = (uint64_t)v;
	return rc;
}

int dv_compose_parse_duration(const char *text, uint64_t *ms)
{
	static const struct {
		const char *name;
		uint64_t ns;
	} units[] = {
		/* longest first so "ms" is not read as "m" */
		{"ns", 1}, {"us", 1000}, {"\xc2\xb5s", 1000}, {"\xce\xbcs", 1000},
		{"ms", NS_PER_MS}, {"s", 1000 * NS_PER_MS}, {"m", 60000 * NS_PER_MS},
		{"h", 3600000 * NS_PER_MS},
	};
	const char *p = text;
	uint64_t total = 0;
	int rc = 0;

	if (!text || !*text) {
		rc = -EINVAL;
		goto out;
	}
	if (strcmp(text, "0") == 0)
		goto out;
	while (*p && rc == 0) {
		uint64_t whole, frac, part;
		unsigned digits, unit = 0;
		size_t best = 0;
		rc = read_decimal(&p, &whole, &frac, &digits);
		if (rc)
			break;
		for (unsigned i = 0; i < sizeof units / sizeof units[0]; i++) {
			size_t n = strlen(units[i].name);
			if (n > best && strncmp(p, units[i].name, n) == 0) {
				best = n;
				unit = i;
			}
		}
		if (!best) {
			rc = -EINVAL;
			break;
		}
		p += best;
		rc = scale(whole, frac, digits, units[unit].ns, &part);
		if (rc == 0 && total > UINT64_MAX - part)
			rc = -ERANGE;
		if (rc == 0)
			total += part;
	}
	if (rc == 0 && total % NS_PER_MS != 0)
		rc = -EINVAL;
out:
	if (rc == 0)
		*ms = total / NS_PER_MS;
	return rc;
}

int dv_compose_parse_size(const char *text, uint64_t *bytes)
{
	const char *p = text;
	uint64_t whole, frac, mult = 1, value = 0;
	unsigned digits;
	int rc;

	if (!text) {
		rc = -EINVAL;
		goto out;
	}
	rc = read_decimal(&p, &whole, &frac, &digits);
	if (rc)
		goto out;
	if (*p == ' ')
		p++;
	switch (*p | 0x20) {
	case 'k': mult = 1ull << 10; p++; break;
	case 'm': mult = 1ull << 20; p++; break;
	case 'g': mult = 1ull << 30; p++; break;
	case 't': mult = 1ull << 40; p++; break;
	case 'p': mult = 1ull << 50; p++; break;
	default: break;
	}
	if (mult > 1 && (*p == 'i' || *p == 'I'))
		p++;
	if (*p == 'b' || *p == 'B')
		p++;
	if (*p != '\0' || (p > text && p[-1] == ' ')) {
		rc = -EINVAL;
		goto out;
	}
	rc = scale(whole, frac, digits, mult, &value);
out:
	if (rc == 0)
		*bytes = value;
	return rc;
}
