"""Electronic invoices (EN 16931): the document's data, its CII and UBL XML, the business
rules that apply, and the Factur-X PDF/A-3 with the CII embedded."""

PROFILE = "factur-x:en16931"
GUIDELINE_ID = "urn:cen.eu:en16931:2017"
