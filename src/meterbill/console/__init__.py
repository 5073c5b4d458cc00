"""The web faces of meterbill: the operator console (/admin) and the end-user billing page.

Like the HTTP API and the CLI, a page only parses its input, calls the domains' service
functions and renders a template: no query and no billing rule lives here.
"""
