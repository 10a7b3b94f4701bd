"""The two-ztunnel loopback mesh of ``test_ztunnel`` for every module here."""

from tests.component.ztunnel.test_ztunnel import mesh

__all__ = ["mesh"]
