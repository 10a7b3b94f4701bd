"""Local runtime (a kubelet stand-in): runs the processes of Pods and Deployments on this host.

``PodRun`` describes one pod; ``Supervisor`` runs its containers as process
groups, restarts them with back-off and stops them without leaving orphans.
"""

from ambient.runtime.spec import (
    ContainerLaunch,
    PodRun,
    PodSpecError,
    container_argv,
    container_env,
    plan_launch,
    resolve_field_path,
)
from ambient.runtime.status import (
    BackOff,
    ContainerEvent,
    ContainerState,
    ContainerStatus,
    EventHandler,
    EventKind,
    PodRunStatus,
)
from ambient.runtime.supervisor import Supervisor

__all__ = [
    "BackOff",
    "ContainerEvent",
    "ContainerLaunch",
    "ContainerState",
    "ContainerStatus",
    "EventHandler",
    "EventKind",
    "PodRun",
    "PodRunStatus",
    "PodSpecError",
    "Supervisor",
    "container_argv",
    "container_env",
    "plan_launch",
    "resolve_field_path",
]
