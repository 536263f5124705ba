"""The node's storage shard: put, get, rm and listing for the operator, and the storage core's
repairs, audits and frees carried out.

The storage core (`protocols.storage.core`, in the `storage` actor) decides; this
service moves bytes. Every flow keeps memory bounded by a chunk, never by the artifact:
files are encoded and decoded chunk by chunk on disk (`kernels.artifact_codec`) and
shares stream over the bulk path (`mesh.share_transfer`).

- **put**: encode the file into n shares in a staging directory, publish the owner's
  signed artifact record, place the shares by rendezvous hashing over the live nodes
  that accept storage (a holder that refuses or fails is replaced by the next one in
  HRW order), push them, then publish the placement record. A put that cannot place at
  least k shares fails and tombstones its record, so nothing is left behind.
- **get**: fetch k shares (this node's own first), each checked as it arrives and
  resumable from what a cut transfer kept; decode; check the whole content against the
  artifact id; only then rename into place.
- **rm**: the owner's tombstone; every holder frees its shares when it sees it (the
  core's `FreeShares`), as for an expiry.
- **repair** (`RepairDue`, on the acting hub): the hub hands the work to the repair's
  first target (`RepairRequest`), which fetches k shares, rebuilds the missing ones byte
  for byte (same roots as the signed record), keeps its own and pushes the others to
  the targets the core chose; the hub then publishes a placement of the next generation.
  A worker that refuses or fails is replaced by the hub itself. Through the hub alone,
  a mesh could repair only as fast as one machine's link (the simulator showed 1000
  nodes falling behind); spread over the targets, it repairs in parallel. At most the
  core's `max_concurrent_repairs` at once, most at-risk first (the core orders them).
- **audit** (`AuditDue`): challenge a holder for one random block; the result goes back
  to the core, which counts a failure against the holder and stops counting that share
  as healthy.

Long operations run as jobs: the control socket starts one and the CLI polls its
progress for the progress bar (`job` op).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from actors.hardware_daemon import load_limits
from kernels.artifact_codec import (
    NotEnoughShares,
    ShareCorrupt,
    decode_shares,
    encode_file,
    regenerate_shares,
)
from mesh.node_parts import STORAGE, NodeError, NodeParts
from mesh.share_store import ShareStore
from mesh.share_transfer import (
    SHARES_PROTOCOL,
    STORAGE_PROTOCOL,
    TRANSFER_TIMEOUT,
    ShareInfo,
    ShareTransfer,
    TransferFailed,
)
from mesh.transport import TransportError
from protocols.common.identity import NodeId
from protocols.common.wire import WireError, encode
from protocols.storage.config import StorageConfig
from protocols.storage.events import ArtifactLost, AuditDue, AuditFailed, FreeShares, RepairDue
from protocols.storage.messages import RepairDone, RepairRequest, ShareAt, ShareReply, decode_storage
from protocols.storage.placement import adapt_parameters, choose_holders
from protocols.storage.records import (
    ARTIFACT,
    ArtifactBody,
    Holding,
    PlacementBody,
    StorageBody,
    artifact_body,
    make_artifact,
    make_placement,
    make_storage,
)

if TYPE_CHECKING:
    from trio._core._run import TaskStatus

log = logging.getLogger(__name__)

PUSH_PARALLEL = 3
"""Shares pushed at once by a put or a repair (each its own bulk stream)."""
JOBS_KEPT = 64
GET_ATTEMPTS = 3
"""Decodes a get tries, each time without the shares that failed their checks the time before."""
PARTIAL_GET_KEPT_S = 86_400.0
"""A cut get's partial shares are kept this long for the next get to resume from."""
SCRUB_BYTES_PER_S = 8 * 1024 * 1024
"""How fast, on average, a node re-reads its own shares to find corruption (`_scrub_forever`)."""
SCRUB_START_S = 5.0


class StorageError(NodeError):
    """A storage operation cannot be done; the message is one line for the user."""


@dataclass
class Job:
    """One long operation, as the CLI's progress bar sees it."""

    id: str
    kind: str
    total: int = 0
    done: int = 0
    phase: str = "starting"
    state: str = "running"
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "total": self.total,
            "done": self.done,
            "phase": self.phase,
            "state": self.state,
            "result": self.result,
            "error": self.error,
        }


class StorageService:
    def __init__(
        self,
        parts: NodeParts,
        data_path: Path,
        config: StorageConfig | None = None,
        *,
        acting_term: Callable[[], Awaitable[int | None]],
        current_hub: Callable[[], NodeId | None] = lambda: None,
        disk_full_percent: float = 90.0,
    ) -> None:
        self._parts = parts
        self._acting_term = acting_term
        self._current_hub = current_hub
        self._data_path = data_path
        self.config = config or StorageConfig()
        limits = load_limits(data_path)
        self.shares = ShareStore(
            data_path / "shares", limit_bytes=limits.disk_bytes, disk_full_percent=disk_full_percent
        )
        self._work = data_path / "storage-work"
        self._work.mkdir(parents=True, exist_ok=True)
        _clean_work(self._work, time.time())
        self.transfer = ShareTransfer(
            self.shares, self._request, self._send_bulk, self.share_info, self.changed
        )
        self.transfer.on_repair = self.serve_repair
        self._jobs: dict[str, Job] = {}
        self._job_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._dirty = trio.Event()
        self._published: tuple[Any, ...] | None = None
        self._repairs: set[bytes] = set()

    # ---- running ---------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish this node's storage record when it changes, and host the jobs and repairs."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.changed()
            nursery.start_soon(self._scrub_forever)
            task_status.started()
            while True:
                with trio.move_on_after(self.config.check_interval_s):
                    await self._dirty.wait()
                self._dirty = trio.Event()
                await self._parts.call_core(STORAGE, _set_wall_clock(time.time()))
                await self._publish_storage_record()
                await trio.sleep(0.5)  # coalesce bursts of changes into one record

    async def _scrub_forever(self) -> None:
        """Re-check this node's own shares, one at a time, at most `SCRUB_BYTES_PER_S` on average.

        Bit rot or a tampered file is found here even if nobody reads the share: the
        store drops it (counted as `corrupt_shares`), the storage record no longer
        lists it, and the hub's checker repairs the artifact. Audits catch holders that
        lie; the scrub catches disks that do.
        """
        while True:
            await trio.sleep(SCRUB_START_S)
            for artifact_id, index in self.shares.holdings():
                info = self.share_info(artifact_id, index)
                if info is None:
                    continue
                try:
                    await trio.to_thread.run_sync(self.shares.verify, artifact_id, index, info.root)
                except ShareCorrupt as exc:
                    log.warning(
                        "share %d of %s is corrupt on disk and was dropped: %s",
                        index,
                        artifact_id.hex()[:12],
                        exc,
                    )
                    self.changed()
                except FileNotFoundError:
                    self.changed()
                await trio.sleep(max(1.0, info.size / SCRUB_BYTES_PER_S))

    def changed(self) -> None:
        """This node's holdings or acceptance changed: re-publish its storage record soon."""
        self._dirty.set()

    async def _publish_storage_record(self) -> None:
        limits = load_limits(self._data_path)
        self.shares.limit_bytes = limits.disk_bytes
        holdings = self.shares.holdings()
        refusal = self.shares.refusal(0) if limits.disk_bytes != 0 else "this volunteer offers no disk"
        offered = limits.disk_bytes if limits.disk_bytes is not None else self.shares.capacity()
        used = self.shares.used_bytes()
        state = (offered, used // (1 << 20), refusal, tuple(holdings))
        await self._parts.call_core(STORAGE, lambda core, now: core.set_local_holdings(holdings))
        if state == self._published:
            return
        body = StorageBody(
            offered_bytes=offered,
            used_bytes=used,
            accepting=refusal is None,
            refusal=refusal or "",
            holdings=[Holding(artifact_id, index) for artifact_id, index in holdings],
        )
        parts = self._parts
        try:
            await parts.publish(lambda seq: make_storage(parts.identity, parts.store.mesh_id, seq, body))
        except NodeError as exc:
            log.debug("storage record not published: %s", exc)
            return
        self._published = state

    # ---- the core's events ------------------------------------------------------------------------------

    def on_event(self, event: object) -> None:
        """What the storage core asked for; each runs in the background."""
        nursery = self._nursery
        if nursery is None:
            return
        match event:
            case RepairDue():
                if event.artifact_id not in self._repairs:
                    self._repairs.add(event.artifact_id)
                    nursery.start_soon(self._repair, event)
            case AuditDue():
                nursery.start_soon(self._audit, event)
            case FreeShares(artifact_id=artifact_id, reason=reason):
                freed = self.shares.delete_artifact(artifact_id)
                log.info("freed %d bytes of artifact %s (%s)", freed, artifact_id.hex()[:12], reason)
                self.changed()
            case AuditFailed(holder=holder, artifact_id=artifact_id, index=index, failures=failures):
                log.warning(
                    "audit failed: %s does not show share %d of %s (%d failure(s))",
                    holder.hex()[:12],
                    index,
                    artifact_id.hex()[:12],
                    failures,
                )
            case ArtifactLost(artifact_id=artifact_id, healthy=healthy, k=k):
                log.error(
                    "artifact %s is lost: %d healthy share(s), %d needed", artifact_id.hex()[:12], healthy, k
                )

    # ---- transport glue ---------------------------------------------------------------------------------

    async def _request(self, peer: NodeId, payload: bytes, timeout: float) -> bytes:
        await self._dial(peer)
        return await self._parts.transport.request(peer, STORAGE_PROTOCOL, payload, timeout=timeout)

    async def _send_bulk(self, peer: NodeId, source: AsyncIterator[bytes], timeout: float) -> bytes:
        await self._dial(peer)
        return await self._parts.transport.send_bulk(peer, SHARES_PROTOCOL, source, timeout=timeout)

    async def _dial(self, peer: NodeId) -> None:
        parts = self._parts
        if peer in parts.transport.connected_peers():
            return
        addresses = parts.addresses_of(peer)
        if addresses:
            await parts.transport.connect(peer, addresses)

    # ---- what the records say ---------------------------------------------------------------------------

    def artifact_record(self, artifact_id: bytes) -> tuple[NodeId, ArtifactBody] | None:
        """The signed artifact record for `artifact_id` (the lowest author's, when several claim it)."""
        key = artifact_id.hex()
        found: list[tuple[NodeId, ArtifactBody]] = []
        for record in self._parts.store.of_kind(ARTIFACT):
            if record.key != key:
                continue
            try:
                found.append((record.author, artifact_body(record)))
            except WireError:
                continue
        return min(found, key=lambda pair: pair[0]) if found else None

    def share_info(self, artifact_id: bytes, index: int) -> ShareInfo | None:
        """A share's signed root and size, when this node knows a live (not deleted) artifact."""
        found = self.artifact_record(artifact_id)
        if found is None:
            return None
        body = found[1]
        if body.deleted or not 0 <= index < body.n or _expired(body):
            return None
        return ShareInfo(artifact_id, index, body.share_roots[index], body.share_sizes[index])

    # ---- jobs -------------------------------------------------------------------------------------------

    def start_job(self, kind: str, work: Callable[[Job], Awaitable[dict[str, Any]]]) -> Job:
        """Run `work` in the background as a job the CLI can follow."""
        if self._nursery is None:
            raise StorageError("the storage service is not running")
        job = Job(f"{kind}-{next(self._job_ids)}", kind)
        self._jobs[job.id] = job
        while len(self._jobs) > JOBS_KEPT:
            oldest = next(iter(self._jobs))
            if self._jobs[oldest].state == "running":
                break
            del self._jobs[oldest]

        async def run() -> None:
            try:
                job.result = await work(job)
                job.state = "done"
                job.phase = "done"
            except (StorageError, NodeError) as exc:
                job.state, job.error = "failed", str(exc)
            except Exception as exc:  # a bug: logged with its traceback, one line for the user
                log.exception("storage job %s failed", job.id)
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"

        self._nursery.start_soon(run)
        return job

    def job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise StorageError(f"no job {job_id!r} on this node (it may have restarted)")
        return job

    # ---- put --------------------------------------------------------------------------------------------

    async def put(
        self, job: Job, source: Path, k: int | None, n: int | None, ttl_s: float | None
    ) -> dict[str, Any]:
        if not source.is_file():
            raise StorageError(f"{source} is not a readable file")
        k, n = await self._parameters(k or self.config.k, n or self.config.n)
        job.total = source.stat().st_size
        job.phase = "encoding"
        staging = self._work / f"put-{job.id}"
        staging.mkdir()
        try:
            layout = await trio.to_thread.run_sync(
                lambda: encode_file(source, staging, k, n, progress=lambda done: setattr(job, "done", done))
            )
            return await self._place_new(job, source.name, layout, staging, ttl_s)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def _parameters(self, k: int, n: int) -> tuple[int, int]:
        nodes = await self._parts.call_core(STORAGE, lambda core, now: len(core.storage_nodes()))
        if nodes < 1:
            raise StorageError("no node accepts storage right now (see `ileices status`: storage)")
        adapted: tuple[int, int] = adapt_parameters(k, n, nodes)
        return adapted

    async def _place_new(
        self, job: Job, name: str, layout: Any, staging: Path, ttl_s: float | None
    ) -> dict[str, Any]:
        parts = self._parts
        now = time.time()
        ttl = self.config.default_ttl_s if ttl_s is None else ttl_s
        body = ArtifactBody(
            name=name[:255],
            size=layout.size,
            chunk_bytes=layout.chunk_bytes,
            chunk_count=layout.chunk_count,
            k=layout.k,
            n=layout.n,
            share_roots=list(layout.share_roots),
            share_sizes=list(layout.share_sizes),
            created_at=now,
            expires_at=now + ttl if ttl > 0 else 0.0,
        )
        artifact_id: bytes = layout.artifact_id
        record = await parts.publish(
            lambda seq: make_artifact(parts.identity, parts.store.mesh_id, seq, artifact_id, body)
        )
        job.phase, job.done, job.total = "uploading", 0, sum(layout.share_sizes)
        files = {index: staging / f"{index}.share" for index in range(layout.n)}
        try:
            holders = await self._push_all(job, artifact_id, body, files, set(), set())
        except BaseException:
            await self._tombstone(artifact_id, body)
            raise
        if len(holders) < body.k:
            await self._tombstone(artifact_id, body)
            raise StorageError(
                f"only {len(holders)} node(s) took a share and {body.k} are needed: nothing was stored "
                "(see `ileices status` on the other nodes: storage)"
            )
        await self._publish_placement(artifact_id, body, holders, generation=1, term=0)
        log.info("put %s (%s, %d bytes) on %d holders", artifact_id.hex()[:12], name, body.size, len(holders))
        return {
            "artifact_id": artifact_id.hex(),
            "name": body.name,
            "size": body.size,
            "k": body.k,
            "n": body.n,
            "placed": len(holders),
            "survives": len(holders) - body.k,
            "seq": record.seq,
        }

    async def _push_all(
        self,
        job: Job | None,
        artifact_id: bytes,
        body: ArtifactBody,
        files: dict[int, Path],
        exclude: set[NodeId],
        taken: set[NodeId],
    ) -> dict[int, NodeId]:
        """Push each share in `files` to its own node, HRW order, replacing holders that refuse.

        `exclude`: nodes that must not get a share (they hold one of this artifact already).
        Returns index -> holder for the shares that were stored.
        """
        placed: dict[int, NodeId] = {}
        failed: set[NodeId] = set()
        pending = dict(files)
        limiter = trio.Semaphore(PUSH_PARALLEL)
        for _attempt in range(4):
            if not pending:
                break
            avoid = exclude | taken | failed | set(placed.values())
            size = max(body.share_sizes)
            wanted = sorted(pending)
            targets: dict[int, NodeId] = await self._parts.call_core(
                STORAGE, _choose(artifact_id, wanted, avoid, size)
            )
            if not targets:
                break

            async def push_one(index: int, node: NodeId) -> None:
                async with limiter:
                    try:
                        await self._store_share(
                            node,
                            ShareInfo(artifact_id, index, body.share_roots[index], body.share_sizes[index]),
                            pending[index],
                        )
                    except (TransferFailed, ShareCorrupt, StorageError) as exc:
                        log.info(
                            "share %d of %s not stored on %s: %s",
                            index,
                            artifact_id.hex()[:12],
                            node.hex()[:12],
                            exc,
                        )
                        failed.add(node)
                        return
                    placed[index] = node
                    del pending[index]
                    if job is not None:
                        job.done += body.share_sizes[index]

            async with trio.open_nursery() as nursery:
                for index, node in targets.items():
                    nursery.start_soon(push_one, index, node)
        return placed

    async def _store_share(self, node: NodeId, info: ShareInfo, path: Path) -> None:
        """Store one share file on `node` (this node: straight into its own share store)."""
        if node != self._parts.node_id:
            await self.transfer.push(node, info, path)
            return

        def store_locally() -> None:
            with (
                self.shares.begin(info.artifact_id, info.index, info.root, info.size) as incoming,
                path.open("rb") as source,
            ):
                while piece := source.read(1 << 20):
                    incoming.write(piece)
                incoming.commit()

        try:
            await trio.to_thread.run_sync(store_locally)
        except ShareCorrupt as exc:
            raise StorageError(f"share {info.index} failed its check: {exc}") from exc
        except OSError as exc:
            raise StorageError(str(exc)) from exc
        except Exception as exc:
            raise StorageError(str(exc)) from exc
        self.changed()

    async def _publish_placement(
        self,
        artifact_id: bytes,
        body: ArtifactBody,
        holders: dict[int, NodeId],
        *,
        generation: int,
        term: int,
    ) -> None:
        parts = self._parts
        placement = PlacementBody(
            generation=generation, term=term, holders=[holders.get(i, b"") for i in range(body.n)]
        )
        await parts.publish(
            lambda seq: make_placement(parts.identity, parts.store.mesh_id, seq, artifact_id, placement)
        )

    async def _tombstone(self, artifact_id: bytes, body: ArtifactBody) -> None:
        parts = self._parts
        dead = ArtifactBody(**{**_fields(body), "deleted": True})
        with trio.CancelScope(shield=True):
            try:
                await parts.publish(
                    lambda seq: make_artifact(parts.identity, parts.store.mesh_id, seq, artifact_id, dead)
                )
            except NodeError as exc:
                log.warning("could not tombstone %s: %s", artifact_id.hex()[:12], exc)

    # ---- get --------------------------------------------------------------------------------------------

    async def get(self, job: Job, artifact_id: bytes, out: Path) -> dict[str, Any]:
        found = self.artifact_record(artifact_id)
        if found is None:
            raise StorageError(f"unknown artifact {artifact_id.hex()}: no record of it in this mesh")
        owner, body = found
        if body.deleted:
            raise StorageError(f"artifact {artifact_id.hex()[:12]} was deleted by its owner")
        if _expired(body):
            raise StorageError(f"artifact {artifact_id.hex()[:12]} has expired")
        if out.exists() and out.is_dir():
            raise StorageError(f"{out} is a directory; give a file name with -o")
        if not out.parent.is_dir():
            raise StorageError(f"{out.parent} does not exist")
        job.total, job.phase = body.size, "fetching"
        folder = self._work / f"get-{artifact_id.hex()}"
        folder.mkdir(exist_ok=True)  # what a cut transfer kept stays here for the next get
        skip: set[int] = set()
        tmp = out.with_name(f".{out.name}.ileices-part")
        for _attempt in range(GET_ATTEMPTS):
            shares = await self._gather(artifact_id, body, folder, body.k, job, skip)
            job.phase, job.done = "decoding", 0
            try:
                bad = await trio.to_thread.run_sync(
                    partial(
                        decode_shares,
                        shares,
                        tmp,
                        artifact_id=artifact_id,
                        roots=body.share_roots,
                        progress=lambda done: setattr(job, "done", done),
                    )
                )
            except NotEnoughShares as exc:
                # A share that failed its check while decoding is not used again: this
                # node's own is dropped (and repaired by the mesh), a fetched one deleted.
                skip |= set(exc.bad)
                self._drop_bad(artifact_id, exc.bad, folder)
                job.phase = "fetching"
                continue
            except ShareCorrupt as exc:  # decode_shares removed its partial output
                raise StorageError(f"artifact {artifact_id.hex()[:12]} could not be rebuilt: {exc}") from exc
            os.replace(tmp, out)
            break
        else:
            tmp.unlink(missing_ok=True)
            short = artifact_id.hex()[:12]
            raise StorageError(
                f"artifact {short}: shares {sorted(skip)} failed their checks, no others reachable"
            )
        self._drop_bad(artifact_id, bad, folder)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("got %s into %s (%d bytes)", artifact_id.hex()[:12], out, body.size)
        return {
            "artifact_id": artifact_id.hex(),
            "path": str(out),
            "size": body.size,
            "bad_shares": sorted(bad),
            "owner": owner.hex(),
        }

    def _drop_bad(self, artifact_id: bytes, bad: Iterable[int], folder: Path) -> None:
        """Shares that failed a check while decoding: this node's own is quarantined, a fetched one
        deleted."""
        for index in bad:
            (folder / f"{index}.share").unlink(missing_ok=True)
            if self.shares.has(artifact_id, index):
                self.shares.quarantine(artifact_id, index)
                self.changed()

    async def _gather(
        self,
        artifact_id: bytes,
        body: ArtifactBody,
        folder: Path,
        wanted: int,
        job: Job | None,
        skip: set[int] | frozenset[int] = frozenset(),
        holders: dict[int, NodeId] | None = None,
    ) -> dict[int, Path]:
        """At least `wanted` checked share files (own ones first), fetched into `folder`; shares in
        `skip` failed a check before and are not used. `holders` (a repair's sources) come first,
        then whoever this node's core lists."""
        view = await self._parts.call_core(STORAGE, lambda core, now: core.artifact(artifact_id))
        listed: dict[int, tuple[NodeId, ...]] = dict(view.holders) if view is not None else {}
        for index, node in (holders or {}).items():
            listed[index] = (node, *(other for other in listed.get(index, ()) if other != node))
        holders_of = listed
        got: dict[int, Path] = {}
        for index in range(body.n):
            own = self.shares.path_of(artifact_id, index)
            if own is not None and index not in skip:
                got[index] = own  # checked block by block as it is decoded
            elif (folder / f"{index}.share").exists() and index not in skip:
                got[index] = folder / f"{index}.share"  # fetched and checked whole by an earlier attempt
        candidates = [i for i in holders_of if i not in got and i not in skip and holders_of[i]]
        random.shuffle(candidates)
        failures: list[str] = []
        while len(got) < wanted and candidates:
            batch, candidates = candidates[: wanted - len(got)], candidates[wanted - len(got) :]

            async def fetch_one(index: int) -> None:
                info = ShareInfo(artifact_id, index, body.share_roots[index], body.share_sizes[index])
                for holder in holders_of[index]:
                    if holder == self._parts.node_id:
                        continue
                    try:
                        got[index] = await self.transfer.fetch(holder, info, folder / f"{index}.share.part")
                    except TransferFailed as exc:
                        failures.append(str(exc))
                        continue
                    if job is not None:
                        job.done += (
                            body.share_sizes[index] * body.size // max(1, sum(body.share_sizes[: body.k]))
                        )
                    return

            async with trio.open_nursery() as nursery:
                for index in batch:
                    nursery.start_soon(fetch_one, index)
        if len(got) < wanted:
            why = f" ({failures[-1]})" if failures else ""
            short = artifact_id.hex()[:12]
            raise StorageError(
                f"only {len(got)} of the {wanted} shares needed for {short} are reachable{why}"
            )
        return got

    # ---- rm and listing -----------------------------------------------------------------------------------

    async def remove(self, artifact_id: bytes) -> dict[str, Any]:
        found = self.artifact_record(artifact_id)
        parts = self._parts
        if found is None:
            raise StorageError(f"unknown artifact {artifact_id.hex()}: no record of it in this mesh")
        owner, body = found
        if owner != parts.node_id:
            raise StorageError(
                f"only its owner ({owner.hex()[:12]}) can delete artifact {artifact_id.hex()[:12]}"
            )
        if body.deleted:
            return {"artifact_id": artifact_id.hex(), "deleted": True, "already": True}
        await self._tombstone(artifact_id, body)
        return {"artifact_id": artifact_id.hex(), "deleted": True, "already": False}

    async def artifacts(self) -> list[dict[str, Any]]:
        views = await self._parts.call_core(STORAGE, lambda core, now: core.artifacts())
        rows = []
        for view in views:
            if view.deleted or view.expired:
                continue
            rows.append(
                {
                    "artifact_id": view.artifact_id.hex(),
                    "name": view.name,
                    "size": view.size,
                    "owner": view.owner.hex(),
                    "k": view.k,
                    "n": view.n,
                    "healthy": view.healthy,
                    "survives": view.survives,
                    "expires_at": view.expires_at,
                }
            )
        return rows

    async def status(self) -> dict[str, Any]:
        limits = load_limits(self._data_path)
        refusal = self.shares.refusal(0) if limits.disk_bytes != 0 else "this volunteer offers no disk"
        counters, nodes = await self._parts.call_core(
            STORAGE, lambda core, now: (dict(core.counters), len(core.storage_nodes()))
        )
        return {
            "nodes": nodes,
            "offered_bytes": limits.disk_bytes,
            "used_bytes": self.shares.used_bytes(),
            "shares": len(self.shares.holdings()),
            "accepting": refusal is None,
            "refusal": refusal,
            "counters": {**counters, **self.transfer.counters, **self.shares.counters},
            "repairs_running": len(self._repairs),
        }

    # ---- repair and audit ---------------------------------------------------------------------------------

    async def _repair(self, event: RepairDue) -> None:
        """As acting hub: hand the repair to its first target (or do it here), then publish where
        the rebuilt shares went and tell the core it ended."""
        artifact_id = event.artifact_id
        ok = False
        started = time.monotonic()
        try:
            found = self.artifact_record(artifact_id)
            if found is None or found[1].deleted or not event.targets:
                return
            owner, body = found
            targets = dict(event.targets)
            worker = event.targets[0][1]
            placed: dict[int, NodeId] = {}
            if worker != self._parts.node_id:
                placed = await self._delegate(worker, owner, event)
            if not placed:  # done here: the worker was this node, refused, or failed
                placed = await self._rebuild(artifact_id, body, targets, dict(event.sources))
            if not placed:
                raise StorageError("no rebuilt share could be stored")
            view = await self._parts.call_core(STORAGE, lambda core, now: core.artifact(artifact_id))
            current = {i: hs[0] for i, hs in (view.holders.items() if view is not None else ()) if hs}
            term = await self._acting_term()
            if term is None:
                raise StorageError("this node stopped acting as hub during the repair")
            await self._publish_placement(
                artifact_id, body, {**current, **placed}, generation=event.generation, term=term
            )
            ok = True
            self.transfer.counters["repairs_led"] = self.transfer.counters.get("repairs_led", 0) + 1
            log.info(
                "repaired %s: %d share(s) rebuilt by %s in %.1f s (was %d healthy of %d)",
                artifact_id.hex()[:12],
                len(placed),
                worker.hex()[:12],
                time.monotonic() - started,
                event.healthy,
                event.n,
            )
        except (StorageError, NodeError, TransferFailed, ShareCorrupt, TransportError, OSError) as exc:
            log.warning("repair of %s failed: %s", artifact_id.hex()[:12], exc)
        finally:
            self._repairs.discard(artifact_id)
            with trio.CancelScope(shield=True):
                try:
                    await self._parts.call_core(
                        STORAGE, lambda core, now: core.repair_finished(now, artifact_id, ok)
                    )
                except Exception:
                    log.debug("could not report a repair's end", exc_info=True)

    async def _delegate(self, worker: NodeId, owner: NodeId, event: RepairDue) -> dict[int, NodeId]:
        """Ask `worker` to carry out `event`; what it placed (empty when it could not)."""
        request = RepairRequest(
            event.artifact_id,
            owner,
            [ShareAt(index, node) for index, node in event.sources],
            [ShareAt(index, node) for index, node in event.targets],
        )
        try:
            reply = decode_storage(await self._request(worker, encode(request), TRANSFER_TIMEOUT))
        except (TransportError, WireError) as exc:
            log.info("repair worker %s failed: %s; repairing here", worker.hex()[:12], exc)
            return {}
        if not isinstance(reply, RepairDone):
            reason = reply.reason if isinstance(reply, ShareReply) else "an unexpected reply"
            log.info("repair worker %s refused: %s; repairing here", worker.hex()[:12], reason)
            return {}
        wanted = dict(event.targets)
        return {at.index: at.node for at in reply.placed if wanted.get(at.index) == at.node}

    async def serve_repair(self, peer: NodeId, request: RepairRequest) -> bytes:
        """As a worker: carry out a repair the acting hub handed this node."""
        if peer != self._current_hub():
            self.transfer.counters["repairs_refused"] = self.transfer.counters.get("repairs_refused", 0) + 1
            return encode(ShareReply(False, "only the hub this node believes in hands out repairs"))
        found = self.artifact_record(request.artifact_id)
        if found is None or found[0] != request.owner or found[1].deleted:
            return encode(ShareReply(False, "no live artifact record for that id and owner here"))
        targets = {at.index: at.node for at in request.targets if at.index < found[1].n}
        sources = {at.index: at.node for at in request.sources if at.index < found[1].n}
        try:
            placed = await self._rebuild(request.artifact_id, found[1], targets, sources)
        except (StorageError, TransferFailed, ShareCorrupt, TransportError, OSError) as exc:
            return encode(ShareReply(False, f"repair failed: {exc}"[:200]))
        self.transfer.counters["repairs_worked"] = self.transfer.counters.get("repairs_worked", 0) + 1
        return encode(RepairDone([ShareAt(index, node) for index, node in placed.items()]))

    async def _rebuild(
        self, artifact_id: bytes, body: ArtifactBody, targets: dict[int, NodeId], sources: dict[int, NodeId]
    ) -> dict[int, NodeId]:
        """Fetch k shares, rebuild the shares `targets` names, store each on its target; returns
        the ones stored. `sources` says who holds what (this node's own view fills the gaps)."""
        folder = self._work / f"repair-{artifact_id.hex()}-{next(self._job_ids)}"
        try:
            inbox = folder / "in"
            inbox.mkdir(parents=True)
            shares = await self._gather(artifact_id, body, inbox, body.k, None, holders=sources)
            out = folder / "out"
            out.mkdir()
            wanted = sorted(targets)
            rebuilt: dict[int, Path] = await trio.to_thread.run_sync(
                partial(regenerate_shares, shares, wanted, out, roots=body.share_roots)
            )
            placed: dict[int, NodeId] = {}

            async def store(index: int) -> None:
                info = ShareInfo(artifact_id, index, body.share_roots[index], body.share_sizes[index])
                try:
                    await self._store_share(targets[index], info, rebuilt[index])
                except (TransferFailed, StorageError) as exc:
                    log.info("rebuilt share %d not stored on %s: %s", index, targets[index].hex()[:12], exc)
                    return
                placed[index] = targets[index]

            async with trio.open_nursery() as nursery:
                for index in wanted:
                    nursery.start_soon(store, index)
            return placed
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _audit(self, event: AuditDue) -> None:
        info = self.share_info(event.artifact_id, event.index)
        if info is None:
            return
        if event.holder == self._parts.node_id:
            ok = True
            try:
                await trio.to_thread.run_sync(
                    self.shares.read_block, info.artifact_id, info.index, info.root, event.chunk
                )
            except (ShareCorrupt, KeyError, FileNotFoundError, IndexError, ValueError):
                ok = False
                self.changed()
        else:
            verdict = await self.transfer.audit(event.holder, info, event.chunk)
            if verdict is None:
                return  # the proof cannot fit one message: no audit was made
            ok = verdict
        await self._parts.call_core(
            STORAGE,
            lambda core, now: core.audit_result(now, event.holder, event.artifact_id, event.index, ok),
        )


def _clean_work(work: Path, now: float) -> None:
    """A killed node's leftovers: staging of puts and repairs always, a get's partial shares once
    they are a day old (younger ones let the next get resume)."""
    for folder in work.iterdir():
        if folder.name.startswith("get-") and now - folder.stat().st_mtime < PARTIAL_GET_KEPT_S:
            continue
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            folder.unlink(missing_ok=True)


def _set_wall_clock(wall: float) -> Callable[[Any, float], None]:
    return lambda core, now: core.set_wall_clock(wall)


def _choose(
    artifact_id: bytes, wanted: list[int], avoid: set[NodeId], size: int
) -> Callable[[Any, float], dict[int, NodeId]]:
    """HRW targets for shares `wanted` among the live accepting storage nodes the core knows."""
    return lambda core, now: choose_holders(
        artifact_id, wanted, core.storage_nodes(), exclude=avoid, share_size=size
    )


def _expired(body: ArtifactBody) -> bool:
    return body.expires_at > 0 and body.expires_at <= time.time()


def _fields(body: ArtifactBody) -> dict[str, Any]:
    return {name: getattr(body, name) for name in body.__struct_fields__}
