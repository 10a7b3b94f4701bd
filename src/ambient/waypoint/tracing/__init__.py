"""Tracing at the waypoint: trace context on the wire (``context``), spans and sampling
(``tracer``), OTLP export (``otlp``) and the settings in force (``live``)."""
