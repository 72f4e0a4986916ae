/* The CLI's side of the control API: one HTTP/1.1 request over the daemon's
 * unix socket, the response body streamed to a callback. */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/strbuf.h"
#include "http/http1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int dv_cli_connect(const char *state_dir)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int n = snprintf(sun.sun_path, sizeof sun.sun_path, "%s/run/davit.sock", state_dir);
	if (n < 0 || (size_t)n >= sizeof sun.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void deliver(struct dv_cli_response *resp, const char *data, size_t len)
{
	if (!len)
		return;
	if (resp->on_data)
		resp->on_data(data, len, resp->arg);
	else
		dv_strbuf_append(&resp->body, data, len);
}

int dv_cli_request(const char *state_dir, const char *method, const char *target, const char *body,
                   struct dv_cli_response *resp, char **err)
{
	int rc = -1;
	int fd = dv_cli_connect(state_dir);
	struct dv_strbuf in;
	dv_strbuf_init(&in);
	if (fd == -1) {
		*err = dv_xasprintf("cannot reach the davit daemon at %s/run/davit.sock: %s (start it with 'davit up' "
		                    "or 'davit daemon', or give --state-dir)",
		                    state_dir, strerror(errno));
		goto out;
	}
	struct dv_strbuf req;
	dv_strbuf_init(&req);
	size_t blen = body ? strlen(body) : 0;
	dv_strbuf_printf(&req, "%s %s HTTP/1.1\r\nHost: davit\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
	                 method, target, blen);
	if (blen)
		dv_strbuf_append(&req, body, blen);
	int w = write_all(fd, req.data, req.len);
	dv_strbuf_dispose(&req);
	if (w != 0) {
		*err = dv_xasprintf("sending to the daemon failed: %s", strerror(errno));
		goto out;
	}
	struct dv_http1_field fields[64];
	struct dv_http1_response r;
	int head_len = DV_HTTP1_INCOMPLETE;
	struct dv_http1_chunked chunked;
	dv_http1_chunked_init(&chunked);
	size_t body_off = 0; /* start of unconsumed body bytes in `in` */
	uint64_t left = 0;
	bool done = false;
	char buf[65536];
	while (!done) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n == -1 && errno == EINTR)
			continue;
		if (n < 0) {
			*err = dv_xasprintf("reading from the daemon failed: %s", strerror(errno));
			goto out;
		}
		if (n == 0) {
			if (head_len < 0) {
				*err = dv_xasprintf("the daemon closed the connection without answering (see its log)");
				goto out;
			}
			if (r.head.framing == DV_HTTP1_BODY_UNTIL_CLOSE)
				break;
			*err = dv_xasprintf("the daemon closed the connection mid-answer (see its log)");
			goto out;
		}
		dv_strbuf_append(&in, buf, (size_t)n);
		if (head_len < 0) {
			memset(&r, 0, sizeof r);
			r.head.fields = fields;
			r.head.fields_cap = 64;
			head_len = dv_http1_parse_response(in.data, in.len, NULL, method, strlen(method), &r);
			if (head_len == DV_HTTP1_ERROR) {
				*err = dv_xasprintf("bad answer from the daemon: %s", r.head.error);
				goto out;
			}
			if (head_len < 0)
				continue;
			resp->status = r.status;
			body_off = (size_t)head_len;
			left = r.head.content_length;
			if (r.head.framing == DV_HTTP1_BODY_NONE ||
			    (r.head.framing == DV_HTTP1_BODY_LENGTH && left == 0))
				done = true;
		}
		while (!done && body_off < in.len) {
			size_t avail = in.len - body_off;
			if (r.head.framing == DV_HTTP1_BODY_LENGTH) {
				size_t take = avail < left ? avail : (size_t)left;
				deliver(resp, in.data + body_off, take);
				body_off += take;
				left -= take;
				done = left == 0;
			} else if (r.head.framing == DV_HTTP1_BODY_CHUNKED) {
				struct dv_http1_span spans[16];
				size_t nspans = 0, consumed = 0;
				enum dv_http1_chunked_result cr = dv_http1_chunked_scan(
					&chunked, in.data + body_off, avail, &consumed, spans, 16, &nspans);
				for (size_t i = 0; i < nspans; i++)
					deliver(resp, spans[i].data, spans[i].len);
				body_off += consumed;
				if (cr == DV_HTTP1_CHUNKED_ERROR) {
					*err = dv_xasprintf("bad chunked answer from the daemon");
					goto out;
				}
				done = cr == DV_HTTP1_CHUNKED_DONE;
				if (consumed == 0 && cr == DV_HTTP1_CHUNKED_MORE)
					break;
			} else {
				deliver(resp, in.data + body_off, avail);
				body_off += avail;
			}
		}
		/* Keep memory flat while streaming: drop what was consumed. */
		if (head_len >= 0 && body_off == in.len) {
			dv_strbuf_reset(&in);
			body_off = 0;
		}
	}
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	dv_strbuf_dispose(&in);
	return rc;
}
