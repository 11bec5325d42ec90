#!/usr/bin/env python3
"""Send one OP_MSG command (default: hello) to a MongoDB-compatible server and
print the reply as JSON. Standard library only (no pymongo).

Usage: mongo_ping.py [--host 127.0.0.1] [--port 27017] [--cmd hello|ping|buildInfo]
                     [--timeout 2] [--tls-ca CA.pem]
--tls-ca: connect over TLS and verify the server's certificate with that CA.
Exit status 0 when the reply has ok: 1, otherwise 1.
Used by scripts/stack.sh to wait until the server REALLY answers.
"""
import argparse
import json
import socket
import ssl
import struct
import sys

OP_MSG = 2013


def bson_encode(doc):
    out = b""
    for key, val in doc.items():
        k = key.encode() + b"\x00"
        if isinstance(val, bool):
            out += b"\x08" + k + (b"\x01" if val else b"\x00")
        elif isinstance(val, int):
            out += b"\x10" + k + struct.pack("<i", val)
        elif isinstance(val, float):
            out += b"\x01" + k + struct.pack("<d", val)
        elif isinstance(val, str):
            s = val.encode() + b"\x00"
            out += b"\x02" + k + struct.pack("<i", len(s)) + s
        elif isinstance(val, dict):
            out += b"\x03" + k + bson_encode(val)
        else:
            raise TypeError("unsupported type %r" % type(val))
    return struct.pack("<i", len(out) + 5) + out + b"\x00"


def _cstring(buf, pos):
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode(errors="replace"), end + 1


def bson_decode(buf, pos=0, array=False):
    (size,) = struct.unpack_from("<i", buf, pos)
    end = pos + size - 1
    pos += 4
    res = {}
    while pos < end:
        t = buf[pos]
        pos += 1
        key, pos = _cstring(buf, pos)
        if t == 0x01:
            (v,) = struct.unpack_from("<d", buf, pos); pos += 8
        elif t == 0x02:
            (n,) = struct.unpack_from("<i", buf, pos)
            v = buf[pos + 4:pos + 4 + n - 1].decode(errors="replace"); pos += 4 + n
        elif t in (0x03, 0x04):
            (n,) = struct.unpack_from("<i", buf, pos)
            v = bson_decode(buf, pos, t == 0x04); pos += n
        elif t == 0x05:
            (n,) = struct.unpack_from("<i", buf, pos)
            v = "<binary %d bytes>" % n; pos += 5 + n
        elif t == 0x07:
            v = buf[pos:pos + 12].hex(); pos += 12
        elif t == 0x08:
            v = buf[pos] != 0; pos += 1
        elif t == 0x09:
            (v,) = struct.unpack_from("<q", buf, pos); v = {"$date": v}; pos += 8
        elif t in (0x0A, 0x06, 0xFF, 0x7F):
            v = None
        elif t == 0x10:
            (v,) = struct.unpack_from("<i", buf, pos); pos += 4
        elif t == 0x11:
            (i, ts) = struct.unpack_from("<II", buf, pos); v = {"$timestamp": [ts, i]}; pos += 8
        elif t == 0x12:
            (v,) = struct.unpack_from("<q", buf, pos); pos += 8
        elif t == 0x13:
            v = "<decimal128>"; pos += 16
        else:
            raise ValueError("unsupported BSON type 0x%02x" % t)
        res[key] = v
    if array:
        return [res[k] for k in sorted(res, key=int)]
    return res


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by server")
        data += chunk
    return data


def command(host, port, cmd, timeout=2.0, tls_ca=None):
    body = b"\x00\x00\x00\x00" + b"\x00" + bson_encode(cmd)
    header = struct.pack("<iiii", 16 + len(body), 1, 0, OP_MSG)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        s = raw
        if tls_ca:
            s = ssl.create_default_context(cafile=tls_ca).wrap_socket(raw, server_hostname=host)
        s.settimeout(timeout)
        s.sendall(header + body)
        (length, _req, _resp, opcode) = struct.unpack("<iiii", _recv_exact(s, 16))
        payload = _recv_exact(s, length - 16)
    if opcode != OP_MSG:
        raise ValueError("unexpected opcode %d" % opcode)
    if payload[4] != 0:
        raise ValueError("unexpected section kind %d" % payload[4])
    return bson_decode(payload, 5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=27017)
    ap.add_argument("--cmd", default="hello")
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--tls-ca", default=None)
    a = ap.parse_args()
    try:
        reply = command(a.host, a.port, {a.cmd: 1, "$db": "admin"}, a.timeout, a.tls_ca)
    except Exception as e:  # noqa: BLE001 - report any failure as "not ready"
        print("error: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(reply, default=str))
    return 0 if reply.get("ok") in (1, 1.0, True) else 1


if __name__ == "__main__":
    sys.exit(main())
