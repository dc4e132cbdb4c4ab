"""Independent readers of what domain/siem.py writes (RFC 5424 with structured data, RFC 6587 octet counting,
CEF, LEEF 2.0), written from the specifications, for the unit and integration tests."""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSLOG_HEADER = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
CEF_KEY = re.compile(r"(?:^| )([A-Za-z0-9_]+)=")  # a key never holds a backslash, so this "=" is never escaped


@dataclass
class SyslogMessage:
    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: str

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8


def _sd_elements(text: str) -> tuple[dict[str, dict[str, str]], str]:
    """The STRUCTURED-DATA at the start of ``text`` (RFC 5424 6.3) and what follows it."""
    if text.startswith("-"):
        return {}, text[1:]
    elements: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(text) and text[i] == "[":
        end_id = min(p for p in (text.find(" ", i), text.find("]", i)) if p != -1)
        sd_id, i, params = text[i + 1:end_id], end_id, {}
        while text[i] == " ":
            eq = text.index("=", i)
            name = text[i + 1:eq]
            assert text[eq + 1] == '"', text[eq:eq + 10]
            j, value = eq + 2, []
            while text[j] != '"':
                if text[j] == "\\" and text[j + 1] in '"\\]':
                    value.append(text[j + 1])
                    j += 2
                else:
                    value.append(text[j])
                    j += 1
            params[name] = "".join(value)
            i = j + 1
        assert text[i] == "]", text[i:i + 10]
        elements[sd_id] = params
        i += 1
    return elements, text[i:]


def parse_syslog(line: str) -> SyslogMessage:
    """An RFC 5424 message (the MSG without BOM)."""
    match = SYSLOG_HEADER.match(line)
    assert match, line[:200]
    sd, rest = _sd_elements(line[match.end():])
    assert rest == "" or rest.startswith(" "), rest[:50]
    return SyslogMessage(int(match[1]), match[2], match[3], match[4], match[5], match[6], sd, rest[1:])


def split_octet_counted(data: bytes) -> list[str]:
    """The messages of an RFC 6587 octet-counted stream; fails on any byte out of place."""
    messages, i = [], 0
    while i < len(data):
        space = data.index(b" ", i)
        length = int(data[i:space])
        assert data[i:space] == str(length).encode(), data[i:space]
        messages.append(data[space + 1:space + 1 + length].decode("utf-8"))
        assert len(messages[-1].encode()) == length
        i = space + 1 + length
    return messages


def _unescape_cef(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), value)


def _header(record: str, count: int) -> tuple[list[str], int]:
    """The first ``count`` |-separated fields of a CEF or LEEF record (\\| and \\\\ unescaped), and where the rest
    starts."""
    header, field, i = [], [], 0
    while len(header) < count:
        ch = record[i]
        if ch == "\\" and record[i + 1] in "\\|":
            field.append(record[i + 1])
            i += 2
            continue
        if ch == "|":
            header.append("".join(field))
            field = []
        else:
            field.append(ch)
        i += 1
    return header, i


def parse_cef(record: str) -> tuple[list[str], dict[str, str]]:
    """A CEF record: its seven header fields (unescaped) and its extension's key/value pairs (unescaped)."""
    assert record.startswith("CEF:"), record[:50]
    header, i = _header(record, 7)
    extension = record[i:]
    keys = list(CEF_KEY.finditer(extension))
    pairs = {}
    for n, key in enumerate(keys):
        end = keys[n + 1].start() if n + 1 < len(keys) else len(extension)
        pairs[key[1]] = _unescape_cef(extension[key.end():end])
    return header, pairs


def parse_leef(record: str) -> tuple[list[str], dict[str, str]]:
    """A LEEF 2.0 record: its six header fields and its attributes (split at the declared delimiter)."""
    assert record.startswith("LEEF:2.0|"), record[:50]
    header, i = _header(record, 6)
    delimiter = chr(int(header[5][1:], 16)) if header[5].startswith("x") else header[5]
    attributes = dict(pair.split("=", 1) for pair in record[i:].split(delimiter))
    return header, attributes
