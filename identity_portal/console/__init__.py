"""The console's own pages beside Django's admin: dashboard, machine actions, audit log.

They live here, in the app that may import every other (``tokens`` -> ``clients``
-> ``audit``), because each page combines them. Every view checks the role
(``core.roles``) and every write goes through a service of its app.
"""
