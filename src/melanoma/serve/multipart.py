"""multipart/form-data parsed in memory, with limits, so an upload never touches the disk.

Starlette's form parser spools files over 1 MB to a temporary file; this one keeps every part in memory
(the body is already bounded by serve.max_body_mb) and caps the number of parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(ValueError):
    """A malformed multipart body; the message says what is wrong."""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a multipart/form-data content type, else None."""
    if not content_type:
        return None
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    return params.get(b"boundary") or None


def parse(body: bytes, boundary: bytes, max_parts: int) -> list[Part]:
    parts: list[Part] = []
    headers: dict[str, str] = {}
    cur = {"field": b"", "value": b"", "part": None}

    def on_part_begin():
        headers.clear()

    def on_header_field(data, start, end):
        cur["field"] += data[start:end]

    def on_header_value(data, start, end):
        cur["value"] += data[start:end]

    def on_header_end():
        headers[cur["field"].decode("latin-1").lower()] = cur["value"].decode("latin-1")
        cur["field"] = cur["value"] = b""

    def on_headers_finished():
        if len(parts) >= max_parts:
            raise MultipartError(f"more than {max_parts} parts")
        kind, params = parse_options_header(headers.get("content-disposition", ""))
        if kind != b"form-data" or b"name" not in params:
            raise MultipartError("a part without Content-Disposition: form-data; name=...")
        filename = params.get(b"filename")
        part = Part(params[b"name"].decode("utf-8", "replace"),
                    filename.decode("utf-8", "replace") if filename is not None else None,
                    headers.get("content-type"))
        parts.append(part)
        cur["part"] = part

    def on_part_data(data, start, end):
        cur["part"].data += data[start:end]

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartError:
        raise
    except Exception as e:  # python-multipart raises several types for malformed bodies
        raise MultipartError(f"malformed multipart body: {e}") from None
    return parts
