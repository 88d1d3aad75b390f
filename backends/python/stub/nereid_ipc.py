"""How a stub talks to the Nereid server.

Two sockets, each carrying frames of a 4-byte little-endian length and that many bytes of JSON:
the control socket carries the server's requests that run on the stub's main thread (initialize,
execute, finalize) and their replies; the side socket carries everything else, in both
directions: requests with an "id" answered by messages with "reply", and one-way messages.

Tensors never travel on the sockets: each side writes the tensors it sends into shared memory
segments it creates (an Arena), the other side maps them (Peer), and messages carry only
(segment, offset, length). The writer reuses a block once the reader says it is done ("free").
"""

import itertools
import json
import mmap
import os
import queue
import socket
import struct
import threading

import _posixshmem

_HEADER = struct.Struct("<I")

# Blocks are powers of two from 256 bytes: offsets stay aligned for every dtype.
MIN_BLOCK = 256
MIN_SEGMENT = 1 << 20


class Connection:
    """One socket of frames; sends may come from any thread."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.rfile = self.sock.makefile("rb")
        self.lock = threading.Lock()

    def send(self, message):
        data = json.dumps(message, separators=(",", ":")).encode()
        with self.lock:
            self.sock.sendall(_HEADER.pack(len(data)) + data)

    def recv(self):
        head = self.rfile.read(4)
        if len(head) < 4:
            raise EOFError("the server closed the connection")
        (size,) = _HEADER.unpack(head)
        data = self.rfile.read(size)
        if len(data) < size:
            raise EOFError("the server closed the connection")
        return json.loads(data)


class SideChannel:
    """The side socket. A reader thread routes replies to their callers and hands the server's
    requests to `serve(message)`, whose non-None result is sent back as the reply. When the
    server goes away the stub exits at once: a stub never outlives its server."""

    def __init__(self, connection, serve):
        self.connection = connection
        self.serve = serve
        self.ids = itertools.count(1)
        self.waiting = {}
        self.frees = []
        self.frees_lock = threading.Lock()

    def start(self):
        threading.Thread(target=self._read, name="nereid-side", daemon=True).start()

    def _read(self):
        try:
            while True:
                message = self.connection.recv()
                if "reply" in message:
                    replies = self.waiting.get(message["reply"])
                    if replies is not None:
                        replies.put(message)
                    continue
                reply = self.serve(message)
                if reply is not None:
                    reply["reply"] = message["id"]
                    self.send(reply)
        except BaseException:  # noqa: BLE001 - EOF, a broken socket or a failure here: all fatal
            os._exit(0)

    def send(self, message):
        """A one-way message; blocks freed since the last message ride along."""
        with self.frees_lock:
            if self.frees:
                message["free"], self.frees = self.frees, []
        self.connection.send(message)

    def free(self, segment, offset, length):
        """The server's block is no longer used here; told with the next message, or now when
        many have gathered."""
        with self.frees_lock:
            self.frees.append([segment, offset, length])
            flush = len(self.frees) >= 32
        if flush:
            self.send({"op": "free"})

    def call(self, message):
        """Sends a request and waits for its one reply."""
        replies = self.open(message)
        try:
            return replies.get()
        finally:
            self.close(message["id"])

    def open(self, message):
        """Sends a request whose replies arrive on the returned queue (close() it when done)."""
        message["id"] = next(self.ids)
        replies = queue.Queue()
        self.waiting[message["id"]] = replies
        self.send(message)
        return replies

    def close(self, request_id):
        self.waiting.pop(request_id, None)


def block_size(length):
    size = MIN_BLOCK
    while size < length:
        size <<= 1
    return size


def _map(name, size, create):
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = _posixshmem.shm_open(name, flags, 0o600)
    try:
        if create:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


class Arena:
    """Shared memory this stub writes tensors into. `announce(segment_id, name, size)` has the
    server map a new segment before any message refers to it; then the name is removed, so
    nothing is left behind whatever happens to either process."""

    def __init__(self, announce):
        self.announce = announce
        self.segments = []
        self.top = 0
        self.free_blocks = {}
        self.lock = threading.Lock()
        self.grow_lock = threading.Lock()
        self.names = ("/nereid.%d.%d" % (os.getpid(), n) for n in itertools.count())

    def _take(self, size):
        blocks = self.free_blocks.get(size)
        if blocks:
            return blocks.pop()
        if self.segments and self.top + size <= len(self.segments[-1]):
            offset, self.top = self.top, self.top + size
            return len(self.segments) - 1, offset
        return None

    def alloc(self, length):
        """A block of at least `length` bytes: (segment id, offset)."""
        size = block_size(length)
        with self.lock:
            block = self._take(size)
        if block is not None:
            return block
        # Growing asks the server, whose reader may meanwhile need `lock` for a free: never
        # hold it across the call.
        with self.grow_lock:
            with self.lock:
                block = self._take(size)
            if block is not None:
                return block
            last = len(self.segments[-1]) if self.segments else 0
            segment_size = max(size, 2 * last, MIN_SEGMENT)
            while True:
                name = next(self.names)
                try:
                    memory = _map(name, segment_size, create=True)
                    break
                except FileExistsError:
                    continue
            try:
                self.announce(len(self.segments), name, segment_size)
            finally:
                _posixshmem.shm_unlink(name)
            with self.lock:
                self.segments.append(memory)
                self.top = 0
                return self._take(size)

    def free(self, segment, offset, length):
        with self.lock:
            self.free_blocks.setdefault(block_size(length), []).append((segment, offset))

    def write(self, data):
        """Copies bytes-like `data` into a new block: (segment id, offset)."""
        length = len(data)
        segment, offset = self.alloc(length)
        self.segments[segment][offset:offset + length] = data
        return segment, offset


class Peer:
    """The server's segments, mapped here as the server announces them."""

    def __init__(self):
        self.segments = {}

    def map(self, segment, name, size):
        self.segments[segment] = _map(name, size, create=False)

    def buffer(self, segment, offset, length):
        return memoryview(self.segments[segment])[offset:offset + length]
