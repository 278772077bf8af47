"""A line-protocol reader written from the InfluxDB reference grammar, independent of the
encoder under test (used by the line-protocol tests and the fake InfluxDB server)."""

from __future__ import annotations


def _read_name(line: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    out = []
    while i < len(line) and line[i] not in stops:
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in escapable:
            out.append(line[i + 1])
            i += 2
        else:
            out.append(line[i])
            i += 1
    return "".join(out), i


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    assert "\n" not in line
    measurement, i = _read_name(line, 0, ", ", ", ")
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = _read_name(line, i + 1, "=", ",= ")
        assert line[i] == "="
        value, i = _read_name(line, i + 1, ", ", ",= ")
        tags[key] = value
    assert line[i] == " "
    i += 1
    fields: dict[str, object] = {}
    while True:
        key, i = _read_name(line, i, "=", ",= ")
        i += 1
        if line[i] == '"':
            i += 1
            chars = []
            while line[i] != '"':
                if line[i] == "\\" and line[i + 1] in '"\\':
                    i += 1
                chars.append(line[i])
                i += 1
            fields[key] = "".join(chars)
            i += 1
        else:
            j = i
            while line[j] not in ", ":
                j += 1
            token = line[i:j]
            fields[key] = int(token[:-1]) if token.endswith("i") else float(token)
            i = j
        if line[i] == " ":
            break
        assert line[i] == ","
        i += 1
    return measurement, tags, fields, int(line[i + 1 :])


def parse(payload: bytes) -> list[tuple[str, dict[str, str], dict[str, object], int]]:
    assert payload.endswith(b"\n")
    return [parse_line(line) for line in payload.decode().split("\n")[:-1]]
