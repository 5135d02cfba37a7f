#!/usr/bin/env python3
"""tls_relay.py GATEWAY_PORT CA_FILE COUNT

A client of the gateway's TLS listener written with Python's ssl module (the
test's second TLS implementation nobody here wrote). It listens on a plain TCP
port of 127.0.0.1, prints that port first, then for each of COUNT connections
accepted there opens a TLS 1.3 connection to 127.0.0.1:GATEWAY_PORT (ALPN
"chat", the certificate verified against CA_FILE as "localhost") and relays
bytes both ways until either side closes. From the second connection on it
offers the session (ticket) the previous one got. One line per connection:

    conn N reused=0|1 version=TLSv1.3 alpn=chat cipher=NAME

then "closed N by=client|server close_notify=0|1" when it ends.
"""
import select
import socket
import ssl
import sys


def relay(plain, tls, n):
    by, notify = "client", 0
    tls.setblocking(False)
    plain.setblocking(False)
    while True:
        if tls.pending() == 0:
            r, _, _ = select.select([plain, tls], [], [], 30)
            if not r:
                by = "timeout"
                break
        else:
            r = [tls]
        if tls in r:
            try:
                data = tls.recv(65536)
            except ssl.SSLWantReadError:
                data = None
            except (ssl.SSLError, OSError):
                data = b""
            if data == b"":
                by = "server"
                break
            if data:
                plain.setblocking(True)
                plain.sendall(data)
                plain.setblocking(False)
        if plain in r:
            try:
                data = plain.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                break
            if data:
                tls.setblocking(True)
                tls.sendall(data)
                tls.setblocking(False)
    session = tls.session  # (gone once unwrapped)
    if by == "client":
        # our close_notify; the gateway answers with its own
        tls.setblocking(True)
        tls.settimeout(5)
        try:
            tls.unwrap()
            notify = 1
        except (ssl.SSLError, OSError):
            pass
    else:
        notify = 1 if by == "server" else 0
    print(f"closed {n} by={by} close_notify={notify}", flush=True)
    try:
        plain.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    plain.close()
    return session


def main():
    if len(sys.argv) != 4 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2
    port, ca, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["chat"])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(60)
    print(ls.getsockname()[1], flush=True)
    session = None
    for n in range(count):
        plain, _ = ls.accept()
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        print(f"conn {n} reused={int(tls.session_reused)} version={tls.version()} "
              f"alpn={tls.selected_alpn_protocol()} cipher={tls.cipher()[0]}", flush=True)
        session = relay(plain, tls, n)
        tls.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
