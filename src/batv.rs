//! Signed return paths (BATV, `prvs=` form): the envelope sender of our outbound mail becomes
//! `prvs=KDDDSSSSSS=alice@example.org` — a key number, the day, and an HMAC of both with the
//! address. A bounce (empty sender) to such an address with a valid, recent signature answers
//! mail we really sent, so it is delivered (to `alice@example.org`) where the empty-sender rule
//! would otherwise delete it; forged bounces (backscatter) carry no valid signature.
//!
//! The key is made at first start and kept in the store, so every node signs and checks alike.

use ring::hmac;

/// Signs `address` for `day` (days since the Unix epoch).
pub fn sign(key: &[u8], address: &str, day: u64) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.to_owned();
    };
    if local.starts_with("prvs=") {
        return address.to_owned();
    }
    let ddd = day % 1000;
    let mac = tag(key, ddd, address);
    format!("prvs=0{ddd:03}{mac}={local}@{domain}")
}

/// The original address of a signed one, and whether its signature is valid and at most
/// `max_days` old. Addresses that are not signed give None.
pub fn verify(key: &[u8], signed: &str, today: u64, max_days: u64) -> Option<(String, bool)> {
    let (local, domain) = signed.rsplit_once('@')?;
    let rest = local.strip_prefix("prvs=")?;
    let (tag_part, original_local) = rest.split_once('=')?;
    let original = format!("{original_local}@{domain}");
    if tag_part.len() != 10 || !tag_part.starts_with('0') {
        return Some((original, false));
    }
    // `get`: a client's tag may put a multi-byte character across octet 4 (found by fuzzing).
    let Some(ddd) = tag_part.get(1..4).and_then(|d| d.parse::<u64>().ok()) else {
        return Some((original, false));
    };
    let age = (today % 1000 + 1000 - ddd) % 1000;
    let expected = tag(key, ddd, &original.to_ascii_lowercase());
    let matches = same(
        expected.as_bytes(),
        tag_part[4..].to_ascii_lowercase().as_bytes(),
    );
    Some((original, matches && age <= max_days))
}

fn tag(key: &[u8], ddd: u64, address: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mac = hmac::sign(
        &k,
        format!("{ddd:03}{}", address.to_ascii_lowercase()).as_bytes(),
    );
    hex::encode(&mac.as_ref()[..3])
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Days since the Unix epoch, now.
pub fn today() -> u64 {
    (crate::store::now_ms() / 86_400_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let key = b"0123456789abcdef0123456789abcdef";
        let s = sign(key, "Alice@example.test", 20_000);
        assert!(
            s.starts_with("prvs=0000") && s.ends_with("=Alice@example.test"),
            "{s}"
        );
        assert_eq!(
            verify(key, &s, 20_000, 7),
            Some(("Alice@example.test".into(), true))
        );
        assert_eq!(
            verify(key, &s, 20_007, 7),
            Some(("Alice@example.test".into(), true))
        );
        assert_eq!(
            verify(key, &s, 20_008, 7),
            Some(("Alice@example.test".into(), false))
        );
        // Another key, a changed address or a changed day: invalid.
        assert!(!verify(b"other", &s, 20_000, 7).unwrap().1);
        let forged = s.replace("=Alice@", "=Bob@");
        assert!(!verify(key, &forged, 20_000, 7).unwrap().1);
        assert_eq!(verify(key, "alice@example.test", 20_000, 7), None);
        assert_eq!(sign(key, &s, 20_000), s, "never signed twice");
    }

    #[test]
    fn tags_with_multibyte_characters_are_invalid_not_a_panic() {
        // Ten octets, with a character across the day digits (fuzz/regressions/smtp_command).
        for signed in [
            "prvs=0\u{1f600}bcdef=alice@example.test",
            "prvs=0a\u{20ac}bbbbb=alice@example.test",
            "prvs=0ab\u{e9}bbbbb=alice@example.test",
        ] {
            assert_eq!(
                verify(b"key", signed, 20_000, 7),
                Some(("alice@example.test".into(), false)),
                "{signed}"
            );
        }
    }
}
