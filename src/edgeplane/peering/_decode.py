"""NetFlow v5 / v9 / IPFIX decoding: datagrams in, numpy flow columns out, with each exporter's templates."""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["DROP_REASONS", "Decoder", "FlowColumns"]

DROP_REASONS: Final = (
    "short",
    "version",
    "length",
    "malformed_set",
    "malformed_template",
    "unknown_template",
    "no_addresses",
    "too_many_templates",
    "too_many_exporters",
    "implausible_counter",
    "bad_time",
)

# A hostile exporter could otherwise invent a new observation domain per datagram; real routers use one per
# line card at most.
MAX_DOMAINS_PER_EXPORTER: Final = 64
# Real templates have fewer than 100 fields; one with more is dropped (malformed_template), so that no template
# costs more than about 2 KB held (see Decoder).
MAX_TEMPLATE_FIELDS: Final = 256
# Templates (data and options) held by all the exporters that are not reserved, and their samplers (real
# exporters have one or a few); beyond, too_many_templates. A reserved exporter's count only against its own
# max_templates.
MAX_TEMPLATES_HELD: Final = 32_768
MAX_SAMPLERS_HELD: Final = 16_384
# A flow's bytes and packets once its sampling rate is applied: a petabyte, a trillion packets. Beyond is a
# broken or hostile counter (implausible_counter), not traffic; the bounds also keep bytes x rate within 64 bits.
MAX_FLOW_BYTES: Final = 1 << 50
MAX_FLOW_PACKETS: Final = 1 << 40

_V4_MAPPED: Final = 0x0000FFFF00000000
_NTP_TO_UNIX_SECONDS: Final = 2_208_988_800
_VARIABLE: Final = 65535  # an IPFIX field length that means "length prefix in each record"
_NOT_AN_IE: Final = -1  # an enterprise field, or a v9 scope field (its own numbering): never read as an IE
_SAMPLING_PROBABILITY: Final = 311  # IPFIX samplingProbability: a float64 (or float32, reduced size)
# A set's body holds at most this many bytes: a template whose records' fixed part is longer can never be used.
_MAX_RECORD_BYTES: Final = 65_535 - 4
# Flow times (bad_time outside): from 1990-01-01 to a day after the export time of the datagram that carried them.
_EARLIEST_MS: Final = 631_152_000_000
_DAY_MS: Final = 86_400_000
_UPTIME_WRAP_MS: Final = 1 << 32  # times relative to a 32-bit uptime lie within this of the export time
# Layouts are kept as sent (to recognise the periodic resend) up to this size, longer ones as a digest.
_LAYOUT_BYTES_KEPT: Final = 128
_LAYOUTS_CACHED: Final = 256  # record dtypes, built at take() from a template's packed plan

_HEADER_V5 = struct.Struct("!HIIIIBBH")
_HEADER_V9 = struct.Struct("!IIII")
_HEADER_IPFIX = struct.Struct("!HIII")
_SET_HEADER = struct.Struct("!HH")
_PLAN_ENTRY = struct.Struct("!HHB")  # a read field: IE, offset in the fixed record, length
_V5_HEADER_BYTES: Final = 24
_V5_RECORD_BYTES: Final = 48

# Information elements read from flow records, and the lengths at which we can read them; a known IE at
# another length is skipped like an unknown one.
_ADDRESS_IES: Final = {8: 4, 12: 4, 27: 16, 28: 16}
_NTP_IES: Final = frozenset({154, 155, 156, 157})  # IPFIX dateTimeMicro/Nanoseconds: NTP 32.32 fixed point
_INT_IES: Final = frozenset({1, 2, 4, 7, 11, 21, 22, 32, 34, 48, 50, 139, 150, 151, 152, 153, 158, 159, 302})
# Information elements read from options data records.
_OPTION_IES: Final = frozenset({34, 48, 50, 160, 302, 305, 306, _SAMPLING_PROBABILITY})
_OPTION_VALUE_IES: Final = frozenset({34, 50, 160, 305, _SAMPLING_PROBABILITY})
_OPTION_READ: Final = {ie: n for n, ie in enumerate(sorted(_OPTION_IES), 1)}
_OPTION_IE: Final = (_NOT_AN_IE, *sorted(_OPTION_IES))

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FlowColumns:
    """Decoded flow records, column by column: numpy arrays of equal length."""

    exporter: npt.NDArray[np.uint32]  # index into Decoder.exporters
    domain: npt.NDArray[np.uint32]  # IPFIX observation domain / v9 source id / v5 engine_type<<8|engine_id
    start_ms: npt.NDArray[np.int64]  # unix milliseconds
    end_ms: npt.NDArray[np.int64]
    src_hi: npt.NDArray[np.uint64]  # the address as a 128-bit IPv6 number; IPv4 as ::ffff:a.b.c.d
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]
    bytes: npt.NDArray[np.uint64]  # sampling rate applied
    packets: npt.NDArray[np.uint64]  # sampling rate applied
    protocol: npt.NDArray[np.uint8]
    src_port: npt.NDArray[np.uint16]
    dst_port: npt.NDArray[np.uint16]  # ICMP type<<8|code where the exporter sends that instead of ports
    sampling: npt.NDArray[np.uint32]  # the rate applied (1 when none known)

    def __len__(self) -> int:
        return int(self.exporter.shape[0])

    @classmethod
    def empty(cls) -> FlowColumns:
        return cls(**{name: np.zeros(0, dtype) for name, dtype in _COLUMN_DTYPES.items()})

    @staticmethod
    def concat(parts: Sequence[FlowColumns]) -> FlowColumns:
        if not parts:
            return FlowColumns.empty()
        if len(parts) == 1:
            return parts[0]
        return FlowColumns(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMN_DTYPES})


_COLUMN_DTYPES: Final[dict[str, type[np.generic]]] = {
    "exporter": np.uint32,
    "domain": np.uint32,
    "start_ms": np.int64,
    "end_ms": np.int64,
    "src_hi": np.uint64,
    "src_lo": np.uint64,
    "dst_hi": np.uint64,
    "dst_lo": np.uint64,
    "bytes": np.uint64,
    "packets": np.uint64,
    "protocol": np.uint8,
    "src_port": np.uint16,
    "dst_port": np.uint16,
    "sampling": np.uint32,
}

# A field as a template declares it: (IE number or _NOT_AN_IE, length in bytes or _VARIABLE).
_Field = tuple[int, int]
# What decode keeps per buffered set, to spread over its records at take():
# (records, exporter index, domain, export ms, exporter uptime ms at export or -1 when unknown, default rate).
_SetMeta = tuple[int, int, int, int, int, int]
_NO_META: Final[list[_SetMeta]] = []  # shared by idle templates, never appended to (bodies None says so)
# What take() reads a template's records with: their dtype, and IE -> (offset in the fixed record, length).
_Layout = tuple["np.dtype[np.void]", dict[int, tuple[int, int]]]


class _Exporter:
    """One exporter admitted: its index in Decoder.exporters and what it holds, for the limits."""

    __slots__ = ("domains", "index", "reserved", "samplers", "templates")

    def __init__(self, index: int, *, reserved: bool) -> None:
        self.index = index
        self.reserved = reserved
        self.domains = 0
        self.templates = 0  # data and options templates, over all its domains
        self.samplers = 0


class _Domain:
    """What one (exporter, version, domain) has told us: its templates and what its options data said.

    A domain exists while it holds a template: one whose last template is withdrawn is forgotten."""

    __slots__ = ("index", "init_ms", "rate", "samplers", "source", "templates")

    def __init__(self, source: _Exporter) -> None:
        self.source = source
        self.index = source.index
        self.templates: dict[int, _FlowTemplate | _OptionsTemplate] = {}
        self.rate = 0  # from options data without a sampler id; 0 = none heard
        self.samplers: dict[tuple[int, int], int] | None = None  # (IE 48 or 302, id) -> rate; None until one
        self.init_ms = -1  # IPFIX systemInitTimeMilliseconds; -1 = none heard


class _FlowTemplate:
    """A data template, and the set bodies buffered for it since the last take().

    Bodies hold fixed-length records. For a template with variable-length fields decode() copies each
    record's fixed-length fields into one such record (the variable ones are never read), so take() reads
    every template alike: one np.frombuffer over all its bodies.

    Held for long and by the thousand, it keeps little: the fields it reads packed in `plan` (the dtype that
    reads them is built at take()), and for variable-length records the runs in `segments`."""

    __slots__ = ("bodies", "domain", "layout", "meta", "plan", "readable", "record_bytes", "segments")

    def __init__(self, layout: bytes, fields: Sequence[_Field], *, variable: bool) -> None:
        self.layout = layout
        self.domain: _Domain | None = None
        # The set bodies buffered since take() and their _SetMeta; None while there are none.
        self.bodies: list[bytes] | None = None
        self.meta: list[_SetMeta] = _NO_META
        plan: dict[int, tuple[int, int]] = {}
        runs: list[int] | None = None
        offset = 0
        for ie, length in fields:
            if length == _VARIABLE and variable:
                if runs is None:
                    runs = _fixed_runs(fields)
                continue
            if ie not in plan and _readable(ie, length):
                plan[ie] = (offset, length)
            offset += length
        self.record_bytes = offset
        usable = offset <= _MAX_RECORD_BYTES  # else never installed: no offset or run is packed past 16 bits
        self.readable = usable and any(ie in plan for ie in _ADDRESS_IES)
        self.plan = b"".join(_PLAN_ENTRY.pack(ie, *spec) for ie, spec in plan.items()) if self.readable else b""
        # segments: for variable-length templates, runs of fixed bytes and variable fields (_VARIABLE).
        self.segments = array("H", runs) if runs is not None and usable else None


class _OptionsTemplate:
    """An options template: its records are read one by one at decode time (they are few)."""

    __slots__ = ("layout", "lengths", "min_bytes", "reads", "useful", "variable")

    def __init__(self, layout: bytes, fields: Sequence[_Field], *, variable: bool) -> None:
        self.layout = layout
        self.variable = variable
        self.min_bytes = sum(1 if length == _VARIABLE and variable else length for _, length in fields)
        self.useful = any(ie in _OPTION_VALUE_IES for ie, _ in fields)
        # Field by field (kept only if ever read): its length, and which of _OPTION_READ it is (0: none).
        self.lengths = array("H", [length for _, length in fields] if self.useful else [])
        self.reads = bytes(_OPTION_READ.get(ie, 0) for ie, _ in fields) if self.useful else b""


def _readable(ie: int, length: int) -> bool:
    if ie in _ADDRESS_IES:
        return length == _ADDRESS_IES[ie]
    if ie in _NTP_IES:
        return length == 8
    return ie in _INT_IES and 1 <= length <= 8


def _fixed_runs(fields: Sequence[_Field]) -> list[int]:
    runs: list[int] = []
    for _, length in fields:
        if length == _VARIABLE:
            runs.append(_VARIABLE)
        elif length and runs and runs[-1] != _VARIABLE:
            runs[-1] += length
        elif length:
            runs.append(length)
    return runs


def _identity(layout: bytes) -> bytes:
    """What a template's layout is kept as, to tell its periodic resend from a change."""
    return layout if len(layout) <= _LAYOUT_BYTES_KEPT else hashlib.blake2b(layout, digest_size=16).digest()


def _record_dtype(plan: dict[int, tuple[int, int]], record_bytes: int) -> np.dtype[np.void]:
    """A big-endian structured dtype holding only the fields we read, at their offsets in the record."""
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    for ie, (offset, length) in plan.items():
        if length == 16:  # an IPv6 address: two 64-bit halves
            names += [f"{ie}h", f"{ie}l"]
            formats += [">u8", ">u8"]
            offsets += [offset, offset + 8]
            continue
        names.append(str(ie))
        # Reduced-size encodings (3, 5, 6, 7 bytes) come out as byte arrays, folded at take().
        formats.append(f">u{length}" if length in (1, 2, 4, 8) else (np.uint8, (length,)))
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": record_bytes})


# NetFlow v5's fixed record, as if a template had declared it, so it takes the same path as v9 and IPFIX.
_V5_FIELDS: Final = (
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2),
    (0, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (0, 2),
)  # fmt: skip


class Decoder:
    """Decodes NetFlow v5, v9 and IPFIX datagrams from many exporters into FlowColumns.

    decode() parses headers, templates and options data at once and buffers the data sets' bodies;
    take() turns everything buffered into columns with numpy, one frombuffer per template per batch.
    Records come out grouped by template, not in arrival order. The buffer grows until take(): call it
    regularly. Times come from the exporters' headers (as nfcapd does); received_ms is not used.

    Exporters: a source takes one of `max_exporters` slots only once it sends something that needs state
    (a template, or v5 records): datagrams that carry nothing take none. The `reserved` addresses (the fleet's
    own exporters, spelled as decode() is given them) are always admitted and never counted against the limit.

    Held state is bounded whatever the exporters send. A template has at most MAX_TEMPLATE_FIELDS fields and
    costs under 2 KB held, its share of its domain included (1.55 KB measured at worst: 256 fields, alternately
    of variable length, one template per domain); a sampler about 0.2 KB. An exporter holds at most
    `max_templates` templates over all its domains, and as many samplers; the exporters that are not reserved
    hold at most MAX_TEMPLATES_HELD templates and MAX_SAMPLERS_HELD samplers between them; a domain exists only
    while it holds a template. At the defaults that is at most about 70 MB (32,768 templates: 64 MB; 16,384
    samplers, 256 cached record dtypes and 4,096 exporters: 6 MB), plus about 2.2 MB per reserved exporter
    (1,024 templates and 1,024 samplers). Records buffered between take()s come on top.

    take() drops, counted, the records it does not believe: "implausible_counter", more than MAX_FLOW_BYTES or
    MAX_FLOW_PACKETS once sampled (never a product wrapped around 64 bits); "bad_time", a start or end before
    1990 or more than a day after the export time of the datagram that carried it (a clock off in the header
    itself moves uptime-relative times with it, and is for the collector to judge)."""

    def __init__(self, *, max_exporters: int = 4096, max_templates: int = 1024, reserved: Iterable[str] = ()) -> None:
        self.exporters: list[str] = []
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.records = 0
        self.datagrams = 0
        self._max_exporters = max_exporters
        self._max_templates = max_templates  # per exporter, over all its domains; also its samplers
        self._reserved = frozenset(reserved)
        self._sources: dict[str, _Exporter] = {}
        self._counted = 0  # exporters admitted that are not reserved
        self._held = 0  # templates held by exporters that are not reserved
        self._samplers_held = 0  # and their samplers
        self._domains: dict[tuple[str, int, int], _Domain] = {}
        self._data_templates = 0
        self._layouts: dict[tuple[bytes, int], _Layout] = {}
        self._v5 = _FlowTemplate(b"", _V5_FIELDS, variable=False)
        self._dirty: list[_FlowTemplate] = []  # templates with buffered bodies, replaced ones included

    def __repr__(self) -> str:
        return (
            f"<Decoder exporters {len(self.exporters)}, templates {self._data_templates} | datagrams {self.datagrams},"
            f" records {self.records}, dropped {sum(self.dropped.values())}>"
        )

    def templates(self) -> int:
        """Data templates currently known, over all exporters and domains."""
        return self._data_templates

    # Datagrams

    def decode(self, datagram: bytes, exporter: str, received_ms: int) -> None:
        """Parse one datagram's headers and templates and buffer its flow records. Never raises: whatever
        is thrown away is counted in `dropped`."""
        self.datagrams += 1
        data = datagram if type(datagram) is bytes else bytes(datagram)
        if len(data) < 2:
            self.dropped["short"] += 1
            return
        version = data[0] << 8 | data[1]
        if version == 9 or version == 10:
            self._decode_templated(data, version, exporter)
        elif version == 5:
            self._decode_v5(data, exporter)
        else:
            self.dropped["version"] += 1

    def _room(self, exporter: str) -> bool:
        return exporter in self._reserved or self._counted < self._max_exporters

    def _admit(self, exporter: str) -> _Exporter | None:
        """The exporter's slot, taken now if there is room (else counted as too_many_exporters)."""
        source = self._sources.get(exporter)
        if source is not None:
            return source
        if not self._room(exporter):
            self.dropped["too_many_exporters"] += 1
            return None
        reserved = exporter in self._reserved
        source = self._sources[exporter] = _Exporter(len(self.exporters), reserved=reserved)
        self.exporters.append(exporter)
        self._counted += not reserved
        return source

    def _decode_v5(self, data: bytes, exporter: str) -> None:
        size = len(data)
        if size < _V5_HEADER_BYTES:
            self.dropped["short"] += 1
            return
        count, uptime, secs, nsecs, _, engine_type, engine_id, sampling = _HEADER_V5.unpack_from(data, 2)
        if size != _V5_HEADER_BYTES + count * _V5_RECORD_BYTES:
            self.dropped["length"] += 1
            return
        if not count:
            return  # nothing to keep, so no slot taken
        source = self._admit(exporter)
        if source is None:
            return
        template = self._v5
        bodies = template.bodies
        if bodies is None:
            bodies = template.bodies = []
            template.meta = []
            self._dirty.append(template)
        bodies.append(data[_V5_HEADER_BYTES:])
        export_ms = secs * 1000 + nsecs // 1_000_000
        meta = (count, source.index, engine_type << 8 | engine_id, export_ms, uptime, sampling & 0x3FFF or 1)
        template.meta.append(meta)

    def _decode_templated(self, data: bytes, version: int, exporter: str) -> None:
        size = len(data)
        if version == 9:
            if size < 20:
                self.dropped["short"] += 1
                return
            uptime, secs, _, domain_id = _HEADER_V9.unpack_from(data, 4)
            position, template_set, options_set = 20, 0, 1
        else:
            if size < 16:
                self.dropped["short"] += 1
                return
            length, secs, _, domain_id = _HEADER_IPFIX.unpack_from(data, 2)
            if length != size:  # over UDP one IPFIX message is one datagram
                self.dropped["length"] += 1
                return
            uptime, position, template_set, options_set = -1, 16, 2, 3
        known = exporter in self._sources
        if not known and size - position >= 4 and not self._room(exporter):
            # Sets from a source we hold nothing for, and no slot to hold any in (one without sets takes none).
            self.dropped["too_many_exporters"] += 1
            return
        export_ms = secs * 1000
        key = (exporter, version, domain_id)
        domain = self._domains.get(key) if known else None
        while size - position >= 4:
            set_id, set_length = _SET_HEADER.unpack_from(data, position)
            end = position + set_length
            if set_length < 4 or end > size:
                # Without a trustworthy length nothing after this set can be found either.
                self.dropped["malformed_set"] += 1
                return
            body, position = position + 4, end
            if set_id >= 256:
                template = domain.templates.get(set_id) if domain is not None else None
                if template is None or domain is None:
                    self.dropped["unknown_template"] += 1
                elif type(template) is _OptionsTemplate:
                    if template.useful:
                        self._read_options(template, domain, data, body, end)
                elif type(template) is _FlowTemplate:
                    if not template.readable:
                        self.dropped["no_addresses"] += 1
                        continue
                    if template.segments is None:
                        count = (end - body) // template.record_bytes
                        chunk = data[body : body + count * template.record_bytes]
                    else:
                        chunk, count, cut = _flatten(template.segments, data, body, end)
                        if cut:  # a record whose lengths run past the set: the set's rest cannot be read
                            self.dropped["malformed_set"] += 1
                    if not count:
                        continue
                    bodies = template.bodies
                    if bodies is None:
                        bodies = template.bodies = []
                        template.meta = []
                        self._dirty.append(template)
                    bodies.append(chunk)
                    if version == 10:
                        # Uptime-relative times in IPFIX count from the exporter's init time (options data).
                        uptime = (export_ms - domain.init_ms) & 0xFFFFFFFF if domain.init_ms >= 0 else -1
                    template.meta.append((count, domain.index, domain_id, export_ms, uptime, domain.rate or 1))
            elif set_id == template_set:
                self._read_templates(data, body, end, key, version)
                domain = self._domains.get(key)
            elif set_id == options_set:
                if version == 9:
                    self._read_v9_options_templates(data, body, end, key)
                else:
                    self._read_ipfix_options_templates(data, body, end, key)
                domain = self._domains.get(key)
            else:
                self.dropped["malformed_set"] += 1
        if position < size and not _zeros(data, position, size):  # a few zero bytes are padding, anything else is not
            self.dropped["malformed_set"] += 1

    # Templates

    def _read_templates(self, data: bytes, position: int, end: int, key: tuple[str, int, int], version: int) -> None:
        while end - position >= 4:
            template_id, count = _SET_HEADER.unpack_from(data, position)
            if template_id == 0 and _zeros(data, position, end):
                return  # padding
            if count == 0:
                position += 4
                if version == 10 and (template_id >= 256 or template_id == 2):
                    self._withdraw(key, template_id, _FlowTemplate)
                else:
                    self.dropped["malformed_template"] += 1
                continue
            if version == 9:
                stop = position + 4 + 4 * count
                fields: list[_Field] | None = None
                if stop <= end:
                    fields = [(ie, length) for ie, length in _SET_HEADER.iter_unpack(data[position + 4 : stop])]
            else:
                fields, stop = _ipfix_fields(data, position + 4, end, count)
            if fields is None:  # the field list runs past the set: the rest of the set cannot be found
                self.dropped["malformed_template"] += 1
                return
            layout = data[position + 2 : stop]
            position = stop
            if template_id < 256:
                self.dropped["malformed_template"] += 1
                continue
            self._install(key, template_id, layout, fields, options=False)

    def _read_v9_options_templates(self, data: bytes, position: int, end: int, key: tuple[str, int, int]) -> None:
        while end - position >= 6:
            template_id, scope_bytes, option_bytes = struct.unpack_from("!HHH", data, position)
            if template_id == 0 and _zeros(data, position, end):
                return  # padding
            stop = position + 6 + scope_bytes + option_bytes
            if scope_bytes % 4 or option_bytes % 4 or stop > end:
                self.dropped["malformed_template"] += 1
                return
            # v9 scope field types have their own numbering (1 = system, 2 = interface, ...): never IEs.
            scopes = [
                (_NOT_AN_IE, length)
                for _, length in _SET_HEADER.iter_unpack(data[position + 6 : position + 6 + scope_bytes])
            ]
            options = [(ie, length) for ie, length in _SET_HEADER.iter_unpack(data[position + 6 + scope_bytes : stop])]
            layout = data[position + 2 : stop]
            position = stop
            if template_id < 256 or not options:
                self.dropped["malformed_template"] += 1
                continue
            self._install(key, template_id, layout, scopes + options, options=True)

    def _read_ipfix_options_templates(self, data: bytes, position: int, end: int, key: tuple[str, int, int]) -> None:
        while end - position >= 4:
            template_id, count = _SET_HEADER.unpack_from(data, position)
            if template_id == 0 and _zeros(data, position, end):
                return  # padding
            if count == 0:
                position += 4
                if template_id >= 256 or template_id == 3:
                    self._withdraw(key, template_id, _OptionsTemplate)
                else:
                    self.dropped["malformed_template"] += 1
                continue
            if end - position < 6:
                self.dropped["malformed_template"] += 1
                return
            scope_count = struct.unpack_from("!H", data, position + 4)[0]
            fields, stop = _ipfix_fields(data, position + 6, end, count)
            if fields is None:
                self.dropped["malformed_template"] += 1
                return
            layout = data[position + 2 : stop]
            position = stop
            if template_id < 256 or scope_count == 0 or scope_count > count:
                self.dropped["malformed_template"] += 1
                continue
            self._install(key, template_id, layout, fields, options=True)

    def _install(
        self, key: tuple[str, int, int], template_id: int, layout: bytes, fields: list[_Field], *, options: bool
    ) -> None:
        if len(fields) > MAX_TEMPLATE_FIELDS:
            self.dropped["malformed_template"] += 1
            return
        identity = _identity(layout)
        domain = self._domains.get(key)
        old = domain.templates.get(template_id) if domain is not None else None
        kind = _OptionsTemplate if options else _FlowTemplate
        if old is not None and type(old) is kind and old.layout == identity:
            return  # the periodic resend of a template we hold
        new: _FlowTemplate | _OptionsTemplate
        if options:
            new = _OptionsTemplate(identity, fields, variable=key[1] == 10)
            # Records of no bytes could never be read past; longer than a set, never read at all.
            if new.min_bytes == 0 or new.min_bytes > _MAX_RECORD_BYTES:
                self.dropped["malformed_template"] += 1
                return
        else:
            new = _FlowTemplate(identity, fields, variable=key[1] == 10)
            if (new.record_bytes == 0 and new.segments is None) or new.record_bytes > _MAX_RECORD_BYTES:
                self.dropped["malformed_template"] += 1
                return
        if old is None:
            source = self._sources.get(key[0])
            reserved = key[0] in self._reserved
            if source is not None and (
                source.templates >= self._max_templates
                or (domain is None and source.domains >= MAX_DOMAINS_PER_EXPORTER)
            ):
                self.dropped["too_many_templates"] += 1
                return
            if not reserved and self._held >= MAX_TEMPLATES_HELD:
                self.dropped["too_many_templates"] += 1
                return
            if source is None and (source := self._admit(key[0])) is None:
                return
            if domain is None:
                domain = self._domains[key] = _Domain(source)
                source.domains += 1
            source.templates += 1
            self._held += not reserved
        assert domain is not None
        if type(new) is _FlowTemplate:
            new.domain = domain
        # A replaced template keeps its buffered bodies: take() still decodes them with the old layout.
        domain.templates[template_id] = new
        self._data_templates += (type(new) is _FlowTemplate) - (type(old) is _FlowTemplate)

    def _withdraw(self, key: tuple[str, int, int], template_id: int, kind: type) -> None:
        domain = self._domains.get(key)
        if domain is None:
            return
        if template_id < 256:  # 2 (template set) or 3 (options template set): all templates of that kind
            doomed = [tid for tid, t in domain.templates.items() if type(t) is kind]
        else:
            doomed = [template_id] if template_id in domain.templates else []
        source = domain.source
        for tid in doomed:
            if type(domain.templates.pop(tid)) is _FlowTemplate:
                self._data_templates -= 1
            source.templates -= 1
            self._held -= not source.reserved
        if not domain.templates:
            # Nothing left to read its options data or flows with: the domain goes, its rates with it (an
            # exporter that withdraws everything starts over), so that domains never outnumber templates.
            del self._domains[key]
            source.domains -= 1
            samplers = len(domain.samplers or ())
            source.samplers -= samplers
            self._samplers_held -= 0 if source.reserved else samplers

    # Options data

    def _read_options(self, template: _OptionsTemplate, domain: _Domain, data: bytes, position: int, end: int) -> None:
        variable = template.variable
        fields = list(zip(template.lengths, template.reads, strict=True))
        while end - position >= template.min_bytes:
            values: dict[int, int] = {}
            for length, read in fields:
                if length == _VARIABLE and variable:
                    if position >= end:
                        return
                    length = data[position]
                    position += 1
                    if length == 255:
                        if end - position < 2:
                            return
                        length = data[position] << 8 | data[position + 1]
                        position += 2
                if position + length > end:
                    return  # padding, or a truncated record
                if read and 1 <= length <= 8 and (ie := _OPTION_IE[read]) not in values:
                    if ie == _SAMPLING_PROBABILITY:
                        values[ie] = _probability_rate(data, position, length)
                    else:
                        values[ie] = int.from_bytes(data[position : position + length], "big")
                position += length
            self._apply_options(domain, values)

    def _apply_options(self, domain: _Domain, values: dict[int, int]) -> None:
        if values.get(160, 0) > 0:
            domain.init_ms = values[160]
        rate = values.get(34) or values.get(50) or values.get(_SAMPLING_PROBABILITY) or 0
        interval = values.get(305, 0)
        if not rate and interval:
            # Systematic count-based sampling: `interval` packets taken out of every interval+space.
            rate = (interval + values.get(306, 0) + interval // 2) // interval
        if not rate:
            return
        rate = min(rate, 0xFFFFFFFF)
        sampler = (48, values[48]) if 48 in values else (302, values[302]) if 302 in values else None
        if sampler is None:
            domain.rate = rate
            return
        samplers = domain.samplers
        if samplers is None:
            samplers = domain.samplers = {}
        if sampler not in samplers:
            source = domain.source
            if source.samplers < self._max_templates and (source.reserved or self._samplers_held < MAX_SAMPLERS_HELD):
                source.samplers += 1
                self._samplers_held += not source.reserved
            elif samplers:
                del samplers[next(iter(samplers))]  # the oldest: routers renumber samplers, they rarely add many
            else:
                self.dropped["too_many_templates"] += 1  # a sampler table: no room for this domain's first
                return
        samplers[sampler] = rate

    # Columns

    def take(self) -> FlowColumns:
        """Everything buffered since the last take(), decoded; the buffer is emptied."""
        parts = []
        for template in self._dirty:
            joined = b"".join(template.bodies or ())
            columns, implausible, bad_time = _columns(self._layout(template), template.domain, joined, template.meta)
            template.bodies, template.meta = None, _NO_META
            parts.append(columns)
            self.dropped["implausible_counter"] += implausible
            self.dropped["bad_time"] += bad_time
        self._dirty = []
        columns = FlowColumns.concat(parts)
        self.records += len(columns)
        return columns

    def _layout(self, template: _FlowTemplate) -> _Layout:
        key = (template.plan, template.record_bytes)
        layout = self._layouts.get(key)
        if layout is None:
            plan = {ie: (offset, length) for ie, offset, length in _PLAN_ENTRY.iter_unpack(template.plan)}
            layout = (_record_dtype(plan, template.record_bytes), plan)
            if len(self._layouts) >= _LAYOUTS_CACHED:
                del self._layouts[next(iter(self._layouts))]
            self._layouts[key] = layout
        return layout


def _zeros(data: bytes, start: int, end: int) -> bool:
    return data.count(0, start, end) == end - start


def _ipfix_fields(data: bytes, position: int, end: int, count: int) -> tuple[list[_Field] | None, int]:
    """An IPFIX field specifier list: (IE, length) each, enterprise fields as _NOT_AN_IE."""
    fields: list[_Field] = []
    for _ in range(count):
        if end - position < 4:
            return None, position
        ie, length = _SET_HEADER.unpack_from(data, position)
        position += 4
        if ie & 0x8000:
            if end - position < 4:
                return None, position
            position += 4  # the enterprise number: their IE numbers are theirs, not IANA's
            ie = _NOT_AN_IE
        fields.append((ie, length))
    return fields, position


def _probability_rate(data: bytes, position: int, length: int) -> int:
    """The rate a samplingProbability stands for: round(1/p) for 0 < p <= 1, else 0 (none)."""
    if length == 8:
        p: float = struct.unpack_from("!d", data, position)[0]
    elif length == 4:
        p = struct.unpack_from("!f", data, position)[0]
    else:
        return 0
    if not 0 < p <= 1:  # NaN too
        return 0
    return 0xFFFFFFFF if p < 1 / 0xFFFFFFFF else round(1 / p)


def _flatten(segments: array[int], data: bytes, position: int, end: int) -> tuple[bytes, int, bool]:
    """The fixed-length fields of each variable-length record, packed as fixed-length records; and whether
    the set ends in a record cut short that is not padding (zeros)."""
    parts: list[bytes] = []
    count = 0
    while position < end:
        at, mark = position, len(parts)
        for run in segments:
            if run != _VARIABLE:
                if at + run > end:
                    break
                parts.append(data[at : at + run])
                at += run
                continue
            if at >= end:
                break
            length = data[at]
            at += 1
            if length == 255:
                if end - at < 2:
                    break
                length = data[at] << 8 | data[at + 1]
                at += 2
            at += length
            if at > end:
                break
        else:
            count += 1
            position = at
            continue
        del parts[mark:]  # a record cut short: never half a flow
        return b"".join(parts), count, not _zeros(data, position, end)
    return b"".join(parts), count, False


def _uint(records: npt.NDArray[np.void], plan: dict[int, tuple[int, int]], ie: int) -> _U64 | None:
    spec = plan.get(ie)
    if spec is None:
        return None
    column = records[str(ie)]
    if column.ndim == 1:
        return column.astype(np.uint64)
    folded = np.zeros(len(records), np.uint64)
    for k in range(spec[1]):
        folded = (folded << 8) | column[:, k]
    return folded


def _address(records: npt.NDArray[np.void], plan: dict[int, tuple[int, int]], v4: int, v6: int) -> tuple[_U64, _U64]:
    n = len(records)
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    if v4 in plan:
        lo = records[str(v4)].astype(np.uint64) | np.uint64(_V4_MAPPED)
    if v6 in plan:
        hi6, lo6 = records[f"{v6}h"].astype(np.uint64), records[f"{v6}l"].astype(np.uint64)
        if v4 in plan:  # templates carrying both zero the one a record does not use
            six = (hi6 | lo6) != 0
            return np.where(six, hi6, hi), np.where(six, lo6, lo)
        return hi6, lo6
    return hi, lo


def _time(
    records: npt.NDArray[np.void],
    plan: dict[int, tuple[int, int]],
    ies: tuple[int, int, int, int, int, int],
    export: _I64,
    uptime: _I64,
) -> tuple[_I64 | None, bool]:
    """A time column (None if the template has none), and whether it is known to lie within _UPTIME_WRAP_MS
    before the export time (relative to it, as uptimes are) or may lie anywhere (absolute)."""
    milliseconds, seconds, micro, nano, delta, switched = ies
    if (value := _uint(records, plan, milliseconds)) is not None:
        return value.astype(np.int64), False
    if (value := _uint(records, plan, seconds)) is not None:
        return value.astype(np.int64) * 1000, False
    for ntp in (micro, nano):
        if (value := _uint(records, plan, ntp)) is not None:
            fraction_ms = ((value & 0xFFFFFFFF) * 1000) >> 32
            return ((value >> 32).astype(np.int64) - _NTP_TO_UNIX_SECONDS) * 1000 + fraction_ms.astype(np.int64), False
    if (value := _uint(records, plan, delta)) is not None:
        return export - (value // 1000).astype(np.int64), plan[delta][1] <= 4
    if (value := _uint(records, plan, switched)) is not None:
        # Flows end before their export: a switched time "after" the uptime wrapped around 2**32 ms.
        ticks = (value & 0xFFFFFFFF).astype(np.int64)
        return np.where(uptime >= 0, export - ((uptime - ticks) & 0xFFFFFFFF), export), True
    return None, True


def _columns(
    layout: _Layout, domain: _Domain | None, joined: bytes, meta: list[_SetMeta]
) -> tuple[FlowColumns, int, int]:
    """The records of one template's buffered sets, and how many were dropped as implausible_counter and as
    bad_time."""
    dtype, plan = layout
    records = np.frombuffer(joined, dtype=dtype)
    n = len(records)
    sets = np.array(meta, dtype=np.int64).reshape(-1, 6)
    counts = sets[:, 0]

    def per_record(column: int) -> _I64:
        return np.repeat(sets[:, column], counts)

    export, uptime = per_record(3), per_record(4)
    start, start_relative = _time(records, plan, (152, 150, 154, 156, 158, 22), export, uptime)
    end, end_relative = _time(records, plan, (153, 151, 155, 157, 159, 21), export, uptime)
    if start is None:
        start, start_relative = (export, True) if end is None else (end, end_relative)
    if end is None:
        end, end_relative = start, start_relative

    # Times from a router whose clock is off by more than a day from its own export time, or before 1990: an
    # absolute time is checked record by record, a relative one only if an export time is within 2**32 ms of 1990.
    earliest_export = int(sets[:, 3].min())
    bad_time: npt.NDArray[np.bool_] | None = None
    times = ((start, start_relative), (end, end_relative)) if end is not start else ((end, end_relative),)
    for values, relative in times:
        if relative and earliest_export - _UPTIME_WRAP_MS >= _EARLIEST_MS:
            continue
        if int(values.min()) >= _EARLIEST_MS and int(values.max()) <= earliest_export + _DAY_MS:
            continue
        outside = (values < _EARLIEST_MS) | (values > export + _DAY_MS)
        bad_time = outside if bad_time is None else bad_time | outside

    rate = per_record(5).astype(np.uint64)
    rate_max = int(sets[:, 5].max())
    # The sampler table as it stands now: a sampler's rate heard after its flows, in the same batch, still counts.
    for ie in (48, 302):
        ids = _uint(records, plan, ie)
        if ids is not None and domain is not None and domain.samplers:
            known, where = np.unique(ids, return_inverse=True)
            samplers = domain.samplers
            rates = np.array([samplers.get((ie, int(i)), 0) for i in known], dtype=np.uint64)[where]
            rate = np.where(rates > 0, rates, rate)
            rate_max = int(rate.max())
            break
    for ie in (34, 50):
        own = _uint(records, plan, ie)
        if own is not None:
            rate = np.minimum(np.where(own > 0, own, rate), 0xFFFFFFFF)  # others are capped as they are heard
            rate_max = int(rate.max())
            break

    zeros = np.zeros(n, np.uint64)
    octets = _uint(records, plan, 1)
    packets = _uint(records, plan, 2)
    # Counters beyond MAX_FLOW_* once sampled, tested before multiplying (raw > limit // rate) so that no
    # product can wrap around 64 bits; the whole batch at once when even its largest counter at its largest rate
    # is within bounds.
    implausible: npt.NDArray[np.bool_] | None = None
    for counter, limit in ((octets, MAX_FLOW_BYTES), (packets, MAX_FLOW_PACKETS)):
        if counter is None or int(counter.max()) <= limit // rate_max:
            continue
        over = counter > np.uint64(limit) // rate
        implausible = over if implausible is None else implausible | over

    protocol = _uint(records, plan, 4)
    src_port = _uint(records, plan, 7)
    dst_port = _uint(records, plan, 11)
    for icmp in (32, 139):  # nfdump's convention: ICMP type and code where the destination port would be
        if dst_port is None:
            dst_port = _uint(records, plan, icmp)
    src_hi, src_lo = _address(records, plan, 8, 27)
    dst_hi, dst_lo = _address(records, plan, 12, 28)
    columns = FlowColumns(
        exporter=per_record(1).astype(np.uint32),
        domain=per_record(2).astype(np.uint32),
        start_ms=start,
        end_ms=end,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        bytes=(zeros if octets is None else octets) * rate,
        packets=(zeros if packets is None else packets) * rate,
        protocol=(zeros if protocol is None else protocol).astype(np.uint8),
        src_port=(zeros if src_port is None else src_port).astype(np.uint16),
        dst_port=(zeros if dst_port is None else dst_port).astype(np.uint16),
        sampling=rate.astype(np.uint32),
    )
    if implausible is None and bad_time is None:
        return columns, 0, 0
    if implausible is None:
        assert bad_time is not None
        drop = bad_time
    elif bad_time is None:
        drop = implausible
    else:
        bad_time = bad_time & ~implausible  # each dropped record counted once, as implausible_counter
        drop = implausible | bad_time
    keep = ~drop
    kept = FlowColumns(**{name: getattr(columns, name)[keep] for name in _COLUMN_DTYPES})
    implausible_count = 0 if implausible is None else int(implausible.sum())
    return kept, implausible_count, 0 if bad_time is None else int(bad_time.sum())
