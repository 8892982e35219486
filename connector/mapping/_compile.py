"""JMESPath expressions compiled to Python closures, once, instead of walked node by node per event.

jmespath.py interprets its syntax tree on every search: each node costs a method lookup and a call
through its visitor. A mapping runs on every record read, so each expression is turned once into
nested closures that do exactly what :class:`jmespath.visitor.TreeInterpreter` does for each node
type (the same truth rules, comparisons and projections, and the same functions, type checks
included); a node type not translated here is left to the interpreter itself. ``tests/test_mapping.py``
checks the two agree on every node type over random documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import visitor

Compiled = Callable[[Any], Any]
PATH = "mapping_path"
"""The attribute an exception raised inside a compiled expression carries: where in the value the
expression builds it was raised (``[".line_items", "[1]", ".unit_price", ".amount"]``), so that an
error names the failing place, not only the field whose expression it is. The exception itself is
unchanged (class and message), as jmespath's interpreter would raise it."""


def _at(exc: BaseException, part: str) -> None:
    """Note that ``exc`` was raised under ``part`` (a key, or an index) of the value being built."""
    path = getattr(exc, PATH, None)
    if path is None:
        path = []
        try:
            setattr(exc, PATH, path)
        except AttributeError:  # an exception class with __slots__: no place to say it
            return
    path.insert(0, part)


# jmespath's own helpers, so that comparisons behave exactly as the interpreter's (not in the stubs).
_COMPARABLE: Callable[[Any], bool] = getattr(visitor, "_is_comparable")  # noqa: B009
_EQUALS: Callable[[Any, Any], bool] = getattr(visitor, "_equals")  # noqa: B009
_ORDERING = visitor.TreeInterpreter.COMPARATOR_FUNC


_EMPTY = (str, list, dict)
"""The types whose empty values JMESPath holds false (with null and false; 0 is true)."""


def _chain(steps: list[Compiled]) -> Compiled:
    if len(steps) == 2:
        first, second = steps

        def two(value: Any) -> Any:
            return second(first(value))

        return two

    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _has_expref(node: Any) -> bool:
    return node["type"] == "expref" or any(
        _has_expref(c) for c in node.get("children", ()) if isinstance(c, dict)
    )


class Compiler:
    """Turns a parsed JMESPath expression into a closure, with ``options``' functions."""

    def __init__(self, options: jmespath.Options) -> None:
        assert options.custom_functions is not None
        self.interpreter = visitor.TreeInterpreter(options)
        self.functions = options.custom_functions

    def compile(self, source: str) -> Compiled:
        """``source`` compiled (a JMESPathError when it does not parse)."""
        return self.node(jmespath.compile(source).parsed)

    def node(self, node: Any) -> Compiled:
        kind = node["type"]
        children = node.get("children", [])
        if kind == "field":
            name = node["value"]

            def field(value: Any) -> Any:
                try:
                    return value.get(name)
                except AttributeError:
                    return None

            return field
        if kind in ("subexpression", "index_expression", "pipe"):
            return _chain([self.node(c) for c in children])
        if kind in ("current", "identity"):
            return lambda value: value
        if kind == "literal":
            constant = node["value"]
            return lambda _value: constant
        if kind == "key_val_pair":
            return self.node(children[0])
        if kind == "multi_select_dict":
            pairs = [(c["value"], self.node(c)) for c in children]

            def multi_select_dict(value: Any) -> Any:
                if value is None:
                    return None
                out, key = {}, ""
                try:
                    for key, get in pairs:
                        out[key] = get(value)
                except Exception as exc:
                    _at(exc, f".{key}")
                    raise
                return out

            return multi_select_dict
        if kind == "multi_select_list":
            items = [self.node(c) for c in children]

            def multi_select_list(value: Any) -> Any:
                if value is None:
                    return None
                out, i = [], 0
                try:
                    for i, get in enumerate(items):  # noqa: B007 (read when one raises)
                        out.append(get(value))
                except Exception as exc:
                    _at(exc, f"[{i}]")
                    raise
                return out

            return multi_select_list
        if kind == "function_expression" and not _has_expref(node):
            return self._function(node["value"], [self.node(c) for c in children])
        if kind in ("or_expression", "and_expression"):
            return self._logical(kind == "or_expression", children[0], children[1])
        if kind == "comparator":
            return self._comparator(node)
        if kind in ("projection", "value_projection"):
            base, each = self.node(children[0]), self.node(children[1])
            values = kind == "value_projection"

            def projection(value: Any) -> Any:
                over = base(value)
                if values:
                    try:
                        over = over.values()
                    except AttributeError:
                        return None
                elif not isinstance(over, list):
                    return None
                out, i = [], 0
                try:
                    for i, element in enumerate(over):  # noqa: B007 (read when one raises)
                        result = each(element)
                        if result is not None:
                            out.append(result)
                except Exception as exc:
                    _at(exc, "[*]" if values else f"[{i}]")
                    raise
                return out

            return projection
        if kind == "index":
            index = node["value"]

            def index_(value: Any) -> Any:
                if not isinstance(value, list):
                    return None
                try:
                    return value[index]
                except IndexError:
                    return None

            return index_
        interpreter = self.interpreter  # not_expression, filter_projection, flatten, slice, expref
        return lambda value: interpreter.visit(node, value)

    def _function(self, name: str, args: list[Compiled]) -> Compiled:
        """A call of ``name``. Where every argument already has a type the signature allows, the
        function is called directly; otherwise through ``call_function``, whose checks raise the
        error JMESPath would (the fast path skips only checks that would pass)."""
        call = self.functions.call_function
        spec = self.functions.FUNCTION_TABLE.get(name)
        checks: list[frozenset[str] | None] = []
        fast = spec is not None
        for part in spec["signature"] if spec is not None else ():
            if not part["types"]:
                checks.append(None)
                continue
            allowed, subtypes = getattr(self.functions, "_get_allowed_pytypes")(part["types"])  # noqa: B009
            fast = fast and not subtypes
            checks.append(frozenset(allowed))
        if not fast or spec is None:
            return lambda value: call(name, [arg(value) for arg in args])
        function, instance = spec["function"], self.functions
        size = len(checks)
        variadic = bool(spec["signature"]) and bool(spec["signature"][-1].get("variadic"))

        if not args and size == 0:
            return lambda _value: function(instance)
        if len(args) == 1 and size == 1 and checks[0] is not None:
            only, allowed_only = args[0], checks[0]

            def direct_one(value: Any) -> Any:  # header('x'), str(id): most calls in a mapping
                given = only(value)
                if type(given).__name__ in allowed_only:
                    return function(instance, given)
                return call(name, [given])

            return direct_one

        def direct(value: Any) -> Any:
            resolved = [arg(value) for arg in args]
            if len(resolved) == size or (variadic and len(resolved) > size):
                for allowed, given in zip(checks, resolved, strict=False):
                    if allowed is not None and type(given).__name__ not in allowed:
                        return call(name, resolved)
                return function(instance, *resolved)
            return call(name, resolved)

        return direct

    def _logical(self, is_or: bool, left_node: Any, right_node: Any) -> Compiled:
        """``left || right`` or ``left && right``, JMESPath's truth test inlined (a mapping's
        ``event_type`` is a chain of these, run on every record read)."""
        left, right = self.node(left_node), self.node(right_node)
        if is_or:

            def or_(value: Any) -> Any:
                matched = left(value)
                if matched is None or matched is False or (not matched and isinstance(matched, _EMPTY)):
                    return right(value)
                return matched

            return or_

        def and_(value: Any) -> Any:
            matched = left(value)
            if matched is None or matched is False or (not matched and isinstance(matched, _EMPTY)):
                return matched
            return right(value)

        return and_

    def _comparator(self, node: Any) -> Compiled:
        op = node["value"]
        left, right = self.node(node["children"][0]), self.node(node["children"][1])
        literal = node["children"][1]
        if op in ("eq", "ne") and literal["type"] == "literal" and type(literal["value"]) is str:
            text, negate = literal["value"], op == "ne"

            def equals_text(value: Any) -> bool:  # header('x-shopify-topic') == 'orders/delete'
                same = left(value) == text  # a string on one side: JMESPath's rule is ``==``
                return not same if negate else same

            return equals_text
        if op in ("eq", "ne"):
            negate = op == "ne"

            def equals(value: Any) -> bool:
                a, b = left(value), right(value)
                # jmespath's own rule differs from ``==`` only between a bool and a number
                same = a == b if type(a) is str or type(b) is str else _EQUALS(a, b)
                return not same if negate else same

            return equals
        compare = _ORDERING[op]

        def ordering(value: Any) -> Any:
            a, b = left(value), right(value)
            if not (_COMPARABLE(a) and _COMPARABLE(b)):
                return None
            return compare(a, b)

        return ordering
