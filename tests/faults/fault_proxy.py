#!/usr/bin/python3
"""A fault-injecting reverse proxy for the Kinesis API (JSON 1.1 and CBOR 1.1), on 127.0.0.1.

    fault_proxy.py --upstream http://127.0.0.1:PORT [--port 0] [--seed N]
                   [--config JSON] [--stats-file PATH] [--<fault-key> VALUE ...]

Prints `PORT n` on stdout once it listens. Everything the daemon sends to "/" is
forwarded to the upstream emulator (kinesalite), except what a fault replaces. Faults
are configured by a JSON object (keys below); every key is also a CLI flag
(`--record-fail 0.1`, list/dict values as JSON), and can be changed mid-run:

    GET  /__proxy/stats    -> {"config":..., "requests":{op:n}, "events":{kind:n},
                               "kinesis_records":{kind:n}, "user_records":{kind:n}, ...}
    POST /__proxy/config   body: JSON object merged into the configuration -> new config
    POST /__proxy/reset    zero the counters (and the "every:N" schedules) -> {}

Encodings: each request is handled in the encoding its Content-Type names,
application/x-amz-cbor-1.1 (CBOR, Data a byte string) or else application/x-amz-json-1.1
(JSON, Data base64): the answers the proxy makes (errors {"__type", "message"},
per-record failures, rebuilt PutRecords answers) and the sub-requests it sends upstream
(the forwarded part of a PutRecords, its ListShards) use that encoding; upstream answers
are passed on with the upstream's Content-Type. The control endpoints speak JSON.

A probability is a float in [0, 1] drawn per request (per Kinesis record for
record_fail / silent_drop), or the string "every:N" for a deterministic schedule (the
Nth, 2Nth, ... eligible request or record).

Request-level faults apply to the operations in `fault_ops` (default PutRecords), at
most one per request, tried in this order: permanent, drop_partial, drop_before,
throttle, error5xx; then latency; then the request is forwarded (PutRecords with the
record_fail / silent_drop records cut out); then at most one of drop_after,
slow_after, corrupt_after; then close_after_response.

| key | what the daemon should see | records landed? |
|---|---|---|
| record_fail, record_fail_codes | per-record ErrorCode in a 200 (spliced at the original positions, FailedRecordCount adjusted) | no (not forwarded) |
| throttle, throttle_codes | 400 {"__type": LimitExceededException / ThrottlingException} | no |
| error5xx, error5xx_codes | 500 InternalFailure / 503 ServiceUnavailable | no |
| latency, latency_ms [lo, hi] | a delay before forwarding | yes, once |
| drop_before | request read, connection closed, no answer: ConnectionError | no |
| drop_partial | body read, connection reset without an answer: ConnectionError | no |
| drop_after | forwarded, then closed with no answer: ConnectionError | YES (duplicates) |
| slow_after, slow_after_ms | forwarded, answer held slow_after_ms (above RequestTimeout): Timeout | YES (duplicates) |
| corrupt_after | forwarded, then a truncated 200 body: ResponseError | YES (duplicates) |
| close_after_response | connection closed after a normal answer, without Connection: close | yes, once |
| idle_close_ms | idle keep-alive connections closed after this many ms | - |
| require_akid "AKID" | 400 ExpiredTokenException unless the request is signed with that key id | no |
| permanent {stream: code} | 400 {"__type": code} for that stream (ResourceNotFoundException, ValidationException, ...) | no |
| silent_drop | SELF-CHECK: records cut out yet answered with a fake success on the right shard | NO: loss |
| silent_dup | SELF-CHECK: a PutRecords forwarded twice, answered once (per request) | twice: duplicates |

Counters: events[kind] counts injections; kinesis_records[kind] / user_records[kind]
count the Kinesis records and user records (aggregates are counted through) that the
injection touched; landed[kind] the user records among them that reached the upstream
although the daemon was not told (drop_after, slow_after, corrupt_after: each is one
duplicate once the daemon re-sends); a per-record failure whose answer was then hidden
is counted as "hidden_record:CODE" (the daemon cannot see it); kind is e.g. "record:InternalFailure", "http:503:ServiceUnavailable",
"drop_after", "permanent:ResourceNotFoundException". `codes[kind]` is the error code the
daemon should put in its attempts (absent for kinds it cannot see). `identical_resends`
counts requests whose bytes (Authorization + X-Amz-Date headers + body) were already
seen; `resent_after_drop` counts those that repeat a request this proxy dropped
(drop_before / drop_after), with `resent_after_drop_ms` the longest gap: libcurl
re-sends a request by itself when a reused connection dies without an answer, which
the daemon then cannot report in its attempts.

Stdlib plus Debian's python3-cbor2 (run it with /usr/bin/python3); stops on SIGTERM/SIGINT (writing --stats-file if given)."""

import argparse
import base64
import hashlib
import http.client
import http.server
import io
import json
import random
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse

import cbor2  # Debian python3-cbor2 (the one dependency beyond the stdlib)

MAGIC = b"\xf3\x89\x9a\xc2"

DEFAULTS = {
    "fault_ops": ["PutRecords"],
    "record_fail": 0.0,
    "record_fail_codes": ["ProvisionedThroughputExceededException", "InternalFailure",
                          "KMSThrottlingException"],
    "throttle": 0.0,
    "throttle_codes": ["LimitExceededException", "ThrottlingException"],
    "error5xx": 0.0,
    "error5xx_codes": [[500, "InternalFailure"], [503, "ServiceUnavailable"]],
    "latency": 0.0,
    "latency_ms": [0, 0],
    "drop_before": 0.0,
    "drop_partial": 0.0,
    "drop_after": 0.0,
    "slow_after": 0.0,
    "slow_after_ms": 0,
    "corrupt_after": 0.0,
    "close_after_response": 0.0,
    "idle_close_ms": 0,
    "permanent": {},
    "require_akid": "",
    "silent_drop": 0.0,
    "silent_dup": 0.0,
}

MESSAGES = {
    "ProvisionedThroughputExceededException":
        "Rate exceeded for shard %s in stream %s under account 000000000000.",
    "InternalFailure": "Internal service failure.",
    "KMSThrottlingException": "The request was denied due to request throttling. (Service: "
                              "AWSKMS; Status Code: 400; Error Code: ThrottlingException)",
    "LimitExceededException": "Rate exceeded for stream %s under account 000000000000.",
    "ThrottlingException": "Rate exceeded",
    "ServiceUnavailable": "Service Unavailable",
    "ResourceNotFoundException": "Stream %s under account 000000000000 not found.",
    "ValidationException": "1 validation error detected: (injected by fault_proxy)",
}


# -- codec: the two Kinesis wire encodings, keyed on a request's Content-Type --------
#
# Same shapes in both; CBOR carries Data as a byte string, JSON as base64 text. Anything
# that is not CBOR 1.1 is treated as JSON 1.1 (the daemon's default before CBOR, and what
# the control endpoints speak).

JSON_CT = "application/x-amz-json-1.1"
CBOR_CT = "application/x-amz-cbor-1.1"


def codec_of(ctype):
    """The encoding (JSON_CT or CBOR_CT) of a Content-Type header value (or None)."""
    mt = (ctype or "").split(";", 1)[0].strip().lower()
    return CBOR_CT if mt == CBOR_CT else JSON_CT


def decode_body(ctype, body):
    """Body bytes -> object; ValueError if it is not one well-formed document."""
    if codec_of(ctype) == CBOR_CT:
        f = io.BytesIO(body)
        try:
            obj = cbor2.CBORDecoder(f).decode()
        except Exception as e:  # CBORDecodeError is not a ValueError; EOFError, ...
            raise ValueError("bad CBOR body: %s" % e) from None
        if f.tell() != len(body):
            raise ValueError("bad CBOR body: %d trailing bytes" % (len(body) - f.tell()))
        return obj
    return json.loads(body)


def encode_body(ctype, obj):
    return cbor2.dumps(obj) if codec_of(ctype) == CBOR_CT else json.dumps(obj).encode()


def record_data(ctype, rec):
    """The raw bytes of a PutRecords entry's Data (ValueError / TypeError if malformed)."""
    d = rec.get("Data", b"" if codec_of(ctype) == CBOR_CT else "")
    if codec_of(ctype) == CBOR_CT:
        if not isinstance(d, (bytes, bytearray)):
            raise TypeError("CBOR Data is not a byte string")
        return bytes(d)
    return base64.b64decode(d)


def answer_ctype(headers, request_ctype):
    """The Content-Type of an upstream answer as it came (passed on to the daemon with
    the body; codec_of() of it decodes it), or the request's encoding if it had none."""
    for k, v in headers:
        if k.lower() == "content-type" and v.strip():
            return v.strip()
    return codec_of(request_ctype)


def varint(b, i):
    shift = n = 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError("bad varint")
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, i
        shift += 7


def user_records_in(data):
    """User records in one Kinesis record: the Records count of a KPL aggregate, else 1."""
    if len(data) <= 20 or data[:4] != MAGIC:
        return 1
    body = data[4:-16]
    if hashlib.md5(body).digest() != data[-16:]:
        return 1
    i = n = 0
    try:
        while i < len(body):
            key, i = varint(body, i)
            wt = key & 7
            if wt == 2:
                ln, i = varint(body, i)
                i += ln
            elif wt == 0:
                _, i = varint(body, i)
            elif wt == 5:
                i += 4
            elif wt == 1:
                i += 8
            else:
                return 1
            if key >> 3 == 3:
                n += 1
    except ValueError:
        return 1
    return n if i == len(body) else 1


def hash_key(rec):
    if rec.get("ExplicitHashKey"):
        return int(rec["ExplicitHashKey"])
    return int.from_bytes(hashlib.md5(rec["PartitionKey"].encode("utf-8")).digest(), "big")


class State:
    def __init__(self, upstream, seed, config):
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http":
            raise SystemExit("fault_proxy: upstream must be http://")
        self.up_host, self.up_port = u.hostname, u.port or 80
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.cfg = json.loads(json.dumps(DEFAULTS))
        self.cfg.update(config)
        self.shards = {}  # stream -> [(lo, hi, shard_id)]
        self.reset()

    def reset(self):
        with self.lock:
            self.requests = {}
            self.events = {}
            self.kinesis_records = {}
            self.user_records = {}
            self.landed = {}
            self.codes = {}
            self.sched = {}
            self.seen = set()
            self.identical_resends = 0
            self.dropped = {}
            self.resent_after_drop = 0
            self.resent_after_drop_ms = 0.0
            self.upstream_resends = 0
            self.connections = 0
            self.forwarded = 0
            self.started = time.time()

    def snapshot(self):
        with self.lock:
            return {"config": self.cfg, "requests": dict(self.requests),
                    "events": dict(self.events), "kinesis_records": dict(self.kinesis_records),
                    "user_records": dict(self.user_records), "codes": dict(self.codes),
                    "landed": dict(self.landed),
                    "identical_resends": self.identical_resends,
                    "resent_after_drop": self.resent_after_drop,
                    "resent_after_drop_ms": round(self.resent_after_drop_ms, 1),
                    "upstream_resends": self.upstream_resends,
                    "connections": self.connections, "forwarded": self.forwarded,
                    "seconds": time.time() - self.started}

    def count(self, kind, code=None, krecs=0, urecs=0, landed=0):
        with self.lock:
            if landed:
                self.landed[kind] = self.landed.get(kind, 0) + landed
            self.events[kind] = self.events.get(kind, 0) + 1
            self.kinesis_records[kind] = self.kinesis_records.get(kind, 0) + krecs
            self.user_records[kind] = self.user_records.get(kind, 0) + urecs
            if code:
                self.codes[kind] = code

    def hit(self, key):
        """Does fault `key` fire now? Float probability, or "every:N"."""
        with self.lock:
            v = self.cfg.get(key, 0)
            if isinstance(v, str) and v.startswith("every:"):
                n = int(v[6:])
                c = self.sched.get(key, 0) + 1
                self.sched[key] = c
                return n > 0 and c % n == 0
            v = float(v or 0)
            return v > 0 and self.rng.random() < v

    def choice(self, seq):
        with self.lock:
            return self.rng.choice(seq)

    def uniform(self, lo, hi):
        with self.lock:
            return self.rng.uniform(lo, hi)


STATE = None
_local = threading.local()


def upstream_call(headers, body):
    """POST to the upstream on this thread's keep-alive connection -> (status, hdrs, body).
    A connection idle for over 2 s is replaced first (kinesalite drops them at 5 s); a
    reused one that fails before any answer is retried once on a fresh connection, and
    counted (upstream_resends) since the upstream might have acted on it."""
    conn = getattr(_local, "conn", None)
    if conn is not None and time.monotonic() - _local.last > 2.0:
        conn.close()
        conn = None
    for attempt in range(2):
        fresh = conn is None
        if fresh:
            conn = http.client.HTTPConnection(STATE.up_host, STATE.up_port, timeout=60)
        try:
            conn.request("POST", "/", body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            _local.conn, _local.last = conn, time.monotonic()
            return r.status, r.getheaders(), data
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            conn = _local.conn = None
            if fresh or attempt:
                raise
            with STATE.lock:
                STATE.upstream_resends += 1
    raise AssertionError("unreachable")


def shard_for(stream, hk, headers, ctype):
    with STATE.lock:
        ranges = STATE.shards.get(stream)
    if ranges is None:
        h = dict(headers)
        h["X-Amz-Target"] = "Kinesis_20131202.ListShards"
        st, hdrs, b = upstream_call(h, encode_body(ctype, {"StreamName": stream}))
        ranges = [(int(s["HashKeyRange"]["StartingHashKey"]),
                   int(s["HashKeyRange"]["EndingHashKey"]), s["ShardId"])
                  for s in decode_body(answer_ctype(hdrs, ctype), b).get("Shards", [])
                  if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})]
        with STATE.lock:
            STATE.shards[stream] = ranges
    for lo, hi, sid in ranges:
        if lo <= hk <= hi:
            return sid
    return "shardId-000000000000"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault_proxy"

    def log_message(self, fmt, *args):  # quiet
        pass

    def handle(self):
        with STATE.lock:
            STATE.connections += 1
        self.close_connection = True
        self.handle_one_request()
        for _ in range(10**9):
            if self.close_connection:
                break
            idle = STATE.cfg.get("idle_close_ms", 0)
            if idle:
                r, _, _ = select.select([self.connection], [], [], idle / 1000.0)
                if not r:
                    STATE.count("idle_close")
                    break
            self.handle_one_request()

    # -- helpers --
    def reply(self, status, body, ctype=None, length=None):
        """ctype None: the encoding of the request being answered."""
        self.send_response(status)
        self.send_header("Content-Type", ctype or self.ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("x-amzn-RequestId", "%032x" % random.getrandbits(128))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def error(self, status, code, msg):
        """An error answer {"__type", "message"} in the request's encoding."""
        self.reply(status, encode_body(self.ctype, {"__type": code, "message": msg}))

    def abort(self, rst=False):
        if getattr(self, "sig", None) is not None:
            with STATE.lock:
                STATE.dropped[self.sig] = time.monotonic()
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    def do_GET(self):
        self.ctype = JSON_CT
        if self.path == "/__proxy/stats":
            return self.reply(200, json.dumps(STATE.snapshot()).encode(), "application/json")
        self.error(404, "UnknownOperationException", "GET " + self.path)

    def do_POST(self):
        # The daemon's requests are answered in their own encoding; the control
        # endpoints always speak JSON.
        self.ctype = JSON_CT if self.path.startswith("/__proxy/") else \
            codec_of(self.headers.get("Content-Type"))
        n = int(self.headers.get("Content-Length") or -1)
        if n < 0:
            self.close_connection = True
            return self.error(411, "ValidationException", "Content-Length required")
        if self.path.startswith("/__proxy/"):
            body = self.rfile.read(n)
            if self.path == "/__proxy/config":
                upd = json.loads(body or b"{}")
                bad = sorted(set(upd) - set(DEFAULTS))
                if bad:
                    return self.error(400, "ValidationException", "unknown settings %s" % bad)
                with STATE.lock:
                    STATE.cfg.update(upd)
                    cfg = dict(STATE.cfg)
                return self.reply(200, json.dumps(cfg).encode(), "application/json")
            if self.path == "/__proxy/reset":
                STATE.reset()
                return self.reply(200, b"{}", "application/json")
            return self.error(404, "UnknownOperationException", self.path)

        target = self.headers.get("X-Amz-Target", "")
        op = target.rsplit(".", 1)[-1]
        with STATE.lock:
            STATE.requests[op] = STATE.requests.get(op, 0) + 1
            faulty = op in STATE.cfg.get("fault_ops", [])
        self.sig = None
        if faulty and STATE.hit("drop_partial") and n > 1:
            # Reset without answering. The whole body is read first only so the records it
            # carries can be counted (a reset after half the body left their number
            # unknown and the test's accounting loose); the client sees the same thing:
            # a connection reset on a request that got no answer.
            body = self.rfile.read(n)
            try:
                req = decode_body(self.ctype, body)
            except ValueError:
                req = None
            STATE.count("drop_partial", "ConnectionError", *self.peek_counts(req))
            return self.abort(rst=True)
        body = self.rfile.read(n)
        sig = hashlib.sha256((self.headers.get("Authorization", "") +
                              self.headers.get("X-Amz-Date", "")).encode() + body).digest()
        with STATE.lock:
            if sig in STATE.seen:
                STATE.identical_resends += 1
            STATE.seen.add(sig)
            if sig in STATE.dropped:
                STATE.resent_after_drop += 1
                STATE.resent_after_drop_ms = max(STATE.resent_after_drop_ms,
                                                 (time.monotonic() - STATE.dropped.pop(sig)) * 1e3)
        self.sig = sig
        fwd_headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "connection", "expect",
                                            "transfer-encoding", "keep-alive")}
        req = None
        if op == "PutRecords" and faulty:
            try:
                req = decode_body(self.ctype, body)
            except ValueError:
                req = None
            if not isinstance(req, dict):
                req = None
        if faulty:
            if self.request_fault(op, req, body):
                return
        lat = STATE.cfg.get("latency_ms") or [0, 0]
        if faulty and STATE.hit("latency"):
            ms = STATE.uniform(float(lat[0]), float(lat[1]))
            STATE.count("latency", None, 0, 0)
            with STATE.lock:
                STATE.user_records["latency_ms_total"] = \
                    STATE.user_records.get("latency_ms_total", 0) + int(ms)
            time.sleep(ms / 1000.0)

        pending, landed = [], (0, 0)
        if req is not None and isinstance(req.get("Records"), list):
            status, out, octype, pending, landed = self.put_records(req, fwd_headers)
        else:
            try:
                status, hdrs, out = upstream_call(fwd_headers, body)
            except OSError as e:
                return self.error(502, "ProxyUpstreamError", str(e))
            octype = answer_ctype(hdrs, self.ctype)
            if op == "ListShards" and status == 200:
                self.learn_shards(body, out, octype)
        with STATE.lock:
            STATE.forwarded += 1
        if faulty:
            # The answer is hidden from the daemon: what landed will be sent again
            # (duplicates), and the per-record failures spliced in are never seen.
            hidden = None
            if STATE.hit("drop_after"):
                hidden = ("drop_after", "ConnectionError")
            elif STATE.hit("slow_after"):
                hidden = ("slow_after", "Timeout")
            elif STATE.hit("corrupt_after"):
                hidden = ("corrupt_after", "ResponseError")
            if hidden:
                STATE.count(hidden[0], hidden[1], *self.peek_counts(req), landed=landed[1])
                for kind, code, kr, ur in pending:
                    STATE.count("hidden_" + kind, None, kr, ur)
                if hidden[0] == "drop_after":
                    return self.abort()
                if hidden[0] == "corrupt_after":
                    return self.reply(status, out[:max(1, len(out) // 2)], octype)
                time.sleep(float(STATE.cfg.get("slow_after_ms", 0)) / 1000.0)
                try:
                    self.reply(status, out, octype)
                except OSError:
                    self.close_connection = True
                return
        for kind, code, kr, ur in pending:
            STATE.count(kind, code, kr, ur)
        self.reply(status, out, octype)
        if faulty and STATE.hit("close_after_response"):
            STATE.count("close_after_response")
            self.sig = None
            self.abort()

    def peek_counts(self, req):
        return self.counts_of(req) if isinstance(req, dict) and req else (0, 0)

    def counts_of(self, req, idx=None):
        recs = req.get("Records") or []
        if idx is not None:
            recs = [recs[i] for i in idx]
        u = 0
        for r in recs:
            try:
                u += user_records_in(record_data(self.ctype, r))
            except (ValueError, TypeError, AttributeError):
                u += 1
        return len(recs), u

    def request_fault(self, op, req, body):
        """Request-level faults that answer without forwarding. True if one fired."""
        stream = (req or {}).get("StreamName")
        if stream is None:
            try:
                stream = decode_body(self.ctype, body).get("StreamName")
            except (ValueError, AttributeError):
                stream = None
        if not isinstance(stream, str):
            stream = None
        want = STATE.cfg.get("require_akid") or ""
        if want:
            # Credential rotation on the server side: requests signed with any other key
            # id are answered as AWS answers an expired session token.
            auth = self.headers.get("Authorization") or ""
            akid = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else ""
            if akid != want:
                STATE.count("expired_token", "ExpiredTokenException", *self.peek_counts(req))
                self.error(400, "ExpiredTokenException",
                           "The security token included in the request is expired")
                return True
        perm = STATE.cfg.get("permanent") or {}
        if stream in perm:
            code = perm[stream]
            STATE.count("permanent:" + code, code, *self.peek_counts(req))
            msg = MESSAGES.get(code, "injected")
            self.error(400, code, msg % stream if "%s" in msg else msg)
            return True
        if STATE.hit("drop_before"):
            STATE.count("drop_before", "ConnectionError", *self.peek_counts(req))
            self.abort()
            return True
        if STATE.hit("throttle"):
            code = STATE.choice(STATE.cfg["throttle_codes"])
            STATE.count("http:400:" + code, code, *self.peek_counts(req))
            msg = MESSAGES.get(code, "Rate exceeded")
            self.error(400, code, msg % stream if "%s" in msg else msg)
            return True
        if STATE.hit("error5xx"):
            st, code = STATE.choice(STATE.cfg["error5xx_codes"])
            STATE.count("http:%d:%s" % (st, code), code, *self.peek_counts(req))
            self.error(int(st), code, MESSAGES.get(code, "injected"))
            return True
        return False

    def learn_shards(self, reqbody, out, octype):
        try:
            q = decode_body(self.ctype, reqbody)
            r = decode_body(octype, out)
        except ValueError:
            return
        if not isinstance(q, dict) or not isinstance(r, dict):
            return
        if "StreamName" in q and "NextToken" not in r:
            ranges = [(int(s["HashKeyRange"]["StartingHashKey"]),
                       int(s["HashKeyRange"]["EndingHashKey"]), s["ShardId"])
                      for s in r.get("Shards", [])
                      if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})]
            with STATE.lock:
                STATE.shards[q["StreamName"]] = ranges

    def put_records(self, req, headers):
        recs = req["Records"]
        stream = req.get("StreamName", "")
        fail, silent, pending = {}, [], []
        for i in range(len(recs)):
            if STATE.hit("record_fail"):
                fail[i] = STATE.choice(STATE.cfg["record_fail_codes"])
            elif STATE.hit("silent_drop"):
                silent.append(i)
        fwd = [i for i in range(len(recs)) if i not in fail and i not in silent]
        out = [None] * len(recs)
        upstream_failed = 0
        enc = None
        ct = self.ctype  # the sub-request and the rebuilt answer speak the request's encoding
        if fwd:
            sub = dict(req)
            sub["Records"] = [recs[i] for i in fwd]
            subbody = encode_body(ct, sub)
            try:
                st, hdrs, b = upstream_call(headers, subbody)
            except OSError as e:
                return (502, encode_body(ct, {"__type": "ProxyUpstreamError",
                                              "message": str(e)}), ct, [], (0, 0))
            if st != 200:
                # the upstream's own error, passed through as it came
                return st, b, answer_ctype(hdrs, ct), [], (0, 0)
            if STATE.hit("silent_dup"):
                upstream_call(headers, subbody)
                pending.append(("silent_dup", None) + self.counts_of(req, fwd))
            resp = decode_body(answer_ctype(hdrs, ct), b)
            enc = resp.get("EncryptionType")
            for k, i in enumerate(fwd):
                out[i] = resp["Records"][k]
                if "ErrorCode" in out[i]:
                    upstream_failed += 1
        for i, code in fail.items():
            msg = MESSAGES.get(code, "injected")
            if code == "ProvisionedThroughputExceededException":
                msg = msg % (shard_for(stream, hash_key(recs[i]), headers, ct), stream)
            out[i] = {"ErrorCode": code, "ErrorMessage": msg}
            pending.append(("record:" + code, code) + self.counts_of(req, [i]))
        for i in silent:
            out[i] = {"ShardId": shard_for(stream, hash_key(recs[i]), headers, ct),
                      "SequenceNumber": "4" + "".join(str(random.randrange(10)) for _ in range(55))}
            pending.append(("silent_drop", None) + self.counts_of(req, [i]))
        resp = {"FailedRecordCount": upstream_failed + len(fail), "Records": out}
        if enc:
            resp["EncryptionType"] = enc
        landed = self.counts_of(req, fwd) if fwd else (0, 0)
        return 200, encode_body(ct, resp), ct, pending, landed


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    global STATE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--config", default="{}", help="JSON object of fault settings")
    ap.add_argument("--stats-file", default=None)
    for k, v in DEFAULTS.items():
        ap.add_argument("--" + k.replace("_", "-"), dest="f_" + k, default=None,
                        help="default %s" % json.dumps(v))
    a = ap.parse_args()
    cfg = json.loads(a.config)
    for k, v in DEFAULTS.items():
        raw = getattr(a, "f_" + k)
        if raw is None:
            continue
        if isinstance(v, (list, dict)):
            cfg[k] = json.loads(raw)
        elif raw.startswith("every:"):
            cfg[k] = raw
        else:
            cfg[k] = type(v)(float(raw)) if isinstance(v, int) else float(raw)
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit("fault_proxy: unknown settings %s" % sorted(unknown))
    STATE = State(a.upstream, a.seed, cfg)
    srv = Server(("127.0.0.1", a.port), Handler)

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
        if a.stats_file:
            with open(a.stats_file, "w") as f:
                json.dump(STATE.snapshot(), f, indent=1)


if __name__ == "__main__":
    main()
