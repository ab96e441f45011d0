//! Tests of `query`.

use super::*;

#[test]
fn dense_parts_embed_the_words_and_filter_with_the_rest() {
    let d = parse("delayed (flight OR plane) #united from:jack -lang:fr")
        .unwrap()
        .dense_parts();
    assert_eq!(d.text, "delayed flight plane #united");
    assert_eq!(d.filter.unwrap().to_string(), "from:jack -lang:fr");
    let d = parse("cats").unwrap().dense_parts();
    assert_eq!((d.text.as_str(), d.filter), ("cats", None));
    let d = parse("cats OR from:jack").unwrap().dense_parts();
    assert_eq!(d.text, "");
    assert!(d.filter.is_some());
}

fn p(q: &str) -> Query {
    parse(q).unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn t(s: &str) -> Query {
    Query::Term(s.into())
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

#[test]
fn every_operator() {
    let cases: Vec<(&str, Query)> = vec![
        ("Hello", t("hello")),
        (
            "\"Good  Morning\"",
            Query::Phrase(vec!["good".into(), "morning".into()]),
        ),
        ("#NBAFinals", Query::Hashtag("nbafinals".into())),
        ("$TSLA", Query::Cashtag("tsla".into())),
        ("@Jack", Query::Mention("jack".into())),
        ("from:jack", Query::From("jack".into())),
        ("from:@Jack", Query::From("jack".into())),
        ("to:united", Query::To("united".into())),
        ("since:2024-01-31", Query::Since(d("2024-01-31"))),
        ("until:2024-02-01", Query::Until(d("2024-02-01"))),
        (
            "since:2024-01-31_10:00:00_UTC",
            Query::Since(d("2024-01-31")),
        ),
        ("since_id:1234", Query::SinceId(1234)),
        ("max_id:99", Query::MaxId(99)),
        ("lang:EN", Query::Lang("en".into())),
        ("min_faves:10", Query::MinFaves(10)),
        ("min_retweets:5", Query::MinRetweets(5)),
        ("min_replies:2", Query::MinReplies(2)),
        ("filter:replies", Query::Filter(Filter::Replies)),
        ("filter:retweets", Query::Filter(Filter::Retweets)),
        ("filter:nativeretweets", Query::Filter(Filter::Retweets)),
        ("filter:quote", Query::Filter(Filter::Quote)),
        ("filter:links", Query::Filter(Filter::Links)),
        ("filter:media", Query::Filter(Filter::Media)),
        ("filter:images", Query::Filter(Filter::Media)),
        ("filter:mentions", Query::Filter(Filter::Mentions)),
        ("filter:hashtags", Query::Filter(Filter::Hashtags)),
        (
            "-filter:retweets",
            Query::Not(Box::new(Query::Filter(Filter::Retweets))),
        ),
        ("url:example.com", Query::Url("example.com".into())),
        (
            "url:\"example.com/a b\"",
            Query::Url("example.com/a b".into()),
        ),
        ("conversation_id:777", Query::ConversationId(777)),
        ("-spam", Query::Not(Box::new(t("spam")))),
        // Not operators: times, URLs with schemes, a lone dollar amount.
        ("10:30", t("10:30")),
        ("$5", t("$5")),
        ("well-known", t("well-known")),
    ];
    for (q, want) in cases {
        assert_eq!(p(q), want, "{q}");
    }
}

#[test]
fn and_or_not_and_parentheses() {
    assert_eq!(p("a b"), Query::And(vec![t("a"), t("b")]));
    // AND binds tighter than OR, as Twitter evaluates it.
    assert_eq!(
        p("a b OR c"),
        Query::Or(vec![Query::And(vec![t("a"), t("b")]), t("c")])
    );
    assert_eq!(
        p("a (b OR c)"),
        Query::And(vec![t("a"), Query::Or(vec![t("b"), t("c")])])
    );
    assert_eq!(
        p("-(a OR b) c"),
        Query::And(vec![
            Query::Not(Box::new(Query::Or(vec![t("a"), t("b")]))),
            t("c")
        ])
    );
    // Lower-case "or" is a word, as on Twitter.
    assert_eq!(
        p("this or that"),
        Query::And(vec![t("this"), t("or"), t("that")])
    );
    let q = p(
        "(#rust OR $ABC) from:jack -filter:replies since:2024-01-01 \"hello world\" min_faves:3",
    );
    assert_eq!(p(&q.to_string()), q, "the canonical text parses back: {q}");
}

#[test]
fn errors_point_at_the_problem() {
    for (q, col, needle) in [
        ("", 0, "empty query"),
        ("   ", 3, "empty query"),
        ("hello foo:bar", 6, "unknown operator `foo:`"),
        ("since:2024-13-01", 6, "date YYYY-MM-DD"),
        ("until:yesterday", 6, "date YYYY-MM-DD"),
        ("min_faves:many", 10, "whole number"),
        ("since_id:-3", 9, "whole number"),
        ("filter:verified", 7, "unknown filter `verified`"),
        ("lang:e1", 5, "language code"),
        ("from:", 5, "needs a value"),
        ("\"open phrase", 0, "unclosed quote"),
        ("(a OR b", 0, "unclosed `(`"),
        ("a)", 1, "unexpected `)`"),
        ("()", 0, "empty parentheses"),
        ("a OR", 2, "OR needs a term"),
        ("OR a", 0, "OR needs a term"),
        ("a OR OR b", 2, "OR needs a term"),
        ("#", 0, "needs a name"),
        ("\"\"", 0, "empty phrase"),
    ] {
        match parse(q) {
            Ok(x) => panic!("{q:?} parsed as {x:?}"),
            Err(e) => {
                assert_eq!(e.column, col, "{q:?}: {e}");
                assert!(e.message.contains(needle), "{q:?}: {e}");
                assert!(e.to_string().contains('^'), "{e}");
            }
        }
    }
}

fn depth(q: &Query) -> usize {
    match q {
        Query::And(p) | Query::Or(p) => 1 + p.iter().map(depth).max().unwrap_or(0),
        Query::Not(q) => 1 + depth(q),
        _ => 0,
    }
}

#[test]
fn depth_and_length_are_bounded() {
    let nested = |n: usize| format!("{}a b{}", "(".repeat(n), ")".repeat(n));
    assert!(parse(&nested(MAX_QUERY_DEPTH)).is_ok());
    let e = parse(&nested(MAX_QUERY_DEPTH + 1)).unwrap_err();
    assert_eq!(e.column, MAX_QUERY_DEPTH, "{e}");
    assert!(e.message.contains("nest deeper than 32"), "{e}");
    let e = parse(&"(".repeat(100_000)).unwrap_err();
    assert!(e.message.contains("the limit is 4096"), "{e}");
    assert_eq!(e.column, MAX_QUERY_CHARS);
    assert!(e.query.chars().count() <= QueryError::WINDOW + 2);
    assert!(e.to_string().len() < 600, "{e}");
    assert!(parse(&"a ".repeat(MAX_QUERY_CHARS / 2)).is_ok());
}

/// Random deep and long queries from the grammar's own pieces, parsed on a thread with a
/// small stack: every one parses or fails with an error, and nothing nests past the limit.
#[test]
fn random_deep_and_long_queries_never_overflow() {
    const PIECES: &[&str] = &[
        "(",
        "(",
        "(",
        ")",
        ")",
        "-",
        "-(",
        " OR ",
        "a",
        "#t",
        "@u",
        "$X",
        "\"p q\"",
        "from:x",
        "since:2024-01-01",
        "filter:links",
        " ",
        "“",
        "url:\"a",
        "lang:en",
        "((((((((",
        "))))",
    ];
    let worker = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let (mut ok, mut refused) = (0, 0);
            for case in 0..3000 {
                let len = 1 + (next() % if case % 10 == 0 { 3000 } else { 80 }) as usize;
                let q: String = (0..len)
                    .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                    .collect();
                match parse(&q) {
                    Ok(t) => {
                        // Every nesting level is a paren, a `-` or an AND/OR: a bounded multiple.
                        assert!(depth(&t) <= 3 * MAX_QUERY_DEPTH + 3, "{q}");
                        let _ = (t.to_string(), t.dense_parts());
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(e.column <= MAX_QUERY_CHARS, "{q}: {e}");
                        refused += 1;
                    }
                }
            }
            (ok, refused)
        })
        .expect("thread");
    let (ok, refused) = worker.join().expect("no overflow");
    assert!(ok >= 20 && refused >= 100, "ok {ok} refused {refused}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// Any text parses or is refused with a column inside it; what parses prints back to a
    /// query that parses to the same tree.
    #[test]
    fn any_query_parses_or_fails_cleanly_and_round_trips(
        q in r#"[a-z#@$():\-" ]{0,10}(OR |from:u |since:2024-01-0[1-9] |filter:links |lang:en |min_faves:[0-9] |[a-z#@$()\-" ]{1,6}){0,8}"#
    ) {
        match parse(&q) {
            Ok(t) => {
                let back = parse(&t.to_string());
                proptest::prop_assert_eq!(back.as_ref().ok(), Some(&t), "{} → {}", q, t);
            }
            Err(e) => proptest::prop_assert!(e.column <= q.chars().count(), "{}: {}", q, e),
        }
    }
}
