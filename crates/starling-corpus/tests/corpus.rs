//! Integration tests of the corpus stage: real dumps, bad input, invariants, determinism.

use starling_corpus::read::{read_file, Item, ReadOptions};
use starling_corpus::synth::{SynthConfig, SynthFlavor};
use starling_corpus::{Corpus, CorpusBuilder, CorpusConfig, Manifest, Post, Verdict};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

fn build(inputs: Vec<PathBuf>, out: &Path) -> Manifest {
    CorpusBuilder::new(CorpusConfig::default(), inputs)
        .build(out, &mut |_| {})
        .expect("build")
}

fn posts_of(out: &Path) -> Vec<Post> {
    let c = Corpus::open(out).expect("open corpus");
    c.verify().expect("checksums");
    let mut v = Vec::new();
    c.for_each_post(&mut |p| v.push(p)).expect("read shards");
    v
}

/// Reads a directory with the readers alone; returns (all ids, top-level ids, quarantined (file, line)).
fn read_dir_ids(dir: &Path) -> (HashSet<String>, HashSet<String>, Vec<(String, u64)>) {
    let files = starling_corpus::corpus::expand_inputs(&[dir.to_path_buf()]).expect("list");
    let (mut all, mut top, mut q) = (HashSet::new(), HashSet::new(), Vec::new());
    for f in files {
        read_file(&f, &ReadOptions::default(), &mut |item| match item {
            Item::Post(p) => {
                if !p.origin.nested {
                    top.insert(p.id.clone());
                }
                all.insert(p.id);
            }
            Item::Quarantined(x) => q.push((x.file, x.line)),
            _ => {}
        })
        .expect("read");
    }
    (all, top, q)
}

#[test]
fn real_v1_samples_give_660_distinct_posts() {
    let Some(dir) = starling_testkit::shared_data("twitter-api-v1.1-samples") else {
        return;
    };
    let (all, _, q) = read_dir_ids(&dir);
    // SOURCE.md counts statuses that carry a `user`: 660. Three quoted statuses nested in
    // get_search_raw.json come without one (the API left it out); they are posts all the same.
    let files = starling_corpus::corpus::expand_inputs(std::slice::from_ref(&dir)).expect("list");
    let mut authored = HashSet::new();
    for f in files {
        read_file(&f, &ReadOptions::default(), &mut |item| {
            if let Item::Post(p) = item {
                if p.author_id.is_some() {
                    authored.insert(p.id);
                }
            }
        })
        .expect("read");
    }
    assert_eq!(
        authored.len(),
        660,
        "distinct v1.1 status ids with an author, nested included"
    );
    assert_eq!(all.len(), 663, "plus three authorless nested quotes");
    assert!(
        q.is_empty(),
        "nothing quarantined in the v1.1 samples: {q:?}"
    );
    let out = tempfile::tempdir().expect("tmp");
    let m = build(vec![dir], out.path());
    assert!(m.counts.balanced());
    let posts = posts_of(out.path());
    let ids: HashSet<&str> = posts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len() + m.lineage.deleted_posts.len(), 663);
    // Retweets reference their original, which is a post of its own, instead of copying its text.
    let rt = posts
        .iter()
        .find(|p| p.refs.repost_of.is_some())
        .expect("a retweet");
    assert!(rt.text.is_empty() && rt.verdict == Verdict::Repost);
    assert!(ids.contains(rt.refs.repost_of.as_deref().unwrap_or_default()));
    // Extended tweets use their full text; HTML entities are unescaped.
    assert!(posts.iter().all(|p| !p.text.contains("&amp;")));
    assert!(posts.iter().any(|p| p.text.chars().count() > 140));
}

#[test]
fn real_v2_samples_give_1109_distinct_posts_and_quarantine_the_cut_line() {
    let Some(dir) = starling_testkit::shared_data("twitter-api-v2-samples") else {
        return;
    };
    let (all, top, q) = read_dir_ids(&dir);
    assert_eq!(top.len(), 1109, "distinct ids in `data`");
    assert!(all.len() > top.len(), "includes.tweets are posts too");
    assert!(
        q.iter()
            .any(|(f, l)| f.ends_with("streaming_output_with_error.jsonl") && *l == 8),
        "the truncated line 8 is quarantined: {q:?}"
    );
    let out = tempfile::tempdir().expect("tmp");
    let m = build(vec![dir], out.path());
    assert!(m.counts.balanced(), "{:?}", m.counts);
    assert!(m.counts.quarantined >= 1);
    let quarantine =
        std::fs::read_to_string(out.path().join("quarantine.jsonl")).expect("quarantine");
    assert!(
        quarantine.contains("streaming_output_with_error.jsonl")
            && quarantine.contains("\"line\":8")
    );
    // Compliance records delete posts and users; the deleted ids are listed in the lineage.
    assert!(m.lineage.requested_posts >= 2 && m.lineage.requested_users >= 1);
    assert!(
        m.counts.notices.contains_key("count"),
        "count buckets are notices, not posts"
    );
}

#[test]
fn airline_csv_and_tweeteval_text_load() {
    let Some(csv) = starling_testkit::shared_data("airline-sentiment/Tweets.csv") else {
        return;
    };
    let Some(te) = starling_testkit::shared_data("tweeteval/hate") else {
        return;
    };
    let out = tempfile::tempdir().expect("tmp");
    let m = build(vec![csv.clone()], out.path());
    assert_eq!(m.counts.read, 14_640);
    assert_eq!(m.counts.quarantined, 0);
    let posts = posts_of(out.path());
    assert!(posts
        .iter()
        .all(|p| p.created_at.is_some() && p.author_handle.is_some()));
    assert!(posts.iter().any(|p| p.id == "570306133677760513"));
    // Shards hold posts in (time, id) order, whatever order the file lists them in.
    assert!(posts
        .windows(2)
        .all(|w| (w[0].created_at, w[0].id.len(), &w[0].id)
            <= (w[1].created_at, w[1].id.len(), &w[1].id)));

    let out2 = tempfile::tempdir().expect("tmp");
    let files = vec![te.join("train_text.txt"), te.join("test_text.txt")];
    let m = build(files, out2.path());
    let lines = |f: &str| {
        std::fs::read_to_string(te.join(f))
            .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() as u64)
            .unwrap_or(0)
    };
    assert_eq!(
        m.counts.read,
        lines("train_text.txt") + lines("test_text.txt")
    );
    // Published test sets never enter training.
    let posts = posts_of(out2.path());
    assert!(posts
        .iter()
        .filter(|p| p.origin.file.ends_with("test_text.txt"))
        .all(|p| p.verdict == Verdict::HeldOut));
    assert!(posts.iter().all(|p| p.id.starts_with("h:")));
}

fn synth(dir: &Path, name: &str, cfg: &SynthConfig) -> PathBuf {
    let p = dir.join(name);
    starling_corpus::synth::write_file(cfg, &p).expect("synth");
    p
}

fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn synthetic_corpus_adds_up_and_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = SynthConfig {
        posts: 3000,
        malformed: 0.01,
        ..SynthConfig::default()
    };
    let input = synth(tmp.path(), "s.jsonl.gz", &cfg);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ma = build(vec![input.clone()], &a);
    let mb = build(vec![input], &b);
    assert_eq!(ma.counts, mb.counts);
    assert!(ma.counts.balanced(), "{:?}", ma.counts);
    assert!(ma.synthetic && ma.counts.quarantined > 0);
    assert!(
        ma.counts
            .filtered
            .get("near_duplicate")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(ma.counts.filtered.get("deleted").copied().unwrap_or(0) > 0);
    assert_eq!(
        dir_bytes(&a),
        dir_bytes(&b),
        "same input and config give identical bytes"
    );
    let posts = posts_of(&a);
    assert!(posts.iter().all(|p| p.synthetic));
    assert_eq!(posts.len() as u64, ma.counts.written);
    let deleted: HashSet<&String> = ma.lineage.deleted_posts.iter().collect();
    assert!(
        posts.iter().all(|p| !deleted.contains(&p.id)),
        "deleted posts are removed everywhere"
    );
    // v2 flavour reads the same way.
    let v2 = synth(
        tmp.path(),
        "s2.jsonl.zst",
        &SynthConfig {
            posts: 500,
            flavor: SynthFlavor::V2,
            ..SynthConfig::default()
        },
    );
    let m2 = build(vec![v2], &tmp.path().join("c"));
    assert!(m2.counts.balanced() && m2.counts.kept > 300);
}

#[test]
fn compressed_inputs_read_like_plain_ones() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = SynthConfig {
        posts: 300,
        ..SynthConfig::default()
    };
    let plain = synth(tmp.path(), "p.jsonl", &cfg);
    let bytes = std::fs::read(&plain).expect("read");
    let bz = tmp.path().join("p.jsonl.bz2");
    let mut enc = bzip2::write::BzEncoder::new(
        std::fs::File::create(&bz).expect("create"),
        bzip2::Compression::fast(),
    );
    enc.write_all(&bytes).expect("write");
    enc.finish().expect("finish");
    let gz = synth(tmp.path(), "p.jsonl.gz", &cfg);
    let zst = synth(tmp.path(), "p.jsonl.zst", &cfg);
    let counts: Vec<_> = [plain, bz, gz, zst]
        .into_iter()
        .enumerate()
        .map(|(i, f)| build(vec![f], &tmp.path().join(format!("o{i}"))).counts)
        .collect();
    assert!(counts.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn bad_input_is_quarantined_with_file_and_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let good = r#"{"id_str":"1","id":1,"text":"a perfectly normal post about the weather","user":{"id_str":"9","screen_name":"bob"},"created_at":"Wed Aug 27 13:08:45 +0000 2008","lang":"en"}"#;
    let mut bad_utf8 = good
        .replace("\"1\"", "\"2\"")
        .replace(":1,", ":2,")
        .into_bytes();
    bad_utf8.splice(40..40, [0xff, 0xfe]);
    let truncated = &good.replace("\"1\"", "\"3\"")[..60];
    let mut f = std::fs::File::create(d.join("mixed.jsonl")).expect("create");
    f.write_all(good.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .expect("w");
    f.write_all(&bad_utf8)
        .and_then(|_| f.write_all(b"\n"))
        .expect("w");
    f.write_all(truncated.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .expect("w");
    let huge = format!("{{\"id_str\":\"4\",\"text\":\"{}\"}}", "x".repeat(10 << 20));
    f.write_all(huge.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .expect("w");
    f.write_all(br#"{"something":"else"}"#)
        .and_then(|_| f.write_all(b"\n"))
        .expect("w");
    drop(f);
    std::fs::write(d.join("empty.jsonl"), b"").expect("w");
    std::fs::write(d.join("image.json"), [0x89, b'P', b'N', b'G', 0, 0, 0, 13]).expect("w");
    let inputs = vec![
        d.join("mixed.jsonl"),
        d.join("empty.jsonl"),
        d.join("image.json"),
    ];
    let out = d.join("out");
    let m = build(inputs, &out);
    assert!(m.counts.balanced(), "{:?}", m.counts);
    assert_eq!(m.counts.kept, 1);
    assert_eq!(
        m.counts.quarantined, 5,
        "bad UTF-8, truncated, 10 MB line, unknown shape, binary file"
    );
    let q: Vec<serde_json::Value> = std::fs::read_to_string(out.join("quarantine.jsonl"))
        .expect("q")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let find = |line: u64, word: &str| {
        q.iter().any(|x| {
            x["line"] == line
                && x["reason"].as_str().is_some_and(|r| r.contains(word))
                && x["file"].as_str().is_some_and(|f| f.contains(".json"))
        })
    };
    assert!(find(2, "UTF-8"), "{q:?}");
    assert!(find(3, "JSON"));
    assert!(find(4, "exceeds"));
    assert!(find(5, "not a post"));
    assert!(find(0, "binary"));
    let big = q.iter().find(|x| x["line"] == 4).expect("big");
    assert!(
        big["raw_bytes"].as_u64().unwrap_or(0) > 10 << 20,
        "the full size is recorded"
    );
    // A missing file is an error that names it.
    let err = CorpusBuilder::new(CorpusConfig::default(), vec![d.join("nope.jsonl")])
        .build(&d.join("o2"), &mut |_| {})
        .expect_err("missing");
    assert!(err.to_string().contains("nope.jsonl"), "{err}");
}

#[test]
fn deletion_list_and_archive() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let archive = r#"window.YTD.tweets.part0 = [
  {"tweet": {"id_str": "100", "full_text": "my first archived post, about gardening and tomatoes", "created_at": "Mon Jan 02 10:00:00 +0000 2023", "favorite_count": "3", "retweet_count": "1", "lang": "en"}},
  {"tweet": {"id_str": "101", "full_text": "a second archived post about the evening concert downtown", "created_at": "Mon Jan 02 11:00:00 +0000 2023", "favorite_count": "0", "retweet_count": "0", "lang": "en", "in_reply_to_status_id_str": "100"}},
  {"tweet": {"id_str": "102", "full_text": "third one, mentions @friend and a link https://example.com/x", "created_at": "Mon Jan 02 12:00:00 +0000 2023", "lang": "en"}}
]"#;
    std::fs::write(d.join("tweets.js"), archive).expect("w");
    std::fs::write(d.join("forget.txt"), "# removed on request\n101\n").expect("w");
    let m = CorpusBuilder::new(CorpusConfig::default(), vec![d.join("tweets.js")])
        .deletion_list(d.join("forget.txt"))
        .build(&d.join("out"), &mut |_| {})
        .expect("build");
    assert!(m.counts.balanced());
    assert_eq!(m.lineage.deleted_posts, vec!["101".to_string()]);
    let posts = posts_of(&d.join("out"));
    assert_eq!(
        posts.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec!["100", "102"]
    );
    assert_eq!(posts[0].engagement.likes, 3);
    assert_eq!(
        posts[1].train_text,
        "third one, mentions @friend and a link <|url|>"
    );
    assert_eq!(posts[1].entities.mentions[0].text, "friend");
    // A malformed deletion list names its line.
    std::fs::write(d.join("bad.txt"), "101\nwho:7\n").expect("w");
    let err = CorpusBuilder::new(CorpusConfig::default(), vec![d.join("tweets.js")])
        .deletion_list(d.join("bad.txt"))
        .build(&d.join("out2"), &mut |_| {})
        .expect_err("bad list");
    assert!(err.to_string().contains("bad.txt:2"), "{err}");
}

/// Verdict of every post by id.
fn verdicts(out: &Path) -> std::collections::BTreeMap<String, Verdict> {
    posts_of(out)
        .into_iter()
        .map(|p| (p.id, p.verdict))
        .collect()
}

/// Writes `statuses` as JSON arrays split over `files` files in `dir`.
fn write_arrays(dir: &Path, statuses: &[serde_json::Value], files: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let per = statuses.len().div_ceil(files.max(1)).max(1);
    statuses
        .chunks(per)
        .enumerate()
        .map(|(i, c)| {
            let p = dir.join(format!("part-{i}.json"));
            std::fs::write(&p, serde_json::to_vec(c).expect("json")).expect("write");
            p
        })
        .collect()
}

fn read_arrays(files: &[PathBuf]) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for f in files {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json");
        all.extend(v.as_array().cloned().unwrap_or_default());
    }
    all
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    use rand::{seq::SliceRandom, SeedableRng};
    v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
}

#[test]
fn a_prolific_humans_archive_gets_the_same_verdicts_in_any_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let archive = starling_corpus::synth::write_archive(
        &starling_corpus::synth::ArchiveConfig {
            days: 200,
            burst_chance: 0.15,
            ..Default::default()
        },
        &tmp.path().join("archive"),
    )
    .expect("archive");
    assert!(archive.posts > 4000 && archive.bursts > 10, "{archive:?}");
    // As written: one array per year, newest first.
    let newest_first = build(archive.files.clone(), &tmp.path().join("a"));
    assert!(newest_first.counts.balanced());
    // The same files named in another order: the same shard bytes.
    let mut reordered = archive.files.clone();
    reordered.reverse();
    let b = build(reordered, &tmp.path().join("b"));
    assert_eq!(
        newest_first
            .shards
            .iter()
            .map(|s| &s.sha256)
            .collect::<Vec<_>>(),
        b.shards.iter().map(|s| &s.sha256).collect::<Vec<_>>()
    );
    // Oldest first, and shuffled across three files.
    let mut all = read_arrays(&archive.files);
    all.reverse();
    let oldest = write_arrays(&tmp.path().join("oldest"), &all, 1);
    shuffle(&mut all, 3);
    let shuffled = write_arrays(&tmp.path().join("shuffled"), &all, 3);
    let want = verdicts(&tmp.path().join("a"));
    for (name, files) in [("oldest first", oldest), ("shuffled", shuffled)] {
        let out = tmp.path().join(name);
        let m = build(files, &out);
        assert!(m.counts.balanced());
        assert_eq!(verdicts(&out), want, "{name}");
    }
    // The person keeps what the other rules leave: bursts and volume are not automation.
    // (The retweeted originals' authors are word salad by `synth`; only the archive's owner counts.)
    let owner: Vec<Verdict> = posts_of(&tmp.path().join("a"))
        .into_iter()
        .filter(|p| p.author_id.as_deref() == Some("5242"))
        .map(|p| p.verdict)
        .collect();
    let bot = owner.iter().filter(|v| **v == Verdict::Bot).count();
    let kept = owner.iter().filter(|v| **v == Verdict::Kept).count();
    assert!(kept > 4000, "kept {kept}");
    assert!(
        kept as f64 >= 0.98 * (kept + bot) as f64,
        "kept {kept}, bot {bot}: {:?}",
        newest_first.bots
    );
}

#[test]
fn v11_timelines_get_the_same_verdicts_newest_oldest_or_shuffled() {
    let Some(dir) = starling_testkit::shared_data("twitter-api-v1.1-samples") else {
        return;
    };
    let files: Vec<PathBuf> = [
        "get_user_timeline_count.json",
        "get_home_timeline.json",
        "get_list_timeline.json",
        "get_mentions.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let as_given = build(files.clone(), &tmp.path().join("given"));
    assert!(
        as_given.counts.balanced() && as_given.counts.read > 150,
        "{:?}",
        as_given.counts
    );
    let want = verdicts(&tmp.path().join("given"));
    let mut all = read_arrays(&files);
    all.reverse();
    let oldest = write_arrays(&tmp.path().join("oldest"), &all, 2);
    shuffle(&mut all, 11);
    let shuffled = write_arrays(&tmp.path().join("shuffled"), &all, 5);
    for (name, files) in [("oldest first", oldest), ("shuffled", shuffled)] {
        let out = tmp.path().join(name);
        build(files, &out);
        assert_eq!(verdicts(&out), want, "{name}");
    }
}

#[test]
fn untimed_posts_give_the_same_text_and_verdict_multiset_in_any_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut lines: Vec<String> = (0..400)
        .map(|i| format!("post number {} about the game tonight", i % 170))
        .collect();
    let multiset = |out: &Path| {
        let mut v: Vec<(String, Verdict)> = posts_of(out)
            .into_iter()
            .map(|p| (p.text, p.verdict))
            .collect();
        v.sort();
        v
    };
    let mut want = None;
    for seed in 0..3u64 {
        if seed > 0 {
            shuffle(&mut lines, seed);
        }
        let f = tmp.path().join(format!("posts-{seed}.txt"));
        std::fs::write(&f, lines.join("\n")).expect("write");
        let out = tmp.path().join(format!("c{seed}"));
        build(vec![f], &out);
        let got = multiset(&out);
        assert!(got.iter().any(|(_, v)| *v == Verdict::ExactDuplicate));
        match &want {
            None => want = Some(got),
            Some(w) => assert_eq!(&got, w, "seed {seed}"),
        }
    }
}

/// Random text heavy in sigils, quotes, ellipses, URLs and multi-byte letters.
fn hostile_text(rng: &mut impl rand::Rng) -> String {
    const PARTS: &[&str] = &[
        "@",
        "#",
        "$",
        "“",
        "”",
        "’",
        "‘",
        "…",
        "f",
        "RT",
        "RT:",
        ":",
        "x",
        "é",
        "ñ",
        "日本",
        "😂",
        "https://t.co/",
        "http://",
        "www.",
        ".com",
        "/",
        "-",
        "--",
        "_",
        " ",
        " ",
        "\u{200d}",
        "＠",
        "＃",
        "ß",
        "İ",
        "a1",
        "&amp;",
        "\u{301}",
        "user",
        "tag",
        "TSLA",
    ];
    let n = rng.gen_range(1..40);
    // A word first, so no line is blank (blank lines are not records).
    std::iter::once("p ")
        .chain((0..n).map(|_| PARTS[rng.gen_range(0..PARTS.len())]))
        .collect()
}

#[test]
fn random_hostile_text_never_panics_and_counts_add_up() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let texts: Vec<String> = (0..4000).map(|_| hostile_text(&mut rng)).collect();
    for t in &texts {
        let e = starling_text::try_extract_entities(t).expect("no panic in entity extraction");
        for x in e.all() {
            assert!(
                x.start <= x.end && x.end <= t.chars().count(),
                "{t:?}: {x:?}"
            );
        }
    }
    // The two records that aborted whole PAN files, among the rest.
    let mut lines = texts.clone();
    lines.push("in support of the “f@cking gunfight” line, however.".into());
    lines.push("@CSIFCV reprueba “la falta de diálogo directo” del conseller".into());
    let tmp = tempfile::tempdir().expect("tmp");
    let txt = tmp.path().join("hostile.txt");
    std::fs::write(&txt, lines.join("\n")).expect("write");
    let jsonl = tmp.path().join("hostile.jsonl");
    let json: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id_str": (i + 1).to_string(), "text": t,
                "created_at": "Wed Oct 10 20:19:24 +0000 2018",
                "user": {"id_str": (i % 7).to_string(), "screen_name": format!("u{}", i % 7)}})
            .to_string()
        })
        .collect();
    std::fs::write(&jsonl, json.join("\n")).expect("write");
    let m = build(vec![txt, jsonl], &tmp.path().join("c"));
    assert!(m.counts.balanced(), "{:?}", m.counts);
    assert_eq!(m.counts.read, 2 * lines.len() as u64);
    assert_eq!(m.counts.quarantined, 0);
}

/// The first `authors` authors' rows of a PAN file, and their labels.
fn pan_slice(file: &Path, authors: usize, out: &Path) -> usize {
    let rows = std::io::BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(file).expect("open"),
    ));
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).expect("create"));
    let mut r = csv::Reader::from_reader(rows);
    let mut wtr = csv::Writer::from_writer(&mut w);
    wtr.write_record(["author", "lang", "text"])
        .expect("header");
    let mut seen = Vec::<String>::new();
    for rec in r.records() {
        let rec = rec.expect("row");
        if seen.last().map(String::as_str) != Some(&rec[0]) {
            if seen.len() == authors {
                break;
            }
            seen.push(rec[0].to_string());
        }
        wtr.write_record(&rec).expect("row");
    }
    wtr.flush().expect("flush");
    seen.len()
}

#[test]
fn a_slice_of_pan_ingests_whole_and_the_bot_rule_finds_bots() {
    let Some(dir) = starling_testkit::shared_data("pan19-bots") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    for lang in ["en", "es"] {
        let slice = tmp.path().join(format!("pan-{lang}.csv"));
        let n = pan_slice(&dir.join(format!("train-{lang}.csv.gz")), 150, &slice);
        let truth =
            starling_corpus::bots_eval::read_truth(&dir.join(format!("truth-train-{lang}.tsv")))
                .expect("truth");
        // Score every author of the slice (most were among the model's training authors).
        let all: std::collections::HashMap<_, _> = truth
            .into_iter()
            .map(|(a, mut l)| {
                l.held_out = true;
                (a, l)
            })
            .collect();
        let s = starling_corpus::bots_eval::evaluate(
            &slice,
            &all,
            &CorpusConfig::default(),
            &tmp.path().join(lang),
        )
        .expect("corpus");
        assert_eq!((s.read, s.quarantined), (n as u64 * 100, 0), "{lang}");
        assert!(
            s.bots + s.humans == n as u64 && s.bots > 20 && s.humans > 20,
            "{s:?}"
        );
        assert!(s.precision >= 0.9 && s.recall >= 0.6, "{lang}: {s:?}");
        assert!(s.human_posts_removed <= 0.03, "{lang}: {s:?}");
    }
}

/// An author list keeps only its authors' posts (ids or handles, any case, `@` or not), counts the
/// rest under `author`, leaves posts that name no author alone, and is recorded with its checksum.
#[test]
fn an_author_list_keeps_only_its_authors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = tmp.path().join("posts.csv");
    let mut rows = String::from("author,text\n");
    let texts = [
        "the river froze over before dawn today",
        "my garden tomatoes finally turned red",
        "someone left the office window open again",
        "prices at the market doubled since spring",
        "we hung a paper lantern over the porch",
        "train delays ruined the whole commute",
        "reading an old novel about sailors tonight",
        "coffee tastes better in a heavy mug",
        "the library closes early on fridays now",
        "our cat refuses to leave the warm laptop",
        "snow is forecast for the mountain pass",
        "finished the marathon in under four hours",
        "the new bakery downtown sells rye loaves",
        "power went out during the championship game",
        "planted three maple saplings by the fence",
    ];
    for (i, text) in texts.iter().enumerate() {
        let author = ["alice", "bob", "Carol"][i / 5];
        rows.push_str(&format!("{author},\"{text}\"\n"));
    }
    std::fs::write(&csv, rows).expect("csv");
    let txt = tmp.path().join("notes.txt");
    std::fs::write(
        &txt,
        "a note with nobody named as its author\nanother line that says nothing of who wrote it\n",
    )
    .expect("txt");
    // Another source the list is not scoped to: its author is kept though unlisted.
    let other = tmp.path().join("other.csv");
    std::fs::write(
        &other,
        "author,text\ndave,\"ferry crossing was rough this morning\"\ndave,\"the violin recital starts at seven\"\n",
    )
    .expect("other");
    let list = tmp.path().join("humans.tsv");
    std::fs::write(&list, "author\ttype\nALICE\thuman\n@carol\thuman\n").expect("list");
    let mut config = CorpusConfig::default();
    config.curate.author_list = Some(list.clone());
    config.curate.author_list_inputs = vec![csv.clone(), txt.clone()];
    let out = tmp.path().join("out");
    let m = CorpusBuilder::new(config, vec![csv, txt, other])
        .build(&out, &mut |_| {})
        .expect("build");
    assert!(m.counts.balanced(), "{:?}", m.counts);
    assert_eq!(m.counts.filtered.get("author"), Some(&5), "{:?}", m.counts);
    assert_eq!(m.counts.kept, 14, "{:?}", m.counts);
    let source = m.author_list.as_ref().expect("recorded");
    assert_eq!((source.authors, source.inputs.len()), (2, 2));
    assert_eq!(
        source.sha256,
        starling_artifacts::sha256_file(&list).expect("sum").0
    );
    assert!(
        m.warnings.iter().all(|w| !w.contains("author")),
        "{:?}",
        m.warnings
    );
    for p in posts_of(&out) {
        let bob = p.author_handle.as_deref() == Some("bob");
        assert_eq!(p.verdict == Verdict::Author, bob, "{p:?}");
    }
    // A list naming nobody is refused before anything is read.
    std::fs::write(&list, "author\n").expect("list");
    let mut config = CorpusConfig::default();
    config.curate.author_list = Some(list.clone());
    let err = CorpusBuilder::new(config, vec![])
        .build(&tmp.path().join("none"), &mut |_| {})
        .expect_err("empty list");
    assert!(err.to_string().contains("humans.tsv"), "{err}");
}

/// A corpus directory written by this format version (committed) still reads; one that says it
/// is from another version is refused, naming the file and what to rebuild.
#[test]
fn committed_v1_corpus_reads_and_other_versions_are_refused_by_name() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus-v1");
    let c = starling_corpus::Corpus::open(&fixture).expect("the committed v1 corpus opens");
    let mut posts = 0u64;
    c.for_each_post(&mut |_| posts += 1).expect("posts");
    let m = &c.manifest;
    assert!(posts > 0 && m.counts.balanced(), "{posts} posts");
    // Training readers see the kept posts only: the filtered ones are written for the audit.
    let mut kept = 0u64;
    let passed = c.for_each_kept(&mut |_| kept += 1).expect("kept");
    assert_eq!((kept, kept + passed), (m.counts.kept, posts));
    assert!(passed > 0, "the fixture writes filtered posts too");
    c.verify().expect("checksums of the committed shards");
    let dir = tempfile::tempdir().expect("tmp");
    starling_artifacts::copy_dir(&fixture, dir.path()).expect("copy");
    let path = dir.path().join("manifest.json");
    let text = std::fs::read_to_string(&path).expect("manifest");
    std::fs::write(
        &path,
        text.replace("\"format_version\": 1", "\"format_version\": 2"),
    )
    .expect("patch");
    let e = starling_corpus::Corpus::open(dir.path())
        .expect_err("v2 refused")
        .to_string();
    assert!(
        e.contains("manifest.json") && e.contains("a newer starling"),
        "{e}"
    );
    assert!(e.contains("starling corpus"), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any bytes, under any of the names the readers sniff by, make a corpus run that ends
    /// normally with read = kept + filtered + quarantined (or, for a CSV with no text column, an
    /// error naming the file); nothing panics.
    #[test]
    fn any_bytes_are_read_or_quarantined_and_counts_add_up(
        pieces in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                proptest::strategy::Just(br#"{"id_str":"12","text":"hello #there @you","created_at":"Wed Oct 10 20:19:24 +0000 2018","user":{"id_str":"7","screen_name":"a"}}"#.to_vec()),
                proptest::strategy::Just(b"\n".to_vec()),
                proptest::strategy::Just(b"[{\"data\":[".to_vec()),
                proptest::strategy::Just("text,id\n\"a \u{201c}b\",1\n".as_bytes().to_vec()),
                proptest::strategy::Just(b"window.YTD.tweets.part0 = [".to_vec()),
            ],
            0..24,
        ),
        name in proptest::sample::select(vec!["in.jsonl", "in.json", "in.csv", "in.txt", "tweets.js"]),
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let input = dir.path().join(name);
        std::fs::write(&input, pieces.concat()).expect("write");
        // A record that cannot be used is quarantined; only a file that cannot be read at all
        // (a CSV without a text column) stops the run, naming the file.
        match CorpusBuilder::new(CorpusConfig::default(), vec![input.clone()])
            .build(&dir.path().join("out"), &mut |_| {})
        {
            Ok(m) => proptest::prop_assert!(m.counts.balanced(), "{:?}", m.counts),
            Err(e) => proptest::prop_assert!(
                name == "in.csv" && e.to_string().contains(&input.display().to_string()),
                "{e}"
            ),
        }
    }
}
