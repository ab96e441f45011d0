//! The official twitter-text conformance suite (`../shared/data/twitter-text-conformance/`), read at
//! test time. Prints pass counts per section and fails below the floors in `conformance_floor.txt`.

use serde_yaml::Value;
use starling_text::{extract_entities, weighted_length_with, EntityKind, LengthConfig};
use std::collections::BTreeMap;
use std::path::Path;

fn load(dir: &Path, file: &str) -> BTreeMap<String, Vec<Value>> {
    let text = std::fs::read_to_string(dir.join(file)).expect("read yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("parse yaml");
    let mut out = BTreeMap::new();
    if let Some(tests) = doc.get("tests").and_then(Value::as_mapping) {
        for (k, v) in tests {
            let cases = v.as_sequence().cloned().unwrap_or_default();
            out.insert(k.as_str().unwrap_or_default().to_string(), cases);
        }
    }
    out
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn span(v: &Value) -> (usize, usize) {
    let i = v
        .get("indices")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    let n = |k: usize| i.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX) as usize;
    (n(0), n(1))
}

/// Runs one extract.yml section; `Err` carries a printable mismatch.
fn extract_case(section: &str, text: &str, expected: &Value) -> Result<(), String> {
    let e = extract_entities(text);
    let names = |v: &[starling_text::Entity], kind: Option<EntityKind>| -> Vec<String> {
        v.iter()
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .map(|e| e.text.clone())
            .collect()
    };
    let with_idx =
        |v: &[starling_text::Entity], kind: Option<EntityKind>| -> Vec<(String, usize, usize)> {
            v.iter()
                .filter(|e| kind.is_none_or(|k| e.kind == k))
                .map(|e| (e.text.clone(), e.start, e.end))
                .collect()
        };
    let exp_idx = |key: &str| -> Vec<(String, usize, usize)> {
        expected
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|x| {
                        let (a, b) = span(x);
                        let mut name = x
                            .get(key)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        if let Some(slug) = x.get("list_slug").and_then(Value::as_str) {
                            if !slug.is_empty() {
                                name = format!("{name}{slug}");
                            }
                        }
                        (name, a, b)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (got, want): (Vec<String>, Vec<String>) = match section {
        "mentions" => (
            names(&e.mentions, Some(EntityKind::Mention)),
            strs(expected),
        ),
        "mentions_with_indices" => (
            fmt(with_idx(&e.mentions, Some(EntityKind::Mention))),
            fmt(exp_idx("screen_name")),
        ),
        "mentions_or_lists_with_indices" => (
            fmt(with_idx(&e.mentions, None)),
            fmt(exp_idx("screen_name")),
        ),
        "replies" => {
            let got = starling_text::reply_to(text);
            let want = expected.as_str().map(String::from);
            (got.into_iter().collect(), want.into_iter().collect())
        }
        "urls" => (names(&e.urls, None), strs(expected)),
        "urls_with_indices" | "tco_urls_with_params" | "urls_with_directional_markers" => {
            (fmt(with_idx(&e.urls, None)), fmt(exp_idx("url")))
        }
        "hashtags" | "hashtags_from_astral" => (names(&e.hashtags, None), strs(expected)),
        "hashtags_with_indices" => (fmt(with_idx(&e.hashtags, None)), fmt(exp_idx("hashtag"))),
        "cashtags" => (names(&e.cashtags, None), strs(expected)),
        "cashtags_with_indices" => (fmt(with_idx(&e.cashtags, None)), fmt(exp_idx("cashtag"))),
        other => return Err(format!("unknown section {other}")),
    };
    if section == "tco_urls_with_params"
        && expected.is_sequence()
        && expected
            .as_sequence()
            .is_some_and(|s| s.first().is_some_and(Value::is_string))
    {
        let got = names(&e.urls, None);
        return if got == strs(expected) {
            Ok(())
        } else {
            Err(format!("got {got:?} want {:?}", strs(expected)))
        };
    }
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?} want {want:?}"))
    }
}

fn fmt(v: Vec<(String, usize, usize)>) -> Vec<String> {
    v.into_iter()
        .map(|(s, a, b)| format!("{s}@{a}-{b}"))
        .collect()
}

fn validate_case(section: &str, text: &str, expected: &Value, dir: &Path) -> Result<(), String> {
    let cfg = |v: &str| {
        LengthConfig::from_json(
            &std::fs::read_to_string(dir.join(format!("config-{v}.json"))).unwrap_or_default(),
        )
    };
    let check_weighted = |config: LengthConfig| {
        let r = weighted_length_with(text, &config);
        let g = |k: &str| expected.get(k).and_then(Value::as_i64).unwrap_or(i64::MIN);
        let got = (
            r.weighted_length as i64,
            r.permillage as i64,
            r.valid,
            r.display_range.0 as i64,
            r.display_range.1 as i64,
            r.valid_range.0 as i64,
            r.valid_range.1 as i64,
        );
        let want = (
            g("weightedLength"),
            g("permillage"),
            expected
                .get("valid")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            g("displayRangeStart"),
            g("displayRangeEnd"),
            g("validRangeStart"),
            g("validRangeEnd"),
        );
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?} want {want:?}"))
        }
    };
    let want_bool = expected.as_bool().unwrap_or(false);
    let got_bool = match section {
        "WeightedTweetsCounterTest" => return check_weighted(cfg("v2")),
        "WeightedTweetsWithDiscountedEmojiCounterTest" | "UnicodeDirectionalMarkerCounterTest" => {
            return check_weighted(cfg("v3"))
        }
        // These cases predate 280 characters ("Invalid Tweet: 141 characters"): v1 rules.
        "tweets" => weighted_length_with(text, &cfg("v1")).valid,
        "usernames" => starling_text::is_valid_username(text),
        "lists" => starling_text::is_valid_list(text),
        "hashtags" => starling_text::is_valid_hashtag(text),
        "urls" => starling_text::is_valid_url(text, true),
        "urls_without_protocol" => starling_text::is_valid_url(text, false),
        other => return Err(format!("unknown section {other}")),
    };
    if got_bool == want_bool {
        Ok(())
    } else {
        Err(format!("got {got_bool} want {want_bool}"))
    }
}

fn floors() -> BTreeMap<String, usize> {
    let text = include_str!("conformance_floor.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn twitter_text_conformance() {
    let Some(dir) = starling_testkit::shared_data("twitter-text-conformance") else {
        return;
    };
    let floors = floors();
    let mut report = Vec::new();
    let mut below = Vec::new();
    let verbose = std::env::var("CONFORMANCE_VERBOSE").is_ok();
    for file in ["extract.yml", "validate.yml", "tlds.yml"] {
        for (section, cases) in load(&dir, file) {
            let mut pass = 0;
            for case in &cases {
                let text = case.get("text").and_then(Value::as_str).unwrap_or_default();
                let expected = case.get("expected").cloned().unwrap_or(Value::Null);
                let r = match file {
                    "extract.yml" => extract_case(&section, text, &expected),
                    "validate.yml" => validate_case(&section, text, &expected, &dir),
                    _ => extract_case("urls", text, &expected),
                };
                match r {
                    Ok(()) => pass += 1,
                    Err(msg) if verbose => {
                        let d = case
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        eprintln!("FAIL {file}/{section}: {d}: {text:?}: {msg}");
                    }
                    Err(_) => {}
                }
            }
            let key = format!("{}/{section}", file.trim_end_matches(".yml"));
            let floor = floors.get(&key).copied().unwrap_or(cases.len());
            report.push(format!(
                "{key:<55} {pass:>4} / {:<4} (floor {floor})",
                cases.len()
            ));
            if pass < floor {
                below.push(key);
            }
        }
    }
    println!("twitter-text conformance:\n{}", report.join("\n"));
    assert!(below.is_empty(), "below floor: {below:?}");
}
