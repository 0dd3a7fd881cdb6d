"""The one gate every PMML file passes before any XML parser or PMML engine (pypmml included) reads it.

Why: pypmml hands the file to a Java XML parser that resolves DTDs and external entities, so a PMML with a DOCTYPE
can make whoever loads it fetch URLs, read local files and send them out (out-of-band, through a parameter entity
and an external DTD), or expand a billion laughs. Our own parsers use defusedxml, but that protects only themselves;
the file must be refused before pypmml is given it. `check_pmml` streams the file once through defusedxml's expat
parser (which never fetches anything) and refuses, with a `ModelError` naming the file and the reason:

- any DOCTYPE (so no DTD, internal or external, and no entity declaration), any entity reference, any processing
  instruction and any XInclude element: PMML needs none of them, and each is a way to make a parser fetch or expand;
- a declared encoding other than UTF-8 (so that every parser reads the same characters the gate read);
- a file larger than `MAX_PMML_BYTES`, or elements nested deeper than `MAX_ELEMENT_DEPTH`;
- a root element other than ``<PMML>`` (in no namespace or a DMG PMML namespace), or XML that is not well-formed.

It lives in `experiment` because that package (with `flink_pipeline`) is what the job ships to a cluster; it needs
only the standard library and defusedxml. Checking the sha256 against model.json stays with the model card
(`experiment.model.card.ModelCard.verify_pmml`) and the scorer (`experiment.model.scorer`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO
from xml.parsers.expat import errors as expat_errors

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from experiment.core.errors import ModelError

__all__ = ["MAX_ELEMENT_DEPTH", "MAX_PMML_BYTES", "check_pmml"]

#: Largest PMML accepted, in bytes (our 300-tree, depth-6 export is a few MB); read at call time, so configurable.
MAX_PMML_BYTES = 200 * 1024 * 1024
#: Deepest element nesting accepted (our export nests about 20 levels; the compiler stops at trees of depth 80).
MAX_ELEMENT_DEPTH = 512

_CHUNK = 1 << 20
_PMML_NAMESPACE_PREFIX = "http://www.dmg.org/PMML-"
_XINCLUDE_NAMESPACE = "{http://www.w3.org/2001/XInclude}"
_UTF8_NAMES = frozenset({"utf-8", "us-ascii"})
_UNDEFINED_ENTITY = expat_errors.codes[expat_errors.XML_ERROR_UNDEFINED_ENTITY]
_DECLARED_ENCODING = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")


class _Refused(Exception):
    """A reason to refuse found while scanning (becomes the `ModelError` message)."""


class _Scan:
    """A parser target that builds no tree: it tracks depth and the root, and refuses what PMML never needs."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self.root: str | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise _Refused(f"elements nest deeper than {self.max_depth} levels")
        if self.root is None:
            self.root = tag
            namespace, _, local = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
            if local != "PMML":
                raise _Refused(f"the root element is <{local}>, expected <PMML>")
            if namespace and not namespace.startswith(_PMML_NAMESPACE_PREFIX):
                raise _Refused(f"the root <PMML> is in namespace {namespace!r}, not a DMG PMML namespace")
        if tag.startswith(_XINCLUDE_NAMESPACE):
            raise _Refused("it contains an XInclude element, which would make a parser fetch another document")

    def end(self, tag: str) -> None:
        self.depth -= 1

    def pi(self, target: str, data: str) -> None:
        raise _Refused(f"it contains a processing instruction <?{target} ...?>; PMML needs none")

    def close(self) -> None:
        if self.root is None:
            raise _Refused("it has no root element")


def check_pmml(path: str | Path, *, max_bytes: int | None = None, max_depth: int | None = None) -> None:
    """Raise `ModelError` (one line: the file and the reason) unless `path` is a PMML file that is safe to parse.

    Call it before anything else reads the file. The limits default to `MAX_PMML_BYTES` and `MAX_ELEMENT_DEPTH`.
    """
    path = Path(path)
    limit = MAX_PMML_BYTES if max_bytes is None else max_bytes
    depth = MAX_ELEMENT_DEPTH if max_depth is None else max_depth
    try:
        _scan(path, limit, depth)
    except _Refused as reason:
        raise ModelError(f"refusing PMML {path}: {reason}") from None


def _scan(path: Path, limit: int, max_depth: int) -> None:
    if not path.is_file():  # also refuses FIFOs and devices, which could be read forever
        raise _Refused("it does not exist or is not a regular file")
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise _Refused(f"it is {size:,} bytes, over the limit of {limit:,}")
            _parse(handle, limit, max_depth)
    except OSError as error:
        raise _Refused(f"it cannot be read ({error.strerror or error})") from error


def _parse(handle: BinaryIO, limit: int, max_depth: int) -> None:
    # encoding="utf-8" overrides the declaration, so the gate never decodes differently from what it checked.
    parser = DefusedXMLParser(
        target=_Scan(max_depth), encoding="utf-8", forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    read = 0
    first = True
    try:
        while chunk := handle.read(_CHUNK):
            read += len(chunk)
            if read > limit:  # the file grew after the size check
                raise _Refused(f"it is over the limit of {limit:,} bytes")
            if first:
                _check_declared_encoding(chunk)
                first = False
            parser.feed(chunk)
        parser.close()
    except DTDForbidden as error:
        external = f" naming the external DTD {error.sysid!r}" if error.sysid else ""
        raise _Refused(
            f"it has a DOCTYPE{external}; DTDs, entities and external references are never accepted"
        ) from None
    except EntitiesForbidden as error:
        raise _Refused(f"it declares the entity {error.name!r}; entities are never accepted") from None
    except ExternalReferenceForbidden as error:
        raise _Refused(f"it references the external entity {error.sysid!r}; entities are never accepted") from None
    except ParseError as error:
        if error.code == _UNDEFINED_ENTITY:
            raise _Refused(f"it references an entity ({error}); entities are never accepted") from None
        raise _Refused(f"it is not well-formed XML ({error})") from None


def _check_declared_encoding(head: bytes) -> None:
    """Refuse a declared encoding other than UTF-8: another parser would then read other characters than ours."""
    match = _DECLARED_ENCODING.match(head)
    if match is not None and match.group(1).decode("ascii", "replace").strip().lower() not in _UTF8_NAMES:
        raise _Refused(f"it declares encoding {match.group(1).decode('ascii', 'replace')!r}; only UTF-8 is accepted")
