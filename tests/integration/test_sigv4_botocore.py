#!/usr/bin/python3
"""Compares our SigV4 headers (build/bin/kp-sigv4-sign) with Debian's python3-botocore
SigV4Auth for the same requests, times and keys: the emulators do not verify
signatures, so botocore is the independent oracle."""
import base64
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

BIN = os.path.join(os.environ.get("KP_BIN_DIR", "build/bin"), "kp-sigv4-sign")
KINESIS_CT = "application/x-amz-json-1.1"


def botocore_sign(method, url, headers, body, region, service, creds, when):
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    fixed = datetime.datetime.utcfromtimestamp(when)
    # add_auth reads the clock; pin it so both signers use the same instant.
    with mock.patch("botocore.auth.datetime") as dt:
        dt.datetime.utcnow.return_value = fixed
        SigV4Auth(creds, service, region).add_auth(req)
    out = {k: req.headers[k] for k in ("Authorization", "X-Amz-Date")}
    if "X-Amz-Security-Token" in req.headers:
        out["X-Amz-Security-Token"] = req.headers["X-Amz-Security-Token"]
    if "X-Amz-Content-SHA256" in req.headers:
        out["X-Amz-Content-SHA256"] = req.headers["X-Amz-Content-SHA256"]
    return out


def our_sign(method, host, path, query, headers, body, region, service, creds, when,
             content_sha=False):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=creds.access_key,
               AWS_SECRET_ACCESS_KEY=creds.secret_key)
    env.pop("AWS_SESSION_TOKEN", None)
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        args = [BIN, "--method", method, "--host", host, "--path", path, "--region", region,
                "--service", service, "--time", str(when), "--body-file", f.name]
        if query:
            args += ["--query", query]
        for k, v in headers:
            args += ["--header", f"{k}: {v}"]
        if content_sha:
            args.append("--sign-content-sha256")
        p = subprocess.run(args, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"kp-sigv4-sign failed ({p.returncode}): {p.stderr}")
    if creds.secret_key in p.stdout + p.stderr:
        raise AssertionError("secret key leaked into the tool's output")
    out = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(": ")
        out[k] = v
    return out


def put_records_body(rng, n, size):
    recs = [{"Data": base64.b64encode(rng.randbytes(size)).decode(),
             "PartitionKey": f"pk-{i}-\"\\\u00e9"} for i in range(n)]
    return json.dumps({"StreamName": "test-stream", "Records": recs}).encode()


def main():
    if not os.access(BIN, os.X_OK):
        print(f"FAIL: {BIN} not built (cmake --build ... --target kp-sigv4-sign)")
        return 1
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    print(f"seed {seed}")
    plain = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    session = Credentials("ASIAEXAMPLE", "s3cr3t/with+chars=", "FQoGZXIvYXdzE" + "A" * 600)
    put = lambda: [("Content-Type", KINESIS_CT),
                   ("X-Amz-Target", "Kinesis_20131202.PutRecords")]
    now = 1700000000 + rng.randrange(10**7)
    cases = [
        # (name, method, scheme, host, path, query, headers, body, region, service, creds,
        #  time, content_sha)
        ("put small", "POST", "https", "kinesis.us-east-1.amazonaws.com", "/", "", put(),
         put_records_body(rng, 3, 10), "us-east-1", "kinesis", plain, now, False),
        ("put token", "POST", "https", "kinesis.us-east-1.amazonaws.com", "/", "", put(),
         put_records_body(rng, 3, 10), "us-east-1", "kinesis", session, now, False),
        ("put 500 records eu", "POST", "https", "kinesis.eu-west-1.amazonaws.com", "/", "",
         put(), put_records_body(rng, 500, 1000), "eu-west-1", "kinesis", session, now + 1,
         False),
        ("put 1 MiB ap", "POST", "https", "kinesis.ap-southeast-2.amazonaws.com", "/", "",
         put(), put_records_body(rng, 1, 1 << 20), "ap-southeast-2", "kinesis", plain, now,
         False),
        ("host with port", "POST", "http", "127.0.0.1:4567", "/", "", put(),
         put_records_body(rng, 2, 0), "us-west-2", "kinesis", plain, now, False),
        ("empty body", "POST", "http", "localhost:4568", "/", "",
         [("Content-Type", KINESIS_CT), ("X-Amz-Target", "Kinesis_20131202.ListShards")],
         b"", "us-east-1", "kinesis", session, now, False),
        ("cloudwatch form", "POST", "https", "monitoring.us-east-1.amazonaws.com", "/", "",
         [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
         b"Action=PutMetricData&Version=2010-08-01&Namespace=KPL", "us-east-1",
         "monitoring", plain, now, False),
        ("midnight rollover", "POST", "https", "kinesis.us-east-1.amazonaws.com", "/", "",
         put(), b"{}", "us-east-1", "kinesis", plain, 1704067199, False),
        ("after midnight", "POST", "https", "kinesis.us-east-1.amazonaws.com", "/", "",
         put(), b"{}", "us-east-1", "kinesis", plain, 1704067200, False),
        ("query and path", "GET", "https", "example.amazonaws.com", "/a%20b/c~d.e", "z=1&b=2&b=1&a",
         [("X-Custom", "  spaced   value  ")], b"", "us-east-1", "service", plain, now,
         False),
        ("content sha", "POST", "https", "kinesis.us-east-1.amazonaws.com", "/", "", put(),
         put_records_body(rng, 5, 100), "us-east-1", "kinesis", session, now, True),
    ]
    failures = 0
    for (name, method, scheme, host, path, query, headers, body, region, service, creds,
         when, content_sha) in cases:
        url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
        bheaders = list(headers)
        if content_sha:
            import hashlib
            bheaders.append(("X-Amz-Content-SHA256", hashlib.sha256(body).hexdigest()))
        want = botocore_sign(method, url, bheaders, body, region, service, creds, when)
        got = our_sign(method, host, path, query, headers, body, region, service, creds, when,
                       content_sha)
        if got != want:
            failures += 1
            print(f"FAIL {name}:\n  ours     {got}\n  botocore {want}")
        else:
            print(f"ok   {name}")
    # A wrong secret must give a different signature (the comparison can fail).
    wrong = Credentials(plain.access_key, plain.secret_key + "x")
    a = our_sign("POST", "h", "/", "", put(), b"{}", "us-east-1", "kinesis", wrong, now)
    b = botocore_sign("POST", "https://h/", put(), b"{}", "us-east-1", "kinesis", plain, now)
    if a["Authorization"] == b["Authorization"]:
        failures += 1
        print("FAIL wrong secret gave the same signature")
    print(f"{len(cases) + 1 - failures}/{len(cases) + 1} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
