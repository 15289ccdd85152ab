#!/usr/bin/env python3
"""Sends the 9P request sequences the docs' pictures are drawn from.

usage: requests.py SOCKET SCENARIO
  flush-success   Twrite to synth's FLUSH (blocks until cancelled) + Tflush
  flush-ignored   Twrite of a 0 byte to FLUSH (completes) + Tflush
  tread           Tread of a local file (the docs' walk-through)
  concurrent      three Treads and a Tgetattr in flight at once
"""
import socket
import struct
import sys


def frame(mid, tag, body):
    return struct.pack("<IBH", 7 + len(body), mid, tag) + body


def s(b):
    return struct.pack("<H", len(b)) + b


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)

    def send(self, mid, tag, body):
        self.sock.sendall(frame(mid, tag, body))

    def recv(self):
        head = b""
        while len(head) < 7:
            head += self.sock.recv(7 - len(head))
        size, mid, tag = struct.unpack("<IBH", head)
        body = b""
        while len(body) < size - 7:
            body += self.sock.recv(size - 7 - len(body))
        return mid, tag, body

    def rpc(self, mid, body, tag=0):
        self.send(mid, tag, body)
        rid, rtag, rbody = self.recv()
        if rid == 7:
            raise SystemExit("request %d: Rlerror %d" % (mid, struct.unpack("<I", rbody)[0]))
        return rbody

    def setup(self):
        self.rpc(100, struct.pack("<I", 32768) + s(b"9P2000.L"), tag=0xFFFF)
        self.rpc(104, struct.pack("<II", 0, 0xFFFFFFFF) + s(b"") + s(b"") + struct.pack("<I", 0))

    def walk(self, newfid, name):
        self.rpc(110, struct.pack("<IIH", 0, newfid, 1) + s(name))


def main():
    path, scenario = sys.argv[1], sys.argv[2]
    c = Client(path)
    c.setup()
    if scenario in ("flush-success", "flush-ignored"):
        c.walk(1, b"FLUSH")
        c.rpc(12, struct.pack("<II", 1, 1))
        byte = b"\x01" if scenario == "flush-success" else b"\x00"
        c.send(118, 0, struct.pack("<IQI", 1, 0, 1) + byte)
        c.send(108, 1, struct.pack("<H", 0))
        replies = [c.recv()]
        if scenario == "flush-ignored":
            replies.append(c.recv())
        print([(mid, tag) for mid, tag, _ in replies])
    elif scenario == "tread":
        c.walk(1, b"hello.txt")
        c.rpc(12, struct.pack("<II", 1, 0))
        data = c.rpc(116, struct.pack("<IQI", 1, 0, 4096))
        print(data[4:])
    elif scenario == "concurrent":
        for fid in (1, 2, 3):
            c.walk(fid, b"hello.txt")
            c.rpc(12, struct.pack("<II", fid, 0))
        for tag, fid in ((10, 1), (11, 2), (12, 3)):
            c.send(116, tag, struct.pack("<IQI", fid, 0, 4096))
        c.send(24, 13, struct.pack("<IQ", 0, 0x7FF))
        print(sorted(c.recv()[1] for _ in range(4)))
    else:
        raise SystemExit("unknown scenario " + scenario)


if __name__ == "__main__":
    main()
