"""The pod launcher: the only process of the mesh that forks programs.

``ambient up`` (and any ``Supervisor``) starts one ``python -I -S`` process that
imports nothing but the standard library and this package, before any gRPC
channel exists, and asks it over a socket pair to start each container. It
forks, sets the child up (process group, log, network and mount namespaces,
user) in Python, which is safe in a single-threaded process, and execs.

Why a separate process: a process that runs gRPC must not ``fork()``. gRPC
registers ``pthread_atfork`` handlers (its fork support is on by default in
grpcio), and a child forked while gRPC's threads poll runs them and dies now and
then before it can exec (SIGSEGV, or SIGABRT "Check failed:
next_worker->state == KICKED"). ``--netns`` made ``ambient up`` a gRPC client
(its node agent follows xDS), and both of its ways of starting a process forked:
uvloop's ``uv_spawn`` always calls ``fork()``, and CPython's subprocess falls
back from ``vfork()`` to ``fork()`` as soon as a ``preexec_fn`` is given. (That
is also why exec'ing through ``setpriv`` did not help: the fork was the
problem, not the Python after it.) The launcher itself is started with
``subprocess.Popen`` without a ``preexec_fn``, i.e. ``vfork()``, which runs no
atfork handlers.

Modules: ``wire`` (messages), ``sandbox`` (what the child does before exec, and
what this host can isolate), ``server`` (the launcher process), ``client`` (the
asyncio side the runtime uses).
"""
