"""Finding and declaring the two shared libraries (ctypes, standard library only).

libkinesis_producer_client.so  include/kinesis_producer.h  (client/)
libkp_deagg.so                 include/kp_deagg.h          (bindings/CMakeLists.txt)

Search order for each: $KP_LIB_DIR, then the build tree this package sits in
(<repo>/build/lib), then the system's loader path (an installed library). Each is
loaded on first use, so importing the package never fails because of them."""

import ctypes as C
import os
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))
# bindings/python/kinesis_producer -> <repo>/build/lib
_BUILD_LIB = os.path.normpath(os.path.join(_HERE, "..", "..", "..", "build", "lib"))

CLIENT_LIB = "libkinesis_producer_client.so"
DEAGG_LIB = "libkp_deagg.so"

_lock = threading.Lock()
_loaded = {}


def lib_dirs():
    """Directories searched before the system loader path, in order."""
    dirs = []
    env = os.environ.get("KP_LIB_DIR")
    if env:
        dirs.append(env)
    dirs.append(_BUILD_LIB)
    return dirs


def _find(name):
    tried = []
    for d in lib_dirs():
        path = os.path.abspath(os.path.join(d, name))
        tried.append(path)
        if os.path.exists(path):
            return path, tried
    return None, tried


def _load(name, declare):
    with _lock:
        if name in _loaded:
            return _loaded[name]
        path, tried = _find(name)
        try:
            # CDLL (not PyDLL): every call releases the GIL while it runs in C.
            lib = C.CDLL(path or (name + ".0"))
        except OSError as e:
            raise OSError("cannot load %s (tried %s, then the system loader: %s); set "
                          "KP_LIB_DIR to the directory holding it" %
                          (name, ", ".join(tried), e)) from None
        declare(lib)
        lib._kp_path = path or name
        _loaded[name] = lib
        return lib


# ---- include/kinesis_producer.h ----------------------------------------------------

PUT_F_BLOCK = 0x1
CLOSE_F_PURGE = 0x1


class Attempt(C.Structure):
    _fields_ = [("delay_ms", C.c_uint32), ("duration_ms", C.c_uint32), ("success", C.c_int),
                ("error_code", C.c_char_p), ("error_message", C.c_char_p)]


class Result(C.Structure):
    _fields_ = [("err", C.c_int), ("error_code", C.c_char_p), ("error_message", C.c_char_p),
                ("stream", C.c_char_p), ("partition_key", C.c_char_p),
                ("shard_id", C.c_char_p), ("sequence_number", C.c_char_p),
                ("len", C.c_size_t), ("attempt_cnt", C.c_size_t),
                ("attempts", C.POINTER(Attempt)), ("opaque", C.c_void_p)]


class Stats(C.Structure):
    _fields_ = [(n, C.c_uint64) for n in (
        "puts_accepted", "results_ok", "results_failed", "records_replayed", "daemon_starts",
        "daemon_deaths", "credentials_sent", "credentials_changes")] + [
        ("outstanding", C.c_size_t), ("outstanding_bytes", C.c_size_t),
        ("unsent_bytes", C.c_size_t),
        ("puts_shared", C.c_uint64)]  # the C struct, field for field: the library writes it whole


class Metric(C.Structure):
    _fields_ = [("name", C.c_char_p), ("dimension_cnt", C.c_size_t),
                ("dimension_keys", C.POINTER(C.c_char_p)),
                ("dimension_values", C.POINTER(C.c_char_p)),
                ("count", C.c_double), ("sum", C.c_double), ("mean", C.c_double),
                ("min", C.c_double), ("max", C.c_double), ("seconds", C.c_uint64)]


RESULT_CB = C.CFUNCTYPE(None, C.c_void_p, C.POINTER(Result), C.c_void_p)


def _declare_client(lib):
    vp, cp, sz, i = C.c_void_p, C.c_char_p, C.c_size_t, C.c_int
    sigs = {
        "kp_version": (i, []),
        "kp_version_str": (cp, []),
        "kp_err2str": (cp, [i]),
        "kp_err2name": (cp, [i]),
        "kp_conf_new": (vp, []),
        "kp_conf_destroy": (None, [vp]),
        "kp_conf_set": (i, [vp, cp, cp, cp, sz]),
        "kp_conf_get": (i, [vp, cp, cp, sz]),
        "kp_conf_load_properties": (i, [vp, cp, cp, sz]),
        "kp_conf_set_result_cb": (None, [vp, RESULT_CB]),
        "kp_conf_set_opaque": (None, [vp, vp]),
        "kp_producer_new": (vp, [vp, cp, sz]),
        # data is c_char_p: a bytes object is passed by pointer, without a copy
        "kp_producer_put": (i, [vp, cp, cp, cp, cp, sz, i, vp]),
        "kp_producer_poll": (i, [vp, i]),
        "kp_producer_flush": (i, [vp, cp]),
        "kp_producer_flush_wait": (i, [vp, i]),
        "kp_producer_outstanding": (sz, [vp]),
        "kp_producer_close": (i, [vp, i, i]),
        "kp_producer_destroy": (None, [vp]),
        "kp_producer_stats": (i, [vp, C.POINTER(Stats)]),
        "kp_producer_daemon_pid": (C.c_int, [vp]),
        "kp_producer_metrics": (i, [vp, cp, C.c_uint64, i, C.POINTER(C.POINTER(Metric)),
                                    C.POINTER(sz)]),
        "kp_metrics_destroy": (None, [C.POINTER(Metric), sz]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args


def client():
    """The client library, loaded once."""
    return _load(CLIENT_LIB, _declare_client)


# ---- include/kp_deagg.h ------------------------------------------------------------


class DeaggInput(C.Structure):
    _fields_ = [("data", C.c_char_p), ("data_len", C.c_size_t),
                ("partition_key", C.c_char_p), ("partition_key_len", C.c_size_t),
                ("explicit_hash_key", C.c_char_p), ("explicit_hash_key_len", C.c_size_t),
                ("sequence_number", C.c_char_p), ("sequence_number_len", C.c_size_t)]


class DeaggRecord(C.Structure):
    _fields_ = [("partition_key", C.c_void_p), ("partition_key_len", C.c_size_t),
                ("explicit_hash_key", C.c_void_p), ("explicit_hash_key_len", C.c_size_t),
                ("hash_key", C.c_void_p),
                ("data", C.c_void_p), ("data_len", C.c_size_t),
                ("sequence_number", C.c_void_p), ("sequence_number_len", C.c_size_t),
                ("sub_sequence_number", C.c_uint64), ("aggregated", C.c_bool)]


def _declare_deagg(lib):
    vp, cp, sz, i = C.c_void_p, C.c_char_p, C.c_size_t, C.c_int
    sigs = {
        "kp_deagg_new": (vp, []),
        "kp_deagg_destroy": (None, [vp]),
        "kp_deagg_set_strict": (None, [vp, C.c_bool]),
        "kp_deagg_set_hash_keys": (None, [vp, C.c_bool]),
        "kp_deagg_set_hash_range": (i, [vp, cp, cp]),
        "kp_deagg_begin": (i, [vp, C.POINTER(DeaggInput)]),
        "kp_deagg_next": (i, [vp, C.POINTER(DeaggRecord)]),
        "kp_deagg_count": (sz, [vp]),
        "kp_deagg_corruption": (i, [vp]),
        "kp_deagg_errstr": (cp, [vp]),
        "kp_deagg_err2str": (cp, [i]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args


def deagg():
    """The de-aggregation library, loaded once."""
    return _load(DEAGG_LIB, _declare_deagg)
