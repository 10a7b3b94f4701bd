"""Schema tables for Pod and Deployment.

Decisions: Kubernetes fields with no local meaning (``resources``, probes,
``volumes``, ``nodeSelector``, ``strategy``...) are accepted and ignored;
of ``securityContext`` (pod and container) the user fields are read
(``runAsUser``, ``runAsGroup``, ``runAsNonRoot``, the pod's
``supplementalGroups``, the container's ``privileged``), the rest
(capabilities, seccomp...) is ignored; fields whose loss would change behaviour silently
(``envFrom``, ``secretKeyRef``, ``initContainers``...) are errors. Of
``Pod.status`` only ``podIP``, ``hostIP`` and ``phase`` are read; the other
fields ``kubectl get -o yaml`` prints are ignored, anything else is unknown.
Env ``valueFrom.fieldRef`` is supported for the pod's own name, namespace,
node, service account and IPs.
"""

from __future__ import annotations

from ambient.config import rules
from ambient.config.meta import (
    ANNOTATIONS,
    LABELS,
    PORT,
    PORT_NAME,
    SERVER_METADATA,
    check_istio_labels,
    resource_schema,
)
from ambient.config.resources import (
    DEFAULT_NODE_NAME,
    DEFAULT_SERVICE_ACCOUNT,
    Container,
    ContainerPort,
    Deployment,
    DeploymentSpec,
    EnvVar,
    LabelSelector,
    LabelSelectorRequirement,
    Pod,
    PodSpec,
    PodStatus,
    PodTemplate,
    SecurityContext,
    TemplateMeta,
)
from ambient.config.schema import (
    Bool,
    Choice,
    Field,
    FieldPath,
    Int,
    ListOf,
    Obj,
    Report,
    Str,
    render_path,
    req,
)

__all__ = [
    "CLUSTER_POD",
    "CONTAINER",
    "DEPLOYMENT",
    "DEPLOYMENT_SPEC",
    "LABEL_SELECTOR",
    "POD",
    "POD_SPEC",
    "POD_STATUS",
    "POD_TEMPLATE",
]


# --- Pod ------------------------------------------------------------------------------------

FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.hostIP",
)


def _field_path(field_path: str) -> str:
    return field_path


def _value_from(field_ref: str) -> str:
    return field_ref


VALUE_FROM = Obj(
    _value_from,
    {
        "fieldRef": req(
            Obj(_field_path, {"fieldPath": req(Choice(*FIELD_PATHS))}, ignore=["apiVersion"])
        )
    },
    unsupported={
        "secretKeyRef": "there are no Secrets locally; use value",
        "configMapKeyRef": "there are no ConfigMaps locally; use value",
        "resourceFieldRef": "resource limits are not enforced locally; use value",
    },
)


def _check_env(env: EnvVar, at: FieldPath, report: Report) -> None:
    if env.value and env.field_path is not None:
        report.error((*at, "valueFrom"), "cannot be used together with value")


ENV_VAR = Obj(
    EnvVar,
    {
        "name": req(Str(rules.env_var_name)),
        "value": Str(),
        "valueFrom": Field(VALUE_FROM, attr="field_path"),
    },
    checks=[_check_env],
)
CONTAINER_PORT = Obj(
    ContainerPort,
    {"containerPort": req(PORT), "name": PORT_NAME, "protocol": Choice("TCP", "UDP", "SCTP")},
    ignore=["hostPort", "hostIP"],
)
ID = Int(0, 2**31 - 1)
"""A uid or gid, as Kubernetes validates them."""
CONTAINER_SECURITY_CONTEXT = Obj(
    SecurityContext,
    {"runAsUser": ID, "runAsGroup": ID, "runAsNonRoot": Bool(), "privileged": Bool()},
    ignore=[
        "capabilities",
        "seLinuxOptions",
        "windowsOptions",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "procMount",
        "seccompProfile",
        "appArmorProfile",
    ],
)
POD_SECURITY_CONTEXT = Obj(
    SecurityContext,
    {
        "runAsUser": ID,
        "runAsGroup": ID,
        "runAsNonRoot": Bool(),
        "supplementalGroups": ListOf(ID),
    },
    ignore=[
        "seLinuxOptions",
        "windowsOptions",
        "fsGroup",
        "fsGroupChangePolicy",
        "sysctls",
        "seccompProfile",
        "appArmorProfile",
        "supplementalGroupsPolicy",
        "seLinuxChangePolicy",
    ],
)
CONTAINER = Obj(
    Container,
    {
        "name": req(Str(rules.dns1123_label)),
        "image": Str(),
        "command": ListOf(Str()),
        "args": ListOf(Str()),
        "env": ListOf(ENV_VAR),
        "ports": ListOf(CONTAINER_PORT),
        "workingDir": Str(),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    },
    ignore=[
        "imagePullPolicy",
        "resources",
        "resizePolicy",
        "volumeMounts",
        "volumeDevices",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "lifecycle",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "stdin",
        "stdinOnce",
        "tty",
    ],
    unsupported={"envFrom": "there are no Secrets or ConfigMaps locally; list env entries"},
)


def _check_pod_spec(spec: PodSpec, at: FieldPath, report: Report) -> None:
    for ci, container in enumerate(spec.containers):
        if not container.command and not container.args:
            report.error(
                (*at, "containers", ci, "command"),
                "required: containers run as local processes and an image's entrypoint "
                "is not available, so give the command to run",
            )
    _check_port_names(spec, at, report)


def _check_port_names(spec: PodSpec, at: FieldPath, report: Report) -> None:
    first: dict[str, str] = {}
    for ci, container in enumerate(spec.containers):
        for pi, port in enumerate(container.ports):
            if not port.name:
                continue
            here = (*at, "containers", ci, "ports", pi, "name")
            if port.name in first:
                report.error(here, f"duplicate port name {port.name!r} (see {first[port.name]})")
            else:
                first[port.name] = render_path(here)


def _pod_spec(
    containers: tuple[Container, ...],
    service_account_name: str | None = None,
    service_account: str | None = None,
    node_name: str = DEFAULT_NODE_NAME,
    security_context: SecurityContext | None = None,
) -> PodSpec:
    account = service_account_name or service_account or DEFAULT_SERVICE_ACCOUNT
    return PodSpec(containers, account, node_name, security_context=security_context)


POD_SPEC = Obj(
    _pod_spec,
    {
        "containers": req(ListOf(CONTAINER, non_empty=True, unique=["name"])),
        "serviceAccountName": Str(rules.dns1123_subdomain),
        "serviceAccount": Str(rules.dns1123_subdomain),
        "nodeName": Str(rules.dns1123_subdomain),
        "securityContext": POD_SECURITY_CONTEXT,
    },
    ignore=[
        "restartPolicy",
        "terminationGracePeriodSeconds",
        "activeDeadlineSeconds",
        "dnsPolicy",
        "dnsConfig",
        "nodeSelector",
        "affinity",
        "tolerations",
        "topologySpreadConstraints",
        "schedulerName",
        "priority",
        "priorityClassName",
        "preemptionPolicy",
        "runtimeClassName",
        "imagePullSecrets",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "hostname",
        "subdomain",
        "hostAliases",
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "shareProcessNamespace",
        "readinessGates",
        "overhead",
        "os",
        "volumes",
        "setHostnameAsFQDN",
    ],
    unsupported={
        "initContainers": "init containers are not run locally",
        "ephemeralContainers": "ephemeral containers are not run locally",
    },
    checks=[_check_pod_spec],
)
POD_STATUS = Obj(
    PodStatus,
    {
        "podIP": Str(rules.ip_address),
        "hostIP": Str(rules.ip_address),
        "phase": Choice("Pending", "Running", "Succeeded", "Failed", "Unknown"),
    },
    ignore=[
        "podIPs",
        "hostIPs",
        "conditions",
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
        "startTime",
        "qosClass",
        "message",
        "reason",
        "nominatedNodeName",
        "resize",
    ],
)
POD = resource_schema(Pod, POD_SPEC, spec_required=True, status=POD_STATUS)

# --- Pods as an API server serves them ------------------------------------------------------
# ``ambient.kube.convert`` keeps only what the mesh reads of a pod (names, labels, ports, its
# service account, node, host network and status) and checks it here. Who runs the pod is
# a kubelet's business, not the control plane's: no command is required, an unscheduled
# pod has no node (not ``node-1``), and fields such as ``initContainers`` do not matter.


def _cluster_pod_spec(
    containers: tuple[Container, ...],
    service_account_name: str | None = None,
    node_name: str = "",
    host_network: bool = False,
) -> PodSpec:
    return PodSpec(
        containers, service_account_name or DEFAULT_SERVICE_ACCOUNT, node_name, host_network
    )


CLUSTER_POD_SPEC = Obj(
    _cluster_pod_spec,
    {
        "containers": req(
            ListOf(
                Obj(
                    Container,
                    {"name": req(Str(rules.dns1123_label)), "ports": ListOf(CONTAINER_PORT)},
                ),
                non_empty=True,
                unique=["name"],
            )
        ),
        "serviceAccountName": Str(rules.dns1123_subdomain),
        "nodeName": Str(rules.dns1123_subdomain),
        "hostNetwork": Bool(),
    },
    checks=[_check_port_names],
)
CLUSTER_POD = resource_schema(Pod, CLUSTER_POD_SPEC, spec_required=True, status=POD_STATUS)

# --- Deployment -----------------------------------------------------------------------------


def _check_template_meta(meta: TemplateMeta, at: FieldPath, report: Report) -> None:
    check_istio_labels(meta.labels, at, report)


def _check_requirement(req_: LabelSelectorRequirement, at: FieldPath, report: Report) -> None:
    if req_.operator in ("In", "NotIn") and not req_.values:
        report.error((*at, "values"), f"must not be empty for operator {req_.operator}")
    if req_.operator in ("Exists", "DoesNotExist") and req_.values:
        report.error((*at, "values"), f"must be empty for operator {req_.operator}")


LABEL_SELECTOR = Obj(
    LabelSelector,
    {
        "matchLabels": LABELS,
        "matchExpressions": ListOf(
            Obj(
                LabelSelectorRequirement,
                {
                    "key": req(Str(rules.label_key)),
                    "operator": req(Choice("In", "NotIn", "Exists", "DoesNotExist")),
                    "values": ListOf(Str(rules.label_value)),
                },
                checks=[_check_requirement],
            )
        ),
    },
)
TEMPLATE_META = Obj(
    TemplateMeta,
    {"labels": LABELS, "annotations": ANNOTATIONS},
    ignore=[*SERVER_METADATA, "name", "namespace"],
    checks=[_check_template_meta],
)
POD_TEMPLATE = Obj(
    PodTemplate, {"metadata": Field(TEMPLATE_META, attr="meta"), "spec": req(POD_SPEC)}
)


def _check_deployment(spec: DeploymentSpec, at: FieldPath, report: Report) -> None:
    if spec.selector.empty:
        report.error((*at, "selector"), "must not be empty: a Deployment must select its pods")
    elif not spec.selector.matches(spec.template.meta.labels):
        report.error(
            (*at, "template", "metadata", "labels"),
            f"do not match spec.selector ({spec.selector})",
        )


DEPLOYMENT_SPEC = Obj(
    DeploymentSpec,
    {"replicas": Int(0, 2**31 - 1), "selector": req(LABEL_SELECTOR), "template": req(POD_TEMPLATE)},
    ignore=[
        "strategy",
        "minReadySeconds",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
        "paused",
    ],
    checks=[_check_deployment],
)
DEPLOYMENT = resource_schema(Deployment, DEPLOYMENT_SPEC, spec_required=True)
