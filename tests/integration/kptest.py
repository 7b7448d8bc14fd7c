"""Shared pieces of the integration tests: real emulators, a KPL-style driver of the
daemon over its pipe protocol, and a reader that fetches every shard back.

Runs under Debian's /usr/bin/python3 (python3-protobuf, python3-botocore). The driver
is written from the protocol description, independently of our C client, so it checks
the daemon the way the official Java wrapper would use it."""

import base64
import hashlib
import importlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.environ.get("KP_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("KP_BIN_DIR") or os.path.join(SRC, "build", "bin")
EMU = os.path.join(SRC, "tools", "emulator", "emulator.sh")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_messages_pb2():
    """Generates Python bindings for proto/messages.proto with Debian's protoc."""
    out = tempfile.mkdtemp(prefix="kp-pb2-")
    subprocess.run(["protoc", "--proto_path=" + os.path.join(SRC, "proto"),
                    "--python_out=" + out, os.path.join(SRC, "proto", "messages.proto")],
                   check=True)
    sys.path.insert(0, out)
    return importlib.import_module("messages_pb2")


pb = load_messages_pb2()


def make_test_ca(d):
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI in d:
    returns (ca_crt, server_crt, server_key)."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, n) for n in ("srv.key", "srv.csr", "srv.crt"))
    ext = os.path.join(d, "ext.cnf")
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
         "-days", "2", "-subj", "/CN=kp test CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ossl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext)
    return ca_crt, crt, key


class Emulator:
    """A real Kinesis emulator on 127.0.0.1, started and stopped by PID."""

    def __init__(self, kind, extra=()):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="kp-emu-")
        # The emulator exits with this process even if it dies without stopping it.
        env = dict(os.environ, KP_EMU_OWNER_PID=str(os.getpid()))
        out = subprocess.run([EMU, "start", kind, "--dir", self.dir, *extra], check=True,
                             capture_output=True, text=True, env=env).stdout
        env = {}
        for tok in out.replace("export", " ").split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                env[k] = v
        self.pid = int(env["KP_EMU_PID"])
        self.url = env["KP_EMU_URL"]
        self.tls_url = env.get("KP_EMU_TLS_URL")

    def stop(self):
        subprocess.run([EMU, "stop", str(self.pid)], check=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def kinesis_client(url, region="us-east-1", verify=None):
    import botocore.config
    import botocore.session
    s = botocore.session.get_session()
    return s.create_client(
        "kinesis", region_name=region, endpoint_url=url, aws_access_key_id="AKIDTEST",
        aws_secret_access_key="test-secret", verify=verify,
        config=botocore.config.Config(retries={"max_attempts": 3}, connect_timeout=10,
                                      read_timeout=60))


def create_stream(client, name, shards, timeout=60):
    client.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if st["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    raise AssertionError("stream %s not ACTIVE after %ss" % (name, timeout))


def list_shards(client, name):
    shards, token = [], None
    for _ in range(1000):
        r = client.list_shards(NextToken=token) if token else client.list_shards(StreamName=name)
        shards += r["Shards"]
        token = r.get("NextToken")
        if not token:
            return shards
    raise AssertionError("ListShards paging did not end")


def read_stream(client, name, timeout=120, get_records=None):
    """Every Kinesis record of every shard: [(shard, record)], shard as ListShards gives it.
    get_records(iterator) replaces botocore's GetRecords (see read_stream_raw)."""
    out = []
    deadline = time.time() + timeout
    fetch = get_records or (lambda it: client.get_records(ShardIterator=it, Limit=10000))
    for sh in list_shards(client, name):
        it = client.get_shard_iterator(StreamName=name, ShardId=sh["ShardId"],
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it and time.time() < deadline:
            r = fetch(it)
            for rec in r["Records"]:
                out.append((sh, rec))
            if not r["Records"] and r.get("MillisBehindLatest", 0) == 0:
                break
            it = r.get("NextShardIterator")
    return out


def get_records_raw(url, shard_iterator, limit=10000):
    """GetRecords in JSON over plain HTTP without botocore, for data that botocore cannot
    parse: kinesalite keeps a CBOR-put Data as a JavaScript Buffer and returns it as
    {"type": "Buffer", "data": [byte, ...]} (to JSON and CBOR readers alike; its CBOR
    answers over 16 KiB are moreover empty). Data comes back as bytes either way. The
    emulators check the Authorization header's shape, not the signature."""
    import urllib.request
    body = json.dumps({"ShardIterator": shard_iterator, "Limit": limit}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "Kinesis_20131202.GetRecords",
               "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
               "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/"
                                "kinesis/aws4_request, SignedHeaders=host, Signature=0"}
    r = urllib.request.Request(url + "/", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(r, timeout=60) as resp:
        out = json.loads(resp.read())
    for rec in out["Records"]:
        d = rec["Data"]
        if isinstance(d, dict) and d.get("type") == "Buffer":
            rec["Data"] = bytes(d["data"])
        else:
            rec["Data"] = base64.b64decode(d)
    return out


def read_stream_raw(client, url, name, timeout=120):
    """read_stream, with GetRecords through get_records_raw."""
    return read_stream(client, name, timeout, lambda it: get_records_raw(url, it))


def deaggregate(kinesis_records, strict=True):
    """User records via our kpl-deagg CLI (get-records JSON in, JSON lines out)."""
    doc = {"Records": [{
        "SequenceNumber": r["SequenceNumber"],
        "PartitionKey": r["PartitionKey"],
        "Data": base64.b64encode(r["Data"]).decode(),
    } for r in kinesis_records]}
    args = [os.path.join(BIN, "kpl-deagg"), "--json"] + (["--strict"] if strict else [])
    p = subprocess.run(args, input=json.dumps(doc).encode(), capture_output=True, check=True)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def hash_key(pk, ehk=None):
    if ehk is not None:
        return int(ehk)
    return int.from_bytes(hashlib.md5(pk.encode("utf-8")).digest(), "big")


def frame(msg):
    b = msg.SerializeToString()
    return struct.pack(">I", len(b)) + b


def hexmsg(msg):
    return msg.SerializeToString().hex().upper()


class Daemon:
    """kinesis_producer launched the KPL way: two FIFOs, -c/-k/-w hex arguments.

    Results are collected by a reader thread into `results` (source_id -> list of
    PutRecordResult), so a duplicate result is visible."""

    def __init__(self, config, akid="AKIDTEST", secret="test-secret", level="warning",
                 env=None, extra_args=(), no_config=False, shared_fd=None):
        self.dir = tempfile.mkdtemp(prefix="kp-daemon-")
        if shared_fd is not None:
            self._start_fd_mode(config, akid, secret, level, env, shared_fd)
            return
        self.to_daemon = os.path.join(self.dir, "amz-aws-kpl-out-pipe-test")
        self.from_daemon = os.path.join(self.dir, "amz-aws-kpl-in-pipe-test")
        os.mkfifo(self.to_daemon)
        os.mkfifo(self.from_daemon)
        cfg = pb.Message(id=0, configuration=config)
        creds = pb.Message(id=2**63 - 1, set_credentials=pb.SetCredentials(
            for_metrics=False, credentials=pb.Credentials(akid=akid, secret_key=secret)))
        mcreds = pb.Message(id=2**63 - 1, set_credentials=pb.SetCredentials(
            for_metrics=True, credentials=pb.Credentials(akid=akid, secret_key=secret)))
        self.stderr = open(os.path.join(self.dir, "daemon.err"), "w+")
        argv = [os.path.join(BIN, "kinesis_producer"), "-o", self.to_daemon, "-i",
                self.from_daemon, "-k", hexmsg(creds), "-t", "-w", hexmsg(mcreds), "-l", level]
        if not no_config:
            argv += ["-c", hexmsg(cfg)]
        self.proc = subprocess.Popen(
            argv + list(extra_args),
            stderr=self.stderr, env=dict(os.environ, **(env or {})))
        # Same order as the Java wrapper: our read end (-i) first, then -o.
        self.rfd = os.open(self.from_daemon, os.O_RDONLY)
        self.wfd = os.open(self.to_daemon, os.O_WRONLY)
        self.results = {}
        self.batches = 0  # PutRecordResultBatch messages seen
        self.others = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.next_id = 1

    def _start_fd_mode(self, config, akid, secret, level, env, shared_fd):
        """Our client library's launch instead: `--fd 3` on a socketpair, Configuration
        and credentials as the first messages, and `shared_fd` (a memory file, or -1 for
        none offered) at fd 4, named in Configuration.shared_data_fd."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = mine

        def child_fds():
            os.dup2(theirs.fileno(), 3)
            if shared_fd >= 0:
                os.dup2(shared_fd, 4)

        self.stderr = open(os.path.join(self.dir, "daemon.err"), "w+")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "kinesis_producer"), "--fd", "3", "-l", level],
            stderr=self.stderr, env=dict(os.environ, **(env or {})), preexec_fn=child_fds,
            close_fds=False)
        theirs.close()
        self.rfd = os.dup(mine.fileno())
        self.wfd = os.dup(mine.fileno())
        cfg = pb.Configuration()
        cfg.CopyFrom(config)
        if shared_fd >= 0:
            cfg.shared_data_fd = 4
        creds = pb.SetCredentials(for_metrics=False,
                                  credentials=pb.Credentials(akid=akid, secret_key=secret))
        self._write_all(frame(pb.Message(id=1, configuration=cfg)) +
                        frame(pb.Message(id=2, set_credentials=creds)))
        self.results = {}
        self.batches = 0
        self.others = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.next_id = 3

    def put_ref(self, stream, pk, offset, length, ehk=None):
        """Sends one PutRecordRef (data at offset in the shared data file); its id."""
        i = self.next_id
        self.next_id += 1
        pr = pb.PutRecordRef(stream_name=stream, partition_key=pk, data_offset=offset,
                             data_length=length)
        if ehk is not None:
            pr.explicit_hash_key = ehk
        self._write_all(frame(pb.Message(id=i, put_record_ref=pr)))
        return i

    def wait_other(self, field, timeout):
        """Waits for a message other than a result with `field` set; returns it or None."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for m in self.others:
                    if m.HasField(field):
                        return m
                left = deadline - time.time()
                if left <= 0 or getattr(self, "eof", False):
                    return None
                self.cond.wait(min(left, 1.0))

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                break
            buf += chunk
            pos = 0
            while len(buf) - pos >= 4:
                (n,) = struct.unpack_from(">I", buf, pos)
                if len(buf) - pos - 4 < n:
                    break
                m = pb.Message()
                m.ParseFromString(buf[pos + 4:pos + 4 + n])
                pos += 4 + n
                with self.cond:
                    if m.HasField("put_record_result"):
                        self.results.setdefault(m.source_id, []).append(m.put_record_result)
                    elif m.HasField("put_record_result_batch"):
                        # Only sent when Configuration.result_batches asked for it: one
                        # PutRecordResult per id, first attempt successful.
                        b = m.put_record_result_batch
                        assert len(b.source_ids) == len(b.delays), b
                        self.batches += 1
                        for sid, delay in zip(b.source_ids, b.delays):
                            r = pb.PutRecordResult(success=True, shard_id=b.shard_id,
                                                   sequence_number=b.sequence_number)
                            r.attempts.add(delay=delay, duration=b.duration, success=True)
                            self.results.setdefault(sid, []).append(r)
                    else:
                        self.others.append(m)
                    self.cond.notify_all()
            buf = buf[pos:]
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def send_raw(self, data):
        os.write(self.wfd, data) if len(data) < 65536 else self._write_all(data)

    def _write_all(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def put(self, stream, pk, data, ehk=None):
        """Sends one PutRecord; returns its message id."""
        i = self.next_id
        self.next_id += 1
        pr = pb.PutRecord(stream_name=stream, partition_key=pk, data=data)
        if ehk is not None:
            pr.explicit_hash_key = ehk
        self._write_all(frame(pb.Message(id=i, put_record=pr)))
        return i

    def put_refs_from(self, fd):
        """From now on put_many writes each non-empty record's data into the shared data
        file `fd` (the one given at launch, big enough for all of them, never reused) and
        sends a PutRecordRef, as our client library does."""
        self.ref_fd = fd
        self.ref_used = 0

    def put_many(self, records):
        """records: iterable of (stream, pk, data, ehk). Batches writes; returns ids."""
        ids, out = [], []
        ref_fd = getattr(self, "ref_fd", None)
        for stream, pk, data, ehk in records:
            i = self.next_id
            self.next_id += 1
            if ref_fd is not None and data:
                os.pwrite(ref_fd, data, self.ref_used)
                pr = pb.PutRecordRef(stream_name=stream, partition_key=pk,
                                     data_offset=self.ref_used, data_length=len(data))
                self.ref_used += len(data)
            else:
                pr = pb.PutRecord(stream_name=stream, partition_key=pk, data=data)
            if ehk is not None:
                pr.explicit_hash_key = ehk
            kind = "put_record_ref" if isinstance(pr, pb.PutRecordRef) else "put_record"
            out.append(frame(pb.Message(id=i, **{kind: pr})))
            ids.append(i)
            if len(out) >= 2000:
                self._write_all(b"".join(out))
                out = []
        if out:
            self._write_all(b"".join(out))
        return ids

    def flush(self, stream=None):
        f = pb.Flush()
        if stream:
            f.stream_name = stream
        self._write_all(frame(pb.Message(id=self.next_id, flush=f)))
        self.next_id += 1

    def wait_results(self, ids, timeout):
        """Waits, event-driven, until every id has a result; returns those missing."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                missing = [i for i in ids if i not in self.results]
                if not missing or getattr(self, "eof", False):
                    return missing
                left = deadline - time.time()
                if left <= 0:
                    return missing
                self.cond.wait(min(left, 1.0))

    def close(self, timeout=60):
        """End of input: the daemon flushes, answers everything and exits 0."""
        if hasattr(self, "sock"):
            self.sock.shutdown(socket.SHUT_WR)  # the read side stays open
            self.sock.close()
        os.close(self.wfd)
        rc = self.proc.wait(timeout)
        self.reader.join(timeout)
        os.close(self.rfd)
        return rc

    def terminate(self, timeout=60):
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        try:
            os.close(self.wfd)
        except OSError:
            pass
        self.reader.join(timeout)
        return rc

    def log_text(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()


def config(url, **kw):
    """A Configuration pointing at an emulator URL, with overrides by proto field name."""
    c = pb.Configuration(kinesis_endpoint=url, region="us-east-1", metrics_level="none",
                         verify_certificate=True)
    for k, v in kw.items():
        setattr(c, k, v)
    return c
