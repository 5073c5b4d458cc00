"""WeasyPrint in a child process that is replaced every few dozen documents.

WeasyPrint keeps about 0.25 MiB per document it renders for as long as its process lives
(a bare `write_pdf` loop: 60 MiB after 1 render, 100 after 100, 159 after 400; a worker
grew 172 MiB in a 10-minute soak). So the HTML -> PDF step, and only it, runs in a child
process that exits after `documents_per_child` documents; the next one starts fresh.

- One child per process that renders, made on its first render and kept between renders:
  starting one costs about a second (an interpreter and WeasyPrint's import), paid in the
  background right after the previous child exits.
- The same in every process: the worker (which renders nearly every document), an API
  process (a download of a document the worker has not rendered yet) and the CLI. In the
  API too, so that no process grows with the documents it renders (an API whose worker is
  down renders every download) and the API process never imports WeasyPrint (~40 MiB);
  the price is an idle child there once it has rendered, stopped at exit.
- Spawned, never forked: the parent holds database connections and threads. Spawning
  imports the parent's `__main__` module in the child, so a script that renders keeps its
  top level under `if __name__ == "__main__":` (meterbill's commands do).
- The child ignores SIGINT and SIGTERM (Ctrl-C and a supervisor signal the whole process
  group; the parent finishes the document in hand, then stops the child: `stop_renderer`,
  also run at interpreter exit) and exits by itself within a second when its parent is
  gone (killed with SIGKILL).
- A child that dies during a render raises PdfRenderingFailed; the next render makes a
  new child.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from meterbill.errors import PdfRenderingFailed

DOCUMENTS_PER_CHILD = 50

# One render at a time, the lock held until its PDF is back. The child renders one document
# at a time anyway; and Python 3.11's executor can stop replacing a recycled child when
# tasks queue up behind each other (cpython gh-115634, fixed in later releases: with
# max_tasks_per_child, a backlog leaves a stale "idle worker" token and the next task
# waits forever). Submitted one by one, every task is taken by a live child.
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_documents_per_child = 0


def html_to_pdf(html: str, documents_per_child: int = DOCUMENTS_PER_CHILD) -> bytes:
    """The HTML page as a PDF/A-3b, rendered by WeasyPrint in the render child. Raises
    PdfRenderingFailed when the child died during the render (the next call makes a new
    one); WeasyPrint's own errors come back as they were raised."""
    global _pool
    with _lock:
        pool = _pool_for(documents_per_child)
        try:
            return pool.submit(_write_pdf, html).result()
        except BrokenProcessPool as exc:
            _pool = None
            pool.shutdown(wait=True)
            raise PdfRenderingFailed() from exc


def stop_renderer() -> None:
    """Stop the render child, if any, and wait for it to exit (a worker's last step; also
    run at interpreter exit)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(stop_renderer)


def _pool_for(documents_per_child: int) -> ProcessPoolExecutor:
    """The process's render pool, made on first use (the caller holds `_lock`)."""
    global _pool, _pool_documents_per_child
    if _pool is not None and _pool_documents_per_child == documents_per_child:
        return _pool
    if _pool is not None:
        _pool.shutdown(wait=True)
    _pool = ProcessPoolExecutor(
        max_workers=1,
        max_tasks_per_child=documents_per_child,
        mp_context=get_context("spawn"),
        initializer=_start_child,
        initargs=(os.getpid(),),
    )
    _pool_documents_per_child = documents_per_child
    return _pool


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


def _write_pdf(html: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=html).write_pdf(pdf_variant="pdf/a-3b")  # type: ignore[no-any-return]
