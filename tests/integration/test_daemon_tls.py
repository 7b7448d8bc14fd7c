#!/usr/bin/python3
"""The daemon over HTTPS against kinesis-local, with a CA made at test time:
CA_FILE trusts it, no CA fails with a certificate error in every result, and
VerifyCertificate=false works without one."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log  # noqa: E402

PASSED = 0


def check(cond, what):
    global PASSED
    if not cond:
        raise AssertionError(what)
    PASSED += 1


def put_and_check(emu, ca, stream, n, env, **cfg):
    d = kptest.Daemon(kptest.config(emu.tls_url, record_max_buffered_time=100, **cfg), env=env)
    ids = d.put_many((stream, "k%d" % i, b"tls-%d" % i, None) for i in range(n))
    missing = d.wait_results(ids, timeout=120)
    check(not missing, "no result for %d records" % len(missing))
    rc = d.close()
    check(rc == 0, "daemon exit %d" % rc)
    return d, ids


def main():
    tmp = tempfile.mkdtemp(prefix="kp-tls-")
    ca, crt, key = kptest.make_test_ca(tmp)
    env_no_ca = {k: v for k, v in os.environ.items() if k not in ("CA_FILE", "CA_DIR")}
    with kptest.Emulator("kinesis-local", ["--tls-cert", crt, "--tls-key", key]) as emu:
        check(emu.tls_url and emu.tls_url.startswith("https://127.0.0.1:"), "no TLS URL")
        client = kptest.kinesis_client(emu.tls_url, verify=ca)
        kptest.create_stream(client, "tls", 2)

        log("CA_FILE trusts the test CA")
        d, ids = put_and_check(emu, ca, "tls", 2000, dict(env_no_ca, CA_FILE=ca),
                               request_timeout=60000)
        failed = [d.results[i][0] for i in ids if not d.results[i][0].success]
        check(not failed, "%d failed over TLS, first: %s" % (len(failed), failed[:1]))
        got = kptest.deaggregate([r for _, r in kptest.read_stream(client, "tls")])
        check(len({u["data"] for u in got}) == 2000, "read back %d of 2000" % len(got))

        log("no CA: every record fails with a certificate error")
        d, ids = put_and_check(emu, ca, "tls", 20, env_no_ca, record_ttl=1500)
        for i in ids:
            r = d.results[i][0]
            msgs = " ".join(a.error_message for a in r.attempts)
            check(not r.success and "certificate" in msgs.lower(),
                  "untrusted server accepted or error unclear: %s" % r)

        log("VerifyCertificate=false")
        d, ids = put_and_check(emu, ca, "tls", 200, env_no_ca, verify_certificate=False,
                               request_timeout=60000)
        check(all(d.results[i][0].success for i in ids), "VerifyCertificate=false failed")
    print("%d passed, 0 failed" % PASSED)


if __name__ == "__main__":
    main()
