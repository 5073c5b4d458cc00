"""WeasyPrint in a child process that is replaced every few dozen documents.

WeasyPrint keeps about 0.25 MiB per document it renders for as long as its process lives
(a bare `write_pdf` loop: 60 MiB after 1 render, 100 after 100, 159 after 400; a worker
grew 172 MiB in a 10-minute soak). So the HTML -> PDF step, and only it, runs in a child
process that exits after `documents_per_child` documents; the next one starts fresh.

- One child per process that renders, made on its first render and kept between renders:
  starting one costs about a second (an interpreter and WeasyPrint's import), paid in the
  background right after the previous child's last document.
- The same in every process: the worker (which renders nearly every document), an API
  process (a download of a document the worker has not rendered yet) and the CLI. In the
  API too, so that no process grows with the documents it renders (an API whose worker is
  down renders every download) and the API process never imports WeasyPrint (~40 MiB).
- A child idle for `idle_seconds` (10 minutes) exits: an API process that rendered one
  download does not keep a child of about 100 MiB for the rest of its life. The next
  render starts a new one (the second it costs is rarely paid: the worker renders nearly
  every document) and reaps the old one, a zombie meanwhile (no memory, a line in `ps`).
- Spawned, never forked: the parent holds database connections and threads. Spawning
  imports the parent's `__main__` module in the child, so a script that renders keeps its
  top level under `if __name__ == "__main__":` (meterbill's commands do).
- A `multiprocessing` process and a pipe, not a ProcessPoolExecutor: the parent needs to
  know whether a child that died had taken the document, and to kill one whose render runs
  too long; the executor keeps its processes private. The child says when it is ready and
  when it has taken a document, then answers with the PDF or WeasyPrint's error.
- The child ignores SIGINT and SIGTERM (Ctrl-C and a supervisor signal the whole process
  group; the parent finishes the document in hand, then stops the child: `stop_renderer`,
  also run at interpreter exit) and exits by itself when its parent is gone (killed with
  SIGKILL): at once when idle (its pipe closes), within a second when rendering.
- A child gone before it took the document (killed while idle: the out-of-memory killer,
  an operator) is replaced and the new child renders the document: no error, the document
  did nothing to it. A child that dies after taking it, during the render, raises
  PdfRenderingFailed (the document may be what kills it: it is not tried again); the next
  render makes a new child.
- A render that takes longer than `timeout_seconds` (WeasyPrint hung, or a document far
  too long) raises PdfRenderingFailed too: its child is killed, which frees the lock, and
  the next render makes a new child. Starting a child is not counted (bounded apart).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import threading
import time
import traceback
from multiprocessing import get_context
from multiprocessing.connection import Connection
from typing import cast

from meterbill.errors import PdfRenderingFailed

DOCUMENTS_PER_CHILD = 50
RENDER_TIMEOUT_SECONDS = 60
# A child that has had no document for this long exits; the next render starts a new one.
IDLE_SECONDS = 600.0
# A new child imports WeasyPrint before it says it is ready: about a second, a few on a busy
# machine. One that is not ready after this long is not coming (it is killed).
_START_SECONDS = 60.0
# How long a stopped child has to exit before it is killed.
_STOP_SECONDS = 5.0
_READY = "ready"
_TAKEN = "taken"

# One render at a time, the lock held until its PDF is back: the child renders one document
# at a time, and the messages of two renders must not interleave on its pipe.
_lock = threading.Lock()
_child: _Child | None = None


def html_to_pdf(
    html: str,
    documents_per_child: int = DOCUMENTS_PER_CHILD,
    timeout_seconds: float = RENDER_TIMEOUT_SECONDS,
    idle_seconds: float = IDLE_SECONDS,
) -> bytes:
    """The HTML page as a PDF/A-3b, rendered by WeasyPrint in the render child (a new one
    when it was found dead, or had exited after `idle_seconds` without a document). Raises
    PdfRenderingFailed when the child died during the render or did not finish it within
    `timeout_seconds` (then it is killed; the next call makes a new one); WeasyPrint's own
    errors come back as they were raised."""
    global _child
    with _lock:
        try:
            child = _child_taking(html, documents_per_child, idle_seconds, timeout_seconds)
            pdf, error = child.result(timeout_seconds)
        except BaseException as exc:
            if _child is not None:
                _child.kill()  # dead, hung, or out of step with its parent: never used again
                _child = None
            if isinstance(exc, (EOFError, OSError)):  # TimeoutError is an OSError
                raise PdfRenderingFailed() from exc
            raise
        if child.documents == documents_per_child:
            # Its last document: the next child starts now, while the parent goes on.
            _child = _Child(documents_per_child, idle_seconds)
            child.stop()
    if error is not None:
        raise error
    return cast(bytes, pdf)


def stop_renderer() -> None:
    """Stop the render child, if any, and wait for it to exit (a worker's last step; also
    run at interpreter exit)."""
    global _child
    with _lock:
        child, _child = _child, None
        if child is not None:
            child.stop()


atexit.register(stop_renderer)


def _child_taking(
    html: str, documents_per_child: int, idle_seconds: float, timeout: float
) -> _Child:
    """The render child, having taken the document (the caller holds `_lock`). One gone
    before it took it is replaced, once: a new child that cannot take a document is broken
    (PdfRenderingFailed)."""
    global _child
    for _attempt in range(2):
        child = _child_for(documents_per_child, idle_seconds)
        if child.take(html, timeout):
            return child
        _child = None
        child.kill()  # reaps it
    raise PdfRenderingFailed()


def _child_for(documents_per_child: int, idle_seconds: float) -> _Child:
    """The process's render child, made on first use (the caller holds `_lock`)."""
    global _child
    if _child is not None and _child.terms == (documents_per_child, idle_seconds):
        return _child
    if _child is not None:
        _child.stop()
    _child = _Child(documents_per_child, idle_seconds)
    return _child


class _Child:
    """A render child, seen from its parent: the process and the parent's end of its pipe."""

    def __init__(self, documents_per_child: int, idle_seconds: float) -> None:
        context = get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child_end, os.getpid(), idle_seconds), name="meterbill-pdf"
        )
        self.process.start()
        child_end.close()  # the child's end lives in the child: its death closes the pipe
        self.terms = (documents_per_child, idle_seconds)
        self.documents = 0
        self.ready = False

    def take(self, html: str, timeout: float) -> bool:
        """Hand the document to the child: False when it is gone before taking it (its pipe
        closed). TimeoutError when a new child does not start, or does not take it."""
        try:
            if not self.ready:
                self._receive(_START_SECONDS)
                self.ready = True
            self.connection.send(html)
            self._receive(timeout)  # _TAKEN
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return False
        self.documents += 1
        return True

    def result(self, timeout: float) -> tuple[bytes | None, BaseException | None]:
        """The child's answer to the document it took: its PDF or WeasyPrint's error.
        EOFError or OSError when the child died meanwhile, TimeoutError when it has not
        answered within `timeout` seconds."""
        return cast(tuple[bytes | None, BaseException | None], self._receive(timeout))

    def stop(self) -> None:
        """Close the pipe, which the child takes as its cue to exit; kill it if it lingers."""
        self.connection.close()
        self.process.join(_STOP_SECONDS)
        if self.process.is_alive():
            self.kill()

    def kill(self) -> None:
        self.connection.close()
        self.process.kill()  # SIGKILL: the child ignores SIGTERM
        self.process.join()

    def _receive(self, timeout: float) -> object:
        if not self.connection.poll(timeout):
            raise TimeoutError
        return self.connection.recv()


def _serve(connection: Connection, parent: int, idle_seconds: float) -> None:
    """The child's life: documents one at a time, until its parent closes the pipe or none
    comes for `idle_seconds` (a document sent meanwhile is not taken: the parent gives it
    to a new child)."""
    _start_child(parent)
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):
        connection.send(_READY)
        while connection.poll(idle_seconds):
            html = connection.recv()
            connection.send(_TAKEN)
            connection.send(_rendered(html))


def _start_child(parent: int) -> None:
    """In the child, before its first document: signals, the orphan check, the import."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    # Paid now, while the parent does something else; when it fails, the first render
    # raises the ImportError again, to the parent.
    with contextlib.suppress(ImportError):
        import weasyprint  # noqa: F401


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _rendered(html: str) -> tuple[bytes | None, BaseException | None]:
    """The document's PDF, or the error that WeasyPrint raised with the child's traceback
    as a note (one the pipe cannot carry becomes a RuntimeError that names it)."""
    try:
        return _write_pdf(html), None
    except Exception as raised:
        trace = "".join(traceback.format_exception(raised))
        error = raised if _travels(raised) else RuntimeError(f"{type(raised).__name__}: {raised}")
        error.add_note(trace)
        return None, error


def _travels(error: Exception) -> bool:
    """Whether the error survives the pipe (pickled in the child, unpickled in the parent)."""
    try:
        pickle.loads(pickle.dumps(error))  # noqa: S301 (what it just pickled itself)
    except Exception:
        return False
    return True


def _write_pdf(html: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=html).write_pdf(pdf_variant="pdf/a-3b")  # type: ignore[no-any-return]
