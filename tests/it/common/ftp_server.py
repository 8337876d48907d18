"""A real FTP server for upcache's tests: pyftpdlib on 127.0.0.1, ephemeral port.

    python3 ftp_server.py ROOT

Anonymous users see ROOT/public, the user `alice` (password `s3cret`) sees ROOT/private.
Prints `port N` once listening, then one `cmd VERB ARG` line per command received (the
argument of PASS is never printed), so tests can check what a client sent without sleeping:
a line `ping N` on standard input is answered `pong N` after every command line printed so far.

Files whose name contains:
  * `break-once`: the first transfer from offset 0 stops after half the file with a
    426 reply (a transfer that broke mid-body); later transfers, and resumed ones, are whole;
  * `hold`: after half the file the transfer prints `reached NAME` and waits until a line
    `release NAME` arrives on standard input.
Each connection runs in its own thread, so a held transfer holds only itself.
"""

import errno
import os
import sys
import threading

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.handlers.ftp.producers import FileProducer
from pyftpdlib.servers import ThreadedFTPServer

lock = threading.Lock()
broken = set()
releases = {}


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def release_event(name):
    with lock:
        return releases.setdefault(name, threading.Event())


def read_stdin():
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] == "release":
            release_event(words[1]).set()
        elif len(words) == 2 and words[0] == "ping":
            # Everything printed before this line was printed before the ping arrived.
            say(f"pong {words[1]}")


class Scripted:
    """A file wrapper that misbehaves after `limit` bytes. No fileno(): no sendfile."""

    def __init__(self, f, name, limit, mode):
        self.f, self.name, self.limit, self.mode = f, name, limit, mode
        self.sent = 0

    def read(self, n):
        if self.sent >= self.limit:
            if self.mode == "break":
                raise OSError(errno.EIO, "simulated failure")
            if self.mode == "hold":
                say(f"reached {self.name}")
                release_event(self.name).wait()
                self.mode = None
        if self.mode is not None:
            n = min(n, self.limit - self.sent)
        data = self.f.read(n)
        self.sent += len(data)
        return data

    def close(self):
        self.f.close()

    @property
    def closed(self):
        return self.f.closed


class Handler(FTPHandler):
    def pre_process_command(self, line, cmd, arg):
        shown = "******" if cmd == "PASS" else (arg or "")
        say(f"cmd {cmd} {shown}".rstrip())
        super().pre_process_command(line, cmd, arg)

    def ftp_RETR(self, file):
        base = os.path.basename(file)
        mode = None
        if "break-once" in base and self._restart_position == 0:
            with lock:
                if base not in broken:
                    broken.add(base)
                    mode = "break"
        elif "hold" in base:
            mode = "hold"
        if mode is None:
            return super().ftp_RETR(file)
        rest = self._restart_position
        self._restart_position = 0
        try:
            size = os.path.getsize(file)
            f = open(file, "rb")
        except OSError as err:
            self.respond(f"550 {err.strerror}.")
            return None
        f.seek(rest)
        wrapped = Scripted(f, base, max(0, size // 2 - rest), mode)
        self.push_dtp_data(FileProducer(wrapped, self._current_type), isproducer=True, file=wrapped, cmd="RETR")
        return file


def main():
    root = sys.argv[1]
    public, private = os.path.join(root, "public"), os.path.join(root, "private")
    os.makedirs(public, exist_ok=True)
    os.makedirs(private, exist_ok=True)
    auth = DummyAuthorizer()
    auth.add_anonymous(public)
    auth.add_user("alice", "s3cret", private, perm="elr")
    Handler.authorizer = auth
    Handler.banner = "upcache test ftp server"
    Handler.timeout = 60
    Handler.auth_failed_timeout = 0
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=read_stdin, daemon=True).start()
    say(f"port {server.address[1]}")
    server.serve_forever(handle_exit=False)


if __name__ == "__main__":
    main()
