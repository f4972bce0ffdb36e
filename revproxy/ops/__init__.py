"""
What operators see and use: the drain on shutdown, the access log, JSON
logs, the request counters behind C{/metrics} and the admin site.  These
modules read the rest of revproxy; nothing below them imports them.
"""
