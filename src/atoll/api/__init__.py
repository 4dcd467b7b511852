"""The compute API: OpenStack Compute v2.1 with microversions, over FastAPI.

Entry point: ``atoll.api.app.create_app(runtime)``.  The shared toolkit for
routers is ``deps`` (dependencies, input helpers, cell scatter), ``policy``,
``microversion``, ``links``, ``quotas`` and ``errors``; each documents its
interface in its docstring.
"""
