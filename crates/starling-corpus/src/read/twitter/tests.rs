//! Tests of `twitter`.

use super::*;

#[test]
fn times() {
    let a = parse_time("Wed Aug 27 13:08:45 +0000 2008").map(|t| t.timestamp());
    assert_eq!(a, Some(1219842525));
    let b = parse_time("2022-01-05T12:00:00.000Z").map(|t| t.timestamp());
    assert_eq!(b, Some(1641384000));
    let c = parse_time("2015-02-24 11:35:52 -0800").map(|t| t.timestamp());
    assert_eq!(c, Some(1424806552));
}
