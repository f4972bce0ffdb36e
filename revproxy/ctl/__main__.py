"""
C{python -m revproxy.ctl.main}: the same as C{revproxyctl}.
"""

from revproxy.ctl.main import main

main()
