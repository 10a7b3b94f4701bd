"""A projected token file, read on every call (the kubelet rotates it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ambient.identity.tokensource import MAX_TOKEN_BYTES, FileTokenSource, TokenError


async def test_the_file_is_read_on_every_call(tmp_path: Path) -> None:
    path = tmp_path / "istio-token"
    path.write_text("first.token.x\n")
    source = FileTokenSource(path)
    assert await source.token() == "first.token.x"
    path.write_text("second.token.y")
    assert await source.token() == "second.token.y"
    assert "istio-token" in source.describe()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the token is empty"),
        (b"  \n", "the token is empty"),
        (b"two words", "not a bearer token"),
        (b"caf\xc3\xa9", "not a bearer token"),
        (b"x" * (MAX_TOKEN_BYTES + 1), "not a bearer token"),
    ],
)
async def test_what_is_not_a_token(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "istio-token"
    path.write_bytes(content)
    with pytest.raises(TokenError, match=reason):
        await FileTokenSource(path).token()


async def test_a_missing_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match=r"cannot read token file .*nope: No such file"):
        await FileTokenSource(tmp_path / "nope").token()
