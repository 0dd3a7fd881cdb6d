"""PMML as XML: the one hardened parser, the serialiser and the namespace, shared by the corrections and the compiler.

Why one parser: both read PMML bytes into a tree; one function means one set of XML defences (defusedxml with no
DTDs, entities or external references) and one wording of a refusal. It complements `experiment.model.pmml_guard`,
which screens a file before any parser (pypmml's included) reads it; this one protects bytes that never were a file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException

from experiment.core.errors import ModelError

__all__ = ["PMML_NAMESPACE", "local_name", "parse_xml", "serialize_pmml"]

#: The namespace our exporter writes (PMML 4.4); readers compare local names, so other 4.x files parse too.
PMML_NAMESPACE = "http://www.dmg.org/PMML-4_4"


def parse_xml(data: bytes | str, *, source: str = "<bytes>") -> ET.Element:
    """Parse PMML text with a parser hardened against XML attacks; `source` only names it in the `ModelError`."""
    try:
        return safe_et.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ModelError(f"refusing PMML {source}: it is not safe XML ({type(exc).__name__}: {exc})") from exc
    except ET.ParseError as exc:
        raise ModelError(f"refusing PMML {source}: it is not well-formed XML ({exc})") from exc


def serialize_pmml(root: ET.Element) -> bytes:
    """Serialise with the PMML namespace as the default (no ``ns0:`` prefixes, which engines may reject)."""
    ET.register_namespace("", PMML_NAMESPACE)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def local_name(tag: str) -> str:
    """The tag without its XML namespace (PMML 4.x files differ only in the namespace URI)."""
    return tag.rsplit("}", 1)[-1]
