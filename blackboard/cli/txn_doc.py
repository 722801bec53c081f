"""The document `blackboard txn` reads, validated with pydantic: it is user input, where validation belongs.

`{"expect": {KEY: VERSION}, "ops": [{"op": "put", "key": K, "value": V}, {"op": "delete", "key": K}],
"idempotency_key": K}`. Only `blackboard txn` imports this module (pydantic costs a new process tens
of milliseconds, which no other command pays). Keys and values are checked by the transaction itself,
with the library's rules, exactly as for `write`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core import codec as _codec
from ..errors import InvalidValue
from .base import fail

#: parse_user_json's advice for `write`, which has --text; txn has none.
_WRITE_HINT = "; use --text to store it as a string"


class _Strict(BaseModel):
    # strict: no coercion ("1" is not a version, 1 is not a key); forbid: a misspelt field is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Put(_Strict):
    op: Literal["put"]
    key: str
    value: Any  # required (JSON null is a value); checked as plain JSON when the transaction commits


class Delete(_Strict):
    op: Literal["delete"]
    key: str


class Document(_Strict):
    expect: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    ops: list[Annotated[Put | Delete, Field(discriminator="op")]] = Field(min_length=1)
    idempotency_key: str | None = None


def parse_document(text: str) -> Document:
    """The document in `text`, or exit 2 with one line naming what is wrong and where."""
    try:
        # The strict rules of `write`: NaN, Infinity and integers beyond 64 bits are errors.
        raw = _codec.parse_user_json(text)
    except InvalidValue as exc:
        _invalid(exc.reason.removesuffix(_WRITE_HINT))
    try:
        return Document.model_validate(raw)
    except ValidationError as exc:
        _invalid("; ".join(_describe(error["type"], error["loc"], error["msg"]) for error in exc.errors()))


def _describe(kind: str, loc: tuple[int | str, ...], message: str) -> str:
    if kind in ("union_tag_invalid", "union_tag_not_found"):  # the discriminator: name the field itself
        return f"{_path(loc)}.op: must be 'put' or 'delete'" + (" (missing)" if kind == "union_tag_not_found" else "")
    if kind == "model_type" and not loc:
        return "the document must be a JSON object"
    return f"{_path(loc)}: {message}"


def _path(loc: tuple[int | str, ...]) -> str:
    """`("ops", 0, "put", "value")` -> `ops[0].value` (pydantic puts the union's tag in the path)."""
    out = ""
    after_index = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            after_index = True
            continue
        if not (after_index and part in ("put", "delete")):
            out += f".{part}" if out else part
        after_index = False
    return out or "the document"


def _invalid(reason: str) -> NoReturn:
    fail(f"invalid transaction document: {reason}", 2)
