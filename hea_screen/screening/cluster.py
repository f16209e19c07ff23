"""Dask for a screen's partitions: a local cluster or an existing scheduler, quiet unless
asked, and the loop that runs the partitions on it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tqdm import tqdm

from hea_screen.errors import UserInputError
from hea_screen.screening.model_ref import ModelRef
from hea_screen.screening.partition import (
    Stage,
    screen_partition,
)
from hea_screen.screening.ranking import Partial, Ranking, Reference
from hea_screen.screening.space import Candidates

if TYPE_CHECKING:
    from distributed import Client, Future

#: Dask's nannies give each worker ``MALLOC_TRIM_THRESHOLD_=65536``. Setting it also turns
#: off glibc's adaptive mmap threshold, so every array of 128 KiB or more that a batch makes
#: (features, tokens, ONNX Runtime tensors) is a fresh mmap, page-faulted in and unmapped
#: again: two local workers spent 30 s of a 45 s screen in the kernel and ran at 113-138
#: candidates/s, against 4-6 s and 205-220/s without it (6,000 candidates, 2026-11-25).
#: Local clusters are started without it; see docs/screening.md for external clusters.
NANNY_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def quiet_distributed() -> None:
    """Importing distributed sets its logger to INFO: keep that chatter for when this
    package's own logger shows INFO (``hea-screen --verbose``)."""
    verbose = logging.getLogger("hea_screen").isEnabledFor(logging.INFO)
    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.WARNING)


@contextmanager
def executor(
    n_partitions: int, workers: int, scheduler: str | None, processes: bool = True
) -> Iterator[tuple[Client | None, int | None]]:
    """Yield ``(client or None, ONNX Runtime threads per task)`` for the run (see module doc)."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        with connected(address) as client:
            yield client, 1
        return
    if workers <= 1 or n_partitions <= 1:
        yield None, None
        return
    import dask
    from distributed import Client, LocalCluster

    quiet_distributed()
    n = min(workers, n_partitions)
    threads = max(1, (os.cpu_count() or 1) // n)
    # No dashboard; the scheduler's HTTP server (health, metrics) takes a free local port,
    # since its default 8787 may be taken ("Port 8787 is already in use" on stderr).
    with (
        dask.config.set({NANNY_TRIM: None}),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=processes,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, threads


#: Seconds to wait for a Dask scheduler to answer (connection, handshake, first reply).
SCHEDULER_TIMEOUT_S = 10.0


def _unreachable(address: str, exc: BaseException) -> UserInputError:
    if isinstance(exc, TimeoutError):
        reason = "no answer"
    elif isinstance(exc, MemoryError):
        reason = "the peer does not speak Dask's protocol"
    else:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return UserInputError(
        f"cannot reach the Dask scheduler at {address!r} within {SCHEDULER_TIMEOUT_S:g} s "
        f"({reason}): give the address of a running scheduler, e.g. tcp://10.0.0.5:8786"
    )


async def _probe(address: str) -> None:
    """Connect and complete distributed's handshake, within the timeout: ``Client`` alone
    waits for the handshake without one (a peer that accepts and never answers hangs it)."""
    from distributed.comm import connect

    comm = await asyncio.wait_for(
        connect(address, timeout=SCHEDULER_TIMEOUT_S), SCHEDULER_TIMEOUT_S
    )
    await comm.close()


@contextmanager
def connected(address: str) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or :class:`UserInputError` within
    :data:`SCHEDULER_TIMEOUT_S` when nothing there answers as a scheduler (a silent peer,
    an HTTP server, a bad address)."""
    import dask
    from distributed import Client

    quiet_distributed()
    timeout = f"{SCHEDULER_TIMEOUT_S}s"
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": timeout}):
            asyncio.run(_probe(address))
            client = Client(address, timeout=timeout)
    except Exception as exc:  # any failure to connect (garbage from a peer: MemoryError)
        raise _unreachable(address, exc) from None
    with client:
        yield client


def run_partitions(
    candidates: Candidates,
    parts: Sequence[tuple[int, int, int]],
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    on_result: Callable[[int, Partial], None],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    processes: bool = True,
    progress: bool = False,
    stage: Stage | None = None,
) -> None:
    """Run ``(id, lo, hi)`` partitions on Dask, calling ``on_result(id, partial)`` as each ends
    (``stage``: see :func:`screen_partition`).

    At most two partitions per worker are queued at a time, so neither the scheduler nor
    the driver ever holds more than a few partials.
    """
    bar = tqdm(
        total=sum(hi - lo for _, lo, hi in parts),
        unit="cand",
        unit_scale=True,
        disable=not progress,
        file=sys.stderr,
        desc="screening",
    )
    with bar, executor(len(parts), workers, scheduler, processes) as (client, threads):
        ref = ModelRef(
            model.path,
            model.device,
            model.precision,
            model.batch_size,
            model.threads if model.threads is not None else threads,
            model.sha256,
        )
        if client is None:  # in this process, without Dask (whose compute imports
            # distributed: 0.4 s of a 3 s screen)
            for pid, lo, hi in parts:
                partial = screen_partition(candidates, lo, hi, ref, ranking, reference, stage)
                on_result(pid, partial)
                bar.update(hi - lo)
            return
        _run_on_client(client, candidates, parts, ref, ranking, reference, on_result, bar, stage)


def _run_on_client(
    client: Client,
    candidates: Candidates,
    parts: Sequence[tuple[int, int, int]],
    ref: ModelRef,
    ranking: Ranking,
    reference: Reference,
    on_result: Callable[[int, Partial], None],
    bar: tqdm,
    stage: Stage | None = None,
) -> None:
    """Keep two partitions per worker in flight; hand each partial to ``on_result``."""
    from distributed import wait

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    [shared] = client.scatter([candidates], broadcast=True)
    queue = list(reversed(parts))
    running: dict[Future, tuple[int, int, int]] = {}

    def submit() -> None:
        pid, lo, hi = queue.pop()
        fut = client.submit(
            screen_partition, shared, lo, hi, ref, ranking, reference, stage, pure=False
        )
        running[fut] = (pid, lo, hi)

    try:
        while queue and len(running) < 2 * n_workers:
            submit()
        while running:
            done, _ = wait(list(running), return_when="FIRST_COMPLETED")
            for fut in done:
                pid, lo, hi = running.pop(fut)
                partial = fut.result()
                fut.release()
                on_result(pid, partial)
                bar.update(hi - lo)
                if queue:
                    submit()
    finally:
        if running:
            client.cancel(list(running))
