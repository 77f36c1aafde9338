"""Clinic mode (opt-in): accounts, consented cases with their photo and kulit's answer, the
reviewer's confirmed diagnosis, an append-only audit log, and the export that feeds
`kulit data`. Off unless `kulit serve --clinic`; the public mode never imports it.

Layout: config (settings), models (tables), db (engine, migrations), auth (passwords, tokens,
sessions, CSRF, lockout), vocab (the fields a case may hold), store (cases, photos, audit,
retention), api and pages (routers), web (mounted by create_app), export, cli (`kulit clinic`).
"""
