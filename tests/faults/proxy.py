"""A loopback TCP proxy the test controls: forward, then cut (refuse or blackhole), then restore.

`TcpProxy(host, port)` listens on 127.0.0.1 on a free port and forwards every connection to
`host:port`, one thread per connection. `cut()` closes every live connection at once (the peers see
their connection reset) and handles new ones by `mode`:

- `refuse`: accepted and reset at once (RST), like a server that is down: clients fail in milliseconds;
- `blackhole`: accepted and never answered, like a hung server or a host that drops packets after the
  handshake: only the clients' own timeouts end their wait.

`cut(DROP)` instead keeps every live connection open and drops what flows on it, either way (new
connections are held as by a blackhole): a warm pool's connections to a database gone silent, where
no reset ever arrives.

`restore()` forwards again (held blackholed connections are reset, and so are dropped live ones, whose
streams lost bytes). `close()` stops everything and
joins every thread; the proxy is a context manager.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass, field

FORWARD, REFUSE, BLACKHOLE, DROP = "forward", "refuse", "blackhole", "drop"
POLL_SECONDS = 0.1


def _reset(sock: socket.socket) -> None:
    """Close `sock` with an RST rather than a FIN (SO_LINGER 0): the peer's next read fails at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket | None = None
    dead: threading.Event = field(default_factory=threading.Event)

    def kill(self) -> None:
        """Wake the link's thread (shutdown is safe across threads; close is left to the owner)."""
        self.dead.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class TcpProxy:
    def __init__(self, host: str, port: int, connect_timeout: float = 3.0) -> None:
        self.target = (host, port)
        self.connect_timeout = connect_timeout
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._mode = FORWARD
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._held: list[socket.socket] = []  # blackholed connections, never answered
        self._threads: set[threading.Thread] = set()
        self._stopped = threading.Event()
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._acceptor.start()

    # --- control --------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def cut(self, mode: str = REFUSE) -> None:
        """Close every live connection (DROP: silence it); from now on refuse (RST) or hold new ones."""
        if mode not in (REFUSE, BLACKHOLE, DROP):
            raise ValueError(mode)
        with self._lock:
            self._mode = mode
            if mode == DROP:
                return  # the links' threads see the mode and drop what they read
            links, threads = list(self._links), list(self._threads)
        for link in links:
            link.kill()
        for thread in threads:
            thread.join(timeout=5)

    def restore(self) -> None:
        """Forward new connections again; connections held by a blackhole or dropped are reset."""
        with self._lock:
            dropped = self._mode == DROP
            self._mode = FORWARD
            held, self._held = self._held, []
            links, threads = (list(self._links), list(self._threads)) if dropped else ([], [])
        for sock in held:
            _reset(sock)
        for link in links:
            link.kill()
        for thread in threads:
            thread.join(timeout=5)

    def close(self) -> None:
        self._stopped.set()
        self._acceptor.join(timeout=5)
        self.cut()
        with self._lock:
            held, self._held = self._held, []
            threads = list(self._threads)
        for sock in held:
            _reset(sock)
        for thread in threads:
            thread.join(timeout=5)
        self._server.close()
        alive = [t.name for t in (self._acceptor, *threads) if t.is_alive()]
        assert not alive, f"proxy threads still running: {alive}"

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the work -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            ready, _, _ = select.select([self._server], [], [], POLL_SECONDS)
            if not ready:
                continue
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            with self._lock:
                self.accepted += 1
                mode = self._mode
                if mode in (BLACKHOLE, DROP):
                    self._held.append(client)
                    continue
                if mode == FORWARD:
                    link = _Link(client)
                    thread = threading.Thread(target=self._pipe, args=(link,), daemon=True)
                    thread.name = f"proxy-{self.port}-link"
                    self._links.add(link)
                    self._threads.add(thread)
                    thread.start()  # under the lock: cut() never joins a thread not yet started
            if mode == REFUSE:
                _reset(client)

    def _pipe(self, link: _Link) -> None:
        try:
            try:
                link.upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
            except OSError:
                return
            for sock in (link.client, link.upstream):
                sock.settimeout(5)
            peers = {link.client: link.upstream, link.upstream: link.client}
            while not link.dead.is_set():
                readable, _, _ = select.select(list(peers), [], [], POLL_SECONDS)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self._mode != DROP:
                        peers[sock].sendall(data)
        except OSError:
            return
        finally:
            # A cut connection ends with an RST, like a connection whose server went away.
            _reset(link.client)
            if link.upstream is not None:
                link.upstream.close()
            with self._lock:
                self._links.discard(link)
                self._threads.discard(threading.current_thread())
