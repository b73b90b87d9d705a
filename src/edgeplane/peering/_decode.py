"""NetFlow v5 / v9 / IPFIX decoding: datagrams in, numpy flow columns out, with each exporter's templates."""

from __future__ import annotations

import struct
from collections.abc import Sequence
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
)

# A hostile exporter could otherwise invent a new observation domain per datagram, each with its own
# max_templates; real routers use one per line card at most.
MAX_DOMAINS_PER_EXPORTER: Final = 64

_V4_MAPPED: Final = 0x0000FFFF00000000
_NTP_TO_UNIX_SECONDS: Final = 2_208_988_800
_VARIABLE: Final = 65535  # an IPFIX field length that means "length prefix in each record"
_NOT_AN_IE: Final = -1  # an enterprise field, or a v9 scope field (its own numbering): never read as an IE

_HEADER_V5 = struct.Struct("!HIIIIBBH")
_HEADER_V9 = struct.Struct("!IIII")
_HEADER_IPFIX = struct.Struct("!HIII")
_SET_HEADER = struct.Struct("!HH")
_V5_HEADER_BYTES: Final = 24
_V5_RECORD_BYTES: Final = 48

# Information elements read from flow records, and the lengths at which we can read them; a known IE at
# another length is skipped like an unknown one.
_ADDRESS_IES: Final = {8: 4, 12: 4, 27: 16, 28: 16}
_NTP_IES: Final = frozenset({154, 155, 156, 157})  # IPFIX dateTimeMicro/Nanoseconds: NTP 32.32 fixed point
_INT_IES: Final = frozenset({1, 2, 4, 7, 11, 21, 22, 32, 34, 48, 50, 139, 150, 151, 152, 153, 158, 159, 302})
# Information elements read from options data records.
_OPTION_IES: Final = frozenset({34, 48, 50, 160, 302, 305, 306})
_OPTION_VALUE_IES: Final = frozenset({34, 50, 160, 305})

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


class _Domain:
    """What one (exporter, version, domain) has told us: its templates and what its options data said."""

    __slots__ = ("init_ms", "rate", "samplers", "templates")

    def __init__(self) -> None:
        self.templates: dict[int, _FlowTemplate | _OptionsTemplate] = {}
        self.rate = 0  # from options data without a sampler id; 0 = none heard
        self.samplers: dict[tuple[int, int], int] = {}  # (IE 48 or 302, id) -> rate
        self.init_ms = -1  # IPFIX systemInitTimeMilliseconds; -1 = none heard


class _FlowTemplate:
    """A data template, and the set bodies buffered for it since the last take().

    Bodies hold fixed-length records. For a template with variable-length fields decode() copies each
    record's fixed-length fields into one such record (the variable ones are never read), so take() reads
    every template alike: one np.frombuffer over all its bodies."""

    __slots__ = ("bodies", "domain", "dtype", "layout", "meta", "plan", "record_bytes", "segments")

    def __init__(self, layout: bytes, fields: Sequence[_Field], domain: _Domain | None, *, variable: bool) -> None:
        self.layout = layout
        self.domain = domain
        self.bodies: list[bytes] = []
        self.meta: list[_SetMeta] = []
        # segments: for variable-length templates, runs of fixed bytes (>= 0) and variable fields (-1).
        self.segments: list[int] | None = None
        self.plan: dict[int, tuple[int, int]] = {}  # IE -> (offset in the fixed record, length)
        offset = 0
        for ie, length in fields:
            if length == _VARIABLE and variable:
                if self.segments is None:
                    self.segments = _fixed_runs(fields)
                continue
            if ie not in self.plan and _readable(ie, length):
                self.plan[ie] = (offset, length)
            offset += length
        self.record_bytes = offset
        self.dtype = _record_dtype(self.plan, offset) if self.has_addresses else None

    @property
    def has_addresses(self) -> bool:
        return any(ie in self.plan for ie in _ADDRESS_IES)


class _OptionsTemplate:
    """An options template: its records are read one by one at decode time (they are few)."""

    __slots__ = ("fields", "layout", "min_bytes", "useful", "variable")

    def __init__(self, layout: bytes, fields: Sequence[_Field], *, variable: bool) -> None:
        self.layout = layout
        self.variable = variable
        self.fields = [(ie if ie in _OPTION_IES else _NOT_AN_IE, length) for ie, length in fields]
        self.min_bytes = sum(1 if length == _VARIABLE and variable else length for _, length in fields)
        self.useful = any(ie in _OPTION_VALUE_IES for ie, _ in self.fields)


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
            runs.append(-1)
        elif length and runs and runs[-1] >= 0:
            runs[-1] += length
        elif length:
            runs.append(length)
    return runs


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
    regularly. Times come from the exporters' headers (as nfcapd does); received_ms is not used."""

    def __init__(self, *, max_exporters: int = 4096, max_templates: int = 1024) -> None:
        self.exporters: list[str] = []
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.records = 0
        self.datagrams = 0
        self._max_exporters = max_exporters
        self._max_templates = max_templates
        self._exporter_index: dict[str, int] = {}
        self._domains: dict[tuple[int, int, int], _Domain] = {}
        self._domains_per_exporter: dict[int, int] = {}
        self._data_templates = 0
        self._v5 = _FlowTemplate(b"", _V5_FIELDS, None, variable=False)
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

    def _exporter(self, exporter: str) -> int:
        index = self._exporter_index.get(exporter)
        if index is None:
            if len(self.exporters) >= self._max_exporters:
                self.dropped["too_many_exporters"] += 1
                return -1
            index = self._exporter_index[exporter] = len(self.exporters)
            self.exporters.append(exporter)
        return index

    def _decode_v5(self, data: bytes, exporter: str) -> None:
        size = len(data)
        if size < _V5_HEADER_BYTES:
            self.dropped["short"] += 1
            return
        count, uptime, secs, nsecs, _, engine_type, engine_id, sampling = _HEADER_V5.unpack_from(data, 2)
        if size != _V5_HEADER_BYTES + count * _V5_RECORD_BYTES:
            self.dropped["length"] += 1
            return
        index = self._exporter(exporter)
        if index < 0 or not count:
            return
        template = self._v5
        if not template.bodies:
            self._dirty.append(template)
        template.bodies.append(data[_V5_HEADER_BYTES:])
        export_ms = secs * 1000 + nsecs // 1_000_000
        template.meta.append((count, index, engine_type << 8 | engine_id, export_ms, uptime, sampling & 0x3FFF or 1))

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
        index = self._exporter(exporter)
        if index < 0:
            return
        export_ms = secs * 1000
        key = (index, version, domain_id)
        domain = self._domains.get(key)
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
                    if template.dtype is None:
                        self.dropped["no_addresses"] += 1
                        continue
                    if template.segments is None:
                        count = (end - body) // template.record_bytes
                        chunk = data[body : body + count * template.record_bytes]
                    else:
                        chunk, count = _flatten(template.segments, data, body, end)
                    if not count:
                        continue
                    if not template.bodies:
                        self._dirty.append(template)
                    template.bodies.append(chunk)
                    if version == 10:
                        # Uptime-relative times in IPFIX count from the exporter's init time (options data).
                        uptime = (export_ms - domain.init_ms) & 0xFFFFFFFF if domain.init_ms >= 0 else -1
                    template.meta.append((count, index, domain_id, export_ms, uptime, domain.rate or 1))
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

    def _read_templates(self, data: bytes, position: int, end: int, key: tuple[int, int, int], version: int) -> None:
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

    def _read_v9_options_templates(self, data: bytes, position: int, end: int, key: tuple[int, int, int]) -> None:
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

    def _read_ipfix_options_templates(self, data: bytes, position: int, end: int, key: tuple[int, int, int]) -> None:
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
        self, key: tuple[int, int, int], template_id: int, layout: bytes, fields: list[_Field], *, options: bool
    ) -> None:
        domain = self._domains.get(key)
        if domain is None:
            held = self._domains_per_exporter.get(key[0], 0)
            if held >= MAX_DOMAINS_PER_EXPORTER:
                self.dropped["too_many_templates"] += 1
                return
            domain = self._domains[key] = _Domain()
            self._domains_per_exporter[key[0]] = held + 1
        old = domain.templates.get(template_id)
        kind = _OptionsTemplate if options else _FlowTemplate
        if old is not None and type(old) is kind and old.layout == layout:
            return  # the periodic resend of a template we hold
        if old is None and len(domain.templates) >= self._max_templates:
            self.dropped["too_many_templates"] += 1
            return
        new: _FlowTemplate | _OptionsTemplate
        if options:
            new = _OptionsTemplate(layout, fields, variable=key[1] == 10)
            if new.min_bytes == 0:  # records of no bytes could never be read past
                self.dropped["malformed_template"] += 1
                return
        else:
            new = _FlowTemplate(layout, fields, domain, variable=key[1] == 10)
            if new.record_bytes == 0 and new.segments is None:
                self.dropped["malformed_template"] += 1
                return
        # A replaced template keeps its buffered bodies: take() still decodes them with the old layout.
        domain.templates[template_id] = new
        self._data_templates += (type(new) is _FlowTemplate) - (type(old) is _FlowTemplate)

    def _withdraw(self, key: tuple[int, int, int], template_id: int, kind: type) -> None:
        domain = self._domains.get(key)
        if domain is None:
            return
        if template_id < 256:  # 2 (template set) or 3 (options template set): all templates of that kind
            doomed = [tid for tid, t in domain.templates.items() if type(t) is kind]
        else:
            doomed = [template_id] if template_id in domain.templates else []
        for tid in doomed:
            if type(domain.templates.pop(tid)) is _FlowTemplate:
                self._data_templates -= 1

    # Options data

    def _read_options(self, template: _OptionsTemplate, domain: _Domain, data: bytes, position: int, end: int) -> None:
        variable = template.variable
        while end - position >= template.min_bytes:
            values: dict[int, int] = {}
            for ie, length in template.fields:
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
                if ie != _NOT_AN_IE and 1 <= length <= 8:
                    values.setdefault(ie, int.from_bytes(data[position : position + length], "big"))
                position += length
            self._apply_options(domain, values)

    def _apply_options(self, domain: _Domain, values: dict[int, int]) -> None:
        if values.get(160, 0) > 0:
            domain.init_ms = values[160]
        rate = values.get(34) or values.get(50) or 0
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
        if sampler not in samplers and len(samplers) >= self._max_templates:
            del samplers[next(iter(samplers))]  # the oldest: routers renumber samplers, they rarely add many
        samplers[sampler] = rate

    # Columns

    def take(self) -> FlowColumns:
        """Everything buffered since the last take(), decoded; the buffer is emptied."""
        parts = []
        for template in self._dirty:
            parts.append(_columns(template, b"".join(template.bodies), template.meta))
            template.bodies = []
            template.meta = []
        self._dirty = []
        columns = FlowColumns.concat(parts)
        self.records += len(columns)
        return columns


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


def _flatten(segments: list[int], data: bytes, position: int, end: int) -> tuple[bytes, int]:
    """The fixed-length fields of each variable-length record, packed as fixed-length records."""
    parts: list[bytes] = []
    count = 0
    while position < end:
        at, mark = position, len(parts)
        for run in segments:
            if run >= 0:
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
        del parts[mark:]  # a record cut short: padding or truncation, never half a flow
        break
    return b"".join(parts), count


def _uint(records: npt.NDArray[np.void], template: _FlowTemplate, ie: int) -> _U64 | None:
    spec = template.plan.get(ie)
    if spec is None:
        return None
    column = records[str(ie)]
    if column.ndim == 1:
        return column.astype(np.uint64)
    folded = np.zeros(len(records), np.uint64)
    for k in range(spec[1]):
        folded = (folded << 8) | column[:, k]
    return folded


def _address(records: npt.NDArray[np.void], template: _FlowTemplate, v4: int, v6: int) -> tuple[_U64, _U64]:
    n = len(records)
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    if v4 in template.plan:
        lo = records[str(v4)].astype(np.uint64) | np.uint64(_V4_MAPPED)
    if v6 in template.plan:
        hi6, lo6 = records[f"{v6}h"].astype(np.uint64), records[f"{v6}l"].astype(np.uint64)
        if v4 in template.plan:  # templates carrying both zero the one a record does not use
            six = (hi6 | lo6) != 0
            return np.where(six, hi6, hi), np.where(six, lo6, lo)
        return hi6, lo6
    return hi, lo


def _time(
    records: npt.NDArray[np.void],
    template: _FlowTemplate,
    ies: tuple[int, int, int, int, int, int],
    export: _I64,
    uptime: _I64,
) -> _I64 | None:
    milliseconds, seconds, micro, nano, delta, switched = ies
    if (value := _uint(records, template, milliseconds)) is not None:
        return value.astype(np.int64)
    if (value := _uint(records, template, seconds)) is not None:
        return value.astype(np.int64) * 1000
    for ntp in (micro, nano):
        if (value := _uint(records, template, ntp)) is not None:
            fraction_ms = ((value & 0xFFFFFFFF) * 1000) >> 32
            return ((value >> 32).astype(np.int64) - _NTP_TO_UNIX_SECONDS) * 1000 + fraction_ms.astype(np.int64)
    if (value := _uint(records, template, delta)) is not None:
        return export - (value // 1000).astype(np.int64)
    if (value := _uint(records, template, switched)) is not None:
        # Flows end before their export: a switched time "after" the uptime wrapped around 2**32 ms.
        ticks = (value & 0xFFFFFFFF).astype(np.int64)
        return np.where(uptime >= 0, export - ((uptime - ticks) & 0xFFFFFFFF), export)
    return None


def _columns(template: _FlowTemplate, joined: bytes, meta: list[_SetMeta]) -> FlowColumns:
    assert template.dtype is not None  # only templates with addresses are ever buffered
    records = np.frombuffer(joined, dtype=template.dtype)
    n = len(records)
    sets = np.array(meta, dtype=np.int64).reshape(-1, 6)
    counts = sets[:, 0]

    def per_record(column: int) -> _I64:
        return np.repeat(sets[:, column], counts)

    export, uptime = per_record(3), per_record(4)
    start = _time(records, template, (152, 150, 154, 156, 158, 22), export, uptime)
    end = _time(records, template, (153, 151, 155, 157, 159, 21), export, uptime)
    if start is None:
        start = export if end is None else end
    if end is None:
        end = start

    rate = per_record(5).astype(np.uint64)
    # The sampler table as it stands now: a sampler's rate heard after its flows, in the same batch, still counts.
    for ie in (48, 302):
        ids = _uint(records, template, ie)
        if ids is not None and template.domain is not None and template.domain.samplers:
            known, where = np.unique(ids, return_inverse=True)
            samplers = template.domain.samplers
            rates = np.array([samplers.get((ie, int(i)), 0) for i in known], dtype=np.uint64)[where]
            rate = np.where(rates > 0, rates, rate)
            break
    for ie in (34, 50):
        own = _uint(records, template, ie)
        if own is not None:
            rate = np.where(own > 0, own, rate)
            break
    rate = np.minimum(rate, 0xFFFFFFFF)

    zeros = np.zeros(n, np.uint64)
    octets = _uint(records, template, 1)
    packets = _uint(records, template, 2)
    protocol = _uint(records, template, 4)
    src_port = _uint(records, template, 7)
    dst_port = _uint(records, template, 11)
    for icmp in (32, 139):  # nfdump's convention: ICMP type and code where the destination port would be
        if dst_port is None:
            dst_port = _uint(records, template, icmp)
    src_hi, src_lo = _address(records, template, 8, 27)
    dst_hi, dst_lo = _address(records, template, 12, 28)
    return FlowColumns(
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
