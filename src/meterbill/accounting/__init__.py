"""Accounting exports read from the invoices and the ledger (`transactions`)."""
