#!/usr/bin/python3
"""The daemon against failures: kinesalite behind tests/faults/fault_proxy.py, the
daemon pointed at the proxy, tens of thousands of user records per fault class over two
streams (4 + 3 shards), then every shard read back from kinesalite DIRECTLY and checked
record by record:

- every PutRecord has exactly one result, and (for retryable faults, RecordTtl 60 s) it
  is a success whose shard id and sequence number name a stored copy of the record;
- nothing is lost; duplicates equal exactly the user records the proxy let land before
  hiding the outcome (drop_after, slow_after past RequestTimeout, corrupt_after) and are
  0 everywhere else;
- the attempts lists carry the injected error codes, as many as the proxy injected
  (per user record; ConnectionError may be fewer: libcurl re-sends a request by itself
  when a reused connection dies, which the daemon cannot see — reported);
- non-retryable errors (ResourceNotFoundException, ValidationException for one stream)
  fail at once with one attempt carrying the code; with FailIfThrottled every throttled
  record fails after one attempt; a full outage fails every record as Expired at its TTL;
- SELF-CHECK: with the proxy silently dropping records (fake successes), the same
  checks must report exactly that many records lost — the test fails if they do not.

Usage: test_faults.py [SCENARIO ...]   (default: all; `--list` names them)
Env: KP_FAULT_RECORDS (user records per scenario, default 20000; mixed gets 2x),
     KP_FAULT_SEED, KP_BIN_DIR (daemon + kpl-deagg), KP_FAULT_STRICT_CONNERR=1 (fail
     when ConnectionErrors were hidden by libcurl re-sends instead of only reporting)."""

import base64
import fcntl
import http.client
import json
import os
import random
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kptest  # noqa: E402
from kptest import log  # noqa: E402

PROXY = os.path.join(kptest.SRC, "tests", "faults", "fault_proxy.py")
STREAMS = [("a", 4), ("b", 3)]
THROTTLE_CODES = {"ProvisionedThroughputExceededException", "KMSThrottlingException",
                  "LimitExceededException", "ThrottlingException"}


class Proxy:
    """fault_proxy.py as a child process, stopped by PID; control via its HTTP endpoint."""

    def __init__(self, upstream, seed, stats_file=None):
        args = ["/usr/bin/python3", PROXY, "--upstream", upstream, "--seed", str(seed)]
        if stats_file:
            args += ["--stats-file", stats_file]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        try:
            r, _, _ = select.select([self.proc.stdout], [], [], 15)
            line = self.proc.stdout.readline().decode() if r else ""
            if not line.startswith("PORT "):
                raise AssertionError("fault_proxy did not start: %r" % line)
        except BaseException:
            self.stop()
            raise
        self.port = int(line.split()[1])
        self.url = "http://127.0.0.1:%d" % self.port

    def _call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                      headers={"Connection": "close"})
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise AssertionError("proxy %s %s -> %d %s" % (method, path, r.status, data))
            return json.loads(data)
        finally:
            c.close()

    def configure(self, faults):
        self._call("POST", "/__proxy/reset", {})
        base = json.loads(json.dumps(FAULTS_OFF))
        base.update(faults)
        return self._call("POST", "/__proxy/config", base)

    def update(self, faults):
        return self._call("POST", "/__proxy/config", faults)

    def stats(self):
        return self._call("GET", "/__proxy/stats")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


FAULTS_OFF = {"record_fail": 0, "throttle": 0, "error5xx": 0, "latency": 0, "drop_before": 0,
              "drop_partial": 0, "drop_after": 0, "slow_after": 0, "corrupt_after": 0,
              "close_after_response": 0, "idle_close_ms": 0, "permanent": {}, "require_akid": "",
              "silent_drop": 0, "silent_dup": 0, "fault_ops": ["PutRecords"],
              "record_fail_codes": ["ProvisionedThroughputExceededException", "InternalFailure",
                                    "KMSThrottlingException"],
              "throttle_codes": ["LimitExceededException", "ThrottlingException"],
              "error5xx_codes": [[500, "InternalFailure"], [503, "ServiceUnavailable"]]}

# name, faults, daemon config overrides, records factor, mode
SCENARIOS = [
    ("record_fail", {"record_fail": 0.1},
     {"aggregation_enabled": False, "collection_max_count": 500}, 1, "retry"),
    ("record_fail_agg", {"record_fail": 0.1}, {}, 1, "retry"),
    ("throttle_400", {"throttle": 0.25}, {}, 1, "retry"),
    ("error_5xx", {"error5xx": 0.25}, {}, 1, "retry"),
    ("latency", {"latency": 0.5, "latency_ms": [5, 150]}, {}, 1, "retry"),
    ("drop_before", {"drop_before": 0.1, "drop_partial": 0.05}, {}, 1, "retry"),
    ("drop_after", {"drop_after": 0.1}, {}, 1, "retry"),
    ("timeout", {"slow_after": 0.05, "slow_after_ms": 2500}, {"request_timeout": 1500}, 1,
     "retry"),
    ("corrupt_after", {"corrupt_after": 0.08}, {}, 1, "retry"),
    ("stale_keepalive", {"close_after_response": 0.3, "idle_close_ms": 40}, {}, 1, "retry"),
    ("mixed", {"record_fail": 0.05, "throttle": 0.05, "error5xx": 0.05, "latency": 0.2,
               "latency_ms": [0, 60], "drop_before": 0.03, "drop_partial": 0.02,
               "drop_after": 0.03, "slow_after": 0.02, "slow_after_ms": 2500,
               "corrupt_after": 0.02, "close_after_response": 0.1, "idle_close_ms": 300},
     {"request_timeout": 1500}, 2, "retry"),
    # The same faults with PutRecords in CBOR: per-record failures spliced into CBOR
    # answers, CBOR error bodies, truncated CBOR.
    ("mixed_cbor", {"record_fail": 0.05, "throttle": 0.05, "error5xx": 0.05, "latency": 0.2,
                    "latency_ms": [0, 60], "drop_before": 0.03, "drop_partial": 0.02,
                    "drop_after": 0.03, "slow_after": 0.02, "slow_after_ms": 2500,
                    "corrupt_after": 0.02, "close_after_response": 0.1, "idle_close_ms": 300},
     {"request_timeout": 1500, "request_encoding": "cbor"}, 1, "retry"),
    # Again with every record's data in the shared data file (PutRecordRef, as our client
    # library sends them): aggregates then point at that data instead of copying it, and
    # every retry has to rebuild them from those pieces.
    ("mixed_cbor_shared", {"record_fail": 0.05, "throttle": 0.05, "error5xx": 0.05,
                           "latency": 0.2, "latency_ms": [0, 60], "drop_before": 0.03,
                           "drop_partial": 0.02, "drop_after": 0.03, "slow_after": 0.02,
                           "slow_after_ms": 2500, "corrupt_after": 0.02,
                           "close_after_response": 0.1, "idle_close_ms": 300},
     {"request_timeout": 1500, "request_encoding": "cbor", "shared": True}, 1, "retry"),
    ("permanent", {"permanent": {"perm-rnf": "ResourceNotFoundException",
                                 "perm-val": "ValidationException"}}, {}, 0.25, "permanent"),
    ("fail_if_throttled", {"throttle": 0.2, "record_fail": 0.1,
                           "record_fail_codes": ["ProvisionedThroughputExceededException",
                                                 "KMSThrottlingException"]},
     {"fail_if_throttled": True}, 0.5, "fail_throttled"),
    ("outage_ttl", {"error5xx": 1.0}, {"record_ttl": 1500}, 0.1, "outage"),
    # ListShards fails (throttle / 5xx / dropped) until each stream has been refused 3
    # times, then the proxy is switched to pass-through mid-run via its control endpoint.
    ("listshards_outage", {"fault_ops": ["ListShards"], "throttle": 0.4, "error5xx": 1.0,
                           "drop_before": 0.3}, {}, 0.25, "listshards"),
    ("selfcheck_silent_drop", {"silent_drop": 0.02}, {}, 0.5, "selfcheck"),
    ("selfcheck_silent_dup", {"silent_dup": "every:10"}, {}, 0.5, "selfcheck_dup"),
]


def make_records(n, streams, rng):
    recs = []
    alphabet = "abcxyz0123456789-_éü漢🙂"
    for i in range(n):
        stream = streams[i % len(streams)]
        pk = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        ehk = str(rng.randrange(2**128)) if rng.random() < 0.1 else None
        data = i.to_bytes(4, "big") + rng.randbytes(rng.randint(0, 250))
        recs.append((stream, pk, data, ehk))
    return recs


def read_back(client, names, n, raw=False):
    """stream -> {id: [(shard_id, seq, data, pk, ehk)]}, plus the Kinesis record count.
    raw: read with kptest.read_stream_raw (data put in CBOR, which botocore cannot read
    back from kinesalite)."""
    by_id, krecs = {}, 0
    for name in names:
        rows = (kptest.read_stream_raw(client, client.meta.endpoint_url, name) if raw
                else kptest.read_stream(client, name))
        krecs += len(rows)
        by_shard = {}
        for sh, rec in rows:
            by_shard.setdefault(sh["ShardId"], []).append(rec)
        ranges = {sh["ShardId"]: (int(sh["HashKeyRange"]["StartingHashKey"]),
                                  int(sh["HashKeyRange"]["EndingHashKey"]))
                  for sh in kptest.list_shards(client, name)}
        for shard_id, recs in by_shard.items():
            for u in kptest.deaggregate(recs, strict=True):
                data = base64.b64decode(u["data"])
                rid = int.from_bytes(data[:4], "big")
                by_id.setdefault(rid, []).append(
                    (name, shard_id, u["sequenceNumber"], data, u["partitionKey"],
                     u["explicitHashKey"], ranges[shard_id]))
    return by_id, krecs


def attempt_codes(results):
    codes = {}
    for rs in results:
        for r in rs:
            for a in r.attempts:
                if not a.success:
                    codes[a.error_code] = codes.get(a.error_code, 0) + 1
    return codes


def expected_codes(st):
    exp = {}
    for kind, code in st["codes"].items():
        exp[code] = exp.get(code, 0) + st["user_records"].get(kind, 0)
    return exp


def run_scenario(emu_client, proxy, name, faults, overrides, factor, mode, n_base, rng):
    problems, notes = [], []
    n = max(100, int(n_base * factor))
    names = ["%s-%s" % (name.replace("_", "-"), s) for s, _ in STREAMS]
    for (sname, shards), full in zip(STREAMS, names):
        kptest.create_stream(emu_client, full, shards)
    put_streams = list(names)
    perm = {}
    if mode == "permanent":
        perm = {"perm-rnf": "ResourceNotFoundException", "perm-val": "ValidationException"}
        for p in perm:
            kptest.create_stream(emu_client, "%s-%s" % (name, p), 2)
        faults = dict(faults, permanent={"%s-%s" % (name, p): c for p, c in perm.items()})
        perm = {"%s-%s" % (name, p): c for p, c in perm.items()}
        put_streams += list(perm)
    proxy.configure(faults)
    records = make_records(n, put_streams, rng)
    # Small aggregates and batches: many Kinesis records and requests for the faults to hit.
    cfg = dict(record_max_buffered_time=100, record_ttl=60000, aggregation_max_count=20,
               collection_max_count=10, request_timeout=6000)
    cfg.update(overrides)
    shared = cfg.pop("shared", False)
    if shared:
        fd = os.memfd_create("kp-faults", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, sum(len(r[2]) for r in records) + 64)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        d = kptest.Daemon(kptest.config(proxy.url, **cfg), level="info", shared_fd=fd)
        ack = d.wait_other("shared_data_ack", 30)
        if ack is None or not ack.shared_data_ack.mapped:
            os.close(fd)
            d.proc.kill()
            d.proc.wait(10)
            raise AssertionError("shared data file not mapped: %s" % ack)
        d.put_refs_from(fd)
    else:
        d = kptest.Daemon(kptest.config(proxy.url, **cfg), level="info")
    t0 = time.time()
    try:
        ids = d.put_many(records)
        if mode == "listshards":
            # Bounded wait on an observable condition (the proxy's request count).
            for _ in range(400):
                if proxy.stats()["requests"].get("ListShards", 0) >= 6:
                    break
                time.sleep(0.05)
            else:
                problems.append("daemon did not retry ListShards 6 times in 20 s: %s"
                                % proxy.stats()["requests"])
            if any(d.results.get(i) for i in ids):
                problems.append("results arrived while no shard map could be had")
            proxy.update({"throttle": 0, "error5xx": 0, "drop_before": 0})
        missing = d.wait_results(ids, timeout=120)
        elapsed = time.time() - t0
        st = proxy.stats()
        rc = d.close(timeout=60)
        if shared:
            os.close(fd)
    except BaseException:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        raise
    daemon_log = d.log_text()
    exit_line = [l for l in daemon_log.splitlines() if "exiting:" in l]
    warn_lines = [l for l in daemon_log.splitlines() if "[warning]" in l or "[error]" in l]
    if missing:
        problems.append("%d records got no result (first ids %s)" % (len(missing), missing[:5]))
    if rc != 0:
        problems.append("daemon exited %d" % rc)
    multi = [i for i in ids if len(d.results.get(i, [])) > 1]
    if multi:
        problems.append("%d records got more than one result (e.g. id %d)" % (len(multi), multi[0]))
    results = [d.results.get(i, []) for i in ids]
    got = attempt_codes(results)
    exp = expected_codes(st)
    retries = sum(max(0, len(rs[0].attempts) - 1) for rs in results if rs)

    by_id, krecs = read_back(emu_client, names + list(perm), n,
                             raw=overrides.get("request_encoding") == "cbor")
    lost, dups, wrong, unstored = [], 0, [], []
    expect_dups = sum(st["landed"].values())
    n_failed = 0
    fail_by_code = {}
    for i, (stream, pk, data, ehk) in enumerate(records):
        rs = d.results.get(ids[i], [])
        occ = by_id.get(i, [])
        res = rs[0] if rs else None
        if res is not None and not res.success:
            n_failed += 1
            last = res.attempts[-1].error_code if res.attempts else ""
            fail_by_code[last] = fail_by_code.get(last, 0) + 1
        if stream in perm:
            if res is None:
                continue
            if occ:
                wrong.append("record %d for %s landed" % (i, stream))
            if res.success or len(res.attempts) != 1 or res.attempts[0].error_code != perm[stream]:
                wrong.append("record %d for %s: success=%s attempts=%s" % (
                    i, stream, res.success, [(a.error_code, a.error_message) for a in res.attempts]))
            continue
        if mode in ("fail_throttled", "outage") and res is not None and not res.success:
            if occ:
                wrong.append("failed record %d is stored" % i)
            if mode == "fail_throttled" and (len(res.attempts) != 1 or
                                             res.attempts[0].error_code not in THROTTLE_CODES):
                wrong.append("record %d: throttled failure should have one throttle attempt: %s"
                             % (i, [(a.error_code, a.delay) for a in res.attempts]))
            if mode == "outage" and (res.attempts[-1].error_code != "Expired" or
                                     len(res.attempts) < 2):
                wrong.append("record %d: outage failure not Expired after retries: %s" % (
                    i, [a.error_code for a in res.attempts]))
            continue
        if not occ:
            lost.append(i)
            continue
        dups += len(occ) - 1
        hk = kptest.hash_key(pk, ehk)
        for (sname, shard_id, seq, gdata, gpk, gehk, (lo, hi)) in occ:
            # GetRecords does not return a raw record's ExplicitHashKey: None is fine then,
            # the shard's range must still own the record's hash key.
            if (sname != stream or gdata != data or gpk != pk or gehk not in (ehk, None)
                    or not lo <= hk <= hi):
                wrong.append("record %d stored differently: %s" % (i, (sname, shard_id, gpk)))
                break
        if res is not None and res.success and not any(
                o[1] == res.shard_id and o[2] == res.sequence_number for o in occ):
            unstored.append(i)
        if res is not None and not res.success:
            wrong.append("record %d failed (%s) yet is stored" % (
                i, [a.error_code for a in res.attempts]))

    if mode in ("retry", "selfcheck", "selfcheck_dup", "listshards"):
        if n_failed:
            problems.append("%d records failed: %s" % (n_failed, fail_by_code))
    if mode == "outage" and n_failed != n:
        problems.append("outage: %d of %d records failed" % (n_failed, n))
    if lost:
        problems.append("%d records LOST (ids %s...)" % (len(lost), lost[:8]))
    if unstored:
        problems.append("%d results name a shard/sequence number with no stored copy (ids %s)"
                        % (len(unstored), unstored[:5]))
    if wrong:
        problems.append("%d wrong: %s" % (len(wrong), wrong[:3]))
    if dups != expect_dups:
        problems.append("duplicates %d, expected %d (user records landed with a hidden outcome)"
                        % (dups, expect_dups))
    # Injected codes must show up in the attempts, one attempt per user record touched.
    for code, want in sorted(exp.items()):
        have = got.get(code, 0)
        if code == "ConnectionError":
            if want and not have and not st["identical_resends"]:
                problems.append("ConnectionError injected for %d user records, none reported" % want)
            if have > want:
                problems.append("ConnectionError: %d attempts, only %d injected" % (have, want))
            if have < want:
                notes.append("ConnectionError: %d attempts for %d injected user records: %d "
                             "hidden (libcurl re-sent the request itself: the proxy saw %d "
                             "dropped requests again, up to %.0f ms later)" % (
                                 have, want, want - have, st["resent_after_drop"],
                                 st["resent_after_drop_ms"]))
                if os.environ.get("KP_FAULT_STRICT_CONNERR") == "1":
                    problems.append("hidden ConnectionErrors: %d < %d" % (have, want))
        elif mode == "outage":
            if have < want:
                problems.append("code %s: %d attempts < %d injected" % (code, have, want))
        elif have != want:
            problems.append("code %s: %d attempts carry it, proxy injected it on %d user records"
                            % (code, have, want))
    extra = {c: v for c, v in got.items() if c not in exp and c != "Expired"}
    if extra:
        problems.append("attempt codes nobody injected: %s" % extra)
    if mode == "fail_throttled":
        thr = sum(v for c, v in exp.items() if c in THROTTLE_CODES)
        if n_failed != thr:
            problems.append("FailIfThrottled: %d failed, %d throttled user records" % (n_failed, thr))
    if mode == "outage":
        reqs = st["requests"].get("PutRecords", 0)
        notes.append("outage: %d PutRecords in %.1fs (%.0f/s) for %d records with TTL %d ms; "
                     "%.1f attempts per record" % (
                         reqs, st["seconds"], reqs / max(st["seconds"], 1e-3), n,
                         cfg["record_ttl"], sum(len(r[0].attempts) for r in results if r) / n))
    if st.get("upstream_resends"):
        notes.append("proxy re-sent %d upstream requests" % st["upstream_resends"])
    if warn_lines:
        notes.append("daemon warnings/errors: %d, e.g. %s" % (len(warn_lines), warn_lines[:2]))
    if mode == "selfcheck":
        silent = st["user_records"].get("silent_drop", 0)
        detected = len(lost) == silent and silent > 0
        problems_sc = problems
        problems = [] if detected else ["SELF-CHECK FAILED: proxy dropped %d user records, "
                                        "checks found %d lost / %d unstored; problems: %s" % (
                                            silent, len(lost), len(unstored), problems_sc)]
        notes.append("self-check: %d silently dropped, detected %d lost -> %s" % (
            silent, len(lost), "detected" if detected else "MISSED"))
    if mode == "selfcheck_dup":
        sdup = st["user_records"].get("silent_dup", 0)
        detected = sdup > 0 and dups == sdup + expect_dups and any(
            p.startswith("duplicates") for p in problems)
        others = [p for p in problems if not p.startswith("duplicates")]
        problems = others if detected else ["SELF-CHECK FAILED: proxy landed %d user records "
                                            "twice, checks found %d duplicates; problems: %s" % (
                                                sdup, dups, problems)]
        notes.append("self-check: %d silently duplicated, detected %d duplicates -> %s" % (
            sdup, dups, "detected" if detected else "MISSED"))
    return {"name": name, "records": n, "krecs": krecs, "stats": st, "got": got, "exp": exp,
            "retries": retries, "dups": dups, "expect_dups": expect_dups, "lost": len(lost),
            "failed": n_failed, "elapsed": elapsed, "problems": problems, "notes": notes,
            "exit": exit_line[-1].split("exiting:", 1)[1].strip() if exit_line else "?",
            "log": daemon_log}


def summarize(rows):
    log("")
    log("%-22s %7s %6s %6s %8s %6s %5s %6s %6s  %s" % (
        "scenario", "records", "reqs", "krecs", "retries", "dups", "lost", "failed", "secs",
        "injected (kind=events/user records)"))
    for r in rows:
        st = r["stats"]
        inj = ", ".join("%s=%d/%d" % (k, v, st["user_records"].get(k, 0))
                        for k, v in sorted(st["events"].items()))
        log("%-22s %7d %6d %6d %8d %6s %5d %6d %6.1f  %s%s" % (
            r["name"], r["records"], st["requests"].get("PutRecords", 0), r["krecs"],
            r["retries"], "%d/%d" % (r["dups"], r["expect_dups"]), r["lost"], r["failed"],
            r["elapsed"], inj or "-", "" if not r["problems"] else "  <-- FAIL"))
    for r in rows:
        for n in r["notes"]:
            log("  %s: %s" % (r["name"], n))
        for p in r["problems"]:
            log("  %s: PROBLEM: %s" % (r["name"], p))
        log("  %s: daemon %s" % (r["name"], r["exit"]))


def main():
    args = sys.argv[1:]
    if args == ["--list"]:
        print("\n".join(s[0] for s in SCENARIOS))
        return
    chosen = [s for s in SCENARIOS if not args or s[0] in args]
    if args and len(chosen) != len(args):
        raise SystemExit("unknown scenario in %s" % args)
    n = int(os.environ.get("KP_FAULT_RECORDS", "20000"))
    seed = int(os.environ.get("KP_FAULT_SEED", str(random.randrange(2**32))))
    log("seed %d, %d records per scenario, daemon from %s" % (seed, n, kptest.BIN))
    rng = random.Random(seed)
    rows = []
    t0 = time.time()
    with kptest.Emulator("kinesalite") as emu:
        client = kptest.kinesis_client(emu.url)
        proxy = Proxy(emu.url, seed)
        try:
            for name, faults, overrides, factor, mode in chosen:
                ts = time.time()
                r = run_scenario(client, proxy, name, faults, overrides, factor, mode, n, rng)
                rows.append(r)
                log("%-22s %s in %.1fs" % (name, "FAIL" if r["problems"] else "ok",
                                           time.time() - ts))
                if r["problems"]:
                    log("    " + "\n    ".join(r["problems"]))
                    log("    daemon log tail:\n" + r["log"][-1500:])
        finally:
            proxy.stop()
    summarize(rows)
    failed = [r["name"] for r in rows if r["problems"]]
    log("total %.1fs" % (time.time() - t0))
    print("%d passed, %d failed%s" % (len(rows) - len(failed), len(failed),
                                      (": " + " ".join(failed)) if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
