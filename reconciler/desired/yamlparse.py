"""Strict YAML: one document of the YAML 1.2 core schema, read exactly or refused.

Built on ruamel.yaml's safe scanner and event parser, never its constructors, so nothing beyond
plain data is built. The text is read in three passes, each of which may refuse it:

    characters  no control characters, no YAML 1.1 line breaks (U+0085, U+2028, U+2029), no
                carriage return without a line feed, no byte-order mark after the first character
    tokens      the library's tokens, checked where the library is known to read YAML 1.2
                differently or to accept what YAML 1.2 forbids: directives, explicit keys, plain
                scalars that start with an indicator in flow context, comments without a space
                before them, flow lines indented less than their parent, nesting, escapes that
                name no character (halves of surrogate pairs, beyond U+10FFFF); every block
                scalar ('|', '>') is read a second time here and must come out the same
    events      folded into plain values: anchors and aliases, tags beyond the core schema,
                keys that are not strings, duplicate keys and a second document are refused

Every exception out of the library goes through one choke point (`_guarded`) and becomes a
`YamlError`, so no input gives anything but a document or a `YamlError`. Errors name the line
and column where they were found (1-based). ADR 0004 lists the accepted subset and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.scanner import Scanner
from ruamel.yaml.tokens import (
    AliasToken,
    AnchorToken,
    BlockEndToken,
    BlockMappingStartToken,
    BlockSequenceStartToken,
    DirectiveToken,
    FlowEntryToken,
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
    KeyToken,
    ScalarToken,
    TagToken,
    Token,
    ValueToken,
)

from reconciler.desired.problems import START, DocPath, Mark

MAX_DEPTH = 64

_CORE = "tag:yaml.org,2002:"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_DEC = re.compile(r"[-+]?[0-9]+")
_INT_OCT = re.compile(r"0o[0-7]+")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")

# YAML 1.2 c-printable, less the characters this loader refuses on purpose: U+0085, U+2028,
# U+2029 (line breaks in YAML 1.1 only) and U+FEFF (a byte-order mark, allowed first only).
_NOT_PRINTABLE = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_OLD_BREAKS = {"\x85": "NEXT LINE", "\u2028": "LINE SEPARATOR", "\u2029": "PARAGRAPH SEPARATOR"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LONE_RETURN = re.compile(r"\r(?!\n)")
_FLOW_INDICATORS = ",[]{}"
_NODE_STARTS = (
    ScalarToken,
    TagToken,
    AnchorToken,
    AliasToken,
    FlowSequenceStartToken,
    FlowMappingStartToken,
)
_ENTRY_STARTS = (FlowMappingStartToken, FlowSequenceStartToken, FlowEntryToken)
_FLOW_INDICATOR = re.compile(f"[{re.escape(_FLOW_INDICATORS)}]")
_COLON_BEFORE = {":" + indicator for indicator in _FLOW_INDICATORS}
# One escape of a double-quoted scalar (spec 5.7), so that `\\u` is not read as `\u`.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|.)", re.DOTALL)
_SURROGATES = range(0xD800, 0xE000)
_LAST_CHARACTER = 0x10FFFF


class YamlError(Exception):
    """The text is not one strict YAML document; `mark` says where."""

    def __init__(self, message: str, mark: Mark) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    """Plain data (dict, list, str, int, float, bool, None) and where each part of it stands."""

    value: Any
    value_marks: Mapping[DocPath, Mark]
    key_marks: Mapping[DocPath, Mark]

    def locate(self, path: DocPath, *, at_key: bool = False) -> Mark:
        """The position of `path`, or of the nearest enclosing part that exists."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if at_key and end == len(path) and prefix in self.key_marks:
                return self.key_marks[prefix]
            if prefix in self.value_marks:
                return self.value_marks[prefix]
        return START


def parse_yaml(text: str) -> ParsedYaml:
    """Parse `text` as exactly one strict YAML document; raise `YamlError` otherwise.

    An empty stream (nothing but comments) gives the value None.
    """
    _check_characters(text)
    _TokenCheck(text).run(_guarded(_library().scan(text)))
    return _build(_guarded(_library().parse(text)))


class _Scanner(Scanner):
    """The library's safe scanner, which crashes on an escape beyond U+10FFFF: refused here."""

    def scan_flow_scalar_non_spaces(self, double: Any, start_mark: Any) -> Any:
        try:
            return super().scan_flow_scalar_non_spaces(double, start_mark)
        except (ValueError, OverflowError):
            # `chr()` of the code of '\U' and 8 hex digits; the reader stands at the digits.
            where, digits = self.reader.get_mark(), str(self.reader.prefix(8))
            if not re.fullmatch("[0-9a-fA-F]{8}", digits) or int(digits, 16) <= _LAST_CHARACTER:
                raise  # pragma: no cover - no other escape fails so
            raise YamlError(
                f"escape '\\U{digits}' is beyond U+10FFFF, the last Unicode character",
                Mark(int(where.line) + 1, int(where.column) - 1),
            ) from None


def _library() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.Scanner = _Scanner
    return yaml


# -- the choke point -------------------------------------------------------------------------

_Item = TypeVar("_Item", Token, Event)


def _guarded(items: Iterator[_Item]) -> Iterator[_Item]:
    """The library's tokens or events; whatever it raises comes out as a `YamlError`.

    Its own errors keep their message and mark. Anything else is a defect of the library met on
    this text (an assertion, a missing case): it is reported after the last item read well.
    """
    last_end = START
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except YamlError:
            raise
        except MarkedYAMLError as error:
            raise _library_error(error) from None
        except Exception as error:  # noqa: BLE001 - the point: no library exception escapes
            detail = str(error).splitlines()[0] if str(error) else ""
            raise YamlError(
                "the YAML library could not read this document: "
                f"{type(error).__name__}{': ' + detail if detail else ''}",
                last_end,
            ) from None
        last_end = _mark(item.end_mark)
        yield item


# The library's names for tokens, as a reader of the document would say them.
_TOKEN_WORDS = {
    "<block end>": "the end of the indented block",
    "<block mapping start>": "a new indented mapping",
    "<block sequence start>": "a new indented sequence",
    "<block entry>": "'-'",
    "<scalar>": "a value",
    "<document start>": "'---'",
    "<document end>": "'...'",
    "<stream end>": "the end of the text",
    "<tag>": "a tag",
    "<anchor>": "an anchor",
    "<alias>": "an alias",
    "<directive>": "a directive",
}
_TOKEN_WORD = re.compile("'?(" + "|".join(re.escape(word) for word in _TOKEN_WORDS) + ")'?")

# Messages of the library reworded where its own words would mislead: (what it says, what to
# say instead, whether its context mark, at the start of the construct, is the better place).
_REWORDED = [
    (
        re.compile(r"could not find expected ':'"),
        "expected ':' after this key (or indent the line more, to continue the value above it)",
        True,
    ),
    (
        re.compile(r"found unexpected end of stream", re.ASCII),
        "this quoted scalar is not closed: expected its closing quote before the end of the text",
        True,
    ),
    (
        re.compile(r"expected '<document start>', but found \(('[^']*'),\)"),
        r"expected the end of the document, but found \1 after its top-level value",
        False,
    ),
    (
        re.compile(r"found character (.*) that cannot start any token"),
        r"found character \1, which cannot start a value: quote the value",
        False,
    ),
    (
        re.compile(r"expected chomping or indentation indicators, but found (.*)"),
        r"after '|' or '>' only '-', '+', a digit 1-9 and a comment may follow, but found \1",
        False,
    ),
]
_TAB = "found character '\\t' that cannot start any token"
_LEADING_SPACES = "more indented follow up line than first in a block scalar"


def _library_error(error: MarkedYAMLError) -> YamlError:
    """The library's error as ours: one line, in the document's words, at its mark."""
    problem = str(error.problem or error.context or "malformed YAML")
    context = f" ({error.context})" if error.context and error.problem else ""
    mark = error.problem_mark or error.context_mark
    if problem.startswith(_TAB):
        problem, context = (
            "a tab character where the YAML library only reads spaces: indent and separate "
            "with spaces (tabs are accepted inside quoted and block scalars and comments)",
            "",
        )
    elif problem.startswith(_LEADING_SPACES):
        problem = (
            "the empty lines at the start of this block scalar hold different numbers of "
            "spaces: leave them empty"
        )
    for pattern, replacement, at_context in _REWORDED:
        if pattern.search(problem):
            problem, context = pattern.sub(replacement, problem), ""
            if at_context and error.context_mark is not None:
                mark = error.context_mark
            break
    problem = problem.replace("the node content", "a value").replace("found '?'", "found a key")
    words = _TOKEN_WORD.sub(lambda match: _TOKEN_WORDS[match.group(1)], problem + context)
    where = _mark(mark) if mark is not None else START
    if problem.startswith(("a tab", "the empty lines")):
        return YamlError(words, where)
    return YamlError(f"invalid YAML: {words}", where)


def _mark(mark: Any) -> Mark:
    return Mark(int(mark.line) + 1, int(mark.column) + 1)


def _offset_mark(text: str, offset: int) -> Mark:
    before = text[:offset]
    line = len(_LINE_BREAK.findall(before)) + 1
    last_break = max(before.rfind("\n"), before.rfind("\r"))
    return Mark(line, offset - (last_break + 1) + 1)


def offset_mark(data: bytes, offset: int) -> Mark:
    """The line and column of byte `offset` in `data` (columns count bytes)."""
    before = data[:offset]
    return Mark(before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1)


# -- characters ------------------------------------------------------------------------------


def _check_characters(text: str) -> None:
    lone_return = _LONE_RETURN.search(text)
    if lone_return is not None:
        # A line break in YAML 1.2, but not for every YAML reader (nor for most editors).
        raise YamlError(
            "carriage return (U+000D) without a line feed after it: end lines with \\n or \\r\\n",
            _offset_mark(text, lone_return.start()),
        )
    found = _NOT_PRINTABLE.search(text, 1 if text.startswith("\ufeff") else 0)
    if found is None:
        return
    character = found.group()
    where = _offset_mark(text, found.start())
    if character in _OLD_BREAKS:
        raise YamlError(
            f"character U+{ord(character):04X} ({_OLD_BREAKS[character]}) is a line break in "
            "YAML 1.1 but not in YAML 1.2: use a plain line break, or an escape in a "
            "double-quoted string",
            where,
        )
    if character == "\ufeff":
        raise YamlError(
            "byte-order mark (U+FEFF) inside the document: it may only be the first character",
            where,
        )
    raise YamlError(
        f"invalid character U+{ord(character):04X} (control characters are not allowed)", where
    )


# -- tokens ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _FlowRegion:
    """A flow node in block context: its lines after the first must be indented past `parent`."""

    first_line: int  # 0-based
    parent: int  # column of the enclosing block collection, -1 at the top
    quoted: list[tuple[int, int]] = field(default_factory=list)  # spans of quoted scalars


class _TokenCheck:
    """Refuses, token by token, what the library reads differently from YAML 1.2."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.line_starts = [0] + [match.end() for match in _LINE_BREAK.finditer(text)]
        self.block_columns: list[int] = []
        self.flow_depth = 0
        self.region: _FlowRegion | None = None
        self.seen_until = 0

    def run(self, tokens: Iterator[Token]) -> None:
        previous: Token | None = None
        for token in tokens:
            start: int = token.start_mark.index
            if start > self.seen_until:
                self._check_gap(self.seen_until, start)
            self.seen_until = max(self.seen_until, token.end_mark.index)
            if isinstance(token, _NODE_STARTS) and not isinstance(previous, KeyToken):
                self._check_node_indent(token)
            if isinstance(token, TagToken):
                self._check_tag(token)
            if isinstance(token, ValueToken) and isinstance(previous, _ENTRY_STARTS):
                self._check_colon_first(token)
            self._check(token)
            previous = token

    def _check(self, token: Token) -> None:
        if isinstance(token, DirectiveToken):
            raise YamlError(
                f"YAML directives (%YAML, %TAG) are not allowed (found %{token.name})",
                _mark(token.start_mark),
            )
        if isinstance(token, KeyToken) and token.end_mark.index > token.start_mark.index:
            self._refuse_explicit_key(token)
        if isinstance(token, BlockMappingStartToken | BlockSequenceStartToken):
            self.block_columns.append(token.start_mark.column)
            self._check_depth(token)
        elif isinstance(token, BlockEndToken) and self.block_columns:
            self.block_columns.pop()
        elif isinstance(token, FlowSequenceStartToken | FlowMappingStartToken):
            if self.flow_depth == 0:
                self.region = _FlowRegion(token.start_mark.line, self._parent())
            self.flow_depth += 1
            self._check_depth(token)
        elif isinstance(token, FlowSequenceEndToken | FlowMappingEndToken):
            self.flow_depth -= 1
            if self.flow_depth == 0 and self.region is not None:
                self._check_flow_lines(self.region, token.end_mark.line)
                self.region = None
        elif isinstance(token, ScalarToken):
            self._check_scalar(token)

    def _check_node_indent(self, token: Token) -> None:
        """A value that starts a line is indented more than the key or '-' it belongs to."""
        column: int = token.start_mark.column
        if self.flow_depth or not self.block_columns or column > self.block_columns[-1]:
            return
        line_start = self.line_starts[token.start_mark.line]
        if self.text[line_start : token.start_mark.index].strip(" \t"):
            return
        raise YamlError(
            "this value must be indented more than the key or '-' it belongs to (by at least "
            f"{_spaces(self.block_columns[-1] + 1)})",
            _mark(token.start_mark),
        )

    def _check_colon_first(self, token: Token) -> None:
        after = self.text[token.end_mark.index : token.end_mark.index + 1]
        if after and after not in " \t\r\n" + _FLOW_INDICATORS:
            # `{:x}` is {":x": null} in YAML 1.2; the library reads an empty key and "x".
            raise YamlError(
                "a plain scalar starting with ':' at the start of a flow mapping entry is read "
                "as an empty key by the YAML library, not as text: quote it",
                _mark(token.start_mark),
            )

    def _check_tag(self, token: TagToken) -> None:
        handle, suffix = token.value
        written = self.text[token.start_mark.index : token.end_mark.index]
        read = f"!<{suffix}>" if written.startswith("!<") else (handle or "") + suffix
        after = self.text[token.end_mark.index : token.end_mark.index + 1]
        if not written.startswith("!<") and _FLOW_INDICATOR.search(written):
            # No tag holds one in YAML 1.2 (in flow context the tag ends there); the library
            # reads the indicator into the tag.
            raise YamlError(
                f"tag {written!r} runs into a flow indicator (, [ ] {{ }}): put a space after "
                "the tag",
                _mark(token.start_mark),
            )
        if written != read or read == "!<!>" or (after and after not in " \t\r\n"):
            # The library reads some malformed tags as others (`!!!str` as `!!str`).
            raise YamlError(
                f"malformed tag {written!r}: write a core schema tag such as !!str, followed by "
                "a space",
                _mark(token.start_mark),
            )

    def _parent(self) -> int:
        return self.block_columns[-1] if self.block_columns else -1

    def _check_depth(self, token: Token) -> None:
        # Checked while scanning, not only while building: the library's scanner slows down
        # with every open flow level, so a document of brackets is refused before it costs.
        if len(self.block_columns) + self.flow_depth > MAX_DEPTH + 1:
            raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", _mark(token.start_mark))

    def _refuse_explicit_key(self, token: Token) -> None:
        after = self.text[token.end_mark.index : token.end_mark.index + 1]
        if after and after not in " \t\r\n":
            # `?foo` inside [ ] or { } is a plain scalar in YAML 1.2; the library reads a key.
            raise YamlError(
                "a plain scalar starting with '?' inside a flow collection is read as a key "
                "by the YAML library, not as text: quote it",
                _mark(token.start_mark),
            )
        raise YamlError(
            "explicit mapping keys ('? ') are not allowed: write the key as a plain or quoted "
            "scalar followed by ': '",
            _mark(token.start_mark),
        )

    def _check_scalar(self, token: ScalarToken) -> None:
        start = token.start_mark.index
        if token.style in ("|", ">"):
            self._check_block_scalar(token)
            return
        if token.plain and self.flow_depth > 0 and self.text[start] in "-?:":
            after = self.text[start + 1 : start + 2]
            if not after or after in " \t\r\n" + _FLOW_INDICATORS:
                raise YamlError(
                    f"'{self.text[start]}' alone is not a value inside a flow collection: quote it",
                    _mark(token.start_mark),
                )
        end = token.end_mark.index
        if token.style == '"':
            self._check_escapes(start, end)
        if token.plain and self.flow_depth > 0 and self.text[end - 1 : end + 1] in _COLON_BEFORE:
            # YAML 1.2 ends the scalar before ':' there (`{a:, b}` is {a: null, b: null}); the
            # library keeps the ':' in the text.
            raise YamlError(
                "':' right before ',', ']' or '}' ends a key in YAML 1.2 but the YAML library "
                "keeps it in the text: write 'key: ' with a space, or quote the text",
                _offset_mark(self.text, end - 1),
            )
        if token.start_mark.line == token.end_mark.line:
            return
        if self.region is not None:
            if not token.plain:
                self.region.quoted.append((start, token.end_mark.index))
            return
        region = _FlowRegion(token.start_mark.line, self._parent())
        if not token.plain:
            region.quoted.append((start, token.end_mark.index))
        self._check_flow_lines(region, token.end_mark.line)

    def _check_escapes(self, start: int, end: int) -> None:
        """No escape in a double-quoted scalar names half of a UTF-16 surrogate pair."""
        for escape in _ESCAPE.finditer(self.text, start, end):
            code = _escaped_code(escape)
            if code is None or code not in _SURROGATES:
                continue
            # Not a character: the library reads a lone surrogate (which no UTF-8 text can
            # hold), other readers refuse it, or join '\uD83D\uDE00' into one character.
            after = _ESCAPE.match(self.text, escape.end(), end)
            low = _escaped_code(after) if after is not None else None
            if code < 0xDC00 and low is not None and 0xDC00 <= low < 0xE000:
                joined = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                instead = f"write the character itself, or '\\U{joined:08X}'"
            else:
                instead = "write the character itself, or '\\U' and its 8-digit code"
            raise YamlError(
                f"escape '{escape.group()}' names half of a UTF-16 surrogate pair, not a "
                f"character, and YAML readers disagree on it: {instead}",
                _offset_mark(self.text, escape.start()),
            )

    def _check_flow_lines(self, region: _FlowRegion, last_line: int) -> None:
        """Each line of a flow node after its first is indented by more than its parent's."""
        if region.parent < 0:
            return
        for line in range(region.first_line + 1, last_line + 1):
            begin = self.line_starts[line]
            end = self.line_starts[line + 1] if line + 1 < len(self.line_starts) else None
            content = self.text[begin:end].rstrip("\r\n")
            spaces = len(content) - len(content.lstrip(" "))
            rest = content.lstrip(" \t")
            if not rest:
                continue
            first = begin + len(content) - len(rest)
            if rest.startswith("#") and not any(a < first < b for a, b in region.quoted):
                continue
            if spaces > region.parent:
                continue
            needed = _spaces(region.parent + 1)
            if rest[0] in "]}":
                # Common in JSON-like styles, and accepted by some tools, but not by YAML 1.2.
                message = (
                    f"the closing '{rest[0]}' must be indented by at least {needed}, more than "
                    "the key or '-' it belongs to"
                )
            else:
                message = (
                    "this line continues a flow value ([ ], { } or a quoted or plain scalar) "
                    f"and must be indented by at least {needed}, more than the key or '-' it "
                    "belongs to (tabs do not indent)"
                )
            raise YamlError(message, Mark(line + 1, spaces + 1))

    def _check_gap(self, begin: int, end: int) -> None:
        """Between tokens there is only white space and comments; '#' needs a space before."""
        position = self.text.find("#", begin, end)
        while position != -1:
            if position > 0 and self.text[position - 1] not in " \t\r\n\ufeff":
                raise YamlError(
                    "a comment needs a space before '#' (or quote the text that holds '#')",
                    _offset_mark(self.text, position),
                )
            line_end = _LINE_BREAK.search(self.text, position, end)
            if line_end is None:
                return
            position = self.text.find("#", line_end.end(), end)

    def _check_block_scalar(self, token: ScalarToken) -> None:
        expected = read_block_scalar(self.text, token.start_mark.index, self._parent())
        if expected == token.value:
            return
        ends_text = not self.text[token.end_mark.index :].strip(" \t")
        if ends_text and not self.text.endswith(("\n", "\r")):
            # YAML readers disagree on whether the end of the text ends the last line.
            raise YamlError(
                "a block scalar that ends the text needs a line break after its last line "
                "(without one, YAML readers disagree on its value)",
                _mark(token.start_mark),
            )
        raise YamlError(
            f"this block scalar ('{token.style}') is read differently by the YAML library "
            f"({token.value!r}) and by YAML 1.2 ({expected!r}): check its indentation "
            "and the blank lines at its end",
            _mark(token.start_mark),
        )


def _escaped_code(escape: re.Match[str]) -> int | None:
    """The code of a '\\u' or '\\U' escape matched by `_ESCAPE`; None for other escapes."""
    digits = escape.group(1) or escape.group(2)
    return None if digits is None else int(digits, 16)


def _spaces(count: int) -> str:
    return f"{count} space" if count == 1 else f"{count} spaces"


_HEADER = re.compile(r"([|>])(?:([1-9])([-+])?|([-+])([1-9])?)?")


def read_block_scalar(text: str, index: int, parent: int) -> str:
    """The value of the block scalar whose indicator ('|' or '>') is at `index` (YAML 1.2 §8.1).

    `parent` is the column of the enclosing block collection (-1 at the top of the document).
    A second reading, independent of the library's, to cross-check it.
    """
    header = _HEADER.match(text, index)
    if header is None:  # pragma: no cover - the library only makes block scalars at '|', '>'
        raise YamlError("expected a block scalar indicator", _offset_mark(text, index))
    style, digit = header.group(1), header.group(2) or header.group(5)
    chomp = header.group(3) or header.group(4)
    breaks = _LINE_BREAK.search(text, header.end())
    lines = _block_lines(text, breaks.end()) if breaks else []
    indent = max(parent, 0) + int(digit) if digit else _detect_indent(text, lines, parent)
    # (is_empty, content) for each line of the scalar, up to its end.
    body: list[tuple[bool, str]] = []
    for _, line in lines:
        stripped = line.lstrip(" ")
        if not stripped and len(line) <= indent:
            body.append((True, ""))
            continue
        if len(line) - len(stripped) < indent or (indent == 0 and _is_marker(line)):
            break
        body.append((False, line[indent:]))
    # A line of only spaces, more than the indentation, is content (spec 8.8; 6FWR and L24T in
    # the yaml-test-suite): the scalar's text ends after the last line that is not empty.
    content_end = max((i + 1 for i, (empty, _) in enumerate(body) if not empty), default=0)
    trailing = len(body) - content_end
    value = _fold(body[:content_end]) if style == ">" else _literal(body[:content_end])
    if content_end and chomp != "-":
        value += "\n"
    if chomp == "+":
        value += "\n" * trailing
    return value


def _block_lines(text: str, begin: int) -> list[tuple[int, str]]:
    """The lines from `begin` on, without their breaks; a last line without one counts."""
    lines = []
    for match in _LINE_BREAK.finditer(text, begin):
        lines.append((begin, text[begin : match.start()]))
        begin = match.end()
    if begin < len(text):
        lines.append((begin, text[begin:]))
    return lines


def _detect_indent(text: str, lines: list[tuple[int, str]], parent: int) -> int:
    widest_empty, widest_at = 0, 0
    for begin, line in lines:
        stripped = line.lstrip(" ")
        spaces = len(line) - len(stripped)
        if not stripped:
            if spaces > widest_empty:
                widest_empty, widest_at = spaces, begin
            continue
        if spaces <= parent:
            break
        if widest_empty > spaces:
            raise YamlError(
                "an empty line at the start of this block scalar holds more spaces than its "
                "first line: leave it empty",
                _offset_mark(text, widest_at),
            )
        return spaces
    # No content line: the scalar is empty, and only its empty lines count (for '+').
    return max(parent + 1, widest_empty + 1)


def _is_marker(line: str) -> bool:
    return line[:3] in ("---", "...") and (len(line) == 3 or line[3] in " \t")


def _literal(body: list[tuple[bool, str]]) -> str:
    return "\n".join(content for _, content in body)


def _fold(body: list[tuple[bool, str]]) -> str:
    """Folded style: a break between two text lines is a space, unless empty lines follow it;
    a break next to a more-indented ("spaced") line is kept."""
    value = ""
    previous: str | None = None  # the last non-empty line
    empties = 0
    for empty, content in body:
        if empty:
            empties += 1
            continue
        if previous is None:
            value += "\n" * empties
        elif content[:1] in " \t" or previous[:1] in " \t":
            value += "\n" * (empties + 1)
        else:
            value += "\n" * empties if empties else " "
        value += content
        previous, empties = content, 0
    return value


# -- events ----------------------------------------------------------------------------------


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


def resolve_plain(text: str) -> Any:
    """Resolve an untagged plain scalar with the YAML 1.2 core schema."""
    if _NULL.fullmatch(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT_DEC.fullmatch(text):
        return int(text, 10)
    if _INT_OCT.fullmatch(text):
        return int(text[2:], 8)
    if _INT_HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


def _scalar(event: ScalarEvent) -> Any:
    text: str = event.value
    tag = event.tag
    if tag == "!":  # the non-specific tag: a string, whatever it looks like (spec 6.28)
        return text
    if tag is None:
        plain = event.style is None and event.implicit[0]
        return resolve_plain(text) if plain else text
    name = _tag_name(tag)
    match tag.removeprefix(_CORE) if tag.startswith(_CORE) else None:
        case "str":
            return text
        case "null" if _NULL.fullmatch(text):
            return None
        case "bool" if text in _BOOL:
            return _BOOL[text]
        case "int" if isinstance(value := resolve_plain(text), int) and not isinstance(value, bool):
            return value
        case "float" if isinstance(value := resolve_plain(text), int | float) and not isinstance(
            value, bool
        ):
            return float(value)
        case "null" | "bool" | "int" | "float":
            raise YamlError(f"{text!r} is not a valid {name} value", _mark(event.start_mark))
    raise YamlError(_refused_tag(name), _mark(event.start_mark))


def _refused_tag(name: str) -> str:
    return (
        f"YAML tag {name} is not allowed (expected plain data: the YAML 1.2 core schema's "
        "!!str, !!int, !!float, !!bool, !!null, !!map and !!seq)"
    )


def _check_node(event: NodeEvent) -> None:
    if event.anchor is not None:
        raise YamlError(
            f"YAML anchor &{event.anchor} is not allowed (anchors and aliases are refused)",
            _mark(event.start_mark),
        )
    if isinstance(event, CollectionStartEvent) and event.tag not in (None, "!"):
        expected = "map" if isinstance(event, MappingStartEvent) else "seq"
        if event.tag != _CORE + expected:
            raise YamlError(_refused_tag(_tag_name(event.tag)), _mark(event.start_mark))


def _describe_key(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a float"}.get(type(value), "a value")


class _Builder:
    """Folds parser events into plain values, recording positions on the way."""

    def __init__(self, events: Iterator[Event]) -> None:
        self.events = events
        self.value_marks: dict[DocPath, Mark] = {}
        self.key_marks: dict[DocPath, Mark] = {}

    def next_event(self) -> Event:
        event = next(self.events, None)
        if event is None:  # pragma: no cover - the parser closes what it opens
            raise YamlError("unexpected end of document", START)
        return event

    def node(self, first: Event, path: DocPath) -> Any:
        if isinstance(first, AliasEvent):
            raise YamlError(
                f"YAML alias *{first.anchor} is not allowed (anchors and aliases are refused)",
                _mark(first.start_mark),
            )
        if not isinstance(first, NodeEvent):  # pragma: no cover - the parser guarantees this
            raise YamlError("expected a value", _mark(first.start_mark))
        _check_node(first)
        self.value_marks[path] = _mark(first.start_mark)
        if len(path) > MAX_DEPTH:
            raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", _mark(first.start_mark))
        if isinstance(first, ScalarEvent):
            return _scalar(first)
        if isinstance(first, SequenceStartEvent):
            items: list[Any] = []
            while not isinstance(event := self.next_event(), SequenceEndEvent):
                items.append(self.node(event, (*path, len(items))))
            return items
        mapping: dict[str, Any] = {}
        while not isinstance(event := self.next_event(), MappingEndEvent):
            key = self.key(event, path, mapping)
            mapping[key] = self.node(self.next_event(), (*path, key))
        return mapping

    def key(self, event: Event, path: DocPath, mapping: dict[str, Any]) -> str:
        if not isinstance(event, ScalarEvent):
            found = "a mapping" if isinstance(event, MappingStartEvent) else "a sequence"
            raise YamlError(
                f"complex mapping keys are not allowed: a key must be a string, found {found}",
                _mark(event.start_mark),
            )
        _check_node(event)
        key = _scalar(event)
        if not isinstance(key, str):
            raise YamlError(
                f"mapping key {event.value!r} is {_describe_key(key)}, not a string: keys must "
                "be strings (quote it)"
                if event.value
                else "empty mapping key: every key needs a name",
                _mark(event.start_mark),
            )
        if key in mapping:
            first_mark = self.key_marks[(*path, key)]
            raise YamlError(
                f"duplicate key '{key}' (first defined at line {first_mark.line})",
                _mark(event.start_mark),
            )
        self.key_marks[(*path, key)] = _mark(event.start_mark)
        return key


def _build(events: Iterator[Event]) -> ParsedYaml:
    builder = _Builder(events)
    value: Any = None
    seen_document = False
    for event in events:
        if isinstance(event, DocumentStartEvent):
            if seen_document:
                raise YamlError(
                    "expected a single YAML document, found a second one",
                    _mark(event.start_mark),
                )
            seen_document = True
        elif isinstance(event, NodeEvent):
            value = builder.node(event, ())
    return ParsedYaml(value, builder.value_marks, builder.key_marks)
