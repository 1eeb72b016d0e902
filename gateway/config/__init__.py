"""Configuration: YAML → validated models, every problem located, cross-checked.

``loader`` reads a gateway config (profiles, ``${ENV}`` secrets, compact loading in
a child process); ``schema`` is the whole file's model; ``models/`` holds the
legally relevant models of instruments and point maps; ``registry`` is the one
table of driver kinds (config model, plan, builder, checks, simulator of each);
``checks`` the checks that span several objects. May import ``gateway.common``,
``gateway.wire`` and ``drivers``; never I/O beyond reading the config files.
"""
