//! A small corpus indexed end to end, searched with every operator, and bad input.

use serde_json::json;
use starling_corpus::Post;
use starling_corpus::{CorpusBuilder, CorpusConfig};
use starling_search::{
    build, build_from, BuildOptions, Embedder, PostIndex, SearchMode, SearchOrder, SearchRequest,
};
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
    let meta = build(&c, &out, &BuildOptions::default(), &mut |_| {}).expect("build");
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
        &BuildOptions::default(),
        &mut |_| {},
    )
    .expect_err("missing corpus");
    assert!(e.to_string().contains("no-corpus"), "{e}");
    assert!(!tmp.path().join("i1").exists());

    let e = PostIndex::open(tmp.path()).err().expect("not an index");
    assert!(e.to_string().contains("not a starling index"), "{e}");

    let c = corpus(tmp.path());
    let out = tmp.path().join("idx");
    build(&c, &out, &BuildOptions::default(), &mut |_| {}).expect("build");
    let e = build(&c, &out, &BuildOptions::default(), &mut |_| {}).expect_err("exists");
    assert!(e.to_string().contains("already exists"), "{e}");
    let meta = out.join(starling_search::index::META_FILE);
    let text = std::fs::read_to_string(&meta).expect("meta");
    std::fs::write(
        &meta,
        text.replace(
            &format!("\"version\": {}", starling_search::index::INDEX_VERSION),
            "\"version\": 99",
        ),
    )
    .expect("write");
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

/// A bag of hashed words: a stand-in model, so that search's dense path is tested without tch.
struct WordsEmbedder(&'static str);

impl Embedder for WordsEmbedder {
    fn id(&self) -> &str {
        self.0
    }
    fn dim(&self) -> usize {
        64
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, starling_embed::EmbedError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.01f32; 64];
                for w in t
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w
                        .to_lowercase()
                        .bytes()
                        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                    v[(h % 64) as usize] += 1.0;
                }
                starling_embed::normalize(&mut v);
                v
            })
            .collect())
    }
}

fn request<'a>(q: &'a str, mode: SearchMode, e: Option<&'a dyn Embedder>) -> SearchRequest<'a> {
    SearchRequest {
        query: q,
        mode,
        order: SearchOrder::Top,
        limit: 10,
        embedder: e,
    }
}

/// The test corpus indexed with [`WordsEmbedder`] vectors into `dir/idx`.
fn dense_index(
    dir: &Path,
    words: &WordsEmbedder,
) -> (std::path::PathBuf, starling_search::IndexMeta) {
    let c = corpus(dir);
    let out = dir.join("idx");
    let opts = BuildOptions {
        embedder: Some(words),
        model: Some("test".into()),
        ..Default::default()
    };
    let meta = build(&c, &out, &opts, &mut |_| {}).expect("build");
    (out, meta)
}

#[test]
fn dense_and_hybrid_search_with_filters_and_model_checks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let words = WordsEmbedder("words-64");
    let (out, meta) = dense_index(tmp.path(), &words);
    let c = tmp.path().join("corpus");
    assert_eq!(meta.dense.as_ref().map(|d| d.dim), Some(64));
    let idx = PostIndex::open(&out).expect("open");
    assert!(idx.has_dense());
    let e: &dyn Embedder = &words;

    let dense = idx
        .search_with(&request("good morning traders", SearchMode::Dense, Some(e)))
        .expect("dense");
    assert_eq!(dense[0].id, "102", "{dense:?}");
    assert!(dense[0].score > dense[1].score);
    // The stored vector of a post is the one search scored (ads read it as a known context).
    let stored = idx
        .post_vectors(&["102".to_string(), "no-such-post".to_string()])
        .expect("vectors");
    assert_eq!(stored.len(), 1);
    let mut q = e.embed(&["good morning traders"]).expect("embed").remove(0);
    let mut v = stored[0].clone();
    starling_embed::normalize(&mut q);
    starling_embed::normalize(&mut v);
    assert!((f64::from(starling_embed::dot(&q, &v)) - dense[0].score).abs() < 1e-3);
    // Operators filter the nearest neighbours.
    let dense = idx
        .search_with(&request(
            "good morning from:alice",
            SearchMode::Dense,
            Some(e),
        ))
        .expect("dense filtered");
    assert_eq!(dense[0].id, "105");
    assert!(
        dense.iter().all(|h| h.author.as_deref() == Some("alice")),
        "{dense:?}"
    );
    // Only operators: the same set as BM25.
    let only_ops = idx
        .search_with(&request("from:bob", SearchMode::Dense, Some(e)))
        .expect("operators only");
    assert_eq!(
        only_ops.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        vec!["101"]
    );

    let hybrid = idx
        .search_with(&request("meetup tonight", SearchMode::Hybrid, Some(e)))
        .expect("hybrid");
    assert_eq!(
        hybrid[0].id, "100",
        "in both lists near the top: {hybrid:?}"
    );
    assert!(hybrid.windows(2).all(|w| w[0].score >= w[1].score));

    // Another model's vectors are refused, and so is a dense query without a model.
    let other = WordsEmbedder("other-model");
    let err = idx
        .search_with(&request("meetup", SearchMode::Dense, Some(&other)))
        .expect_err("other model");
    assert!(err.to_string().contains("another model"), "{err}");
    let err = idx
        .search_with(&request("meetup", SearchMode::Hybrid, None))
        .expect_err("no model");
    assert!(err.to_string().contains("words-64"), "{err}");

    // An index without vectors says so.
    let plain = tmp.path().join("plain");
    build(&c, &plain, &BuildOptions::default(), &mut |_| {}).expect("build");
    let err = PostIndex::open(&plain)
        .expect("open")
        .search_with(&request("meetup", SearchMode::Dense, Some(e)))
        .expect_err("no vectors");
    assert!(err.to_string().contains("no dense vectors"), "{err}");
}

fn new_post(id: &str, text: &str) -> Post {
    let origin = starling_corpus::Origin {
        file: "live".into(),
        line: 1,
        nested: false,
    };
    let mut p = Post::new(id.into(), text.into(), origin);
    p.created_at = chrono::DateTime::from_timestamp(1_704_628_800, 0);
    p.author_handle = Some("zed".into());
    p.lang = "en".into();
    p.entities = starling_text::extract_entities(&p.text);
    p
}

#[test]
fn near_real_time_add_and_delete_while_queries_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let words = WordsEmbedder("words-64");
    let (out, _) = dense_index(tmp.path(), &words);
    let idx = PostIndex::open(&out).expect("open");
    let e: &dyn Embedder = &words;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // Readers keep querying the whole time.
        let reader = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                idx.search("meetup OR zeppelin", SearchOrder::Latest, 10)
                    .expect("query during writes");
                n += 1;
            }
            n
        });
        let t = std::time::Instant::now();
        let r = idx
            .add(
                &[new_post("900", "a #zeppelin over the harbour at dawn")],
                Some(e),
            )
            .expect("add");
        let visible = t.elapsed();
        assert_eq!((r.added, r.replaced), (1, 0));
        assert!(visible.as_secs_f64() < 1.0, "add-to-visible {visible:?}");
        assert_eq!(ids(&idx, "#zeppelin"), [900].into());
        let dense = idx
            .search_with(&request("zeppelin harbour", SearchMode::Dense, Some(e)))
            .expect("dense");
        assert_eq!(dense[0].id, "900");
        assert_eq!(idx.len(), 7);
        // The same id again replaces the post.
        let r = idx
            .add(&[new_post("900", "a #zeppelin over the bay")], Some(e))
            .expect("re-add");
        assert_eq!((r.added, r.replaced), (0, 1));
        assert_eq!(idx.len(), 7);
        // One new post three times and an old one twice in one batch: counted once each, the
        // last copy kept, and the index grows by what `added` says.
        let r = idx
            .add(
                &[
                    new_post("901", "first copy"),
                    new_post("900", "a #zeppelin over the bay"),
                    new_post("901", "second copy"),
                    new_post("900", "a #zeppelin over the bay"),
                    new_post("901", "third copy #kite"),
                ],
                Some(e),
            )
            .expect("batch with repeats");
        assert_eq!((r.added, r.replaced, r.repeated), (1, 1, 3));
        assert_eq!(idx.len(), 8);
        assert_eq!(ids(&idx, "#kite"), [901].into());
        assert!(ids(&idx, "copy").len() == 1);
        assert_eq!(
            idx.delete(&["901".into(), "901".into()]).expect("delete"),
            1
        );
        assert_eq!(idx.len(), 7);
        assert!(ids(&idx, "harbour").is_empty());

        let t = std::time::Instant::now();
        let gone = idx
            .delete(&["900".to_string(), "100".to_string(), "nope".to_string()])
            .expect("delete");
        assert!(t.elapsed().as_secs_f64() < 1.0);
        assert_eq!(gone, 2);
        assert!(ids(&idx, "#zeppelin").is_empty());
        assert_eq!(ids(&idx, "meetup"), [101, 105].into());
        let dense = idx
            .search_with(&request("zeppelin bay", SearchMode::Dense, Some(e)))
            .expect("dense after delete");
        assert!(
            dense.iter().all(|h| h.id != "900" && h.id != "100"),
            "{dense:?}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().expect("reader") > 0);
    });
    // A deletion list's `user:ID` removes every post of that author.
    // (alice and carol share author id 1005 in this corpus: 1000 + the handle's length.)
    assert_eq!(
        idx.delete_authors(&["1005".to_string()])
            .expect("by author"),
        2
    );
    assert!(ids(&idx, "from:alice OR from:carol").is_empty());
    // Adding without the model (the index has vectors) is refused before anything changes.
    let err = idx
        .add(&[new_post("901", "x")], None)
        .expect_err("no model");
    assert!(err.to_string().contains("needs that model"), "{err}");
    let meta = idx.flush().expect("flush");
    assert_eq!(meta.posts, 3);
    drop(idx);
    let again = PostIndex::open(&out).expect("reopen");
    assert_eq!(again.len(), 3);
    assert!(again
        .search_with(&request("zeppelin", SearchMode::Dense, Some(e)))
        .expect("dense")
        .iter()
        .all(|h| h.id != "900"));
}

#[test]
fn an_empty_source_is_an_error_and_leaves_no_index() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("idx");
    let err = build_from(
        &mut |_sink: &mut dyn FnMut(Post)| Ok(()),
        "none",
        &out,
        &BuildOptions::default(),
        &mut |_| {},
    )
    .expect_err("empty");
    assert!(err.to_string().contains("no posts"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0);
}

#[test]
fn reproducible_builds_rank_equal_scores_alike() {
    // 3,000 posts of three texts: scores tie in large groups, so the order among equals is the
    // documents' order in the index, which the multi-threaded writer does not fix.
    let posts: Vec<Post> = (0..3000)
        .map(|i| {
            new_post(
                &(10_000 + i).to_string(),
                ["kite day", "kite night", "kite"][i % 3],
            )
        })
        .collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let ranking = |n: usize| -> Vec<String> {
        let out = tmp.path().join(format!("idx{n}"));
        let opts = BuildOptions {
            reproducible: true,
            ..Default::default()
        };
        build_from(
            &mut |sink: &mut dyn FnMut(Post)| {
                posts.iter().cloned().for_each(&mut *sink);
                Ok(())
            },
            "ties",
            &out,
            &opts,
            &mut |_| {},
        )
        .expect("build");
        let idx = PostIndex::open(&out).expect("open");
        let hits = idx.search("kite", SearchOrder::Top, 100).expect("search");
        hits.into_iter().map(|h| h.id).collect()
    };
    let first = ranking(0);
    assert_eq!(first.len(), 100);
    for n in 1..3 {
        assert_eq!(ranking(n), first, "build {n} ranks the ties differently");
    }
}

/// (id, text, the platform's mentions, in_reply_to_status_id, in_reply_to_user_id).
type FixturePost<'a> = (
    u64,
    &'a str,
    &'a [&'a str],
    Option<&'a str>,
    Option<&'a str>,
);

/// Posts that exercise the analyzer and the entity mapping, as the platform gives them (v1.1 JSON
/// with `entities.user_mentions` and reply fields).
fn analyzer_fixture() -> Vec<serde_json::Value> {
    let texts: &[FixturePost] = &[
        // (id, text, mentions, in_reply_to_status_id, in_reply_to_user_id)
        (
            1,
            "@BarackObama--he can't keep doing this",
            &["BarackObama"],
            None,
            Some("813286"),
        ),
        (2, ".@user-Hood is the best", &["user"], None, None),
        (3, "Crooked Hillary's emails again", &[], None, None),
        (4, "China’s economy and CHINA's exports", &[], None, None),
        (5, "hillary said china is big", &[], Some("3"), Some("1001")),
        (6, "crooked   hillary, crooked…hillary?", &[], None, None),
        (7, "words/and/slashes…ellipsis--dashes", &[], None, None),
        (
            8,
            "@barackobama’s speech was long",
            &["barackobama"],
            Some("1"),
            Some("813286"),
        ),
        (
            9,
            "nothing to see: chinatown, hillarys, barackobama",
            &[],
            None,
            None,
        ),
        (
            10,
            "RT-free post by @BarackObama: great day",
            &["BarackObama"],
            None,
            None,
        ),
        (
            11,
            "email me at x@barackobama.com about china",
            &[],
            None,
            None,
        ),
        (
            12,
            "@user ‘china’ and “hillary” in quotes",
            &["user"],
            None,
            Some("2002"),
        ),
    ];
    texts
        .iter()
        .map(|(id, text, mentions, reply_status, reply_user)| {
            let mut t = tweet(*id, "poster", (*id % 28) as u32 + 1, text, 0);
            t["entities"] = json!({
                "user_mentions": mentions.iter().map(|m| json!({"screen_name": m})).collect::<Vec<_>>(),
                "hashtags": [], "urls": [], "symbols": []
            });
            t["in_reply_to_status_id_str"] = json!(reply_status);
            t["in_reply_to_user_id_str"] = json!(reply_user);
            t
        })
        .collect()
}

/// What a user means by the query, computed from the raw JSON alone.
fn brute_force(posts: &[serde_json::Value], q: &str) -> BTreeSet<u64> {
    let word = |w: &str| {
        regex::Regex::new(&format!(
            r"(?i)(^|[^\w@#$']){}(['’]s)?([^\w]|$)",
            w.split(' ')
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(r"[\s…,.;:!?/\-]+")
        ))
        .expect("regex")
    };
    let matches = |p: &serde_json::Value, part: &str| -> bool {
        let text = p["text"].as_str().unwrap_or_default();
        if let Some(m) = part.strip_prefix('@') {
            return p["entities"]["user_mentions"].as_array().is_some_and(|a| {
                a.iter().any(|e| {
                    e["screen_name"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(m))
                })
            });
        }
        if part == "filter:replies" {
            return !p["in_reply_to_status_id_str"].is_null()
                || !p["in_reply_to_user_id_str"].is_null();
        }
        word(part.trim_matches('"')).is_match(text)
    };
    posts
        .iter()
        .filter(|p| {
            let mut parts = Vec::new();
            let mut rest = q;
            while !rest.is_empty() {
                rest = rest.trim_start();
                let (part, tail) = if let Some(r) = rest.strip_prefix('"') {
                    let end = r.find('"').expect("closing quote") + 2;
                    rest.split_at(end)
                } else {
                    rest.split_at(rest.find(' ').unwrap_or(rest.len()))
                };
                parts.push(part);
                rest = tail;
            }
            parts.iter().all(|part| match part.strip_prefix('-') {
                Some(neg) => !matches(p, neg),
                None => matches(p, part),
            })
        })
        .map(|p| {
            p["id_str"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("id")
        })
        .collect()
}

#[test]
fn analyzer_cases_match_a_brute_force_scan_of_the_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let posts = analyzer_fixture();
    let input = tmp.path().join("posts.jsonl");
    let lines: Vec<String> = posts.iter().map(|p| p.to_string()).collect();
    std::fs::write(&input, lines.join("\n")).expect("write");
    let mut cfg = CorpusConfig::default();
    cfg.curate.exact_dedup = false;
    cfg.curate.near_dup = None;
    let c = tmp.path().join("corpus");
    CorpusBuilder::new(cfg, vec![input])
        .build(&c, &mut |_| {})
        .expect("corpus");
    let out = tmp.path().join("idx");
    build(&c, &out, &BuildOptions::default(), &mut |_| {}).expect("build");
    let idx = PostIndex::open(&out).expect("open");
    for (q, at_least) in [
        ("@barackobama", 3),
        ("@user", 2),
        ("\"crooked hillary\"", 2),
        ("hillary", 4),
        ("china", 4),
        ("hood", 1),
        ("he", 1),
        ("slashes", 1),
        ("ellipsis", 1),
        ("dashes", 1),
        ("filter:replies", 4),
        ("@barackobama -filter:replies", 1),
        ("china filter:replies", 2),
        ("-filter:replies hillary", 2),
    ] {
        let want = brute_force(&posts, q);
        assert!(want.len() >= at_least, "{q}: the reference found {want:?}");
        assert_eq!(ids(&idx, q), want, "{q}");
    }
}

/// An index written by this layout version (committed) still opens and answers; one from another
/// version is refused, naming it and how to rebuild.
#[test]
fn committed_v3_index_opens_and_other_versions_are_refused_by_name() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/index-v3");
    let dir = tempfile::tempdir().expect("tmp");
    // Opening takes tantivy's lock files in the directory: read a copy, never the committed one.
    let copy = dir.path().join("index");
    starling_artifacts::copy_dir(&fixture, &copy).expect("copy");
    let idx = PostIndex::open(&copy).expect("the committed v3 index opens");
    assert_eq!(idx.len(), 39);
    let hits = idx
        .search("the OR a", SearchOrder::Latest, 5)
        .expect("search");
    assert!(!hits.is_empty());
    drop(idx);
    let meta = copy.join(starling_search::index::META_FILE);
    let text = std::fs::read_to_string(&meta).expect("meta");
    std::fs::write(&meta, text.replace("\"version\": 3", "\"version\": 2")).expect("patch");
    let e = PostIndex::open(&copy)
        .err()
        .expect("v2 refused")
        .to_string();
    assert!(
        e.contains("an older starling") && e.contains("starling index build"),
        "{e}"
    );
}
