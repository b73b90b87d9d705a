"""The fabric as the control plane sees it: the objects pushed to sites, the broadcast plan of each (re-planned
around sites that break off), and what every site says it holds."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeplane.control._errors import UnknownTarget
from edgeplane.fabric import Manifest
from edgeplane.planning import BroadcastPlan, fabric_links, plan_broadcast

if TYPE_CHECKING:
    from edgeplane.control import _bodies as bodies
    from edgeplane.control._state import FleetState


log = logging.getLogger("edgeplane.control")


class TransferRefused(ValueError):
    """A push that cannot start: an origin that does not serve, a target that is not a PoP."""


@dataclass
class Transfer:
    """One object sent from an origin to target sites."""

    manifest: Manifest
    origin: str
    targets: frozenset[str]
    created_at: float  # unix seconds
    started_at: float | None = None  # unix seconds: the broadcast began (the origin holds the object)
    plan: BroadcastPlan | None = None
    excluded: dict[str, int | None] = field(default_factory=dict)  # sites that broke off, and their process id
    senders: dict[str, str] = field(default_factory=dict)  # per site, the site it was last told to fetch from
    told: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # that sender's address and process
    replans: int = 0

    def __repr__(self) -> str:
        state = "started" if self.started_at else "seeding"
        return f"<Transfer {self.manifest.name} [{state} from {self.origin} to {len(self.targets)} sites]>"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def sha256(self) -> str:
        return self.manifest.sha256


class FabricBook:
    """Transfers by object name (a name pushed again names the new content), and their plans."""

    def __init__(self, state: FleetState) -> None:
        self.state = state
        self.transfers: dict[str, Transfer] = {}
        for record in state.store.transfers():  # their plans are made again as the sites report
            try:
                transfer = Transfer(
                    Manifest.model_validate(record["manifest"]), str(record["origin"]),
                    frozenset(str(pop) for pop in record["targets"]), float(record["created_at"]),
                    None if record.get("started_at") is None else float(record["started_at"]),
                )  # fmt: skip
            except (KeyError, TypeError, ValueError) as error:
                log.warning("fabric: a transfer kept in the store cannot be read (%s); skipped", str(error)[:200])
                continue
            self.transfers[transfer.name] = transfer

    def _keep(self, transfer: Transfer) -> None:
        record = {
            "manifest": transfer.manifest.model_dump(mode="json"), "origin": transfer.origin,
            "targets": sorted(transfer.targets), "created_at": transfer.created_at, "started_at": transfer.started_at,
        }  # fmt: skip
        self.state.store.put_transfer(transfer.name, record)

    def __repr__(self) -> str:
        return f"<FabricBook [Transfers: {len(self.transfers)}]>"

    # -- sites -------------------------------------------------------------------------------
    def alive(self) -> set[str]:
        """Sites whose agent reported within the agent timeout, with an address."""
        now = self.state.clock()
        return {
            pop
            for pop, report in self.state.agents.reports.items()
            if report.url and now - report.received_at <= self.state.agent_timeout_seconds
        }

    def url(self, pop: str) -> str | None:
        report = self.state.agents.get(pop)
        return report.url if report is not None else None

    def held(self, pop: str, sha: str) -> bodies.FabricHeld | None:
        report = self.state.agents.get(pop)
        if report is None:
            return None
        return next((row for row in report.fabric if row.sha256 == sha), None)

    def _pid(self, pop: str) -> int | None:
        report = self.state.agents.get(pop)
        return report.pid if report is not None else None

    def link_scale(self, pop: str) -> float:
        report = self.state.agents.get(pop)
        return report.link_scale if report is not None else 1.0

    # -- transfers ---------------------------------------------------------------------------
    def get(self, name: str) -> Transfer:
        transfer = self.transfers.get(name)
        if transfer is None:
            raise UnknownTarget(f"no object named {name!r} was pushed")
        return transfer

    def create(self, manifest: Manifest, origin: str | None, targets: Sequence[str] | None) -> Transfer:
        """A transfer, not yet started: the origin is to be given the object first."""
        pops = [pop.code for pop in self.state.fleet.pops]
        unknown = sorted(set(targets or ()) - set(pops))
        if unknown:
            raise TransferRefused(f"unknown PoP {', '.join(unknown)}; expected some of: {', '.join(pops)}")
        alive = self.alive()
        wanted = frozenset(targets or pops)
        if origin is None:
            origin = self._best_origin(manifest, wanted, alive)
        if origin not in pops:
            raise TransferRefused(f"unknown origin PoP {origin!r}; expected one of: {', '.join(pops)}")
        if origin not in alive:
            raise TransferRefused(f"the site agent of {origin} does not report: it cannot be the origin")
        transfer = Transfer(manifest, origin, wanted, self.state.wall_clock())
        self._keep(transfer)
        self.transfers[manifest.name] = transfer
        return transfer

    def _best_origin(self, manifest: Manifest, targets: frozenset[str], alive: set[str]) -> str:
        links = fabric_links(self.state.fleet)
        best: tuple[float, str] | None = None
        for pop in sorted(alive):
            plan = plan_broadcast(links, pop, targets, size_bytes=manifest.size_bytes, chunk_bytes=manifest.chunk_bytes)
            score = (len(plan.unreachable) * 1e18 + plan.lower_bound_seconds, pop)
            best = min(best, score) if best is not None else score
        if best is None:
            raise TransferRefused("no site agent reports: there is no site to push from")
        return best[1]

    def remove(self, name: str) -> tuple[Transfer, list[str]]:
        """Forget a transfer; the sites that report holding its bytes under no other transfer's name (they are
        to delete them)."""
        transfer = self.get(name)
        del self.transfers[name]
        self.state.store.remove_transfer(name)
        if any(t.sha256 == transfer.sha256 for t in self.transfers.values()):
            return transfer, []  # the same bytes under another name stay
        holders = [pop for pop in sorted(self.state.agents.reports) if self.held(pop, transfer.sha256) is not None]
        return transfer, holders

    def start(self, name: str, origin_complete: bool) -> dict[str, list[dict[str, str]]]:
        """Begin the broadcast once the origin holds the object (as it says now: its reports may lag); what each
        site is to fetch from."""
        transfer = self.get(name)
        if not origin_complete:
            raise TransferRefused(f"the origin {transfer.origin} does not hold {name} complete yet")
        transfer.started_at = self.state.wall_clock()
        self._keep(transfer)
        return self.replan(transfer)

    def stuck(self, name: str, body: bodies.FabricStuck) -> dict[str, list[dict[str, str]]]:
        """A site cannot fetch from the source it was given: plan again without that source (a site that says its
        source broke off is believed: the source's own reports may lag a kill by seconds). Until it restarts:
        a site that reports again under a new process id is back in the plan. A complaint of an older plan, or
        about an address the source no longer has (it came back elsewhere), tells the site its source again."""
        transfer = self.by_sha(name, body.sha256)
        sender = transfer.senders.get(body.pop)
        url = self.url(sender) if sender is not None else None
        if sender is None or url is None:
            return {}
        stale = body.url is not None and body.url.rstrip("/") != url.rstrip("/")  # it came back elsewhere
        if sender != body.source or stale or (url, self._pid(sender)) != transfer.told.get(body.pop):
            transfer.told[body.pop] = (url, self._pid(sender))  # a new process since: try it
            return {body.pop: [{"pop": sender, "url": url}]}
        transfer.excluded[body.source] = self._pid(body.source)
        transfer.replans += 1
        return self.replan(transfer)

    def by_sha(self, name: str, sha: str | None) -> Transfer:
        """The transfer a site means: by name, or (a site keeps the name it first heard for the same bytes) by the
        sha256 it gives."""
        transfer = self.transfers.get(name)
        if transfer is not None and (sha is None or transfer.sha256 == sha):
            return transfer
        same = [t for t in self.active() if t.sha256 == sha]
        if not same:
            raise UnknownTarget(f"no object named {name!r} was pushed")
        return same[-1]

    def weights_for(self, pop: str) -> dict[str, str]:
        """Per model placed at ``pop`` whose weights were pushed over the fabric (an object named as the model):
        its sha256. The site serves such a model only once it holds that object complete and verified."""
        placed = self.state.fleet.models_at(pop)
        return {model: self.transfers[model].sha256 for model in sorted(placed) if model in self.transfers}

    def cold(self, pop: str, model: str) -> str | None:
        """Why ``pop`` would start cold if traffic for ``model`` came to it now: its weights travel over the fabric
        and are not all on its disk (None when they are, or when the model's weights do not travel)."""
        transfer = self.transfers.get(model)
        if transfer is None:
            return None
        held = self.held(pop, transfer.sha256)
        if held is not None and held.complete:
            return None
        share = held.bytes_held / transfer.manifest.size_bytes if held and transfer.manifest.size_bytes else 0.0
        return f"{pop} holds {share:.0%} of the weights of {model} ({transfer.sha256[:12]}): it would start cold"

    def follow_placement(self, pop: str) -> dict[str, dict[str, list[dict[str, str]]]]:
        """The weights of every model placed at ``pop`` go there too: a site newly placed is a new target of the
        model's transfer (planned again if it runs); per transfer, the sources of the sites that moved."""
        moved: dict[str, dict[str, list[dict[str, str]]]] = {}
        for model in self.weights_for(pop):
            transfer = self.transfers[model]
            if pop in transfer.targets:
                continue
            transfer.targets = transfer.targets | {pop}
            self._keep(transfer)
            if transfer.started_at is not None:
                transfer.replans += 1
                moved[transfer.name] = self.replan(transfer)
        return moved

    def heard(self, pop: str) -> dict[str, dict[str, list[dict[str, str]]]]:
        """A site reported: if it had broken off and came back as a new process, or if it is a target the plan
        left out (it did not report then), plan again; per transfer, the sources of the sites that moved."""
        report = self.state.agents.get(pop)
        moved = self.follow_placement(pop)
        for transfer in self.active():
            if transfer.plan is None:  # kept in the store by an earlier control plane: planned from what sites hold
                moved[transfer.name] = self.replan(transfer)
            if transfer.name in moved:
                continue
            if transfer.plan is None:
                continue
            if pop in transfer.excluded:
                if report is None or report.pid == transfer.excluded[pop]:
                    continue
                del transfer.excluded[pop]
            elif pop not in transfer.targets - set(transfer.plan.parents) - {
                *transfer.plan.sources,
                *transfer.plan.unreachable,
            }:
                continue
            held = self.held(pop, transfer.sha256)
            if held is not None and held.complete:
                continue
            transfer.replans += 1
            moved[transfer.name] = self.replan(transfer)
        return moved

    def replan(self, transfer: Transfer) -> dict[str, list[dict[str, str]]]:
        """A plan from the sites that hold the object complete to those that do not, around sites that broke off
        or do not report; the sources of every site whose sender changed."""
        alive = self.alive()
        usable = alive - set(transfer.excluded)
        holders = {pop for pop in usable if (h := self.held(pop, transfer.sha256)) is not None and h.complete}
        scale = self.link_scale(transfer.origin)
        transfer.plan = plan_broadcast(
            fabric_links(self.state.fleet, scale),
            transfer.origin,
            transfer.targets,
            size_bytes=transfer.manifest.size_bytes,
            chunk_bytes=transfer.manifest.chunk_bytes,
            holders=holders,
            exclude=(set(self.state.fleet.pop_by_code) - alive) | set(transfer.excluded),
        )
        moved: dict[str, list[dict[str, str]]] = {}
        for pop, parent in transfer.plan.parents.items():
            url = self.url(parent)
            if url is None or (transfer.senders.get(pop), transfer.told.get(pop)) == (parent, (url, self._pid(parent))):
                continue
            transfer.senders[pop], transfer.told[pop] = parent, (url, self._pid(parent))
            moved[pop] = [{"pop": parent, "url": url}]
        return moved

    def assignments(self, pop: str) -> list[dict[str, Any]]:
        """What a site should be fetching now, for the answer to its report (a site that restarted, or missed
        a push, hears it here): the manifest goes only to a site that does not hold the object at all."""
        rows = []
        for transfer in self.transfers.values():
            if transfer.started_at is None or transfer.plan is None or pop not in transfer.plan.parents:
                continue
            held = self.held(pop, transfer.sha256)
            if held is not None and held.complete:
                continue
            sender = transfer.senders.get(pop)
            url = self.url(sender) if sender else None
            if sender is None or url is None:
                continue
            row: dict[str, Any] = {"sha256": transfer.sha256, "sources": [{"pop": sender, "url": url}]}
            if held is None:
                row["manifest"] = transfer.manifest.model_dump(mode="json")
            rows.append(row)
        return rows

    # -- what is held ------------------------------------------------------------------------
    def progress(self, name: str) -> dict[str, Any]:
        """A transfer as `fabric push` shows it: per target how long it took and where it came from."""
        transfer = self.get(name)
        alive = self.alive()
        sites, times = [], []
        for pop in sorted(transfer.targets | {transfer.origin}):
            held = self.held(pop, transfer.sha256)
            seconds = verified = None
            if pop == transfer.origin and held is not None and held.complete:
                seconds = verified = 0.0
            elif held is not None and held.complete and transfer.started_at is not None:
                done_at = held.completed_at if held.completed_at is not None else transfer.started_at
                seconds = max(0.0, done_at - transfer.started_at)
                checked_at = held.verified_at if held.verified_at is not None else done_at
                verified = max(0.0, checked_at - transfer.started_at)
            if seconds is not None and verified is not None and pop in transfer.targets:
                times.append((seconds, verified))
            error = held.error if held is not None else None
            if error is None and pop not in alive and not (held and held.complete):
                error = "the site agent does not report"
            sites.append(
                {
                    "pop": pop,
                    "seconds": seconds,
                    "verified_seconds": verified,
                    "from": transfer.senders.get(pop),
                    "complete": bool(held and held.complete),
                    "bytes_held": held.bytes_held if held is not None else 0,
                    "sha256": held.verified_sha256 if held is not None else None,
                    "error": error,
                }
            )
        waiting = [s for s in sites if s["pop"] in transfer.targets and not s["complete"]]
        done = transfer.started_at is not None and all(s["error"] for s in waiting)
        origin = self.held(transfer.origin, transfer.sha256)
        plan = transfer.plan
        return {
            "name": transfer.name,
            "sha256": transfer.sha256,
            "size_bytes": transfer.manifest.size_bytes,
            "origin": transfer.origin,
            "state": "done" if done else ("started" if transfer.started_at else "seeding"),
            "seconds": max(t for t, _ in times) if done and times else None,  # every chunk held at every target
            "verified_seconds": max(v for _, v in times) if done and times else None,  # and each read back whole
            "lower_bound_seconds": plan.lower_bound_seconds if plan is not None else None,
            "origin_egress_bytes": origin.egress_bytes if origin is not None else 0,
            "replans": transfer.replans,
            "plan": plan.to_json() if plan is not None else None,
            "sites": sites,
        }

    def objects(self, name: str | None = None) -> list[dict[str, Any]]:
        """Per object and site: what is held (`fabric status`), from the sites' own reports."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        models = self.state.fleet.model_by_name
        for transfer in self.transfers.values():
            found[transfer.name, transfer.sha256] = {
                "name": transfer.name, "sha256": transfer.sha256, "size_bytes": transfer.manifest.size_bytes,
                "weights_of": transfer.name if transfer.name in models else None,
            }  # fmt: skip
        for report in self.state.agents.reports.values():
            for one in report.fabric:
                if not any(sha == one.sha256 for _, sha in found):  # bytes no transfer names: the site's name
                    known = {"name": one.name, "sha256": one.sha256, "size_bytes": one.size_bytes, "weights_of": None}
                    found.setdefault((one.name, one.sha256), known)
        rows = []
        for (_, sha), row in sorted(found.items()):
            if name is not None and row["name"] != name:
                continue
            sites: list[dict[str, Any]] = []
            for pop in sorted(self.state.agents.reports):
                held = self.held(pop, sha)
                if held is not None:
                    sites.append(
                        {
                            "pop": pop,
                            "complete": held.complete,
                            "bytes_held": held.bytes_held,
                            "sha256": held.verified_sha256,
                            "state": held.state,
                            "error": held.error,
                        }
                    )
            rows.append({**row, "sites": sites})
        return rows

    def active(self) -> Iterable[Transfer]:
        return (t for t in self.transfers.values() if t.started_at is not None)
