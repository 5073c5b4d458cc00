"""The ASGI app for servers: `uvicorn meterbill.main:app` (what `meterbill serve` runs)."""

from meterbill.app import create_app

app = create_app(migrate=False)  # `meterbill serve` migrated before starting workers
