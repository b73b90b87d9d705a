"""The lab's transit routers as BIRD 2 sees them: one configuration per router, and `birdc show protocols`
read back into sessions. Pure text in, text out."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeplane.lab._plan import RouterPlan

HOLD_TIME_SECONDS = 3  # a failed PoP's routes are gone this long after its last keepalive
KEEPALIVE_SECONDS = 1


def bird_config(router: RouterPlan, *, fleet_asn: int, log_path: str) -> str:
    """OSPF between the transit's routers (costs by distance), iBGP over loopbacks with next hop self (so each
    router reaches an exit through the IGP: hot potato), eBGP to the PoPs of its metro, GRACEFUL_SHUTDOWN
    honoured (local preference 0), and the metro's client prefix announced when it is its client router."""
    lines = [
        f"# {router.name}: {router.transit} (AS {router.asn}) in {router.metro}",
        f"router id {router.router_id};",
        f'log "{log_path}" all;',
        "protocol device { scan time 2; }",
        "protocol kernel {",
        "  ipv4 { import none; export where source ~ [ RTS_BGP, RTS_OSPF ]; };",
        "}",
        "",
        "filter from_pop {",
        "  if (65535, 0) ~ bgp_community then bgp_local_pref = 0;  # GRACEFUL_SHUTDOWN (RFC 8326)",
        "  accept;",
        "}",
        "",
        "protocol ospf v2 transit_igp {",
        "  ipv4 { import all; export none; };",
        "  area 0 {",
        '    interface "lo" { stub yes; };',
    ]
    for peer in router.peers:
        lines.append(f'    interface "{peer.ifname}" {{ type ptp; cost {peer.cost}; hello 1; dead count 3; }};')
    lines += ["  };", "}", ""]
    if router.client_prefixes and router.client_ifname:
        lines.append("protocol static clients {")
        lines.append("  ipv4;")
        lines += [f'  route {prefix} via "{router.client_ifname}";' for prefix in router.client_prefixes]
        lines += ["}", ""]
    lines += [
        "template bgp transit_ibgp {",
        f"  local {router.loopback} as {router.asn};",
        "  multihop;",
        "  connect retry time 2;",
        "  ipv4 { import all; export where source ~ [ RTS_BGP, RTS_STATIC ]; next hop self; };",
        "}",
        "",
    ]
    for peer in router.peers:
        lines.append(
            f"protocol bgp {_name('ibgp', peer.name)} from transit_ibgp {{ neighbor {peer.loopback} as {router.asn}; }}"
        )
    lines.append("")
    for pop in router.pops:
        lines += [
            f"protocol bgp {_name('pop', pop.pop)} {{",
            f"  local {pop.address} as {router.asn};",
            f"  neighbor {pop.neighbor} as {fleet_asn};",
            "  passive on;  # the PoP's speaker connects out",
            f"  hold time {HOLD_TIME_SECONDS}; keepalive time {KEEPALIVE_SECONDS};",
            "  ipv4 { import filter from_pop; export none; };",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _name(kind: str, code: str) -> str:
    """A BIRD protocol name: letters, digits and underscores."""
    return f"{kind}_" + re.sub(r"[^A-Za-z0-9_]", "_", code)


@dataclass(frozen=True, slots=True)
class Session:
    router: str
    protocol: str
    kind: str  # "pop" (eBGP to a PoP's speaker) or "ibgp" (to the same transit's router in another metro)
    peer: str  # the PoP's code or the other router's name
    state: str  # BIRD's: up, start, ...
    info: str  # BIRD's: Established, Active, Connect, ...

    @property
    def up(self) -> bool:
        return self.state == "up" and self.info.startswith("Established")

    def to_json(self) -> dict[str, object]:
        return {
            "router": self.router,
            "protocol": self.protocol,
            "kind": self.kind,
            "peer": self.peer,
            "state": self.state,
            "info": self.info,
            "up": self.up,
        }


def parse_protocols(router: RouterPlan, text: str) -> list[Session]:
    """The BGP sessions in `birdc show protocols` output, named back to the PoPs and routers of the plan."""
    names = {_name("pop", p.pop): ("pop", p.pop) for p in router.pops}
    names.update({_name("ibgp", p.name): ("ibgp", p.name) for p in router.peers})
    sessions: list[Session] = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 4 or fields[1] != "BGP" or fields[0] not in names:
            continue
        kind, peer = names[fields[0]]
        # name proto table state since[ time] info: the date and time may take one or two fields
        rest = line.split(None, 4)[4] if len(line.split(None, 4)) > 4 else ""
        info = re.sub(r"^\S+(\s+\d\d:\d\d:\d\d(\.\d+)?)?\s*", "", rest)
        sessions.append(Session(router.name, fields[0], kind, peer, fields[3], info.strip()))
    return sessions
