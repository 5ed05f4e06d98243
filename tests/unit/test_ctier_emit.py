"""The fast tier's C emitter: each syntax-tree construct, predicates, and the
functions generated for probes (what is hooked where, what is replaced)."""

from __future__ import annotations

import pytest

from instr.ctier.cast import (
    Assign,
    Bin,
    Call,
    Cast,
    Decl,
    Do,
    Extern,
    Field,
    Func,
    If,
    Index,
    Int,
    Return,
    Struct,
    Unary,
    Var,
    addr,
    unit,
)
from instr.ctier.emit import NotC, fast_blockers, predicate_c, probe_source
from instr.probes import load_text

a, b, c = Var("a"), Var("b"), Var("c")


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (Int(5), "5"),
        (Int(-7), "-7"),
        (Int(5, unsigned=True), "5U"),
        (Int(2**40), "1099511627776LL"),
        (Int(2**63), "9223372036854775808ULL"),
        (Int(-(2**63)), "(-9223372036854775807LL - 1)"),
        (Bin("-", a, Bin("-", b, c)), "a - (b - c)"),
        (Bin("-", Bin("-", a, b), c), "a - b - c"),
        (Bin("*", Bin("+", a, b), c), "(a + b) * c"),
        (Bin("+", a, Bin("*", b, c)), "a + b * c"),
        (Bin("&&", Bin("<", a, b), Bin("||", a, c)), "a < b && (a || c)"),
        (Bin("==", Bin("&", a, Int(255)), Int(0)), "(a & 255) == 0"),
        (Unary("!", Bin("<", a, b)), "!(a < b)"),
        (Unary("-", Int(-3)), "-(-3)"),
        (Cast("gint64", Cast("gint32", a)), "(gint64) (gint32) a"),
        (Cast("gint64", Bin("-", a, b)), "(gint64) (a - b)"),
        (Call("f", (a, Int(1))), "f (a, 1)"),
        (Call("g"), "g ()"),
        (Index(a, Int(2)), "a[2]"),
        (Index(Cast("guint64 *", a), Int(0)), "((guint64 *) a)[0]"),
        (Field(a, "x"), "a->x"),
        (Field(a, "x", arrow=False), "a.x"),
        (addr(Index(a, Int(1))), "&a[1]"),
    ],
)
def test_expressions(node, text):
    assert node.render() == text


def test_statements_and_functions():
    f = Func(
        "void",
        "f",
        ("int x",),
        (
            Decl("guint64", "k", count=2),
            Decl("volatile guint64 *", "v", Call("agg_row", (a, Var("k")))),
            Assign(Index(Var("k"), Int(0)), a),
            If(Bin("!=", Var("v"), Var("NULL")), (Do(Call("h", (Var("v"),))),), (Return(),)),
            Return(Int(1)),
        ),
    )
    assert f.render().splitlines() == [
        "void",
        "f (int x)",
        "{",
        "  guint64 k[2];",
        "  volatile guint64 *v = agg_row (a, k);",
        "  k[0] = a;",
        "  if (v != NULL)",
        "  {",
        "    h (v);",
        "  }",
        "  else",
        "  {",
        "    return;",
        "  }",
        "  return 1;",
        "}",
    ]
    assert Func("int", "g", (), (Return(Int(0)),)).render().splitlines()[1] == "g (void)"
    assert unit([Extern("AggTable", "agg_t1"), Struct("S", (("guint64", "t0"),))]) == (
        "extern AggTable agg_t1;\n\ntypedef struct\n{\n  guint64 t0;\n} S;\n"
    )
    assert Struct("E", ()).render().splitlines()[2] == "  guint64 unused;"


def var(phase: str, index: int) -> Var:
    return Var(f"{phase[0]}{index}")


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ({"op": "const", "value": 3}, "3"),
        ({"op": "const", "value": True}, "1"),
        ({"op": "int", "value": str(2**62)}, "4611686018427387904LL"),
        ({"op": "cap", "phase": "exit", "index": 1}, "e1"),
        ({"op": "tid"}, "agg_tid ()"),
        (
            {
                "op": "and",
                "args": [
                    {"op": ">", "left": {"op": "cap", "phase": "entry", "index": 0}, "right": {"op": "const", "value": 1}},
                    {"op": "not", "arg": {"op": "cap", "phase": "entry", "index": 1}},
                ],
            },
            "e0 > 1 && !e1",
        ),
        (
            {"op": "or", "args": [{"op": "const", "value": 0}, {"op": "neg", "arg": {"op": "tid"}}]},
            "0 || -agg_tid ()",
        ),
        ({"op": "invert", "arg": {"op": "const", "value": 0}}, "~0"),
        (
            {"op": "//", "left": {"op": "cap", "phase": "entry", "index": 0}, "right": {"op": "const", "value": -4}},
            "agg_floordiv (e0, -4)",
        ),
        (
            {"op": "%", "left": {"op": "cap", "phase": "entry", "index": 0}, "right": {"op": "const", "value": 2}},
            "agg_floormod (e0, 2)",
        ),
        (
            {"op": "<<", "left": {"op": "const", "value": 1}, "right": {"op": "const", "value": 3}},
            "1 << 3",
        ),
        (
            {"op": "^", "left": {"op": "const", "value": 1}, "right": {"op": "const", "value": 3}},
            "1 ^ 3",
        ),
    ],
)  # fmt: skip
def test_predicates(expr, text):
    assert predicate_c(expr, var).render() == text


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ({"op": "const", "value": "x"}, "a string comparison"),
        ({"op": "int", "value": str(2**64 - 1)}, "outside 64-bit signed range"),
        ({"op": "in", "needle": {"op": "const", "value": "a"}, "haystack": {"op": "const", "value": "b"}}, "string operations"),
        ({"op": "call", "fn": "len", "args": [{"op": "const", "value": "b"}]}, "string operations"),
        ({"op": "//", "left": {"op": "tid"}, "right": {"op": "tid"}}, "not a non-zero constant"),
        ({"op": "%", "left": {"op": "tid"}, "right": {"op": "const", "value": 0}}, "not a non-zero constant"),
        ({"op": ">>", "left": {"op": "tid"}, "right": {"op": "const", "value": 64}}, "not a constant 0..63"),
    ],
)  # fmt: skip
def test_predicates_c_cannot_express(expr, why):
    with pytest.raises(NotC, match=why):
        predicate_c(expr, var)


def probe(text: str, aggregate: str, **extra: str):
    lines = [
        "version: 1",
        "sets:",
        "  s:",
        "    probes:",
        f"      - function: {text}",
    ]
    lines += [f"        {k}: {v}" for k, v in extra.items()]
    lines += ["        aggregate:", f"          x: {aggregate}"]
    table = load_text("\n".join(lines) + "\n").compile(["s"])
    return table.probes[1]


def test_entry_only_probe_has_no_exit_hook_and_no_invocation_data():
    p = probe("'calls!f'", "'sum(arg0:i32) by tid'")
    items, fns = probe_source(p)
    assert fns == {"enter": "agg_p1_enter", "leave": None, "replace": None}
    code = "\n".join(i.render() for i in items)
    assert "invocation_data" not in code
    assert (
        "gint64 e0 = (gint64) (gint32) (guint64) (gsize) gum_invocation_context_get_nth_argument (ic, 0);"
        in code
    )
    assert "agg_row1 (&agg_t1, agg_tid ())" in code


def test_duration_keeps_the_entry_time_and_filters_at_exit():
    p = probe("'calls!f'", "'max(t)'", capture="{t: duration, r: retval:int}", where="'r > 0'")
    items, fns = probe_source(p)
    assert fns == {"enter": "agg_p1_enter", "leave": "agg_p1_leave", "replace": None}
    code = "\n".join(i.render() for i in items)
    assert "guint64 t0;" in code  # the invocation data
    assert "inv->t0 = agg_now ();" in code
    assert "gint64 x0 = (gint64) (agg_now () - inv->t0);" in code
    assert "if (!(x1 > 0))" in code
    assert p.aggregations[0].phase == "exit"


def test_known_integer_signature_gets_a_replacement():
    p = probe("'libc.so*!malloc'", "'quantize(arg0:size_t)'")
    items, fns = probe_source(p)
    assert fns["replace"] == "agg_p1_replace"
    code = "\n".join(i.render() for i in items)
    assert "agg_p1_replace (AGG_PARAMS)" in code
    assert "extern gpointer agg_orig_p1;" in code
    assert "return AGG_CALL_ORIG (agg_orig_p1);" in code
    assert "AGG_ADD (&v1[1 + agg_qbucket (&agg_t1, (guint64) e0)], 1);" in code
    # a glob, or an argument beyond the signature: no replacement
    assert probe_source(probe("'libc.so*!mall*'", "'count()'"))[1]["replace"] is None
    assert probe_source(probe("'libc.so*!malloc'", "'sum(arg2)'"))[1]["replace"] is None


def test_blockers_send_probes_to_the_js_tier():
    p = probe("'calls!f'", "'count() by s'", capture="{s: arg0:cstr}")
    assert p.agg_tier == "js" and fast_blockers(p) == ["the cstr 's' is a key"]
    p = probe("'calls!f'", "'count() by backtrace(4)'")
    assert p.agg_tier == "js" and "backtrace" in p.agg_tier_why
    p = probe("'calls!f'", "'count()'", capture="{s: arg0:cstr}", where="\"s == 'x'\"")
    assert p.agg_tier == "js"
    assert fast_blockers(p) == ["'where' reads the cstr 's'", "a string comparison in 'where'"]
    p = probe("'calls!f'", "'count()'", tier="js")
    assert (p.agg_tier, p.agg_tier_why) == ("js", "'tier: js' was asked")
    assert probe("'calls!f'", "'count() by arg1:u8, pid'").agg_tier == "fast"


def test_no_accidental_double_operators():
    assert Unary("-", Unary("-", a)).render() == "-(-a)"
    assert Unary("&", Unary("&", a)).render() == "&(&a)"
    assert Bin("-", a, Int(-3)).render() == "a - -3"
