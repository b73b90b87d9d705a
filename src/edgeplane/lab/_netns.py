"""The kernel boundary of the lab: network namespaces, veth links, addresses, routes and sysctls through
netlink (pyroute2), and the processes that live in a namespace. Errors leave here as LabError."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeplane._errors import EdgeplaneError
from edgeplane._extras import require
from edgeplane.lab._plan import HOST_LINK, NETNS_KINDS, Address, End, Link, Route

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


class LabError(EdgeplaneError):
    """The lab could not be built, read or removed."""


def _pyroute2() -> ModuleType:
    return require("pyroute2", "lab", "the network-namespace lab (lab up)")


def require_netlink() -> None:
    """MissingExtra naming the `lab` extra when pyroute2 is not installed (before anything is built)."""
    _pyroute2()


def _netlink_error() -> type[Exception]:
    error: type[Exception] = _pyroute2().NetlinkError
    return error


@contextlib.contextmanager
def _netlink_errors(what: str) -> Iterator[None]:
    """pyroute2's NetlinkError (not an OSError) and OSError become LabError, saying what was being done."""
    try:
        yield
    except (OSError, _netlink_error()) as error:
        code = getattr(error, "code", None) or getattr(error, "errno", None)
        raise LabError(f"{what}: {os.strerror(code) if isinstance(code, int) and code > 0 else error}") from None


def lab_namespaces() -> list[str]:
    """Every namespace a lab made that still exists (by name: NETNS_KINDS)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if any(n == k or (k.endswith("-") and n.startswith(k)) for k in NETNS_KINDS))


MS_BIND = 4096


def create_namespace(name: str) -> None:
    """A new network namespace, named as `ip netns add` names it (a bind mount under /run/netns), made on this
    thread and left again: no child process (a fork of this process would run its signal handlers)."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    path = NETNS_DIR / name
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except OSError as error:
        raise LabError(f"creating network namespace {name}: {error.strerror}") from None
    libc = _libc()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise LabError(f"creating network namespace {name}: {os.strerror(ctypes.get_errno())}")
        try:
            if libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None) != 0:
                raise LabError(f"naming network namespace {name}: {os.strerror(ctypes.get_errno())}")
            # The defaults before any interface exists: forwarding on, no reverse-path filter (a PoP's replies may
            # leave by another transit than the request came in by).
            for sysctl, value in (
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
            ):
                Path("/proc/sys", sysctl).write_text(value)
        finally:
            _setns(own)
    except BaseException:
        with contextlib.suppress(OSError):
            libc.umount2(str(path).encode(), 2)  # MNT_DETACH
            path.unlink()
        raise
    finally:
        os.close(own)


def remove_namespace(name: str) -> None:
    with contextlib.suppress(FileNotFoundError), _netlink_errors(f"removing network namespace {name}"):
        _pyroute2().netns.remove(name)


def _libc() -> Any:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """This thread in namespace ``name`` for the block (for /proc/sys/net, which follows the opener's)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
        try:
            with _netlink_errors(f"entering network namespace {name}"):
                _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def open_namespace(name: str) -> int:
    """A descriptor of namespace ``name`` (for :func:`enter`); the caller closes it."""
    try:
        return os.open(NETNS_DIR / name, os.O_RDONLY)
    except OSError as error:
        raise LabError(f"no network namespace {name}: {error.strerror}") from None


def enter(descriptor: int) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the child into the namespace ``descriptor`` opens (opened in the parent: the
    child only makes system calls) and has it sent SIGTERM when its parent dies."""

    def preexec() -> None:
        libc = _libc()
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            os._exit(126)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def enter_now(name: str) -> None:
    """Move this process into namespace ``name`` for good (before exec'ing a command there)."""
    fd = open_namespace(name)
    try:
        with _netlink_errors(f"entering network namespace {name}"):
            _setns(fd)
    finally:
        os.close(fd)


class Netlink:
    """Links, addresses and routes, each in its namespace; one netlink socket per namespace, kept open."""

    def __init__(self) -> None:
        self._pyroute2 = _pyroute2()
        self._sockets: dict[str | None, Any] = {}

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def _ns(self, netns: str | None) -> Any:
        if netns not in self._sockets:
            # groups=0: no multicast subscription. A socket that listens to every link, address and route event
            # fills up while the lab makes hundreds of them, and then misses the answers it waits for. A socket
            # opened inside the namespace stays bound to it (pyroute2's own netns= forks a child for that).
            where = contextlib.nullcontext() if netns is None else inside(netns)
            with _netlink_errors(f"opening netlink in {netns or 'the host namespace'}"), where:
                self._sockets[netns] = self._pyroute2.IPRoute(groups=0)
        return self._sockets[netns]

    def _index(self, netns: str | None, ifname: str) -> int:
        found = self._ns(netns).link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"no link {ifname} in {netns or 'the host namespace'}")
        return int(found[0])

    def loopback_up(self, netns: str, addresses: list[str]) -> None:
        ns = self._ns(netns)
        with _netlink_errors(f"setting up the loopback of {netns}"):
            lo = self._index(netns, "lo")
            ns.link("set", index=lo, state="up")
            for address in addresses:
                ns.addr("add", index=lo, address=address, prefixlen=32)

    def bridge(self, netns: str, name: str) -> None:
        ns = self._ns(netns)
        with _netlink_errors(f"making bridge {name} in {netns}"):
            ns.link("add", ifname=name, kind="bridge")
            ns.link("set", index=self._index(netns, name), state="up")

    def link(self, link: Link, serial: int) -> None:
        """A veth pair made in the host namespace under temporary names, then each end moved and named."""
        host = self._ns(None)
        temp = (f"eplab{serial}a", f"eplab{serial}b")
        what = f"linking {link.a.netns}:{link.a.ifname} to {link.b.netns}:{link.b.ifname}"
        with _netlink_errors(what):
            host.link("add", ifname=temp[0], kind="veth", peer=temp[1])
            for end, name in ((link.a, temp[0]), (link.b, temp[1])):
                index = self._index(None, name)
                if end.netns is None:
                    host.link("set", index=index, ifname=end.ifname)
                else:
                    host.link("set", index=index, net_ns_fd=end.netns)
                    ns = self._ns(end.netns)
                    ns.link("set", index=self._index(end.netns, name), ifname=end.ifname)
                self._configure(end)

    def _configure(self, end: End) -> None:
        ns = self._ns(end.netns)
        index = self._index(end.netns, end.ifname)
        for address in end.addresses:
            self._address(ns, index, address)
        if end.bridge is not None:
            ns.link("set", index=index, master=self._index(end.netns, end.bridge))
        ns.link("set", index=index, state="up")

    @staticmethod
    def _address(ns: Any, index: int, address: Address) -> None:
        if address.peer is None:
            ns.addr("add", index=index, address=address.local, prefixlen=address.prefixlen)
        else:
            ns.addr("add", index=index, local=address.local, address=address.peer, prefixlen=32)

    def route(self, route: Route) -> None:
        with _netlink_errors(f"adding route {route.destination} via {route.gateway} in {route.netns}"):
            self._ns(route.netns).route("add", dst=route.destination, gateway=route.gateway)

    def delay(self, netns: str, ifname: str, delay_ms: float) -> None:
        """Each packet leaving ``ifname`` waits ``delay_ms`` (netem)."""
        with _netlink_errors(f"adding {delay_ms:.1f} ms of delay on {netns}:{ifname}"):
            ns = self._ns(netns)
            ns.tc("add", "netem", index=self._index(netns, ifname), handle="1:", delay=int(delay_ms * 1000))

    def remove_host_link(self) -> bool:
        """Removes the lab's link in the host namespace; False if there was none."""
        host = self._ns(None)
        found = host.link_lookup(ifname=HOST_LINK)
        if not found:
            return False
        with _netlink_errors(f"removing {HOST_LINK}"):
            host.link("del", index=found[0])
        return True


def has_netem(netns: str) -> bool:
    """Whether this kernel has the netem qdisc (tried on the loopback of ``netns``, then removed)."""
    pyroute2 = _pyroute2()
    with inside(netns):
        socket = pyroute2.IPRoute(groups=0)
    with socket as ns:
        lo = ns.link_lookup(ifname="lo")[0]
        try:
            ns.tc("add", "netem", index=lo, handle="1:", delay=1000)
        except (OSError, pyroute2.NetlinkError):
            return False
        with contextlib.suppress(OSError, pyroute2.NetlinkError):
            ns.tc("del", index=lo, handle="1:")
        return True


def _inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in(names: list[str]) -> dict[int, str]:
    """Every process whose network namespace is one of ``names`` (found by comparing /proc/PID/ns/net)."""
    inodes = {inode: name for name in names if (inode := _inode(NETNS_DIR / name)) is not None}
    found: dict[int, str] = {}
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (inode := _inode(f"/proc/{entry}/ns/net")) in inodes:
            found[int(entry)] = inodes[inode]
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """The process runs: a zombie (exited, not yet reaped by its parent, e.g. `lab up` under a test that waits
    for `lab down`) does not, else `lab down` would wait out its whole timeout for it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to ask: signal 0 answered
    return stat[stat.rindex(")") + 2 :].split(maxsplit=1)[0] != "Z"  # the state follows the command's ")"


def is_root() -> bool:
    return os.geteuid() == 0
