#!/usr/bin/python3
"""Credential rotation mid-stream: the endpoint (fault proxy in front of kinesalite)
starts accepting only a new key id and answers everything else with
ExpiredTokenException; the records failing meanwhile are retried, and once the new
credentials arrive over the pipe (SetCredentials) they succeed. Nothing is dropped;
the attempts show the expired-token tries before the success."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log, pb  # noqa: E402
from test_faults import Proxy  # noqa: E402

OLD, NEW = "AKIDROTATEOLD1", "AKIDROTATENEW2"


def set_credentials(d, akid, secret):
    for metrics in (False, True):
        d.send_raw(kptest.frame(pb.Message(id=2**63 - 1, set_credentials=pb.SetCredentials(
            for_metrics=metrics, credentials=pb.Credentials(akid=akid, secret_key=secret)))))


def main():
    with kptest.Emulator("kinesalite") as emu:
        client = kptest.kinesis_client(emu.url)
        kptest.create_stream(client, "rotate", 2)
        proxy = Proxy(emu.url, seed=9)
        try:
            proxy.configure({"require_akid": OLD})
            d = kptest.Daemon(kptest.config(proxy.url, record_max_buffered_time=50,
                                            record_ttl=60000), akid=OLD, level="info")
            first = d.put_many(("rotate", "a%d" % i, b"before-%d" % i, None) for i in range(1000))
            assert not d.wait_results(first, timeout=60), "records before the rotation"
            assert all(d.results[i][0].success for i in first), "failures before the rotation"

            proxy.configure({"require_akid": NEW})  # the server side rotated
            during = d.put_many(("rotate", "b%d" % i, b"during-%d" % i, None) for i in range(1000))
            # Wait (bounded) until the proxy has refused some of them with the old key.
            deadline = time.time() + 30
            while time.time() < deadline:
                if proxy.stats().get("events", {}).get("expired_token"):
                    break
                time.sleep(0.05)
            expired = proxy.stats().get("events", {}).get("expired_token")
            assert expired, "the proxy never saw the old key after the rotation: %s" % proxy.stats()
            set_credentials(d, NEW, "new-secret")
            after = d.put_many(("rotate", "c%d" % i, b"after-%d" % i, None) for i in range(1000))
            ids = first + during + after
            missing = d.wait_results(ids, timeout=120)
            assert not missing, "%d records without a result" % len(missing)
            rc = d.close()
            assert rc == 0, "daemon exit %d" % rc
            bad = [d.results[i] for i in ids if len(d.results[i]) != 1 or not d.results[i][0].success]
            assert not bad, "%d records failed or answered twice: %s" % (len(bad), bad[:1])
            retried = [d.results[i][0] for i in during
                       if any(a.error_code == "ExpiredTokenException" for a in d.results[i][0].attempts)]
            assert retried, "no record shows an ExpiredTokenException attempt"
            assert all(r.attempts[-1].success for r in retried), "retried records did not end in success"
            assert "key id ****NEW2" in d.log_text(), "daemon did not log the new credentials"
            stored = kptest.deaggregate([r for _, r in kptest.read_stream(client, "rotate")])
            got = {kptest.base64.b64decode(u["data"]) for u in stored}
            want = {b"before-%d" % i for i in range(1000)} | {b"during-%d" % i for i in range(1000)} | \
                {b"after-%d" % i for i in range(1000)}
            assert want <= got, "%d records lost" % len(want - got)
            log("rotation: %d requests refused with the old key, all 3000 records delivered, "
                "%d show the expired-token attempt" % (
                    proxy.stats()["events"]["expired_token"], len(retried)))
        finally:
            proxy.stop()
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
