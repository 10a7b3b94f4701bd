"""Tests of ambient.xds: the proto messages, the codec and the policy attachment."""
