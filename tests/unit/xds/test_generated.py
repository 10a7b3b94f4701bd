"""The committed generated code is up to date, and the gRPC stubs work over a real channel."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from ambient.xds.proto import (
    ca_pb2,
    ca_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    generate,
    workload_pb2,
)

needs_generator = pytest.mark.skipif(
    not generate.generator_available(),
    reason="grpcio-tools is not installed (it is in the dev extra: pip install -e '.[dev]')",
)
_VERSION = re.compile(r"^# Protobuf Python Version: (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("generated")
    return {p.name: p for p in generate.generate(out)}


def _descriptor(path: Path) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto a generated ``_pb2.py`` embeds."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            serialized = ast.literal_eval(node.args[0])
            return descriptor_pb2.FileDescriptorProto.FromString(serialized)
    raise AssertionError(f"{path.name} embeds no descriptor")


def _committed() -> dict[str, Path]:
    return {p.name: p for p in generate.generated_files(generate.PROTO_DIR)}


@needs_generator
def test_same_generated_files(fresh: dict[str, Path]) -> None:
    assert sorted(fresh) == sorted(_committed())


@needs_generator
def test_committed_descriptors_match_the_protos(fresh: dict[str, Path]) -> None:
    # What the .proto files say, whatever generator version wrote the committed files.
    for name, path in _committed().items():
        if name.endswith("_pb2.py"):
            assert _descriptor(path) == _descriptor(fresh[name]), (
                f"{name} is stale: run python -m ambient.xds.proto.generate"
            )


@needs_generator
def test_committed_files_are_exactly_regenerated(fresh: dict[str, Path]) -> None:
    committed = _committed()
    ours = _VERSION.search(committed["workload_pb2.py"].read_text())
    theirs = _VERSION.search(fresh["workload_pb2.py"].read_text())
    assert ours is not None and theirs is not None
    if ours[1] != theirs[1]:
        pytest.skip(
            f"the installed grpcio-tools generates for protobuf {theirs[1]}, the committed "
            f"files were generated for {ours[1]}: only descriptors are compared"
        )
    for name, path in committed.items():
        assert path.read_text() == fresh[name].read_text(), (
            f"{name} differs: run python -m ambient.xds.proto.generate"
        )


def test_every_proto_is_listed() -> None:
    assert sorted(p.name for p in generate.PROTO_DIR.glob("*.proto")) == sorted(generate.PROTOS)


def test_generated_files_skip_lint_and_types() -> None:
    for path in _committed().values():
        assert path.read_text().startswith(generate.HEADER), path.name


# --- the stubs over a real channel --------------------------------------------------


class _CA(ca_pb2_grpc.IstioCertificateServiceServicer):
    def CreateCertificate(
        self, request: ca_pb2.IstioCertificateRequest, context: grpc.ServicerContext
    ) -> ca_pb2.IstioCertificateResponse:
        identity = request.metadata.fields["ImpersonatedIdentity"].string_value
        return ca_pb2.IstioCertificateResponse(
            cert_chain=[f"leaf for {identity} ({request.validity_duration}s)", request.csr]
        )


class _ADS(discovery_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def DeltaAggregatedResources(
        self,
        requests: Iterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[discovery_pb2.DeltaDiscoveryResponse]:
        for n, request in enumerate(requests):
            if request.response_nonce:  # an ACK: nothing to send
                continue
            response = discovery_pb2.DeltaDiscoveryResponse(type_url=request.type_url, nonce=str(n))
            for name in request.resource_names_subscribe:
                resource = response.resources.add(name=name, version="v1")
                resource.resource.Pack(
                    workload_pb2.Address(service=workload_pb2.Service(name=name))
                )
            yield response


def test_stubs_over_a_channel() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(_CA(), server)
    discovery_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_ADS(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = ca_pb2.IstioCertificateRequest(csr="CSR", validity_duration=3600)
            request.metadata.fields["ImpersonatedIdentity"].string_value = "spiffe://x"
            reply = ca_pb2_grpc.IstioCertificateServiceStub(channel).CreateCertificate(
                request, timeout=10
            )
            assert list(reply.cert_chain) == ["leaf for spiffe://x (3600s)", "CSR"]

            requests = [
                discovery_pb2.DeltaDiscoveryRequest(
                    node={"id": "ztunnel~10.0.0.1~node-1", "metadata": {"NODE_NAME": "node-1"}},
                    type_url="type.googleapis.com/istio.workload.Address",
                    resource_names_subscribe=["shop/web.shop.svc.cluster.local"],
                ),
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url="type.googleapis.com/istio.workload.Address", response_nonce="0"
                ),
            ]
            stub = discovery_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            responses = list(stub.DeltaAggregatedResources(iter(requests), timeout=10))
    finally:
        server.stop(None)
    assert len(responses) == 1
    (resource,) = responses[0].resources
    address = workload_pb2.Address()
    assert resource.resource.Unpack(address)
    assert address.service.name == "shop/web.shop.svc.cluster.local"
