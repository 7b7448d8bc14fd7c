#!/usr/bin/python3
"""kpl-put end to end against kinesalite: lines in, records in the stream (read back and
de-aggregated), partition key modes, the summary, and the exit codes (0 all put, 1 some
failed with the first errors shown, 2 usage/configuration/credentials)."""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from kptest import log  # noqa: E402

KPL_PUT = os.path.join(kptest.BIN, "kpl-put")
TMP = tempfile.mkdtemp(prefix="kp-kpl-put-")
# No credentials from the developer's machine leak into the test.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
ENV["HOME"] = TMP


def run(args, stdin=b"", env=None, timeout=300):
    p = subprocess.run([KPL_PUT] + args, input=stdin, capture_output=True, timeout=timeout,
                       env=env or ENV)
    return p.returncode, p.stderr.decode()


def user_records(client, stream):
    rows = kptest.read_stream(client, stream)
    return kptest.deaggregate([r for _, r in rows])


def main():
    with kptest.Emulator("kinesalite") as emu:
        client = kptest.kinesis_client(emu.url)
        common = ["--endpoint", emu.url, "--region", "us-east-1", "--set", "MetricsLevel=none",
                  "--set", "LogLevel=warning", "--quiet"]

        # Files, json:FIELD keys, dummy credentials.
        kptest.create_stream(client, "put-json", 2)
        n = 5000
        path = os.path.join(TMP, "in.jsonl")
        with open(path, "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": "user-%d" % (i % 50), "n": i}) + "\n")
        rc, err = run(["--stream", "put-json", "--key", "json:id", "--dummy-credentials", path]
                      + common)
        assert rc == 0, "rc %d\n%s" % (rc, err)
        assert "%d records put" % n in err and " 0 failed" in err, err
        recs = user_records(client, "put-json")
        got = sorted(json.loads(kptest.base64.b64decode(u["data"]))["n"] for u in recs)
        assert got == list(range(n)), "stream holds %d records, expected 0..%d" % (len(got), n - 1)
        for u in recs:
            doc = json.loads(kptest.base64.b64decode(u["data"]))
            assert u["partitionKey"] == doc["id"], (u["partitionKey"], doc)
        log("PASS files + json:id (%d records read back)" % n)

        # stdin, line-hash keys, credentials from the environment, CRLF and empty lines.
        kptest.create_stream(client, "put-stdin", 1)
        env = dict(ENV, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
        lines = [b"same", b"other", b"same", b"", b"last"]
        rc, err = run(["--stream", "put-stdin", "--key", "line-hash"] + common,
                      stdin=b"\r\n".join(lines), env=env)
        assert rc == 0, "rc %d\n%s" % (rc, err)
        assert "4 records put" in err, err
        recs = user_records(client, "put-stdin")
        keys = {}
        for u in recs:
            keys.setdefault(kptest.base64.b64decode(u["data"]), set()).add(u["partitionKey"])
        assert set(keys) == {b"same", b"other", b"last"}, keys
        assert len(keys[b"same"]) == 1 and keys[b"same"] != keys[b"other"], keys
        log("PASS stdin + line-hash + env credentials")

        # Failures: exit 1 and the first errors, with line numbers.
        rc, err = run(["--stream", "no-such-stream", "--dummy-credentials", "--set",
                       "RecordTtl=500"] + common, stdin=b"a\nb\nc\n")
        assert rc == 1, "rc %d\n%s" % (rc, err)
        assert "3 failed" in err and "line 1: RESOURCE_NOT_FOUND" in err, err
        rc, err = run(["--stream", "put-json", "--key", "json:missing", "--dummy-credentials"]
                      + common, stdin=b'{"id": 1}\nnot json\n')
        assert rc == 1, "rc %d\n%s" % (rc, err)
        assert "line 1: no partition key field missing" in err and "line 2: not JSON" in err, err
        big = b"x" * (1024 * 1024 + 1) + b"\nsmall\n"
        rc, err = run(["--stream", "put-json", "--dummy-credentials"] + common, stdin=big)
        assert rc == 1 and "line 1: _MSG_SIZE_TOO_LARGE" in err and "1 records put" in err, err
        log("PASS failures exit 1 with the first errors")

        # Usage, configuration and credential errors: exit 2 before anything is put.
        cases = [
            (["--dummy-credentials"], "--stream is required"),
            (["--stream", "s", "--dummy-credentials", "--set", "Bogus=1"], "Bogus"),
            (["--stream", "s", "--dummy-credentials", "--set", "NoEquals"], "KEY=VALUE"),
            (["--stream", "s", "--dummy-credentials", "--key", "nope"], "--key nope"),
            (["--stream", "s", "--dummy-credentials", "--config", "/nonexistent.properties"],
             "/nonexistent.properties"),
            (["--stream", "s"], "no AWS credentials"),
        ]
        for args, text in cases:
            rc, err = run(args + common)
            assert rc == 2 and text in err, "%s: rc %d, %r not in\n%s" % (args, rc, text, err)
        props = os.path.join(TMP, "kpl.properties")
        with open(props, "w") as f:
            f.write("AggregationMaxSize = 10\n")
        rc, err = run(["--stream", "s", "--dummy-credentials", "--config", props] + common)
        assert rc == 2 and "kpl.properties:1: AggregationMaxSize" in err, err
        log("PASS exit 2 on usage/configuration/credentials errors")
    log("test_client_kpl_put: passed")


if __name__ == "__main__":
    main()
