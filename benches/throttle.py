#!/usr/bin/env python3
"""A loopback TCP forwarder whose server-to-client direction is one shared link of RATE MB/s:
an upstream registry as far away as a real one, for benches/proxy.sh.

    throttle.py LISTEN_PORT TARGET_PORT RATE_MB_PER_S
"""
import socket
import sys
import threading
import time

listen_port, target_port, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) * 1e6
lock = threading.Lock()
next_free = time.monotonic()


def pace(n):
    """Waits until the link has carried n more bytes after everything already sent."""
    global next_free
    with lock:
        start = max(time.monotonic(), next_free)
        next_free = start + n / rate
        done = next_free
    delay = done - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def pipe(src, dst, paced):
    try:
        while True:
            data = src.recv(256 * 1024)
            if not data:
                break
            if paced:
                pace(len(data))
            dst.sendall(data)
    except OSError:
        pass
    for s in (dst, src):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target_port))
    # No Nagle delay of its own: without this, a small write (a response's body after its
    # headers) waited for the ACK of the one before, which a kept-alive receiver delays up to
    # 40 ms, on every small answer after a connection's first. Real upstreams (Go's net/http,
    # nginx) send with TCP_NODELAY, and so does rbuild serve.
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client, True), daemon=True).start()
