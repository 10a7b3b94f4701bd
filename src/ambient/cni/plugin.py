"""``ambient-cni``: the chained CNI plugin a container runtime calls on every pod add and delete.

It is istio-cni's plugin in ambient mode, reduced to what has to happen inside the
runtime's call: on ``ADD`` of a Kubernetes pod it hands the pod's network namespace
path, name, namespace, uid and addresses (``prevResult``) to the node agent over the
Unix socket ``<agent_run_dir>/pluginevent.sock`` (``POST /cmdadd``, JSON), waits for
the agent's answer, and prints ``prevResult`` unchanged for the next plugin. The node
agent (``ambient.nodeagent.pluginevents``) decides whether the pod is enrolled, and
for an enrolled pod installs the redirection in its namespace *before* it answers, so
the pod's first packet is already captured.

The contract (CNI spec 1.1, versions 0.3.0 to 1.1.0):

- environment: ``CNI_COMMAND`` (``ADD``, ``DEL``, ``CHECK``, ``VERSION``, ``GC``,
  ``STATUS``), ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS``
  (``K8S_POD_NAME=...;K8S_POD_NAMESPACE=...;K8S_POD_UID=...``), ``CNI_PATH``;
- stdin: the plugin's entry of the network configuration list with the list's
  ``name`` and ``cniVersion`` and the previous plugin's ``prevResult``;
- configuration fields of ours: ``agent_run_dir`` (default ``/var/run/ambient/cni``),
  ``exclude_namespaces`` (pods there are passed through without asking the agent;
  default ``kube-system``), ``timeout_seconds`` (default 20);
- stdout: on ``ADD`` the ``prevResult`` (with the configuration's ``cniVersion``); on
  ``VERSION`` the supported versions; nothing on ``DEL``, ``CHECK``, ``GC``, ``STATUS``;
  on failure the spec's error object ``{"cniVersion", "code", "msg", "details"}`` and
  exit status 1.

Decisions:

- **Who knows whether a pod is enrolled: the node agent.** istio-cni's plugin reads the
  pod's and namespace's labels from the API server with a kubeconfig that install-cni
  writes into the host's CNI folder. This plugin holds no credentials and makes no
  API request: it forwards every pod outside ``exclude_namespaces`` and the agent,
  which has the API server (and rechecks there anyway in istio-cni), decides. The
  agent also learns the namespaces of pods that are not enrolled yet, so labelling
  their namespace later captures them without a restart.
- **Fail closed.** If the agent cannot be reached or refuses, ``ADD`` fails (code 11,
  "try again later", when unreachable; 100 when refused): the runtime tears the
  sandbox down and the kubelet retries with back-off. A pod of the mesh must never run
  uncaptured — its plaintext would bypass the mesh's policy — and the plugin cannot tell
  an enrolled pod from another without the agent. istio-cni fails closed too for the
  pods it knows to be ambient. What keeps a node usable while its agent is down:
  ``exclude_namespaces`` (the mesh's own ``istio-system`` and ``kube-system``) never
  depend on the agent, and host-network pods (the agent itself) never reach a CNI
  plugin.
- ``DEL``, ``CHECK``, ``GC`` and ``STATUS`` only answer success: the agent notices by
  itself when a pod's namespace is gone, as istio-cni's agent learns deletions from
  its informers and its plugin does nothing on ``DEL``.
- **Python, standard library only.** The runtime starts the plugin for every pod
  sandbox; Python's start-up (``python3 -I -S``: no site-packages, no environment
  variables) costs tens of milliseconds (``bench/cni_plugin.py``), against seconds for a
  sandbox, and keeps one language and one tested file. The installer copies this file
  to the node with a ``#!<python3> -IS`` line, so the node needs a ``python3`` (3.8 or
  newer); a static binary would not, and is the route for node systems without one.
- Logs go to stderr only (stdout is the runtime's result channel).
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs the runtime's every call
if TYPE_CHECKING:
    from typing import Any, NoReturn

PLUGIN_TYPE = "ambient-cni"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_RUN_DIR = "/var/run/ambient/cni"
EVENT_SOCKET = "pluginevent.sock"
ADD_PATH = "/cmdadd"
DEFAULT_EXCLUDED = ("kube-system",)
DEFAULT_TIMEOUT = 20.0
MAX_CONFIG = 1 << 20
MAX_ANSWER = 64 * 1024

# Error codes of the CNI spec, and ours (100 and up are the plugin's own).
INCOMPATIBLE_VERSION = 1
INVALID_ENVIRONMENT = 4
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
AGENT_REFUSED = 100


class PluginError(Exception):
    """A failure to report to the runtime as the spec's error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.version = SUPPORTED_VERSIONS[-1]

    def answer(self) -> dict[str, Any]:
        """The spec's error object."""
        error: dict[str, Any] = {"cniVersion": self.version, "code": self.code, "msg": self.msg}
        if self.details:
            error["details"] = self.details
        return error


def parse_cni_args(text: str) -> dict[str, str]:
    """``CNI_ARGS`` (``K=V;K=V``) as a dict; a part without ``=`` is an error."""
    args: dict[str, str] = {}
    for part in text.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise PluginError(INVALID_ENVIRONMENT, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        args[key] = value
    return args


def read_config(stdin: Any) -> dict[str, Any]:
    """The network configuration from ``stdin`` (bounded), as a JSON object."""
    raw = stdin.read(MAX_CONFIG + 1)
    if len(raw) > MAX_CONFIG:
        raise PluginError(DECODING_FAILURE, f"network configuration over {MAX_CONFIG} bytes")
    try:
        conf = json.loads(raw or b"{}")
    except ValueError as exc:
        raise PluginError(DECODING_FAILURE, f"network configuration is not JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise PluginError(DECODING_FAILURE, "network configuration is not a JSON object")
    return conf


def config_version(conf: dict[str, Any]) -> str:
    version = conf.get("cniVersion", "0.3.0") or "0.3.0"
    if version not in SUPPORTED_VERSIONS:
        raise PluginError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return str(version)


def prev_result_ips(conf: dict[str, Any]) -> list[str]:
    """The addresses (without prefix length) of ``prevResult.ips``."""
    prev = conf.get("prevResult")
    if prev is None:
        return []
    if not isinstance(prev, dict) or not isinstance(prev.get("ips", []), list):
        raise PluginError(INVALID_CONFIG, "prevResult: not a CNI result (ips must be a list)")
    found = []
    for i, entry in enumerate(prev.get("ips", [])):
        address = entry.get("address") if isinstance(entry, dict) else None
        if not isinstance(address, str):
            raise PluginError(INVALID_CONFIG, f"prevResult.ips[{i}].address: missing")
        found.append(address.split("/", 1)[0])
    return found


def excluded_namespaces(conf: dict[str, Any]) -> list[str]:
    names = conf.get("exclude_namespaces", list(DEFAULT_EXCLUDED))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PluginError(INVALID_CONFIG, "exclude_namespaces: must be a list of strings")
    return names


def agent_socket(conf: dict[str, Any]) -> str:
    run_dir = conf.get("agent_run_dir", DEFAULT_RUN_DIR)
    if not isinstance(run_dir, str) or not run_dir.startswith("/"):
        raise PluginError(INVALID_CONFIG, "agent_run_dir: must be an absolute path")
    return os.path.join(run_dir, EVENT_SOCKET)


def agent_timeout(conf: dict[str, Any]) -> float:
    timeout = conf.get("timeout_seconds", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise PluginError(INVALID_CONFIG, "timeout_seconds: must be a positive number")
    return float(timeout)


def post_event(socket_path: str, event: dict[str, Any], timeout: float) -> tuple[int, Any]:
    """``POST /cmdadd`` over the agent's Unix socket; (status, decoded JSON answer)."""
    import socket  # only this path needs it

    body = json.dumps(event).encode()
    head = (
        f"POST {ADD_PATH} HTTP/1.1\r\nHost: node-agent\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(head + body)
            answer = bytearray()
            while len(answer) <= MAX_ANSWER:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:  # refused, absent socket, timeout
        raise PluginError(
            TRY_AGAIN_LATER,
            f"cannot reach the ambient node agent at {socket_path}: {exc}",
            "is the node agent (the ambient-node-agent DaemonSet) running on this node?",
        ) from None
    if len(answer) > MAX_ANSWER:
        raise PluginError(AGENT_REFUSED, f"the node agent's answer is over {MAX_ANSWER} bytes")
    header, _, content = bytes(answer).partition(b"\r\n\r\n")
    try:
        status = int(header.split(b" ", 2)[1])
        return status, json.loads(content or b"null")
    except (IndexError, ValueError):
        raise PluginError(
            AGENT_REFUSED, f"the node agent gave no HTTP/JSON answer: {bytes(answer[:200])!r}"
        ) from None


def add(conf: dict[str, Any], env: dict[str, str], version: str) -> dict[str, Any]:
    """``ADD``: forward the pod to the node agent (unless excluded); the result to print."""
    missing = [k for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME") if not env.get(k)]
    if missing:
        raise PluginError(INVALID_ENVIRONMENT, f"{', '.join(missing)} not set for ADD")
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    result = conf.get("prevResult")
    if not isinstance(result, dict):
        result = {"interfaces": [], "ips": []}
    result = {**result, "cniVersion": version}
    name, namespace = args.get("K8S_POD_NAME", ""), args.get("K8S_POD_NAMESPACE", "")
    if not name or not namespace or namespace in excluded_namespaces(conf):
        return result  # not a Kubernetes pod, or one the mesh never captures
    socket_path, timeout = agent_socket(conf), agent_timeout(conf)
    event = {
        "containerId": env["CNI_CONTAINERID"],
        "netns": env["CNI_NETNS"],
        "ifname": env["CNI_IFNAME"],
        "podName": name,
        "podNamespace": namespace,
        "podUid": args.get("K8S_POD_UID", ""),
        "ips": prev_result_ips(conf),
    }
    status, answer = post_event(socket_path, event, timeout)
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else answer
        code = TRY_AGAIN_LATER if status == 503 else AGENT_REFUSED
        raise PluginError(code, f"the node agent refused pod {namespace}/{name}: {error}")
    return result


def run(command: str, env: dict[str, str], stdin: Any) -> dict[str, Any] | None:
    """One invocation; the JSON object to print (None: print nothing)."""
    if command == "VERSION":
        return {"cniVersion": SUPPORTED_VERSIONS[-1], "supportedVersions": list(SUPPORTED_VERSIONS)}
    if command not in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
        raise PluginError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not a CNI command")
    if command == "DEL":
        stdin.read(MAX_CONFIG)  # DEL always succeeds (see the module docstring)
        return None
    conf = read_config(stdin)
    version = config_version(conf)
    try:
        return add(conf, env, version) if command == "ADD" else None
    except PluginError as err:
        err.version = version
        raise


def main() -> NoReturn:
    """The plugin's entry point (``ambient-cni``)."""
    env = dict(os.environ)
    try:
        out = run(env.get("CNI_COMMAND", ""), env, sys.stdin.buffer)
    except PluginError as err:
        sys.stdout.write(json.dumps(err.answer()) + "\n")
        sys.stderr.write(f"{PLUGIN_TYPE}: {err.msg}\n")
        sys.exit(1)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
