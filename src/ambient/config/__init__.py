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

from typing import TYPE_CHECKING

from ambient.lazyexports import lazy_exports

if TYPE_CHECKING:
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

# Imported on first use (PEP 562): a process that needs one module of the package (the
# ztunnel: ``rules``) does not load every kind's schema, the loader and YAML.
_LAZY = {
    "ConfigError": "ambient.config.errors",
    "ConfigSet": "ambient.config.configset",
    "Container": "ambient.config.resources",
    "ContainerPort": "ambient.config.resources",
    "DEFAULT_REGISTRY": "ambient.config.registry",
    "Deployment": "ambient.config.resources",
    "DeploymentSpec": "ambient.config.resources",
    "EnvVar": "ambient.config.resources",
    "FrozenMap": "ambient.config.frozen",
    "GenericResource": "ambient.config.resources",
    "KindSpec": "ambient.config.registry",
    "LabelSelector": "ambient.config.resources",
    "LabelSelectorRequirement": "ambient.config.resources",
    "Namespace": "ambient.config.resources",
    "ObjectMeta": "ambient.config.resources",
    "Origin": "ambient.config.configset",
    "Pod": "ambient.config.resources",
    "PodSpec": "ambient.config.resources",
    "PodStatus": "ambient.config.resources",
    "PodTemplate": "ambient.config.resources",
    "Problem": "ambient.config.errors",
    "Ref": "ambient.config.configset",
    "Registry": "ambient.config.registry",
    "Resource": "ambient.config.resources",
    "Service": "ambient.config.resources",
    "ServiceAccount": "ambient.config.resources",
    "ServiceEntry": "ambient.config.resources",
    "ServiceEntryPort": "ambient.config.resources",
    "ServiceEntrySpec": "ambient.config.resources",
    "ServicePort": "ambient.config.resources",
    "ServiceSpec": "ambient.config.resources",
    "TemplateMeta": "ambient.config.resources",
    "WorkloadEntry": "ambient.config.resources",
    "WorkloadEntrySpec": "ambient.config.resources",
    "check_references": "ambient.config.references",
    "find_files": "ambient.config.loader",
    "load_documents": "ambient.config.loader",
    "load_paths": "ambient.config.loader",
    "load_text": "ambient.config.loader",
    "object_meta": "ambient.config.meta",
    "register_kind": "ambient.config.registry",
    "resource_schema": "ambient.config.meta",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


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
