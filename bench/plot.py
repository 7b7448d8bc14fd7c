#!/usr/bin/env python3
"""Turns bench/run.sh's raw results (OUT/raw: cells.jsonl, machine.json, floor.md,
cdf-*.txt) into OUT/e2e.md (tables + targets), OUT/e2e.csv, OUT/e2e.json and the data
files bench/plot.gp draws (OUT/raw/tput-*.dat). Standard library only."""

import csv
import json
import os
import re
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
RAW = os.path.join(OUT, "raw")
SIZES = [100, 1024, 10240, 51200]
SIZE_NAME = {100: "100 B", 1024: "1 KiB", 10240: "10 KiB", 51200: "50 KiB"}


def load_cells():
    cells = []
    with open(os.path.join(RAW, "cells.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                cells.append(json.loads(line))
    return cells


def load_floor():
    """ns/B at 50 KiB for MD5, SHA-256, base64 encode; ns per kp_md5 of a 16-byte key."""
    fl = {}
    path = os.path.join(RAW, "floor.md")
    if not os.path.exists(path):
        return fl
    for line in open(path):
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) >= 7 and cols[0].startswith("MD5 (EVP"):
            fl["md5"] = float(cols[6])
        elif len(cols) >= 7 and cols[0].startswith("MD5, 16 messages"):
            fl["md5_many"] = float(cols[6])
        elif len(cols) >= 7 and cols[0].startswith("SHA-256"):
            fl["sha256"] = float(cols[6])
        elif len(cols) >= 7 and cols[0].startswith("base64 encode"):
            fl["b64"] = float(cols[6])
        elif len(cols) == 2 and "kp_md5" in cols[0]:
            fl["pk_md5"] = float(cols[1])
        elif len(cols) == 4 and cols[0] == "Unix stream" and cols[1] == "262144":
            # The client writes the pipe in large batches (eager writes of 256 KiB).
            a, b = _num(cols[2]), _num(cols[3])
            fl["unix"] = a + b if a is not None and b is not None else None
        elif len(cols) == 4 and cols[0] == "loopback TCP" and cols[1] == "51200":
            # curl hands the body to send() in upload-buffer pieces of up to 64 KiB;
            # only the sender's side is the producer's (the receiver is the sink).
            fl["tcp_send"] = _num(cols[2])
    return {k: v for k, v in fl.items() if v is not None}


def _num(s):
    try:
        return float(s)
    except ValueError:
        return None


def io_floor_ns(fl, size, through_socket):
    """The kernel's share on top of floor_ns: every byte once through loopback TCP to
    the sink (sender side) and, when the data goes to the daemon through its socket, once
    through that (both sides, both processes are ours); data that goes through the
    shared memory file (SharedMemory, records of 512 B and more) crosses no socket on
    its way to the daemon. Wire framing is left out (a few %)."""
    if "tcp_send" not in fl or (through_socket and "unix" not in fl):
        return None
    return size * (fl["tcp_send"] + (fl["unix"] if through_socket else 0.0))


def floor_ns(fl, size, agg, encoding="json", shards=1):
    """The producer's unavoidable per-record CPU (ns) for the cell's wire format: JSON
    bodies need base64 of the data and SHA-256 (SigV4) of the 4/3 larger text, CBOR bodies
    SHA-256 of the data only. With aggregation also the aggregate's MD5 (at the cost of 16
    aggregates hashed side by side, as the daemon does, where bench_floor measured it), and
    with more than
    one shard the partition key's MD5 (shard prediction; one shard over every key needs
    none). Records over ~51000 B are not aggregated."""
    if not all(k in fl for k in ("md5", "sha256", "b64", "pk_md5")):
        return None
    if encoding == "cbor":
        ns = size * fl["sha256"]
    else:
        ns = size * (fl["b64"] + fl["sha256"] * 4.0 / 3.0)
    if agg:
        ns += size * fl.get("md5_many", fl["md5"]) + (fl["pk_md5"] if shards > 1 else 0)
    return ns


def fmt(v, nd=2):
    if v is None:
        return "—"
    if isinstance(v, float) and v >= 1000:
        return "{:,.0f}".format(v)
    return ("{:.%df}" % nd).format(v)


def main():
    cells = load_cells()
    fl = load_floor()
    machine = json.load(open(os.path.join(RAW, "machine.json")))
    for c in cells:
        # A record too big for one AggregationMaxSize (51200) aggregate goes out alone.
        agg = (c.get("aggregation", False) if c["tool"] == "kpl-bench" else False) \
            and c["record_size"] <= 51000
        f = floor_ns(fl, c["record_size"], agg, c.get("request_encoding", "json"),
                     c.get("shards", 1))
        tot = c.get("total_us_per_rec") or 0
        c["floor_ns_per_rec"] = round(f, 1) if f is not None else None
        c["floor_pct"] = round(100.0 * f / (tot * 1000.0), 1) if f and tot > 0 else None
        io = io_floor_ns(fl, c["record_size"],
                         c["tool"] == "kpl-bench" and not c.get("puts_shared"))
        if f is not None and io is not None:
            c["io_floor_ns_per_rec"] = round(f + io, 1)
            c["io_floor_pct"] = round(100.0 * (f + io) / (tot * 1000.0), 1) if tot > 0 else None

    matrix = [c for c in cells if c["tool"] == "kpl-bench" and re.fullmatch(
        r"[^/]+/\d+sh/agg-(on|off)/\d+ms", c["label"])]
    extra = [c for c in cells if c["tool"] == "kpl-bench" and c not in matrix]
    direct = [c for c in cells if c["tool"] == "kp-bench-direct"]

    # CSV / JSON with every field.
    keys = sorted({k for c in cells for k in c})
    with open(os.path.join(OUT, "e2e.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for c in cells:
            w.writerow(c)
    with open(os.path.join(OUT, "e2e.json"), "w") as f:
        json.dump({"machine": machine, "floor_ns_per_byte": fl, "cells": cells}, f, indent=1)

    L = []
    L.append("Run %s on %s CPUs (%s), %s GiB, kernel %s, commit %s; %s s of puts per cell; "
             "load average %s at start, %s at the end (the machine is shared)."
             % (machine["date"], machine["nproc"], machine["cpu_model"], machine["mem_gib"],
                machine["kernel"], machine["commit"], machine["seconds_per_cell"],
                machine["loadavg"], machine.get("loadavg_end", "?")))
    L.append("")
    L.append("| cell (size/shards/aggregation/sink latency) | user rec/s | MB/s | client µs/rec "
             "| daemon µs/rec | total µs/rec | floor % | floor+I/O % | sink µs/rec | p50 ms | p99 ms | p99.9 ms "
             "| client RSS MiB (shared) | daemon RSS MiB (shared) | ours/busy % |")
    L.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")

    def row(c):
        return ("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s/%s |"
                % (c["label"] + ("" if c.get("ok") else " (!)"),
                   "{:,.0f}".format(c["user_records_per_s"]), fmt(c["mb_per_s"], 1),
                   fmt(c["client_us_per_rec"]), fmt(c.get("daemon_us_per_rec")),
                   fmt(c["total_us_per_rec"]), fmt(c.get("floor_pct"), 0),
                   fmt(c.get("io_floor_pct"), 0),
                   fmt(c.get("sink_us_per_rec")), fmt(c["lat_p50_ms"], 1),
                   fmt(c["lat_p99_ms"], 1), fmt(c.get("lat_p999_ms"), 1),
                   rss(c, "client"), rss(c, "daemon"),
                   fmt(c.get("ours_cpu_pct"), 0), fmt(c.get("system_busy_pct"), 0)))

    def rss(c, who):
        """Peak RSS, and in brackets the part that is the shared memory file (counted in
        both processes' RSS, held once)."""
        v, sh = c.get(who + "_rss_mib"), c.get(who + "_rss_shared_mib") or 0
        return fmt(v, 0) + (" (%s)" % fmt(sh, 0) if sh >= 1 else "")
    for c in matrix + extra:
        L.append(row(c))
    L.append("")
    L.append("Baseline without the daemon (`kp-bench-direct`: 8 PutRecords of 500 records in "
             "flight, no aggregation, our CBOR encoder (JSON where the label says so) + SigV4, "
             "responses decoded):")
    L.append("")
    L.append("| cell | user rec/s | MB/s | client µs/rec | floor % | floor+I/O % | sink µs/rec "
             "| request p50 ms | p99 ms | RSS MiB |")
    L.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for c in direct:
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
                 % (c["label"], "{:,.0f}".format(c["user_records_per_s"]), fmt(c["mb_per_s"], 1),
                    fmt(c["client_us_per_rec"]), fmt(c.get("floor_pct"), 0),
                    fmt(c.get("io_floor_pct"), 0),
                    fmt(c.get("sink_us_per_rec")), fmt(c["lat_p50_ms"], 1),
                    fmt(c["lat_p99_ms"], 1), fmt(c["client_rss_mib"], 0)))
    L.append("")
    if fl:
        L.append("Floor (this run's `bench_floor`, 50 KiB buffers): MD5 %.3f ns/B (%.3f ns/B for "
                 "16 aggregates side by side), SHA-256 %.3f ns/B, base64 %.3f ns/B, "
                 "partition-key MD5 %.1f ns. Producer floor per record "
                 "= size × SHA-256 for CBOR bodies, size × (base64 + 4/3 × SHA-256) for JSON; "
                 "+ size × MD5 (side by side) with aggregation, + key MD5 with more than one "
                 "shard; floor %% = floor / measured client+daemon CPU."
                 % (fl["md5"], fl.get("md5_many", fl["md5"]), fl["sha256"], fl["b64"],
                    fl["pk_md5"]))
        if "tcp_send" in fl and "unix" in fl:
            L.append("")
            L.append("Floor+I/O adds the kernel's per-byte share, from the same run's "
                     "`bench_floor` socket table: loopback TCP to the sink, sender side, "
                     "%.3f ns/B (50 KiB writes), and for kpl-bench the client→daemon Unix "
                     "socket, both sides, %.3f ns/B (256 KiB writes). What no producer that "
                     "hands records to another process and then to a TCP peer can go under."
                     % (fl["tcp_send"], fl["unix"]))
        L.append("")

    # Targets.
    def find(label):
        for c in cells:
            if c["label"] == label:
                return c
        return None

    def median(label, key="total_us_per_rec"):
        """The cell and its repeats (label/repN): the one with the median `key`, and a
        note of the spread when there are several."""
        cs = sorted([c for c in cells if c["label"] == label or
                     re.fullmatch(re.escape(label) + r"/rep\d+", c["label"])],
                    key=lambda c: c[key])
        if not cs:
            return None, ""
        m = cs[(len(cs) - 1) // 2] if key != "user_records_per_s" else cs[len(cs) // 2]
        if len(cs) == 1:
            return m, ""
        unit = "/s" if key == "user_records_per_s" else " µs"
        return m, "median of %d cells (%s–%s%s): " % (
            len(cs), fmt_v(cs[0][key], key), fmt_v(cs[-1][key], key), unit)

    def fmt_v(v, key):
        return "{:,.0f}".format(v) if key == "user_records_per_s" else "%.2f" % v

    T = []
    c100, n100 = median("100B/1sh/agg-on/0ms")
    r100, nr100 = median("100B/1sh/agg-on/0ms", "user_records_per_s")
    c1k, n1k = median("1KiB/1sh/agg-on/0ms")
    c50, n50 = median("50KiB/1sh/agg-on/0ms")
    if c100:
        T.append(("≥ 1,000,000 user records/s of 100 B, aggregation on",
                  "%s{:,.0f}/s".format(r100["user_records_per_s"]) % nr100,
                  r100["user_records_per_s"] >= 1e6))
        T.append(("≤ 1 µs CPU (client + daemon) per 100-B record",
                  "%s%.2f µs (client %.2f + daemon %.2f)" % (n100, c100["total_us_per_rec"],
                                                            c100["client_us_per_rec"],
                                                            c100["daemon_us_per_rec"]),
                  c100["total_us_per_rec"] <= 1.0))
    if c1k:
        T.append(("≤ 2 µs CPU per 1-KiB record",
                  "%s%.2f µs (client %.2f + daemon %.2f)" % (n1k, c1k["total_us_per_rec"],
                                                            c1k["client_us_per_rec"],
                                                            c1k["daemon_us_per_rec"]),
                  c1k["total_us_per_rec"] <= 2.0))
    # Each wire format against its own floor: JSON (the KPL's, our default) needs base64
    # and SHA-256 of the text, CBOR (ours) SHA-256 of the data alone. The median cell is
    # the one with the median CPU (the floor is one per run).
    c50j, n50j = median("50KiB/1sh/agg-on/0ms/json")
    for c, note, what in ((c50, n50, "CBOR: SHA-256 of the data"),
                          (c50j, n50j, "JSON: base64 + SHA-256 of the text")):
        if not c or c.get("floor_pct") is None:
            continue
        io = ("; %.0f %% of floor+I/O %.1f µs" % (c["io_floor_pct"],
                                                  c["io_floor_ns_per_rec"] / 1000)
              if c.get("io_floor_pct") is not None else "")
        T.append(("50 KiB records at ≥ 60 %% of the per-byte floor (%s)" % what,
                  "%s%.0f %% (%.1f µs vs floor %.1f µs%s)" % (note, c["floor_pct"],
                                                              c["total_us_per_rec"],
                                                              c["floor_ns_per_rec"] / 1000, io),
                  c["floor_pct"] >= 60))
    if c100:
        # The idle target (0 % CPU) is measured apart (kpl-bench --rate 1): at max rate the
        # busy share only says whether the cell was CPU-bound, so it is no target row.
        # Buffered data: what the client lets be outstanding (MaxOutstandingRecords,
        # default 100,000) of data + partition key (kpl-bench's keys are 17 bytes).
        nrec = float(c100.get("max_outstanding_records", 100000))
        buf_mib = nrec * (c100["record_size"] + 17) / 1048576.0
        T.append(("daemon RSS ≤ 32 MiB + buffered data",
                  "%.0f MiB peak (100 B, max rate; ≤ %s records of %d + 17 B outstanding = "
                  "%.1f MiB, limit %.1f MiB)" % (c100["daemon_rss_mib"], "{:,.0f}".format(nrec),
                                                 c100["record_size"], buf_mib, 32 + buf_mib),
                  c100["daemon_rss_mib"] <= 32 + buf_mib))
    for lab in [b + s for b in ("100B/1sh/agg-on/0ms/half-rate", "100B/1sh/agg-on/20ms/half-rate",
                                "1KiB/1sh/agg-on/0ms/half-rate", "1KiB/1sh/agg-on/20ms/half-rate")
                for s in ("", "/collect-1MiB")]:
        c = find(lab)
        if c:
            lim = float(c["record_max_buffered_time_ms"]) + 10
            start = ""
            if c.get("lat_worst_first_s_ms", -1) >= 0 and c.get("lat_worst_later_ms", -1) >= 0:
                start = ("; worst of the records put in the first second %.0f ms, after it "
                         "%.0f ms" % (c["lat_worst_first_s_ms"], c["lat_worst_later_ms"]))
            T.append(("p99 ≤ RecordMaxBufferedTime + 10 ms at half the max rate (%s)" % lab,
                      "p99 %.1f ms at %s/s%s" % (c["lat_p99_ms"],
                                                 "{:,.0f}".format(c["rate_target"]), start),
                      c["lat_p99_ms"] <= lim))
    L.append("| target | where we stand | met |")
    L.append("|---|---|---|")
    for t, v, ok in T:
        L.append("| %s | %s | %s |" % (t, v, "yes" if ok else "**no**"))
    L.append("")
    with open(os.path.join(OUT, "e2e.md"), "w") as f:
        f.write("\n".join(L) + "\n")

    # gnuplot data: one file per series, columns size rec/s MB/s total_us.
    series = {}
    for c in matrix:
        m = re.fullmatch(r"[^/]+/(\d+)sh/agg-(on|off)/(\d+)ms", c["label"])
        key = "ours-%ssh-agg-%s-%sms" % m.groups()
        series.setdefault(key, []).append(c)
    for c in direct:
        m = re.fullmatch(r"direct/[^/]+/(\d+)ms", c["label"])
        if m:  # the size series; extra cells (e.g. direct/100B/0ms/json) are in the tables
            series.setdefault("direct-%sms" % m.group(1), []).append(c)
    names = []
    for key, cs in sorted(series.items()):
        path = os.path.join(RAW, "tput-%s.dat" % key)
        with open(path, "w") as f:
            f.write("# record_size user_rec_per_s mb_per_s total_us_per_rec\n")
            for c in sorted(cs, key=lambda c: c["record_size"]):
                f.write("%d %.0f %.3f %.4f\n" % (c["record_size"], c["user_records_per_s"],
                                                 c["mb_per_s"], c["total_us_per_rec"]))
        names.append(key)
    with open(os.path.join(RAW, "series.txt"), "w") as f:
        f.write(" ".join(names) + "\n")
    cdfs = sorted(n[4:-4] for n in os.listdir(RAW) if n.startswith("cdf-") and n.endswith(".txt"))
    with open(os.path.join(RAW, "cdfs.txt"), "w") as f:
        f.write(" ".join(cdfs) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
