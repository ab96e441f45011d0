//! A small corpus indexed end to end, searched with every operator, and bad input.

use serde_json::json;
use starling_corpus::{CorpusBuilder, CorpusConfig};
use starling_search::{build, PostIndex, SearchOrder};
use std::collections::BTreeSet;
use std::path::Path;

fn tweet(id: u64, user: &str, day: u32, text: &str, faves: u64) -> serde_json::Value {
    json!({
        "id_str": id.to_string(),
        // January 2024 began on a Monday.
        "created_at": format!(
            "{} Jan {day:02} 10:00:00 +0000 2024",
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][(day as usize - 1) % 7]
        ),
        "user": {"id_str": format!("{}", 1000 + user.len()), "screen_name": user},
        "text": text,
        "lang": "en",
        "favorite_count": faves,
        "retweet_count": 0,
    })
}

fn corpus(dir: &Path) -> std::path::PathBuf {
    let first = tweet(
        100,
        "alice",
        1,
        "Loving the #RustLang meetup with @bob tonight https://example.com/rust",
        50,
    );
    let mut reply = tweet(101, "bob", 2, "@alice thanks for organising the meetup!", 3);
    reply["in_reply_to_status_id_str"] = json!("100");
    reply["in_reply_to_user_id_str"] = json!("1005");
    reply["in_reply_to_screen_name"] = json!("alice");
    let mut french = tweet(103, "dave", 4, "Bonjour tout le monde, le café est prêt", 1);
    french["lang"] = json!("fr");
    let mut rt = tweet(
        104,
        "erin",
        5,
        "RT @alice: Loving the #RustLang meetup with @bob tonight",
        0,
    );
    rt["retweeted_status"] = first.clone();
    let posts = [
        first,
        reply,
        tweet(
            102,
            "carol",
            3,
            "$TSLA is up today, good morning traders",
            0,
        ),
        french,
        rt,
        tweet(
            105,
            "alice",
            6,
            "good morning everyone, the meetup starts soon",
            200,
        ),
    ];
    let input = dir.join("posts.jsonl");
    let lines: Vec<String> = posts.iter().map(|p| p.to_string()).collect();
    std::fs::write(&input, lines.join("\n")).expect("write");
    let out = dir.join("corpus");
    CorpusBuilder::new(CorpusConfig::default(), vec![input])
        .build(&out, &mut |_| {})
        .expect("corpus");
    out
}

fn ids(idx: &PostIndex, q: &str) -> BTreeSet<u64> {
    idx.search(q, SearchOrder::Top, 100)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .into_iter()
        .map(|h| h.id.parse().expect("numeric id"))
        .collect()
}

#[test]
fn builds_and_answers_every_operator() {
    let tmp = tempfile::tempdir().expect("tmp");
    let c = corpus(tmp.path());
    let out = tmp.path().join("idx");
    let meta = build(&c, &out, &mut |_| {}).expect("build");
    assert_eq!(meta.posts, 6, "every written post, the repost included");
    let idx = PostIndex::open(&out).expect("open");
    assert_eq!(idx.len(), 6);
    let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
    for (q, want) in [
        ("meetup", set(&[100, 101, 105])),
        ("meetup -from:bob", set(&[100, 105])),
        ("#RustLang", set(&[100])),
        ("@bob", set(&[100])),
        ("$TSLA", set(&[102])),
        ("from:alice", set(&[100, 105])),
        ("to:alice", set(&[101])),
        ("\"good morning\"", set(&[102, 105])),
        ("morning good", set(&[102, 105])),
        ("\"morning good\"", set(&[])),
        ("since:2024-01-03 until:2024-01-05", set(&[102, 103])),
        ("since_id:103", set(&[104, 105])),
        ("max_id:101", set(&[100, 101])),
        ("lang:fr", set(&[103])),
        ("cafe", set(&[103])),
        ("min_faves:50", set(&[100, 105])),
        ("min_retweets:1", set(&[])),
        ("min_replies:1", set(&[])),
        ("filter:replies", set(&[101])),
        ("-filter:replies from:alice", set(&[100, 105])),
        ("filter:retweets", set(&[104])),
        ("filter:links", set(&[100])),
        ("filter:hashtags", set(&[100])),
        ("url:example.com", set(&[100])),
        ("meetup OR $tsla", set(&[100, 101, 102, 105])),
        ("(meetup OR traders) from:carol", set(&[102])),
        ("conversation_id:42", set(&[])),
        ("-meetup -filter:retweets", set(&[102, 103])),
    ] {
        assert_eq!(ids(&idx, q), want, "{q}");
    }
    // latest: newest first; top: the newest and most liked wins.
    let latest: Vec<String> = idx
        .search("meetup", SearchOrder::Latest, 10)
        .expect("latest")
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(latest, ["105", "101", "100"]);
    let top = idx.search("meetup", SearchOrder::Top, 10).expect("top");
    assert_eq!(top[0].id, "105");
    assert_eq!(top[0].author.as_deref(), Some("alice"));
    assert!(top[0]
        .created_at
        .as_deref()
        .is_some_and(|t| t.starts_with("2024-01-06")));
    assert_eq!(top[0].engagement[0], 200);

    // A malformed query says where.
    let e = idx
        .search("meetup since:2024-02-30", SearchOrder::Top, 10)
        .expect_err("bad date");
    assert!(e.to_string().contains("column 13"), "{e}");
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let e = build(
        &tmp.path().join("no-corpus"),
        &tmp.path().join("i1"),
        &mut |_| {},
    )
    .expect_err("missing corpus");
    assert!(e.to_string().contains("no-corpus"), "{e}");
    assert!(!tmp.path().join("i1").exists());

    let e = PostIndex::open(tmp.path()).err().expect("not an index");
    assert!(e.to_string().contains("not a starling index"), "{e}");

    let c = corpus(tmp.path());
    let out = tmp.path().join("idx");
    build(&c, &out, &mut |_| {}).expect("build");
    let e = build(&c, &out, &mut |_| {}).expect_err("exists");
    assert!(e.to_string().contains("already exists"), "{e}");
    let meta = out.join(starling_search::index::META_FILE);
    let text = std::fs::read_to_string(&meta).expect("meta");
    std::fs::write(&meta, text.replace("\"version\": 1", "\"version\": 99")).expect("write");
    let e = PostIndex::open(&out).err().expect("version");
    assert!(
        e.to_string().contains("version 99") && e.to_string().contains("rebuild"),
        "{e}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("building"))
        .collect();
    assert!(leftovers.is_empty());
}
