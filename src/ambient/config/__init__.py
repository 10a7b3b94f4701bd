"""Configuration: Istio, Kubernetes and Gateway API YAML loaded into typed, validated objects.

``load_paths([Path("examples/shop")])`` or ``load_text(text, "file.yaml")``
returns a ``ConfigSet``, or raises one ``ConfigError`` listing every problem,
one line each: ``<file>:<document>: <Kind>/<name>: <field path>: <problem>``.

Modules: ``errors`` (Problem, ConfigError), ``schema`` (the field-checking
toolkit), ``rules`` (name/label/address rules), ``resources`` (the typed
objects), ``meta`` (metadata, ``resource_schema``), ``kube``/``pods``/``istio``
(each kind's schema table), ``gateway``, ``httproute``, ``virtualservice``,
``destinationrule``, ``requestauthn``, ``telemetry`` (one kind each; ``l7fields``,
``regex``, ``targetref`` are their shared pieces), ``l7objects`` (which
objects a waypoint needs, as the xDS resources that carry them), ``kinds`` (the
built-in kinds), ``registry`` (kinds and apiVersions; ``register_kind`` for
other packages), ``yamldoc`` (YAML reading), ``loader`` (files, folders,
documents), ``references`` (checks across objects), ``configset`` (the result).
"""

from ambient.config.configset import ConfigSet, Origin, Ref
from ambient.config.errors import ConfigError, Problem
from ambient.config.frozen import FrozenMap
from ambient.config.loader import find_files, load_documents, load_paths, load_text
from ambient.config.meta import object_meta, resource_schema
from ambient.config.references import check_references
from ambient.config.registry import DEFAULT_REGISTRY, KindSpec, Registry, register_kind
from ambient.config.resources import (
    Container,
    ContainerPort,
    Deployment,
    DeploymentSpec,
    EnvVar,
    GenericResource,
    LabelSelector,
    LabelSelectorRequirement,
    Namespace,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    PodTemplate,
    Resource,
    Service,
    ServiceAccount,
    ServiceEntry,
    ServiceEntryPort,
    ServiceEntrySpec,
    ServicePort,
    ServiceSpec,
    TemplateMeta,
    WorkloadEntry,
    WorkloadEntrySpec,
)

__all__ = [
    "DEFAULT_REGISTRY",
    "ConfigError",
    "ConfigSet",
    "Container",
    "ContainerPort",
    "Deployment",
    "DeploymentSpec",
    "EnvVar",
    "FrozenMap",
    "GenericResource",
    "KindSpec",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Namespace",
    "ObjectMeta",
    "Origin",
    "Pod",
    "PodSpec",
    "PodStatus",
    "PodTemplate",
    "Problem",
    "Ref",
    "Registry",
    "Resource",
    "Service",
    "ServiceAccount",
    "ServiceEntry",
    "ServiceEntryPort",
    "ServiceEntrySpec",
    "ServicePort",
    "ServiceSpec",
    "TemplateMeta",
    "WorkloadEntry",
    "WorkloadEntrySpec",
    "check_references",
    "find_files",
    "load_documents",
    "load_paths",
    "load_text",
    "object_meta",
    "register_kind",
    "resource_schema",
]
