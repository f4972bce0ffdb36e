"""
C{revproxyctl}: the operators' command line for the routes in etcd:
arguments, route documents (import and export), plans (changes as guarded
transactions) and the commands.
"""
