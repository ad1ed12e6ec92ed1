//! Round trip of the printer and the parser: random well-formed query trees
//! print to text that parses back to the same tree (spans aside), and
//! printing is stable.

use almanac::query::ast::*;
use almanac::query::parse;
use almanac::Timestamp;
use proptest::prelude::*;

const RESERVED: [&str; 8] = ["and", "or", "not", "in", "true", "false", "null", "now"];

fn span() -> Span {
    Span::default()
}

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}".prop_filter("reserved", |s| {
        !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
    })
}

fn name() -> impl Strategy<Value = Name> {
    ident().prop_map(|name| Name { name, span: span() })
}

fn param_name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,6}"
}

fn duration() -> impl Strategy<Value = Duration> {
    let unit = prop_oneof![
        Just(DurationUnit::Millisecond),
        Just(DurationUnit::Second),
        Just(DurationUnit::Minute),
        Just(DurationUnit::Hour),
        Just(DurationUnit::Day),
        Just(DurationUnit::Week),
    ];
    (0u64..1_000_000, unit).prop_map(|(amount, unit)| Duration { amount, unit })
}

fn instant() -> impl Strategy<Value = Instant> {
    // Years 1000..=9999: the four-digit years of RFC 3339.
    let min = -30_610_224_000_000_000i64;
    let max = 253_402_300_799_000_000i64;
    prop_oneof![
        (min..max).prop_map(|m| Instant::At(Timestamp::from_micros(m))),
        (min / 86_400_000_000..max / 86_400_000_000)
            .prop_map(|d| Instant::Date(Timestamp::from_micros(d * 86_400_000_000))),
        Just(Instant::Now(None)),
        (prop_oneof![Just(Sign::Plus), Just(Sign::Minus)], duration())
            .prop_map(|(s, d)| Instant::Now(Some((s, d)))),
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Bool),
        any::<i64>().prop_map(Literal::Int),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Literal::Float),
        ".{0,8}".prop_map(Literal::String),
        instant().prop_map(Literal::Instant),
        duration().prop_map(Literal::Duration),
    ]
}

fn path() -> impl Strategy<Value = Path> {
    let segment = prop_oneof![
        ".{0,6}".prop_map(Segment::Field),
        any::<u64>().prop_map(Segment::Index),
    ];
    (ident(), prop::collection::vec(segment, 0..4)).prop_map(|(head, rest)| {
        let mut segments = vec![Segment::Field(head)];
        segments.extend(rest);
        Path {
            segments,
            head_span: span(),
        }
    })
}

fn expr_of(kind: ExprKind) -> Expr {
    Expr { kind, span: span() }
}

fn binop() -> impl Strategy<Value = BinOp> {
    prop::sample::select(vec![
        BinOp::Eq,
        BinOp::Ne,
        BinOp::Lt,
        BinOp::Le,
        BinOp::Gt,
        BinOp::Ge,
        BinOp::Match,
        BinOp::NotMatch,
    ])
}

/// An operator chain of one precedence level: `+ -` or `* / %`.
fn arith_ops() -> impl Strategy<Value = Vec<BinOp>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(vec![BinOp::Add, BinOp::Sub]), 1..4),
        prop::collection::vec(
            prop::sample::select(vec![BinOp::Mul, BinOp::Div, BinOp::Rem]),
            1..4
        ),
    ]
}

fn offset() -> impl Strategy<Value = Offset> {
    prop_oneof![
        any::<i64>().prop_map(Offset::Int),
        param_name().prop_map(|name| Offset::Param(name, Span::default())),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        literal().prop_map(|l| expr_of(ExprKind::Literal(l))),
        param_name().prop_map(|p| expr_of(ExprKind::Param(p))),
        path().prop_map(|p| expr_of(ExprKind::Path(p))),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (ident(), prop::collection::vec(inner.clone(), 0..3)).prop_map(|(name, args)| {
                expr_of(ExprKind::Call {
                    name: name.to_ascii_lowercase(),
                    name_span: span(),
                    args,
                })
            }),
            inner
                .clone()
                .prop_map(|e| expr_of(ExprKind::Neg(Box::new(e)))),
            inner
                .clone()
                .prop_map(|e| expr_of(ExprKind::Not(Box::new(e)))),
            (
                prop::sample::select(vec![LogicOp::Or, LogicOp::And]),
                prop::collection::vec(inner.clone(), 2..5)
            )
                .prop_map(|(op, operands)| expr_of(ExprKind::Logic { op, operands })),
            (binop(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| {
                expr_of(ExprKind::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                })
            }),
            (
                arith_ops(),
                inner.clone(),
                prop::collection::vec(inner.clone(), 3)
            )
                .prop_map(|(ops, first, operands)| {
                    let mut rest: Vec<_> = ops.into_iter().zip(operands).collect();
                    // The canonical tree: a chain of the same level on the
                    // left is one chain (`(a - b) - c` is `a - b - c`).
                    let level = rest[0].0.precedence();
                    let first = match first.kind {
                        ExprKind::Arith {
                            first,
                            rest: mut left,
                        } if left[0].0.precedence() == level => {
                            left.append(&mut rest);
                            rest = left;
                            first
                        }
                        kind => Box::new(expr_of(kind)),
                    };
                    expr_of(ExprKind::Arith { first, rest })
                }),
            (inner.clone(), prop::collection::vec(inner, 1..3)).prop_map(|(e, list)| {
                expr_of(ExprKind::In {
                    expr: Box::new(e),
                    list,
                })
            }),
        ]
    })
}

fn item() -> impl Strategy<Value = Item> {
    (expr(), prop::option::of(name())).prop_map(|(expr, alias)| Item { expr, alias })
}

fn stage() -> impl Strategy<Value = Stage> {
    let kind = prop_oneof![
        expr().prop_map(StageKind::Where),
        expr().prop_map(StageKind::Since),
        expr().prop_map(StageKind::Until),
        (expr(), expr()).prop_map(|(a, b)| StageKind::Between(a, b)),
        (expr(), expr()).prop_map(|(a, b)| StageKind::Overlaps(a, b)),
        prop::collection::vec(expr(), 0..3).prop_map(StageKind::Latest),
        prop::collection::vec(
            (expr(), any::<bool>()).prop_map(|(expr, descending)| SortKey { expr, descending }),
            1..3
        )
        .prop_map(StageKind::Sort),
        expr().prop_map(StageKind::Limit),
        prop::collection::vec(
            (name(), expr()).prop_map(|(name, expr)| Assignment { name, expr }),
            1..3
        )
        .prop_map(StageKind::Extend),
        prop::collection::vec(item(), 1..3).prop_map(StageKind::Select),
        (
            prop::collection::vec(item(), 1..3),
            prop::collection::vec(item(), 0..3)
        )
            .prop_map(|(aggregates, by)| StageKind::Stats { aggregates, by }),
        (
            prop::collection::vec(item(), 1..3),
            prop::collection::vec(expr(), 0..3),
            offset(),
            offset()
        )
            .prop_map(|(aggregates, by, start, end)| StageKind::Window {
                aggregates,
                by,
                rows: Frame {
                    start,
                    end,
                    span: span()
                },
            }),
    ];
    kind.prop_map(|kind| Stage { kind, span: span() })
}

fn matcher() -> impl Strategy<Value = Matcher> {
    (
        prop::sample::select(Label::ALL.to_vec()),
        prop::sample::select(vec![MatchOp::Eq, MatchOp::Ne, MatchOp::Re, MatchOp::NotRe]),
        prop_oneof![
            ".{0,6}".prop_map(MatchValue::String),
            param_name().prop_map(MatchValue::Param),
        ],
    )
        .prop_map(|(label, op, value)| Matcher {
            label,
            op,
            value,
            span: span(),
            value_span: span(),
        })
}

fn query() -> impl Strategy<Value = Query> {
    (
        prop::collection::vec(name(), 0..3),
        prop::collection::vec(matcher(), 0..3),
        prop::collection::vec(stage(), 0..4),
    )
        .prop_map(|(kinds, matchers, stages)| Query {
            source: Source {
                kinds,
                matchers,
                span: span(),
            },
            stages,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn print_then_parse_gives_the_same_query(q in query()) {
        let printed = q.to_string();
        let parsed = parse(&printed).map_err(|e| TestCaseError::fail(e.render(&printed)))?;
        prop_assert_eq!(&parsed, &q, "printed as {}", printed);
        prop_assert_eq!(parsed.to_string(), printed);
    }
}
