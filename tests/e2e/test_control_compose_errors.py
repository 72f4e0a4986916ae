"""End-to-end: malformed compose files given to `davit deploy` against a
running daemon that serves the Penpal stack. Each one must fail (non-zero
exit) with a message of the form FILE:LINE:COLUMN: WHAT, pointing at the
offending line, and change nothing (same releases, same replicas).

In each case, the line(s) marked `#!` are where the error is; the reported
line must be one of them (for YAML syntax errors, or the line after, where a
parser notices the problem)."""

import os
import re

import pytest

pytest.register_assert_rewrite("davitctl")  # before the import: its asserts report values too
from davitctl import Daemon, copy_penpal

pytest_plugins = ["davitctl"]

CASES = {
    "bad-yaml-unclosed-flow": ("""\
name: penpal
services:
  db:
    environment: {SERVICE: db   #!
    x-davit: {run: node service.js, port: 3001}
""", ["yaml"], 1),
    "bad-yaml-tab-indent": ("""\
name: penpal
services:
  db:
\tx-davit: {run: node service.js, port: 3001}   #!
""", ["tab"], 1),
    "unknown-restart-policy": ("""\
name: penpal
services:
  db:
    restart: sometimes   #!
    x-davit: {run: node service.js, port: 3001}
""", ["restart", "sometimes"], 0),
    "port-out-of-range": ("""\
name: penpal
services:
  db:
    x-davit:
      run: node service.js
      port: 70000   #!
""", ["port", "70000"], 0),
    "port-not-a-number": ("""\
name: penpal
services:
  db:
    x-davit: {run: node service.js, port: http}   #!
""", ["port", "http"], 0),
    "depends-on-unknown-service": ("""\
name: penpal
services:
  db:
    x-davit: {run: node service.js, port: 3001}
  auth:
    depends_on: [database]   #!
    x-davit: {run: node service.js, port: 3002}
""", ["depends_on", "database"], 0),
    "depends-on-cycle": ("""\
name: penpal
services:
  alpha:
    depends_on: [beta]   #!
    x-davit: {run: node service.js, port: 3001}
  beta:
    depends_on: {gamma: {condition: service_healthy}}   #!
    x-davit: {run: node service.js, port: 3002}
  gamma:
    depends_on: [alpha]   #!
    x-davit: {run: node service.js, port: 3003}
""", ["cycle", "alpha", "beta", "gamma"], 0),
    "nothing-to-run": ("""\
name: penpal
services:
  db:   #!
    environment: {SERVICE: db}
    x-davit: {port: 3001}   #!
""", ["db", "run"], 0),
    "replicas-zero": ("""\
name: penpal
services:
  db:
    deploy: {replicas: 0}   #!
    x-davit: {run: node service.js, port: 3001}
""", ["replicas", "0"], 0),
    "bad-duration": ("""\
name: penpal
services:
  db:
    x-davit:
      run: node service.js
      port: 3001
      health: {path: /api/v1/health, interval: 5 parsecs}   #!
""", ["interval", "5 parsecs"], 0),
    "env-file-missing": ("""\
name: penpal
services:
  db:
    env_file: does-not-exist.env   #!
    x-davit: {run: node service.js, port: 3001}
""", ["does-not-exist.env"], 0),
    "duplicate-key": ("""\
name: penpal
services:
  db:
    environment: {SERVICE: db}   #!
    x-davit: {run: node service.js, port: 3001}
    environment: {SERVICE: other}   #!
""", ["duplicate", "environment"], 0),
    "required-variable-unset": ("""\
name: penpal
services:
  db:
    environment: {SERVICE: db, TOKEN: "${DAVIT_E2E_UNSET_TOKEN:?set the db token first}"}   #!
    x-davit: {run: node service.js, port: 3001}
""", ["DAVIT_E2E_UNSET_TOKEN", "set the db token first"], 0),
    "container-service-image-and-run": ("""\
name: penpal
services:
  db:
    image: postgres:16
    x-davit: {run: node service.js, port: 3002}   #!
""", ["db", "image"], 0),
    "container-service-build-context-missing": ("""\
name: penpal
services:
  web:   #!
    build: ./no-such-web-dir   #!
""", ["web", "no-such-web-dir"], 0),
    "empty-file": ("", ["empty"], None),
    "health-retries-negative": ("""\
name: penpal
services:
  db:
    x-davit:
      run: node service.js
      port: 3001
      health: {path: /api/v1/health, retries: -2}   #!
""", ["retries", "-2"], 0),
}


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    """One daemon for the module, serving the Penpal stack (release 1)."""
    tmp = tmp_path_factory.mktemp("compose-errors")
    app = copy_penpal(tmp / "penpal")
    d = Daemon(tmp).start()
    print(d.where(tail=0))
    d.deploy(os.path.join(app, "compose.yml"))
    d.wait_all_healthy(timeout=10)
    d.app_dir = app
    d.tmp = tmp
    yield d
    problems = d.cleanup(app)
    assert not problems, "\n".join(problems) + "\n" + d.where()


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_compose_is_rejected(serving, case, request):
    d = serving
    request.node._davit_daemons = [d]
    text, words, slack = CASES[case]
    path = os.path.join(d.app_dir, f"bad-{case}.yml")  # beside service.js: the same project directory
    with open(path, "w") as f:
        f.write(text)
    marked = [i + 1 for i, line in enumerate(text.split("\n")) if "#!" in line]
    releases_before = d.releases()
    pids_before = d.pids()

    r = d.cli("deploy", "-f", path, check=False, env={})
    msg = r.out
    assert r.returncode != 0, f"deploy of a malformed file ({case}) exited 0:\n{msg}\n{d.where()}"
    assert "Traceback" not in msg and len(msg) < 2000, msg
    m = re.search(re.escape(path) + r":(\d+):(\d+):\s*(.+)", msg)
    assert m, f"{case}: the message does not give {path}:LINE:COLUMN: WHAT:\n{msg}"
    line, col = int(m.group(1)), int(m.group(2))
    if slack is not None:
        allowed = set(marked) | {n + k for n in marked for k in range(slack + 1)}
        assert line in allowed, f"{case}: error reported at line {line}, expected one of {sorted(set(marked))}:\n" \
                                f"{msg}\nfile:\n{text}"
        assert 1 <= col <= max(len(l) + 1 for l in text.split("\n")), f"{case}: column {col}:\n{msg}"
    else:
        assert line == 1, f"{case}: line {line}:\n{msg}"
    low = msg.lower()
    for w in words:
        assert w.lower() in low, f"{case}: the message does not mention {w!r}:\n{msg}"

    # Nothing changed: no new release, the same replicas serve.
    assert d.releases() == releases_before, f"{case}: the releases changed:\n{releases_before}\n{d.releases()}"
    assert d.pids() == pids_before, f"{case}: replicas changed"


def test_enough_cases():
    assert len(CASES) >= 12
