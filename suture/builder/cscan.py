"""The top-level constructs of a C file, enough to say what a change to a header touches.

Not a C parser: a scanner that splits a file into its top-level items
(preprocessor directives, and declarations or definitions ending at a ``;``
or at the ``}`` of a function body), each with its kind, its name, the
identifiers it mentions and its tokens, so that two versions of a header
can be compared item by item. Every item also carries the ``#if`` context
it sits in: an item whose condition changed is a changed item.

What a live patch can take from a header change follows from the kinds:
a changed ``static inline`` function or macro changes the code of the units
that use it (they are compiled again and diffed); a changed struct, union,
enum, typedef or global declaration changes the layout or the meaning of
data the running kernel already has, and is refused.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Comments, string and character literals, identifiers, numbers, punctuation.
_TOKEN = re.compile(
    r"""
    (?P<comment>/\*.*?\*/|//[^\n]*)
  | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<number>\.?\d(?:[\w.]|[eEpP][+-])*)
  | (?P<newline>\n)
  | (?P<space>[ \t\r\f\v]+|\\\n)
  | (?P<punct>->|\+\+|--|<<=?|>>=?|[<>=!&|^+\-*/%]=|&&|\|\||\.\.\.|\#\#|.)
    """,
    re.VERBOSE | re.DOTALL,
)
_DIRECTIVE = re.compile(r"^[ \t]*#[ \t]*(\w+)[ \t]*(.*)$")
_DEFINE = re.compile(r"^(\w+)(\()?")
_KEYWORDS = frozenset({
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "_Bool", "__attribute__", "__inline__",
    "__inline", "__always_inline", "asm", "__asm__", "typeof", "__typeof__", "bool",
})  # fmt: skip
_CONDITIONALS = frozenset({"if", "ifdef", "ifndef", "elif", "else", "endif"})


class Kind(enum.Enum):
    """What a top-level item is."""

    MACRO = "macro"  # #define
    FUNCTION = "function"  # a definition with a body (static inline in a header)
    STRUCT = "struct"
    UNION = "union"
    ENUM = "enum"
    TYPEDEF = "typedef"
    DECLARATION = "declaration"  # a prototype or a variable, extern or not
    INVOCATION = "invocation"  # a macro used at top level: DECLARE_*(...);
    DIRECTIVE = "directive"  # #include, #undef, #pragma, #error ...


# Kinds whose change alters code only: the units that use them are recompiled.
CODE_KINDS = frozenset({Kind.MACRO, Kind.FUNCTION})
# Kinds whose change alters data the running kernel has: refused.
LAYOUT_KINDS = frozenset({Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.TYPEDEF})


@dataclass(frozen=True)
class Item:
    """One top-level construct.

    Attributes:
        kind: what it is.
        name: the name it defines or declares ("" when it has none).
        text: its tokens, joined by single spaces (comments and layout dropped).
        context: the ``#if`` lines it sits in, outermost first.
        mentions: the identifiers it uses (keywords left out).
        line: where it starts (1-based).
        calls: the identifiers it uses followed by ``(`` (a function-like
            macro is used only so: ``u32 signalled;`` is a field, not a use).
        function_like: a macro with parameters.
    """

    kind: Kind
    name: str
    text: str
    context: tuple[str, ...]
    mentions: frozenset[str]
    line: int
    calls: frozenset[str] = frozenset()
    function_like: bool = False

    @property
    def key(self) -> tuple[Kind, str]:
        """What the same item is called in another version of the file."""
        return (self.kind, self.name)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    line: int


def _tokens(text: str) -> Iterator[_Tok]:
    line = 1
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "punct"
        value = m.group()
        if kind in ("comment", "space", "newline"):
            line += value.count("\n")
            if kind == "newline":
                yield _Tok("newline", "\n", line - 1)
            continue
        yield _Tok(kind, value, line)
        line += value.count("\n")


def _blank_comment(match: re.Match[str]) -> str:
    """A comment as one space, keeping its line breaks, continued ones continued.

    A comment inside a macro spans lines that end in a backslash: the macro
    goes on after it, as the preprocessor (which drops comments after
    joining continued lines) sees it.
    """
    if match.lastgroup != "comment":
        return match.group()
    lines = match.group().split("\n")
    return " " + "".join("\\\n" if line.endswith("\\") else "\n" for line in lines[:-1])


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Source lines with continuations joined and comments removed: (first line, text)."""
    stripped = _TOKEN.sub(_blank_comment, text)
    out = []
    pending = ""
    start = 0
    for number, raw in enumerate(stripped.split("\n"), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        out.append((start, pending + raw))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def scan(text: str) -> list[Item]:
    """The top-level items of a C source or header ``text``.

    A directive between items is an item of its own (a conditional changes
    the context of the items after it); a directive inside an item (an
    ``#ifdef`` in a function body) is part of that item's text.
    """
    scanner = _Scanner()
    for number, line in _logical_lines(text):
        match = _DIRECTIVE.match(line)
        if match is None:
            scanner.code(number, line)
        else:
            scanner.directive(number, line, match.group(1), match.group(2).strip())
    scanner.end()
    return scanner.items


class _Scanner:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.context: list[str] = []
        self.current: list[_Tok] = []
        self.depth = 0
        # ``NAME(...)`` just closed at top level: a macro used without a ";"
        # (DEFINE_LOCK_GUARD_0(...)) ends there unless a body or ";" follows.
        self.invoked = False

    def directive(self, number: int, line: str, word: str, rest: str) -> None:
        if self.invoked:
            self.end()
        if self.current or self.depth:
            self.current.append(_Tok("directive", " ".join(line.split()), number))
        elif word in _CONDITIONALS:
            _track(self.context, word, rest)
        else:
            self.items.append(_directive(word, rest, tuple(self.context), number))

    def code(self, number: int, line: str) -> None:
        for raw in _tokens(line):
            tok = _Tok(raw.kind, raw.text, number)
            if self.invoked and tok.text not in _INVOCATION_GOES_ON:
                self.end()
            self.invoked = False
            self.current.append(tok)
            if tok.kind != "punct":
                continue
            if tok.text in "({[":
                self.depth += 1
            elif tok.text in ")}]":
                self.depth = max(self.depth - 1, 0)
                if tok.text == "}" and self.depth == 0 and not _continues(self.current):
                    self.end()
                elif tok.text == ")" and self.depth == 0:
                    self.invoked = _invocation(self.current)
            elif tok.text == ";" and self.depth == 0:
                self.end()

    def end(self) -> None:
        self.invoked = False
        # A lone ";" after a function body is no item.
        if self.current and [t.text for t in self.current] != [";"]:
            self.items.append(_classify(self.current, tuple(self.context)))
        self.current = []


# What may follow ``NAME(...)`` in the same item: a body, its end, an initializer.
_INVOCATION_GOES_ON = frozenset({"{", ";", ",", "=", "__attribute__", "__aligned"})


def _invocation(toks: list[_Tok]) -> bool:
    """``toks`` are ``NAME ( ... )`` and nothing else: a macro used at top level."""
    return (
        len(toks) >= 3
        and toks[0].kind == "ident"
        and toks[1].text == "("
        and (toks[0].text not in _KEYWORDS)
    )


def _track(context: list[str], word: str, rest: str) -> None:
    """Keep the stack of enclosing conditions: ``#else`` replaces the branch it ends."""
    condition = " ".join(f"{word} {rest}".split())
    if word in ("if", "ifdef", "ifndef"):
        context.append(condition)
    elif word in ("elif", "else") and context:
        context[-1] = f"{context[-1]} / {condition}"
    elif word == "endif" and context:
        context.pop()


def _directive(word: str, rest: str, context: tuple[str, ...], line: int) -> Item:
    text = " ".join(t.text for t in _tokens(f"#{word} {rest}") if t.kind != "newline")
    if word == "define":
        match = _DEFINE.match(rest)
        name = match.group(1) if match else ""
        toks = [t for t in _tokens(rest) if t.kind != "newline"]
        return Item(
            Kind.MACRO, name, text, context, _mentions(rest, skip=name), line,
            calls=_calls(toks) - {name}, function_like=bool(match and match.group(2)),
        )  # fmt: skip
    return Item(Kind.DIRECTIVE, f"#{word} {rest}".strip(), text, context, frozenset(), line)


def _calls(toks: list[_Tok]) -> frozenset[str]:
    """Identifiers followed by an opening parenthesis."""
    return frozenset(
        a.text
        for a, b in itertools.pairwise(toks)
        if a.kind == "ident" and b.text == "(" and a.text not in _KEYWORDS
    )


def _mentions(text: str, skip: str = "") -> frozenset[str]:
    return frozenset(
        t.text
        for t in _tokens(text)
        if t.kind == "ident" and t.text not in _KEYWORDS and t.text != skip
    )


def _continues(current: list[_Tok]) -> bool:
    """After a top-level ``}``: the item goes on to a ``;`` (``struct x {...} y;``) or not.

    A function body ends its item; the body of a struct, union or enum, or an
    initializer, is followed by declarators or a ``;``.
    """
    words = [t.text for t in current]
    head = words[: words.index("{")] if "{" in words else words
    return not (")" in head and "=" not in head and not {"struct", "union", "enum"} & set(head[:1]))


def _classify(toks: list[_Tok], context: tuple[str, ...]) -> Item:
    code = [t for t in toks if t.kind != "directive"]
    text = " ".join(t.text for t in toks)
    mentions = frozenset(t.text for t in code if t.kind == "ident" and t.text not in _KEYWORDS)
    kind, name = _kind_and_name(code, [t.text for t in code]) if code else (Kind.DIRECTIVE, "")
    calls = _calls(code) - {name}
    return Item(kind, name, text, context, mentions - {name}, toks[0].line, calls=calls)


def _kind_and_name(toks: list[_Tok], words: list[str]) -> tuple[Kind, str]:
    if "typedef" in words[:1] or words[:2] == ["__extension__", "typedef"]:
        return Kind.TYPEDEF, _last_ident(toks, before=len(toks))
    brace = words.index("{") if "{" in words else -1
    if brace >= 0:
        aggregate = _aggregate(toks, words, brace)
        if aggregate is not None:
            return aggregate
        if _body_after_params(words[:brace]):
            return Kind.FUNCTION, _function_name(toks, brace)
    return _declaration(toks, words)


def _aggregate(toks: list[_Tok], words: list[str], brace: int) -> tuple[Kind, str] | None:
    """A struct, union or enum definition: ``struct {`` or ``struct name {``."""
    for word, kind in (("struct", Kind.STRUCT), ("union", Kind.UNION), ("enum", Kind.ENUM)):
        at = words.index(word) if word in words else -1
        # Not a function returning one: the body follows the keyword (and a name).
        if at < 0 or brace not in (at + 1, at + 2) or "(" in words[:at]:
            continue
        if brace == at + 2:
            return kind, words[at + 1]
        if kind is Kind.ENUM:  # an anonymous enum: named by its first constant
            return kind, next((t.text for t in toks[brace:] if t.kind == "ident"), "")
        return kind, ""
    return None


def _declaration(toks: list[_Tok], words: list[str]) -> tuple[Kind, str]:
    """A prototype, a variable, or a macro used at top level."""
    initialized = "=" in words and ("(" not in words or words.index("=") < words.index("("))
    if initialized:  # a variable: the name before its initializer (or array size)
        return Kind.DECLARATION, _declared(toks)
    if "(" in words and words[-1:] == [";"]:
        paren = words.index("(")
        name = words[paren - 1] if paren > 0 else ""
        if paren == 1:
            return Kind.INVOCATION, name  # DECLARE_SOMETHING(...);
        if name == ")":  # a function pointer: int (*name)(...)
            return Kind.DECLARATION, _last_ident(toks, before=paren)
        return Kind.DECLARATION, name
    if len(words) >= 2 and words[0] not in _KEYWORDS and words[1] == "(":
        return Kind.INVOCATION, words[0]
    return Kind.DECLARATION, _declared(toks)


def _body_after_params(head: list[str]) -> bool:
    """``f(args) {``, ``f(args) __attribute__((x)) {``: parameters, no initializer."""
    return ")" in head and "=" not in head


def _function_name(toks: list[_Tok], brace: int) -> str:
    """The identifier before the parameter list of the definition whose body starts at ``brace``.

    That is the first top-level parenthesis not opened by an attribute
    (``__attribute__((x))``, ``__printf(1, 2)``, ``typeof(x)`` ...).
    """
    depth = 0
    for i in range(brace):
        text = toks[i].text
        if text == "(":
            if depth == 0 and i > 0 and toks[i - 1].kind == "ident":
                name = toks[i - 1].text
                if name not in _ATTRIBUTES:
                    return name
            depth += 1
        elif text == ")":
            depth -= 1
    return ""


# Function attributes with arguments that come before the name in kernel headers.
_ATTRIBUTES = frozenset({
    "__attribute__", "__printf", "__scanf", "__acquires", "__releases", "__must_hold",
    "__cond_acquires", "__section", "__aligned", "__alloc_size", "__realloc_size", "__malloc",
    "__diag_ignore", "typeof", "__typeof__", "__counted_by", "__no_sanitize_or_inline",
    "__attribute_const__", "asm", "__asm__",
})  # fmt: skip


def _declared(toks: list[_Tok]) -> str:
    """The name a plain declaration declares: the identifier before ``=``, ``[`` or ``;``."""
    for i, tok in enumerate(toks):
        if tok.text in ("=", "[", ";", ",", ":") and i > 0 and toks[i - 1].kind == "ident":
            return toks[i - 1].text
    return _last_ident(toks, before=len(toks))


def _last_ident(toks: list[_Tok], before: int) -> str:
    for tok in reversed(toks[:before]):
        if tok.kind == "ident" and tok.text not in _KEYWORDS:
            return tok.text
    return ""
