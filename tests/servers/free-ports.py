#!/usr/bin/env python3
"""Print N distinct TCP ports that are free on 127.0.0.1, one per line.

All N sockets are bound (port 0: the kernel picks) before any is closed, so the
ports are distinct.  A port could in theory be taken by someone else between
this check and the server's bind; the start scripts detect that (they check the
server really listens and that it is theirs).

usage: free-ports.py [N]
"""
import socket
import sys


def free_ports(n=1, host="127.0.0.1"):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


if __name__ == "__main__":
    for p in free_ports(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        print(p)
