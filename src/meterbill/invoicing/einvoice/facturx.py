"""Factur-X: the PDF/A-3 printed by WeasyPrint with the CII XML embedded as
`factur-x.xml` (AFRelationship Alternative: the XML is the invoice in another form) and the
XMP metadata the standard asks for, by the `factur-x` library, which validates the XML
against the official XSD on the way."""

from __future__ import annotations

import logging
import threading

from meterbill.invoicing.einvoice.document import CREDIT_NOTE_TYPE, EDocument

FACTURX_LEVEL = "en16931"
# The library logs every step at INFO; only its warnings matter here.
logging.getLogger("factur-x").setLevel(logging.WARNING)
logging.getLogger("facturx").setLevel(logging.WARNING)
# The library parses the XSD on every check; two threads doing it at once (two documents
# rendered side by side in one process) once failed with libxml2's "XMLSchemaParseError:
# Internal error: xmlSchemaPValAttrNodeValue, the given type is not a built-in type". One
# check at a time per process.
_XSD_LOCK = threading.Lock()


def embed_facturx(pdf_a3: bytes, cii_xml: bytes, doc: EDocument) -> bytes:
    """The Factur-X PDF: `pdf_a3` (a PDF/A-3b) with `cii_xml` embedded, XSD-checked."""
    from facturx import generate_from_binary

    kind = "Avoir" if doc.type_code == CREDIT_NOTE_TYPE else "Facture"
    metadata = {
        "author": doc.seller.name,
        "keywords": f"{kind}, Factur-X",
        "title": f"{doc.seller.name}: {kind} {doc.number}",
        "subject": f"{kind} {doc.number} du {doc.issue_date:%d/%m/%Y} émise par {doc.seller.name}",
    }
    with _XSD_LOCK:
        result = generate_from_binary(
            pdf_a3,
            cii_xml,
            flavor="factur-x",
            level=FACTURX_LEVEL,
            check_xsd=True,
            pdf_metadata=metadata,
            lang="fr-FR",
            afrelationship="alternative",
        )
    return bytes(result)


def check_cii_xsd(cii_xml: bytes) -> None:
    """Raise when the XML breaks the official Factur-X EN 16931 XSD."""
    from facturx import xml_check_xsd

    with _XSD_LOCK:
        xml_check_xsd(cii_xml, flavor="factur-x", level=FACTURX_LEVEL)
