"""A pool member of the seed lab: answers TCP 8080 (one HTTP/1.0 response naming the server,
so `wget`, `curl` and `nc` all work) and UDP 5353 (echoes the datagram, prefixed with the
server's name). Usage: python3 server.py NAME"""

import socket
import sys
import threading

NAME = sys.argv[1] if len(sys.argv) > 1 else socket.gethostname()


def tcp():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 8080))
    srv.listen(512)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def answer(conn):
    with conn:
        conn.settimeout(5)
        try:
            conn.recv(4096)
            body = f"{NAME}\n".encode()
            conn.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        except OSError:
            pass


def udp():
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", 5353))
    while True:
        data, peer = srv.recvfrom(65535)
        srv.sendto(NAME.encode() + b" " + data, peer)


threading.Thread(target=udp, daemon=True).start()
tcp()
