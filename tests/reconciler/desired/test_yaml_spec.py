"""The strict YAML loader against the YAML 1.2.2 specification's own examples.

Every example of chapters 2 and 5-9 is a case: its text, transcribed from the yaml-test-suite
(whose id each case names), and either the value a YAML 1.2 core-schema loader gives, compared
type for type, or `Refused(line, column, message)`. A refusal is a construct this loader refuses
on purpose (ADR 0004: directives, anchors, explicit and complex keys, local tags, a second
document) or one the YAML library cannot read, refused with its own error rather than misread.
The examples the specification gives as errors are at the end: all of them must be refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest

from reconciler.desired.problems import Mark
from reconciler.desired.yamlparse import YamlError, parse_yaml


@dataclass(frozen=True)
class Refused:
    """A refusal: where, and a part of the message that says why."""

    line: int
    column: int
    message: str


def exactly(found: Any, expected: Any) -> bool:
    """Equal, and of the same types all the way down (`1`, `1.0` and `True` differ)."""
    if type(found) is not type(expected):
        return False
    if isinstance(expected, dict):
        return list(found) == list(expected) and all(
            exactly(found[key], expected[key]) for key in expected
        )
    if isinstance(expected, list):
        return len(found) == len(expected) and all(map(exactly, found, expected))
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(found)
    return bool(found == expected)


def check(text: str, expected: Any) -> None:
    """`text` parses to exactly `expected`, or is refused as `expected` says."""
    if isinstance(expected, Refused):
        with pytest.raises(YamlError) as refused:
            parse_yaml(text)
        assert expected.message in refused.value.message
        assert refused.value.mark == Mark(expected.line, expected.column)
    else:
        value = parse_yaml(text).value
        assert exactly(value, expected), f"{value!r} != {expected!r}"


# (id, text, expected)
SPEC_EXAMPLES: list[tuple[str, str, Any]] = [
    (  # FQ7F
        "spec-2.1-sequence-of-scalars",
        "- Mark McGwire\n- Sammy Sosa\n- Ken Griffey\n",
        ["Mark McGwire", "Sammy Sosa", "Ken Griffey"],
    ),
    (  # SYW4
        "spec-2.2-mapping-scalars-to-scalars",
        "hr:  65    # Home runs\navg: 0.278 # Batting average\nrbi: 147   # Runs Batted In\n",
        {"hr": 65, "avg": 0.278, "rbi": 147},
    ),
    (  # PBJ2
        "spec-2.3-mapping-scalars-to-sequences",
        "american:\n"
        "  - Boston Red Sox\n"
        "  - Detroit Tigers\n"
        "  - New York Yankees\n"
        "national:\n"
        "  - New York Mets\n"
        "  - Chicago Cubs\n"
        "  - Atlanta Braves\n",
        {
            "american": ["Boston Red Sox", "Detroit Tigers", "New York Yankees"],
            "national": ["New York Mets", "Chicago Cubs", "Atlanta Braves"],
        },
    ),
    (  # 229Q
        "spec-2.4-sequence-of-mappings",
        "-\n"
        "  name: Mark McGwire\n"
        "  hr:   65\n"
        "  avg:  0.278\n"
        "-\n"
        "  name: Sammy Sosa\n"
        "  hr:   63\n"
        "  avg:  0.288\n",
        [
            {"name": "Mark McGwire", "hr": 65, "avg": 0.278},
            {"name": "Sammy Sosa", "hr": 63, "avg": 0.288},
        ],
    ),
    (  # YD5X
        "spec-2.5-sequence-of-sequences",
        "- [name        , hr, avg  ]\n- [Mark McGwire, 65, 0.278]\n- [Sammy Sosa  , 63, 0.288]\n",
        [["name", "hr", "avg"], ["Mark McGwire", 65, 0.278], ["Sammy Sosa", 63, 0.288]],
    ),
    (  # ZF4X
        "spec-2.6-mapping-of-mappings",
        "Mark McGwire: {hr: 65, avg: 0.278}\nSammy Sosa: {\n    hr: 63,\n    avg: 0.288\n  }\n",
        {"Mark McGwire": {"hr": 65, "avg": 0.278}, "Sammy Sosa": {"hr": 63, "avg": 0.288}},
    ),
    (  # JHB9
        "spec-2.7-two-documents-in-a",
        "# Ranking of 1998 home runs\n"
        "---\n"
        "- Mark McGwire\n"
        "- Sammy Sosa\n"
        "- Ken Griffey\n"
        "\n"
        "# Team ranking\n"
        "---\n"
        "- Chicago Cubs\n"
        "- St Louis Cardinals\n",
        Refused(8, 1, "expected a single YAML document, found a second one"),
    ),
    (  # U9NS
        "spec-2.8-play-by-play-feed",
        "---\n"
        "time: 20:03:20\n"
        "player: Sammy Sosa\n"
        "action: strike (miss)\n"
        "...\n"
        "---\n"
        "time: 20:03:47\n"
        "player: Sammy Sosa\n"
        "action: grand slam\n"
        "...\n",
        Refused(6, 1, "expected a single YAML document, found a second one"),
    ),
    (  # J9HZ
        "spec-2.9-single-document-with-two",
        "---\n"
        "hr: # 1998 hr ranking\n"
        "  - Mark McGwire\n"
        "  - Sammy Sosa\n"
        "rbi:\n"
        "  # 1998 rbi ranking\n"
        "  - Sammy Sosa\n"
        "  - Ken Griffey\n",
        {"hr": ["Mark McGwire", "Sammy Sosa"], "rbi": ["Sammy Sosa", "Ken Griffey"]},
    ),
    (  # 7BUB
        "spec-2.10-node-for-sammy-sosa",
        "---\n"
        "hr:\n"
        "  - Mark McGwire\n"
        "  # Following node labeled SS\n"
        "  - &SS Sammy Sosa\n"
        "rbi:\n"
        "  - *SS # Subsequent occurrence\n"
        "  - Ken Griffey\n",
        Refused(5, 5, "YAML anchor &SS is not allowed"),
    ),
    (  # M5DY
        "spec-2.11-mapping-between-sequences",
        "? - Detroit Tigers\n"
        "  - Chicago cubs\n"
        ":\n"
        "  - 2001-07-23\n"
        "\n"
        "? [ New York Yankees,\n"
        "    Atlanta Braves ]\n"
        ": [ 2001-07-02, 2001-08-12,\n"
        "    2001-08-14 ]\n",
        Refused(1, 1, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # 9U5K
        "spec-2.12-compact-nested-mapping",
        "---\n"
        "# Products purchased\n"
        "- item    : Super Hoop\n"
        "  quantity: 1\n"
        "- item    : Basketball\n"
        "  quantity: 4\n"
        "- item    : Big Shoes\n"
        "  quantity: 1\n",
        [
            {"item": "Super Hoop", "quantity": 1},
            {"item": "Basketball", "quantity": 4},
            {"item": "Big Shoes", "quantity": 1},
        ],
    ),
    (  # 6JQW
        "spec-2.13-in-literals-newlines-are",
        "# ASCII Art\n--- |\n  \\//||\\/||\n  // ||  ||__\n",
        "\\//||\\/||\n// ||  ||__\n",
    ),
    (  # 96L6
        "spec-2.14-in-the-folded-scalars",
        "--- >\n  Mark McGwire's\n  year was crippled\n  by a knee injury.\n",
        "Mark McGwire's year was crippled by a knee injury.\n",
    ),
    (  # 6VJK
        "spec-2.15-folded-newlines-are-preserved",
        ">\n"
        " Sammy Sosa completed another\n"
        " fine season with great stats.\n"
        "\n"
        "   63 Home Runs\n"
        "   0.288 Batting Average\n"
        "\n"
        " What a year!\n",
        (
            "Sammy Sosa completed another fine season with great stats.\n\n"
            "  63 Home Runs\n  0.288 Batting Average\n\nWhat a year!\n"
        ),
    ),
    (  # HMK4
        "spec-2.16-indentation-determines-scope",
        "name: Mark McGwire\n"
        "accomplishment: >\n"
        "  Mark set a major league\n"
        "  home run record in 1998.\n"
        "stats: |\n"
        "  65 Home Runs\n"
        "  0.278 Batting Average\n",
        {
            "name": "Mark McGwire",
            "accomplishment": "Mark set a major league home run record in 1998.\n",
            "stats": "65 Home Runs\n0.278 Batting Average\n",
        },
    ),
    (  # G4RS
        "spec-2.17-quoted-scalars",
        'unicode: "Sosa did fine.\\u263A"\n'
        'control: "\\b1998\\t1999\\t2000\\n"\n'
        'hex esc: "\\x0d\\x0a is \\r\\n"\n'
        "\n"
        "single: '\"Howdy!\" he cried.'\n"
        "quoted: ' # Not a ''comment''.'\n"
        "tie-fighter: '|\\-*-/|'\n",
        {
            "unicode": "Sosa did fine.☺",
            "control": "\x081998\t1999\t2000\n",
            "hex esc": "\r\n is \r\n",
            "single": '"Howdy!" he cried.',
            "quoted": " # Not a 'comment'.",
            "tie-fighter": "|\\-*-/|",
        },
    ),
    (  # 4CQQ
        "spec-2.18-multi-line-flow-scalars",
        "plain:\n"
        "  This unquoted scalar\n"
        "  spans many lines.\n"
        "\n"
        'quoted: "So does this\n'
        '  quoted scalar.\\n"\n',
        {
            "plain": "This unquoted scalar spans many lines.",
            "quoted": "So does this quoted scalar.\n",
        },
    ),
    (  # C4HZ
        "spec-2.24-global-tags",
        "%TAG ! tag:clarkevans.com,2002:\n"
        "--- !shape\n"
        "  # Use the ! handle for presenting\n"
        "  # tag:clarkevans.com,2002:circle\n"
        "- !circle\n"
        "  center: &ORIGIN {x: 73, y: 129}\n"
        "  radius: 7\n"
        "- !line\n"
        "  start: *ORIGIN\n"
        "  finish: { x: 89, y: 102 }\n"
        "- !label\n"
        "  start: *ORIGIN\n"
        "  color: 0xFFEEBB\n"
        "  text: Pretty vector drawing.\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # 2XXW
        "spec-2.25-unordered-sets",
        "# Sets are represented as a\n"
        "# Mapping where each key is\n"
        "# associated with a null value\n"
        "--- !!set\n"
        "? Mark McGwire\n"
        "? Sammy Sosa\n"
        "? Ken Griff\n",
        Refused(5, 1, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # J7PZ
        "spec-2.26-ordered-mappings",
        "# The !!omap tag is one of the optional types\n"
        "# introduced for YAML 1.1. In 1.2, it is not\n"
        "# part of the standard tags and should not be\n"
        "# enabled by default.\n"
        "# Ordered maps are represented as\n"
        "# A sequence of mappings, with\n"
        "# each mapping having one key\n"
        "--- !!omap\n"
        "- Mark McGwire: 65\n"
        "- Sammy Sosa: 63\n"
        "- Ken Griffy: 58\n",
        Refused(8, 5, "YAML tag !!omap is not allowed"),
    ),
    (  # UGM3
        "spec-2.27-invoice",
        "--- !<tag:clarkevans.com,2002:invoice>\n"
        "invoice: 34843\n"
        "date   : 2001-01-23\n"
        "bill-to: &id001\n"
        "    given  : Chris\n"
        "    family : Dumars\n"
        "    address:\n"
        "        lines: |\n"
        "            458 Walkman Dr.\n"
        "            Suite #292\n"
        "        city    : Royal Oak\n"
        "        state   : MI\n"
        "        postal  : 48046\n"
        "ship-to: *id001\n"
        "product:\n"
        "    - sku         : BL394D\n"
        "      quantity    : 4\n"
        "      description : Basketball\n"
        "      price       : 450.00\n"
        "    - sku         : BL4438H\n"
        "      quantity    : 1\n"
        "      description : Super Hoop\n"
        "      price       : 2392.00\n"
        "tax  : 251.42\n"
        "total: 4443.52\n"
        "comments:\n"
        "    Late afternoon is best.\n"
        "    Backup contact is Nancy\n"
        "    Billsmer @ 338-4338.\n",
        Refused(1, 5, "YAML tag tag:clarkevans.com,2002:invoice is not allowed"),
    ),
    (  # RZT7
        "spec-2.28-log-file",
        "---\n"
        "Time: 2001-11-23 15:01:42 -5\n"
        "User: ed\n"
        "Warning:\n"
        "  This is an error message\n"
        "  for the log file\n"
        "---\n"
        "Time: 2001-11-23 15:02:31 -5\n"
        "User: ed\n"
        "Warning:\n"
        "  A slightly different error\n"
        "  message.\n"
        "---\n"
        "Date: 2001-11-23 15:03:17 -5\n"
        "User: ed\n"
        "Fatal:\n"
        '  Unknown variable "bar"\n'
        "Stack:\n"
        "  - file: TopClass.py\n"
        "    line: 23\n"
        "    code: |\n"
        '      x = MoreObject("345\\n")\n'
        "  - file: MoreClass.py\n"
        "    line: 58\n"
        "    code: |-\n"
        "      foo = bar\n",
        Refused(7, 1, "expected a single YAML document, found a second one"),
    ),
    (  # S9E8
        "spec-5.3-block-structure-indicators",
        "sequence:\n- one\n- two\nmapping:\n  ? sky\n  : blue\n  sea : green\n",
        Refused(5, 3, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # UDR7
        "spec-5.4-flow-collection-indicators",
        "sequence: [ one, two, ]\nmapping: { sky: blue, sea: green }\n",
        {"sequence": ["one", "two"], "mapping": {"sky": "blue", "sea": "green"}},
    ),
    (  # 98YD
        "spec-5.5-comment-indicator",
        "# Comment only.\n",
        None,
    ),
    (  # CUP7
        "spec-5.6-node-property-indicators",
        "anchored: !local &anchor value\nalias: *anchor\n",
        Refused(1, 18, "YAML anchor &anchor is not allowed"),
    ),
    (  # 5BVJ
        "spec-5.7-block-scalar-indicators",
        "literal: |\n  some\n  text\nfolded: >\n  some\n  text\n",
        {"literal": "some\ntext\n", "folded": "some text\n"},
    ),
    (  # 9SHH
        "spec-5.8-quoted-scalar-indicators",
        "single: 'text'\ndouble: \"text\"\n",
        {"single": "text", "double": "text"},
    ),
    (  # 27NA
        "spec-5.9-directive-indicator",
        "%YAML 1.2\n--- text\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # J3BT
        "spec-5.12-tabs-and-spaces",
        "# Tabs and spaces\n"
        'quoted: "Quoted \t"\n'
        "block:\t|\n"
        "  void main() {\n"
        '  \tprintf("Hello, world!\\n");\n'
        "  }\n",
        Refused(
            3,
            7,
            "a tab character where the YAML library only reads spaces",
        ),
    ),
    (  # (the specification's text and value)
        "spec-5.13-escaped-characters",
        '"Fun with \\\\\n'
        '\\" \\a \\b \\e \\f \\\n'
        "\\n \\r \\t \\v \\0 \\\n"
        "\\  \\_ \\N \\L \\P \\\n"
        '\\x41 \\u0041 \\U00000041"\n',
        'Fun with \\ " \a \b \x1b \f \n \r \t \v \x00 \x20 \xa0 \x85 \u2028 \u2029 A A A',
    ),
    (  # 6HB6
        "spec-6.1-indentation-spaces",
        "  # Leading comment line spaces are\n"
        "   # neither content nor indentation.\n"
        "    \n"
        "Not indented:\n"
        " By one space: |\n"
        "    By four\n"
        "      spaces\n"
        " Flow style: [    # Leading spaces\n"
        "   By two,        # in flow style\n"
        "  Also by two,    # are neither\n"
        "  \tStill by two   # content nor\n"
        "    ]             # indentation.\n",
        {
            "Not indented": {
                "By one space": "By four\n  spaces\n",
                "Flow style": ["By two", "Also by two", "Still by two"],
            }
        },
    ),
    (  # A2M4
        "spec-6.2-indentation-indicators",
        "? a\n: -\tb\n  -  -\tc\n     - d\n",
        Refused(1, 1, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # 6BCT
        "spec-6.3-separation-spaces",
        "- foo:\t bar\n- - baz\n  -\tbaz\n",
        Refused(
            1,
            7,
            "a tab character where the YAML library only reads spaces",
        ),
    ),
    (  # 4ZYM
        "spec-6.4-line-prefixes",
        'plain: text\n  lines\nquoted: "text\n  \tlines"\nblock: |\n  text\n   \tlines\n',
        {"plain": "text lines", "quoted": "text lines", "block": "text\n \tlines\n"},
    ),
    (  # 5GBF
        "spec-6.5-empty-lines",
        "Folding:\n"
        '  "Empty line\n'
        "   \t\n"
        '  as a line feed"\n'
        "Chomping: |\n"
        "  Clipped empty lines\n"
        " \n"
        "\n",
        {"Folding": "Empty line\nas a line feed", "Chomping": "Clipped empty lines\n"},
    ),
    (  # XV9V
        "spec-6.5-empty-lines-1.3",
        'Folding:\n  "Empty line\n\n  as a line feed"\nChomping: |\n  Clipped empty lines\n \n\n',
        {"Folding": "Empty line\nas a line feed", "Chomping": "Clipped empty lines\n"},
    ),
    (  # K527
        "spec-6.6-line-folding",
        ">-\n  trimmed\n  \n \n\n  as\n  space\n",
        "trimmed\n\n\nas space",
    ),
    (  # 93WF
        "spec-6.6-line-folding-1.3",
        "--- >-\n  trimmed\n  \n \n\n  as\n  space\n",
        "trimmed\n\n\nas space",
    ),
    (  # MJS9
        "spec-6.7-block-folding",
        ">\n  foo \n \n  \t bar\n\n  baz\n",
        "foo \n\n\t bar\n\nbaz\n",
    ),
    (  # TL85
        "spec-6.8-flow-folding",
        '"\n  foo \n \n  \t bar\n\n  baz\n"\n',
        " foo\nbar\nbaz ",
    ),
    (  # 6WPF
        "spec-6.8-flow-folding-1.3",
        '---\n"\n  foo \n \n    bar\n\n  baz\n"\n',
        " foo\nbar\nbaz ",
    ),
    (  # 5NYZ
        "spec-6.9-separated-comment",
        "key:    # Comment\n  value\n",
        {"key": "value"},
    ),
    (  # 8G76
        "spec-6.10-comment-lines",
        "  # Comment\n   \n\n\n",
        None,
    ),
    (  # P94K
        "spec-6.11-multi-line-comments",
        "key:    # Comment\n        # lines\n  value\n\n\n",
        {"key": "value"},
    ),
    (  # Q9WF
        "spec-6.12-separation-spaces",
        "{ first: Sammy, last: Sosa }:\n"
        "# Statistics:\n"
        "  hr:  # Home runs\n"
        "     65\n"
        "  avg: # Average\n"
        "   0.278\n",
        Refused(
            1, 1, "complex mapping keys are not allowed: a key must be a string, found a mapping"
        ),
    ),
    (  # 6LVF
        "spec-6.13-reserved-directives",
        '%FOO  bar baz # Should be ignored\n              # with a warning.\n--- "foo"\n',
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # 2LFX
        "spec-6.13-reserved-directives-1.3",
        '%FOO  bar baz # Should be ignored\n              # with a warning.\n---\n"foo"\n',
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # BEC7
        "spec-6.14-yaml-directive",
        '%YAML 1.3 # Attempt parsing\n          # with a warning\n---\n"foo"\n',
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # U3C3
        "spec-6.16-tag-directive",
        '%TAG !yaml! tag:yaml.org,2002:\n---\n!yaml!str "foo"\n',
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # 9WXW
        "spec-6.18-primary-tag-handle",
        '# Private\n!foo "bar"\n...\n# Global\n%TAG ! tag:example.com,2000:app/\n---\n!foo "bar"\n',
        Refused(5, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # 6WLZ
        "spec-6.18-primary-tag-handle-1.3",
        "# Private\n"
        "---\n"
        '!foo "bar"\n'
        "...\n"
        "# Global\n"
        "%TAG ! tag:example.com,2000:app/\n"
        "---\n"
        '!foo "bar"\n',
        Refused(6, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # P76L
        "spec-6.19-secondary-tag-handle",
        "%TAG !! tag:example.com,2000:app/\n---\n!!int 1 - 3 # Interval, not integer\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # CC74
        "spec-6.20-tag-handles",
        '%TAG !e! tag:example.com,2000:app/\n---\n!e!foo "bar"\n',
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # 5TYM
        "spec-6.21-local-tag-prefix",
        "%TAG !m! !my-\n"
        "--- # Bulb here\n"
        "!m!light fluorescent\n"
        "...\n"
        "%TAG !m! !my-\n"
        "--- # Color here\n"
        "!m!light green\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # Z9M4
        "spec-6.22-global-tag-prefix",
        '%TAG !e! tag:example.com,2000:app/\n---\n- !e!foo "bar"\n',
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # HMQ5
        "spec-6.23-node-properties",
        '!!str &a1 "foo":\n  !!str bar\n&a2 baz : *a1\n',
        Refused(1, 7, "YAML anchor &a1 is not allowed"),
    ),
    (  # 7FWL
        "spec-6.24-verbatim-tags",
        "!<tag:yaml.org,2002:str> foo :\n  !<!bar> baz\n",
        Refused(2, 3, "YAML tag !bar is not allowed"),
    ),
    (  # 6CK3
        "spec-6.26-tag-shorthands",
        "%TAG !e! tag:example.com,2000:app/\n---\n- !local foo\n- !!str bar\n- !e!tag%21 baz\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # S4JQ
        "spec-6.28-non-specific-tags",
        '# Assuming conventional resolution:\n- "12"\n- 12\n- ! 12\n',
        ["12", 12, "12"],
    ),
    (  # JS2J
        "spec-6.29-node-anchors",
        "First occurrence: &anchor Value\nSecond occurrence: *anchor\n",
        Refused(1, 19, "YAML anchor &anchor is not allowed"),
    ),
    (  # 3GZX
        "spec-7.1-alias-nodes",
        "First occurrence: &anchor Foo\n"
        "Second occurrence: *anchor\n"
        "Override anchor: &anchor Bar\n"
        "Reuse anchor: *anchor\n",
        Refused(1, 19, "YAML anchor &anchor is not allowed"),
    ),
    (  # WZ62
        "spec-7.2-empty-content",
        "{\n  foo : !!str,\n  !!str : bar,\n}\n",
        Refused(
            2, 9, "tag '!!str,' runs into a flow indicator (, [ ] { }): put a space after the tag"
        ),
    ),
    (  # FRK4
        "spec-7.3-completely-empty-flow-nodes",
        "{\n  ? foo :,\n  : bar,\n}\n",
        Refused(2, 3, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # LQZ7
        "spec-7.4-double-quoted-implicit-keys",
        '"implicit block key" : [\n  "implicit flow key" : value,\n ]\n',
        {"implicit block key": [{"implicit flow key": "value"}]},
    ),
    (  # NP9H
        "spec-7.5-double-quoted-line-breaks",
        '"folded \nto a space,\t\n \nto a line feed, or \t\\\n \\ \tnon-content"\n',
        "folded to a space,\nto a line feed, or \t \tnon-content",
    ),
    (  # Q8AD
        "spec-7.5-double-quoted-line-breaks-1.3",
        '---\n"folded \nto a space,\n \nto a line feed, or \t\\\n \\ \tnon-content"\n',
        "folded to a space,\nto a line feed, or \t \tnon-content",
    ),
    (  # 7A4E
        "spec-7.6-double-quoted-lines",
        '" 1st non-empty\n\n 2nd non-empty \n\t3rd non-empty "\n',
        " 1st non-empty\n2nd non-empty 3rd non-empty ",
    ),
    (  # 9TFX
        "spec-7.6-double-quoted-lines-1.3",
        '---\n" 1st non-empty\n\n 2nd non-empty \n 3rd non-empty "\n',
        " 1st non-empty\n2nd non-empty 3rd non-empty ",
    ),
    (  # 4GC6
        "spec-7.7-single-quoted-characters",
        "'here''s to \"quotes\"'\n",
        'here\'s to "quotes"',
    ),
    (  # SSW6
        "spec-7.7-single-quoted-characters-1.3",
        "---\n'here''s to \"quotes\"'\n",
        'here\'s to "quotes"',
    ),
    (  # 87E4
        "spec-7.8-single-quoted-implicit-keys",
        "'implicit block key' : [\n  'implicit flow key' : value,\n ]\n",
        {"implicit block key": [{"implicit flow key": "value"}]},
    ),
    (  # PRH3
        "spec-7.9-single-quoted-lines",
        "' 1st non-empty\n\n 2nd non-empty \n\t3rd non-empty '\n",
        " 1st non-empty\n2nd non-empty 3rd non-empty ",
    ),
    (  # T4YY
        "spec-7.9-single-quoted-lines-1.3",
        "---\n' 1st non-empty\n\n 2nd non-empty \n 3rd non-empty '\n",
        " 1st non-empty\n2nd non-empty 3rd non-empty ",
    ),
    (  # DBG4
        "spec-7.10-plain-characters",
        "# Outside flow collection:\n"
        "- ::vector\n"
        '- ": - ()"\n'
        "- Up, up, and away!\n"
        "- -123\n"
        "- http://example.com/foo#bar\n"
        "# Inside flow collection:\n"
        "- [ ::vector,\n"
        '  ": - ()",\n'
        '  "Up, up and away!",\n'
        "  -123,\n"
        "  http://example.com/foo#bar ]\n",
        [
            "::vector",
            ": - ()",
            "Up, up, and away!",
            -123,
            "http://example.com/foo#bar",
            ["::vector", ": - ()", "Up, up and away!", -123, "http://example.com/foo#bar"],
        ],
    ),
    (  # L9U5
        "spec-7.11-plain-implicit-keys",
        "implicit block key : [\n  implicit flow key : value,\n ]\n",
        {"implicit block key": [{"implicit flow key": "value"}]},
    ),
    (  # HS5T
        "spec-7.12-plain-lines",
        "1st non-empty\n\n 2nd non-empty \n\t3rd non-empty\n",
        Refused(
            4,
            1,
            "a tab character where the YAML library only reads spaces",
        ),
    ),
    (  # 5KJE
        "spec-7.13-flow-sequence",
        "- [ one, two, ]\n- [three ,four]\n",
        [["one", "two"], ["three", "four"]],
    ),
    (  # 8UDB
        "spec-7.14-flow-sequence-entries",
        "[\n"
        '"double\n'
        " quoted\", 'single\n"
        "           quoted',\n"
        "plain\n"
        " text, [ nested ],\n"
        "single: pair,\n"
        "]\n",
        ["double quoted", "single quoted", "plain text", ["nested"], {"single": "pair"}],
    ),
    (  # 5C5M
        "spec-7.15-flow-mappings",
        "- { one : two , three: four , }\n- {five: six,seven : eight}\n",
        [{"one": "two", "three": "four"}, {"five": "six", "seven": "eight"}],
    ),
    (  # DFF7
        "spec-7.16-flow-mapping-entries",
        "{\n? explicit: entry,\nimplicit: entry,\n?\n}\n",
        Refused(2, 1, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # C2DT
        "spec-7.18-flow-mapping-adjacent-values",
        '{\n"adjacent":value,\n"readable": value,\n"empty":\n}\n',
        {"adjacent": "value", "readable": "value", "empty": None},
    ),
    (  # QF4Y
        "spec-7.19-single-pair-flow-mappings",
        "[\nfoo: bar\n]\n",
        [{"foo": "bar"}],
    ),
    (  # CT4Q
        "spec-7.20-single-pair-explicit-entry",
        "[\n? foo\n bar : baz\n]\n",
        Refused(2, 1, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # Q88A
        "spec-7.23-flow-content",
        "- [ a, b ]\n- { a: b }\n- \"a\"\n- 'b'\n- c\n",
        [["a", "b"], {"a": "b"}, "a", "b", "c"],
    ),
    (  # LE5A
        "spec-7.24-flow-nodes",
        '- !!str "a"\n- \'b\'\n- &anchor "c"\n- *anchor\n- !!str\n',
        Refused(3, 3, "YAML anchor &anchor is not allowed"),
    ),
    (  # P2AD
        "spec-8.1-block-scalar-header",
        "- | # Empty header\n"
        " literal\n"
        "- >1 # Indentation indicator\n"
        "  folded\n"
        "- |+ # Chomping indicator\n"
        " keep\n"
        "\n"
        "- >1- # Both indicators\n"
        "  strip\n",
        ["literal\n", " folded\n", "keep\n\n", " strip"],
    ),
    (  # R4YG
        "spec-8.2-block-indentation-indicator",
        "- |\n detected\n- >\n \n  \n  # detected\n- |1\n  explicit\n- >\n \t\n detected\n",
        Refused(
            6,
            3,
            "the empty lines at the start of this block scalar hold different numbers of spaces",
        ),
    ),
    (  # 4QFQ
        "spec-8.2-block-indentation-indicator-1.3",
        "- |\n detected\n- >\n \n  \n  # detected\n- |1\n  explicit\n- >\n detected\n",
        Refused(
            6,
            3,
            "the empty lines at the start of this block scalar hold different numbers of spaces",
        ),
    ),
    (  # A6F9
        "spec-8.4-chomping-final-line-break",
        "strip: |-\n  text\nclip: |\n  text\nkeep: |+\n  text\n",
        {"strip": "text", "clip": "text\n", "keep": "text\n"},
    ),
    (  # F8F9
        "spec-8.5-chomping-trailing-lines",
        " # Strip\n"
        "  # Comments:\n"
        "strip: |-\n"
        "  # text\n"
        "  \n"
        " # Clip\n"
        "  # comments:\n"
        "\n"
        "clip: |\n"
        "  # text\n"
        " \n"
        " # Keep\n"
        "  # comments:\n"
        "\n"
        "keep: |+\n"
        "  # text\n"
        "\n"
        " # Trail\n"
        "  # comments.\n",
        {"strip": "# text", "clip": "# text\n", "keep": "# text\n\n"},
    ),
    (  # K858
        "spec-8.6-empty-scalar-chomping",
        "strip: >-\n\nclip: >\n\nkeep: |+\n\n",
        {"strip": "", "clip": "", "keep": "\n"},
    ),
    (  # M9B4
        "spec-8.7-literal-scalar",
        "|\n literal\n \ttext\n\n\n",
        "literal\n\ttext\n",
    ),
    (  # T5N4
        "spec-8.7-literal-scalar-1.3",
        "--- |\n literal\n \ttext\n\n\n",
        "literal\n\ttext\n",
    ),
    (  # DWX9
        "spec-8.8-literal-content",
        "|\n \n  \n  literal\n   \n  \n  text\n\n # Comment\n",
        Refused(
            4,
            3,
            "the empty lines at the start of this block scalar hold different numbers of spaces",
        ),
    ),
    (  # T26H
        "spec-8.8-literal-content-1.3",
        "--- |\n \n  \n  literal\n   \n  \n  text\n\n # Comment\n",
        Refused(
            4,
            3,
            "the empty lines at the start of this block scalar hold different numbers of spaces",
        ),
    ),
    (  # G992
        "spec-8.9-folded-scalar",
        ">\n folded\n text\n\n\n",
        "folded text\n",
    ),
    (  # B3HG
        "spec-8.9-folded-scalar-1.3",
        "--- >\n folded\n text\n\n\n",
        "folded text\n",
    ),
    (  # 7T8X
        "spec-8.10-folded-lines-8-13",
        ">\n"
        "\n"
        " folded\n"
        " line\n"
        "\n"
        " next\n"
        " line\n"
        "   * bullet\n"
        "\n"
        "   * list\n"
        "   * lines\n"
        "\n"
        " last\n"
        " line\n"
        "\n"
        "# Comment\n",
        "\nfolded line\nnext line\n  * bullet\n\n  * list\n  * lines\n\nlast line\n",
    ),
    (  # JQ4R
        "spec-8.14-block-sequence",
        "block sequence:\n  - one\n  - two : three\n",
        {"block sequence": ["one", {"two": "three"}]},
    ),
    (  # W42U
        "spec-8.15-block-sequence-entry-types",
        "- # Empty\n"
        "- |\n"
        " block node\n"
        "- - one # Compact\n"
        "  - two # sequence\n"
        "- one: two # Compact mapping\n",
        [None, "block node\n", ["one", "two"], {"one": "two"}],
    ),
    (  # TE2A
        "spec-8.16-block-mappings",
        "block mapping:\n key: value\n",
        {"block mapping": {"key": "value"}},
    ),
    (  # 5WE3
        "spec-8.17-explicit-block-mapping-entries",
        "? explicit key # Empty value\n"
        "? |\n"
        "  block key\n"
        ": - one # Explicit compact\n"
        "  - two # block value\n",
        Refused(1, 1, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # S3PD
        "spec-8.18-implicit-block-mapping-entries",
        'plain key: in-line value\n: # Both empty\n"quoted key":\n- entry\n',
        Refused(2, 1, "empty mapping key: every key needs a name"),
    ),
    (  # V9D5
        "spec-8.19-compact-block-mappings",
        "- sun: yellow\n- ? earth: blue\n  : moon: white\n",
        Refused(2, 3, "explicit mapping keys ('? ') are not allowed"),
    ),
    (  # 735Y
        "spec-8.20-block-node-types",
        '-\n  "flow in block"\n- >\n Block scalar\n- !!map # Block collection\n  foo : bar\n',
        ["flow in block", "Block scalar\n", {"foo": "bar"}],
    ),
    (  # M5C3
        "spec-8.21-block-scalar-nodes",
        "literal: |2\n  value\nfolded:\n   !foo\n  >1\n value\n",
        Refused(4, 4, "YAML tag !foo is not allowed"),
    ),
    (  # Z67P
        "spec-8.21-block-scalar-nodes-1.3",
        "literal: |2\n  value\nfolded: !foo >1\n value\n",
        Refused(3, 9, "YAML tag !foo is not allowed"),
    ),
    (  # 57H4
        "spec-8.22-block-collection-nodes",
        "sequence: !!seq\n- entry\n- !!seq\n - nested\nmapping: !!map\n foo: bar\n",
        {"sequence": ["entry", ["nested"]], "mapping": {"foo": "bar"}},
    ),
    (  # RTP8
        "spec-9.2-document-markers",
        "%YAML 1.2\n---\nDocument\n... # Suffix\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # M7A3
        "spec-9.3-bare-documents",
        "Bare\ndocument\n...\n# No document\n...\n|\n%!PS-Adobe-2.0 # Not the first line\n",
        Refused(5, 1, "expected a single YAML document, found a second one"),
    ),
    (  # UT92
        "spec-9.4-explicit-documents",
        "---\n{ matches\n% : 20 }\n...\n---\n# Empty\n...\n",
        Refused(
            3, 3, "invalid YAML: expected ',' or '}', but got ':' (while parsing a flow mapping)"
        ),
    ),
    (  # W4TN
        "spec-9.5-directives-documents",
        "%YAML 1.2\n--- |\n%!PS-Adobe-2.0\n...\n%YAML 1.2\n---\n# Empty\n...\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # 6ZKB
        "spec-9.6-stream",
        "Document\n---\n# Empty\n...\n%YAML 1.2\n---\nmatches %: 20\n",
        Refused(5, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (  # 9DXL
        "spec-9.6-stream-1.3",
        "Mapping: Document\n---\n# Empty\n...\n%YAML 1.2\n---\nmatches %: 20\n",
        Refused(5, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
]

# The examples the specification gives as errors (its own texts; 5.2's BOM written as \ufeff,
# 7.22's "1K characters" written out).
SPEC_ERRORS: list[tuple[str, str, Refused]] = [
    (
        "spec-5.2-invalid-byte-order-mark",
        "- Invalid use of BOM\n\ufeff\n- Inside a document.\n",
        Refused(2, 1, "byte-order mark (U+FEFF) inside the document"),
    ),
    (
        "spec-5.10-invalid-reserved-indicators",
        "commercial-at: @text\ngrave-accent: `text\n",
        Refused(1, 16, "found character '@', which cannot start a value"),
    ),
    (
        "spec-5.14-invalid-escaped-characters",
        'Bad escapes:\n  "\\c\n  \\xq-"\n',
        Refused(2, 5, "found unknown escape character 'c'"),
    ),
    (
        "spec-6.15-invalid-repeated-yaml-directive",
        "%YAML 1.2\n%YAML 1.1\nfoo\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (
        "spec-6.17-invalid-repeated-tag-directive",
        "%TAG ! !foo\n%TAG ! !foo\nbar\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (
        "spec-6.25-invalid-verbatim-tags",
        "- !<!> foo\n- !<$:?> bar\n",
        Refused(1, 3, "malformed tag '!<!>'"),
    ),
    (
        "spec-6.27-invalid-tag-shorthands",
        "%TAG !e! tag:example,2000:app/\n---\n- !e! foo\n- !h!bar baz\n",
        Refused(1, 1, "YAML directives (%YAML, %TAG) are not allowed"),
    ),
    (
        "spec-6.27-invalid-tag-shorthands-no-directive",
        "- !e! foo\n- !h!bar baz\n",
        Refused(1, 6, "invalid YAML: expected URI"),
    ),
    (
        "spec-7.22-invalid-implicit-keys",
        '[ foo\n bar: invalid,\n "foo' + "x" * 1024 + 'bar": invalid ]\n',
        Refused(2, 5, "invalid YAML: expected ',' or ']'"),
    ),
    (
        "spec-8.3-invalid-indentation-leading-empty-line",
        "- |\n  \n text\n",
        Refused(2, 1, "an empty line at the start of this block scalar holds more spaces"),
    ),
    (
        "spec-8.3-invalid-indentation-less-indented-line",
        "- >\n  text\n text\n",
        Refused(3, 2, "invalid YAML: expected the end of the indented block"),
    ),
    (
        "spec-8.3-invalid-indentation-indicator",
        "- |2\n text\n",
        Refused(2, 2, "invalid YAML: expected the end of the indented block"),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=id_) for id_, text, expected in SPEC_EXAMPLES],
)
def test_spec_example(text: str, expected: Any) -> None:
    check(text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=id_) for id_, text, expected in SPEC_ERRORS],
)
def test_spec_error_example_is_refused(text: str, expected: Refused) -> None:
    check(text, expected)
