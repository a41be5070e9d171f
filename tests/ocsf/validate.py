"""Validates an ecr-audit OCSF export against the pinned OCSF class definitions.

Usage: validate.py EXPORT.ocsf.jsonl  (exit 0: every line valid; 1: problems, one per line)

The schema is OCSF 1.3.0 as exported by schema.ocsf.io (`/1.3.0/export/schema`), shipped in the
ocsf-json-schema package (tests/ocsf/requirements.txt). Each line is checked twice, independently:
1. against the JSON Schema (draft 2020-12) that ocsf-json-schema generates for the line's class
   (2003 Compliance Finding, or 0 Base Event for the closing manifest) with the profiles the line
   declares in metadata.profiles, using the jsonschema package;
2. by walking the schema export directly: every attribute the class, or any object nested in it,
   marks `required` is present (profile attributes only when the profile is declared), and every
   attribute present is defined there and has the JSON type its OCSF type stands for.
"""

import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

VERSION = "1.3.0"
EXPECTED_CLASSES = {2003: "compliance_finding", 0: "base_event"}


def json_type_check(base_type, value):
    if base_type in ("integer_t", "long_t", "timestamp_t", "port_t"):
        return isinstance(value, int) and not isinstance(value, bool)
    if base_type == "float_t":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base_type == "boolean_t":
        return isinstance(value, bool)
    if base_type == "json_t":
        return True
    if base_type == "object_t":
        return isinstance(value, dict)
    return isinstance(value, str)


def base_type(schema, type_name):
    seen = set()
    while type_name in schema["types"] and type_name not in seen:
        seen.add(type_name)
        parent = schema["types"][type_name].get("type")
        if not parent or parent == type_name:
            break
        type_name = parent
    return type_name


def walk(schema, attributes, value, profiles, path, problems):
    for name, spec in attributes.items():
        profile = spec.get("profile")
        if profile is not None and profile not in profiles:
            continue
        if spec.get("requirement") == "required" and name not in value:
            problems.append(f"{path}{name}: required attribute missing")
    for name, item in value.items():
        spec = attributes.get(name)
        if spec is None:
            problems.append(f"{path}{name}: not an attribute of this class or object")
            continue
        profile = spec.get("profile")
        if profile is not None and profile not in profiles:
            problems.append(f"{path}{name}: belongs to profile {profile}, not declared in metadata.profiles")
        items = item if spec.get("is_array") else [item]
        if spec.get("is_array") and not isinstance(item, list):
            problems.append(f"{path}{name}: expected an array")
            continue
        kind = base_type(schema, spec.get("type", "string_t"))
        for index, element in enumerate(items):
            where = f"{path}{name}[{index}]" if spec.get("is_array") else f"{path}{name}"
            if not json_type_check(kind, element):
                problems.append(f"{where}: expected {spec.get('type')} ({kind}), found {type(element).__name__}")
                continue
            if kind == "object_t" and spec.get("object_type") not in (None, "object"):
                nested = schema["objects"][spec["object_type"]]["attributes"]
                walk(schema, nested, element, profiles, where + ".", problems)


def main(path):
    schema = get_ocsf_schema(version=VERSION)
    assert schema["version"] == VERSION, schema["version"]
    generator = OcsfJsonSchemaEmbedded(schema)
    validators = {}
    problems = []
    lines = 0
    classes = {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            lines += 1
            event = json.loads(text)
            class_uid = event.get("class_uid")
            class_name = EXPECTED_CLASSES.get(class_uid)
            if class_name is None:
                problems.append(f"line {number}: unexpected class_uid {class_uid!r}")
                continue
            classes[class_name] = classes.get(class_name, 0) + 1
            if event.get("metadata", {}).get("version") != VERSION:
                problems.append(f"line {number}: metadata.version is not {VERSION}")
            profiles = tuple(sorted(event.get("metadata", {}).get("profiles", [])))
            key = (class_name, profiles)
            if key not in validators:
                json_schema = generator.get_class_schema(class_name=class_name, profiles=list(profiles))
                validators[key] = jsonschema.Draft202012Validator(json_schema)
            for error in validators[key].iter_errors(event):
                location = ".".join(str(p) for p in error.absolute_path) or "(event)"
                problems.append(f"line {number}: json schema: {location}: {error.message}")
            definition = schema["base_event"] if class_name == "base_event" else schema["classes"][class_name]
            found = []
            walk(schema, definition["attributes"], event, set(profiles), "", found)
            problems.extend(f"line {number}: schema export: {p}" for p in found)
    if lines == 0:
        problems.append("the file holds no events")
    for problem in problems:
        print(problem)
    summary = ", ".join(f"{n} {c}" for c, n in sorted(classes.items()))
    print(f"{lines} events checked against OCSF {VERSION} ({summary}): {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
