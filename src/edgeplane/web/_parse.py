"""Request bodies parsed once into typed models where they enter: a wrong shape is a 400 naming the field."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edgeplane.web._openai import ApiError

# Bodies are read strictly: "no" is not a boolean, "3" is not a number, NaN and infinities are no numbers at
# all, and fields we do not know are ignored (a newer peer may send more).
STRICT = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)

Code = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0, le=2**31)]
Positive = Annotated[int, Field(ge=1, le=10**12)]
Seconds = Annotated[float, Field(gt=0, le=10**9)]  # a positive duration, at most ~30 years
UnixSeconds = Annotated[float, Field(ge=0, le=10**11)]

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """A request body. ``expected`` shows its shape in the error a wrong one gets."""

    model_config = STRICT
    expected: ClassVar[str] = ""


def describe(error: ValidationError) -> tuple[str, str | None]:
    """One sentence for the first problems pydantic found, and the path of the first field."""
    problems = error.errors(include_url=False, include_input=False)
    parts, first = [], None
    for problem in problems[:3]:
        path = ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "json_invalid":
            parts.append(f"the body is not valid JSON ({problem['msg']})")
            continue
        first = first or path or None
        parts.append(f"`{path}`: {problem['msg']}" if path else str(problem["msg"]))
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(parts) + more, first


def decode(raw: bytes | str) -> Any:
    """JSON as orjson reads it: no NaN or Infinity, integers past 64 bits as floats (which no integer field
    takes), so no value gets into the state that could not be written back out. ApiError(400) otherwise."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(
            400, f"Bad request body: the body is not valid JSON ({error}).", type="invalid_request_error",
            code="invalid_json",
        ) from None  # fmt: skip


def parse(model: type[M], raw: bytes | str | Any) -> M:
    """``raw`` (JSON bytes, or an already decoded value) as ``model``, or ApiError(400) naming the field."""
    data = decode(raw) if isinstance(raw, bytes | str) else raw
    try:
        return model.model_validate(data)
    except ValidationError as error:
        message, param = describe(error)
        expected = getattr(model, "expected", "")
        if expected:
            message += f". Expected {expected}"
        code = "invalid_json" if any(e["type"] == "json_invalid" for e in error.errors()) else "invalid_body"
        raise ApiError(
            400, f"Bad request body: {message}.", type="invalid_request_error", code=code, param=param
        ) from None
