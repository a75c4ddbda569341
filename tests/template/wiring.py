"""What the wiring tests read: the template as SAM's translator expands it, the commands the Rust
functions accept (read from their source), and the runbook's section anchors."""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
RUNBOOK = REPO / "docs" / "OPERATIONS.md"

Resource = dict[str, Any]


def _expander() -> Any:
    spec = importlib.util.spec_from_file_location("expand_template", REPO / "scripts" / "expand_template.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def expanded() -> dict[str, Any]:
    """template.yaml as CloudFormation receives it (defaults: CloudFront off)."""
    result: dict[str, Any] = _expander().expand(TEMPLATE)
    return result


def resources(kind: str) -> dict[str, Resource]:
    return {k: v for k, v in expanded()["Resources"].items() if v["Type"] == kind}


def target(ref: Any) -> str:
    """The logical id a Ref or GetAtt names (GetAtt as a list or as `X.Attr`)."""
    assert isinstance(ref, dict) and len(ref) == 1, f"not a reference: {ref!r}"
    (fn, arg), = ref.items()
    if fn == "Ref":
        return str(arg)
    if fn == "Fn::GetAtt":
        return str(arg[0] if isinstance(arg, list) else arg.split(".")[0])
    raise AssertionError(f"not a Ref or GetAtt: {ref!r}")


def attribute(ref: Any) -> str | None:
    (fn, arg), = ref.items()
    if fn != "Fn::GetAtt":
        return None
    return str(arg[1] if isinstance(arg, list) else arg.split(".", 1)[1])


def kind_of(logical_id: str) -> str:
    resource = expanded()["Resources"].get(logical_id)
    assert resource is not None, f"{logical_id} is not a resource of the template"
    return str(resource["Type"])


# --- The commands a function accepts, from the Rust source --------------------------------------


@dataclass(frozen=True)
class Field:
    rust_type: str
    has_default: bool


def _block(src: str, open_brace: int) -> str:
    depth = 0
    for i in range(open_brace, len(src)):
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        if depth == 0:
            return src[open_brace + 1 : i]
    raise AssertionError("unbalanced braces")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@cache
def command_shapes(source: str, enum: str) -> dict[str, dict[str, Field]]:
    """The variants of a serde enum tagged by `mode` (snake_case) and their fields, as its
    derive accepts them. Fails if the enum is not declared the way this reading assumes."""
    src = (REPO / source).read_text()
    m = re.search(r"(#\[serde\([^\]]*\)\]\s*)pub enum " + enum + r"\s*\{", src)
    assert m, f"no serde attribute before `pub enum {enum}` in {source}"
    attr = m.group(1)
    for needed in ('tag = "mode"', 'rename_all = "snake_case"', "deny_unknown_fields"):
        assert needed in attr, f"{enum} is no longer {needed}: update tests/template/wiring.py"
    body = _block(src, m.end() - 1)
    body = re.sub(r"//[^\n]*", "", body)
    shapes: dict[str, dict[str, Field]] = {}
    pos = 0
    variant = re.compile(r"\s*((?:#\[[^\]]*\]\s*)*)(\w+)\s*(\{|,|$)")
    while pos < len(body.rstrip()):
        v = variant.match(body, pos)
        assert v, f"cannot read {enum} at: {body[pos:pos + 60]!r}"
        assert "rename" not in v.group(1), f"{enum}::{v.group(2)} is renamed: update the reader"
        fields: dict[str, Field] = {}
        pos = v.end()
        if v.group(3) == "{":
            inner = _block(body, v.end() - 1)
            pos = v.end() + len(inner) + 1
            for f in re.finditer(r"((?:#\[[^\]]*\]\s*)*)(?:pub\s+)?(\w+)\s*:\s*([^,]+?)\s*(?:,|$)", inner):
                fields[f.group(2)] = Field(f.group(3).strip(), "default" in f.group(1))
            comma = re.match(r"\s*,", body[pos:])
            pos += comma.end() if comma else 0
        shapes[_snake(v.group(2))] = fields
    return shapes


def _type_error(rust_type: str, value: Any) -> str | None:
    option = re.fullmatch(r"Option<(.+)>", rust_type)
    if option:
        return None if value is None else _type_error(option.group(1), value)
    if rust_type == "bool":
        return None if isinstance(value, bool) else f"{value!r} is not a bool"
    if rust_type in ("i64", "i32", "u64", "u32", "usize"):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!r} is not an integer"
        return f"{value!r} is negative" if rust_type.startswith("u") and value < 0 else None
    if rust_type == "String":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    return f"cannot check a {rust_type} here: extend tests/template/wiring.py"


def command_error(shapes: dict[str, dict[str, Field]], command: Any) -> str | None:
    """Why serde would refuse `command`, or None if it parses."""
    if not isinstance(command, dict):
        return "not a JSON object"
    mode = command.get("mode")
    if mode not in shapes:
        return f"mode {mode!r} is none of {sorted(shapes)}"
    fields = shapes[mode]
    for key, value in command.items():
        if key == "mode":
            continue
        if key not in fields:
            return f"unknown field {key!r} for mode {mode!r}"
        error = _type_error(fields[key].rust_type, value)
        if error:
            return f"{key}: {error}"
    for name, f in fields.items():
        if name not in command and not f.has_default and not f.rust_type.startswith("Option<"):
            return f"missing field {name!r} for mode {mode!r}"
    return None


# --- The runbook ---------------------------------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        h = re.match(r"#{1,6}\s+(.*)", line)
        if h:
            text = re.sub(r"[^\w\- ]", "", h.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out
