//! The content rules: each looks at the facts [`super::mime`] read and says whether it fired, and
//! why. Points are not here: they come from the table in `mod.rs` and the policy file.

use super::mime::Content;
use std::net::{Ipv4Addr, Ipv6Addr};

/// SpamAssassin's Generic Test for Unsolicited Bulk Email: a message containing it is spam, so
/// an administrator can test the whole chain with a harmless message.
pub(super) const GTUBE: &[u8] =
    b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A rule that fired: its name (a key of the points table) and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hit {
    pub name: &'static str,
    pub detail: String,
}

/// Every content rule on one message, in table order.
pub(super) fn check(raw: &[u8], c: &Content) -> Vec<Hit> {
    let checks: [(&'static str, Option<String>); 8] = [
        ("GTUBE", gtube(raw, c)),
        (
            "MISSING_DATE",
            (!c.has_date).then(|| "no Date header".into()),
        ),
        (
            "MISSING_MESSAGE_ID",
            (!c.has_message_id).then(|| "no Message-ID header".into()),
        ),
        ("FROM_FORGED_LOOKING", from_forged(c)),
        ("REPLY_TO_MISMATCH", reply_to_mismatch(c)),
        ("SUBJECT_ALL_CAPS", subject_all_caps(&c.subject)),
        (
            "HTML_ONLY",
            (c.has_html && !c.has_plain).then(|| "text/html without text/plain".into()),
        ),
        ("SUSPICIOUS_LINK", suspicious_link(c)),
    ];
    checks
        .into_iter()
        .filter_map(|(name, detail)| {
            Some(Hit {
                name,
                detail: detail?,
            })
        })
        .collect()
}

/// Anywhere in the raw message, or in the decoded text (a base64 body hides it from the former).
fn gtube(raw: &[u8], c: &Content) -> Option<String> {
    (contains(raw, GTUBE) || contains(c.text.as_bytes(), GTUBE)).then(|| "GTUBE test string".into())
}

/// Whether `needle` occurs in `hay`, in time linear in both (memchr's SIMD substring search).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// The display name shows an address in another domain than the real one:
/// `"support@bank.test" <x@elsewhere.test>`.
fn from_forged(c: &Content) -> Option<String> {
    let real = domain_of(&c.from_addr)?;
    let shown = c
        .from_name
        .split(|ch: char| ch.is_whitespace() || "<>()\"'[],;".contains(ch))
        .filter_map(domain_of)
        .find(|d| !same_org(d, &real))?;
    Some(format!("display name shows @{shown}, address is @{real}"))
}

fn reply_to_mismatch(c: &Content) -> Option<String> {
    let from = domain_of(&c.from_addr)?;
    let reply = domain_of(&c.reply_to)?;
    (!same_org(&from, &reply)).then(|| format!("Reply-To @{reply}, From @{from}"))
}

/// At least two words and ten letters, none of them lower case.
fn subject_all_caps(subject: &str) -> Option<String> {
    let letters = subject.chars().filter(|c| c.is_alphabetic());
    let upper = letters.clone().filter(|c| c.is_uppercase()).count();
    let words = subject
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    (upper >= 10 && upper == letters.count() && words >= 2).then(|| "subject in capitals".into())
}

/// A link whose text shows a URL on another domain than it goes to, or a link to a bare IP
/// address (in HTML or in plain text).
fn suspicious_link(c: &Content) -> Option<String> {
    for link in &c.links {
        let Some(target) = url_host(&link.href.to_lowercase()) else {
            continue;
        };
        if is_ip(&target) {
            return Some(format!("link to IP address {target}"));
        }
        let shown = link.text.trim().to_lowercase();
        if let Some(shown) = url_host(&shown)
            && !same_org(&shown, &target)
        {
            return Some(format!("link shows {shown}, goes to {target}"));
        }
    }
    plain_links(&c.text)
        .filter_map(|w| url_host(&w.to_lowercase()))
        .find(|h| is_ip(h))
        .map(|h| format!("link to IP address {h}"))
}

/// The words of `text` that begin with `http://` or `https://` (any case). Found from each
/// `://` rather than by walking every word: that second walk of the text was a tenth of the spam
/// stage's time on plain prose (benches/spam.rs).
fn plain_links(text: &str) -> impl Iterator<Item = &str> {
    memchr::memmem::find_iter(text.as_bytes(), b"://").filter_map(move |at| {
        let before = &text[..at];
        let start = [4, 5]
            .into_iter()
            .map(|n| at.checked_sub(n))
            .find_map(|start| {
                let start = start?;
                let scheme = before.get(start..)?;
                let at_word_start = before[..start]
                    .chars()
                    .next_back()
                    .is_none_or(char::is_whitespace);
                (at_word_start
                    && (scheme.eq_ignore_ascii_case("http")
                        || scheme.eq_ignore_ascii_case("https")))
                .then_some(start)
            })?;
        super::bayes::words(&text[start..]).next()
    })
}

/// The host of `http(s)://…` or `www.…` (lower-cased input): no user, no port, no trailing dot.
pub(super) fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.starts_with("www.").then_some(url))?;
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    // `http://bank.test@evil.test/` goes to evil.test.
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_string())
}

/// Dotted IPv4, an IPv6 literal, or the all-digit and hex forms browsers still accept.
fn is_ip(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok()
        || host.parse::<Ipv6Addr>().is_ok()
        || host.bytes().all(|b| b.is_ascii_digit())
        || host
            .strip_prefix("0x")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The domain of `local@domain`, lower-cased, if it looks like one.
fn domain_of(addr: &str) -> Option<String> {
    let (_, d) = addr.rsplit_once('@')?;
    let d = d.trim_end_matches(['.', '>']).to_ascii_lowercase();
    (d.contains('.') && !d.starts_with('.')).then_some(d)
}

/// Whether two host names belong to the same organisation, approximately: same registrable
/// domain by [`org_domain`]. Without the Public Suffix List this errs towards "same".
pub(super) fn same_org(a: &str, b: &str) -> bool {
    org_domain(a).eq_ignore_ascii_case(org_domain(b))
}

/// The last two labels, or three under a country code whose second level is a common public
/// suffix (`example.co.uk`, `example.com.au`). Unknown second levels count as registrable, so two
/// hosts under one of them compare as "same": the rules using this then stay quiet.
pub(super) fn org_domain(host: &str) -> &str {
    let host = host.trim_end_matches('.');
    let labels: Vec<&str> = host.rsplitn(4, '.').collect();
    let keep = match labels.as_slice() {
        [tld, second, _, ..] if tld.len() == 2 && PUBLIC_SECOND_LEVEL.contains(second) => 3,
        _ => 2,
    };
    if labels.len() <= keep {
        return host;
    }
    let cut: usize = labels[..keep].iter().map(|l| l.len() + 1).sum();
    &host[host.len() + 1 - cut..]
}

/// Second-level labels under which country codes register names (`co.uk`, `com.br`, `ac.jp`).
const PUBLIC_SECOND_LEVEL: &[&str] = &[
    "ac", "asso", "co", "com", "edu", "go", "gob", "gouv", "gov", "govt", "gv", "ltd", "mil", "ne",
    "net", "nhs", "nic", "nom", "or", "org", "plc", "sch",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spam::mime;

    fn fired(raw: &str) -> Vec<&'static str> {
        let c = mime::read(raw.as_bytes());
        check(raw.as_bytes(), &c)
            .into_iter()
            .map(|h| h.name)
            .collect()
    }

    const CLEAN: &str = "From: Anna Smith <anna@mail.example.com>\r\n\
Reply-To: anna@example.com\r\n\
To: bob@example.org\r\n\
Subject: Minutes of Tuesday's meeting\r\n\
Date: Tue, 3 Jun 2025 10:00:00 +0200\r\n\
Message-ID: <1@mail.example.com>\r\n\
Content-Type: multipart/alternative; boundary=b\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
See https://www.example.com/minutes and https://docs.example.com/x\r\n\
--b\r\n\
Content-Type: text/html\r\n\
\r\n\
<p>See <a href=\"https://www.example.com/minutes\">https://www.example.com/minutes</a></p>\r\n\
--b--\r\n";

    #[test]
    fn clean_message_fires_nothing() {
        assert_eq!(fired(CLEAN), Vec::<&str>::new());
    }

    /// Each rule on a message crafted to trigger it alone (the clean message, one thing changed).
    #[test]
    fn each_rule_fires_alone() {
        let gtube = std::str::from_utf8(GTUBE).unwrap();
        let cases: &[(&str, &str, &str)] = &[
            ("GTUBE", "See https", gtube),
            (
                "MISSING_DATE",
                "Date: Tue, 3 Jun 2025 10:00:00 +0200\r\n",
                "",
            ),
            (
                "MISSING_MESSAGE_ID",
                "Message-ID: <1@mail.example.com>\r\n",
                "",
            ),
            (
                "FROM_FORGED_LOOKING",
                "From: Anna Smith <",
                "From: \"security@paypal.com\" <",
            ),
            (
                "REPLY_TO_MISMATCH",
                "Reply-To: anna@example.com",
                "Reply-To: anna@example.net",
            ),
            (
                "SUBJECT_ALL_CAPS",
                "Subject: Minutes of Tuesday's meeting",
                "Subject: MINUTES OF TUESDAY'S MEETING",
            ),
            (
                "HTML_ONLY",
                "Content-Type: text/plain\r\n\r\n",
                "Content-Type: image/png\r\n\r\n",
            ),
            (
                "SUSPICIOUS_LINK",
                "<a href=\"https://www.example.com/minutes\">",
                "<a href=\"https://example.com.evil.test/minutes\">",
            ),
            (
                "SUSPICIOUS_LINK",
                "https://docs.example.com/x",
                "http://192.0.2.1/x",
            ),
            (
                "SUSPICIOUS_LINK",
                "<a href=\"https://www.example.com/minutes\">",
                "<a href=\"http://3221225985/\">",
            ),
        ];
        for (rule, from, to) in cases {
            assert!(CLEAN.contains(from), "{rule}: {from}");
            let raw = CLEAN.replacen(from, to, 1);
            assert_eq!(fired(&raw), vec![*rule], "{rule}:\n{raw}");
        }
    }

    #[test]
    fn near_misses_do_not_fire() {
        let cases: &[(&str, &str)] = &[
            // A display name with the sender's own address, or a subdomain of it.
            ("From: Anna Smith <", "From: \"anna@example.com\" <"),
            // Short or single-word capitals.
            ("Subject: Minutes of Tuesday's meeting", "Subject: URGENT"),
            (
                "Subject: Minutes of Tuesday's meeting",
                "Subject: RE: FYI ASAP",
            ),
            // Link text that is not a URL.
            ("https://www.example.com/minutes</a>", "the minutes</a>"),
        ];
        for (from, to) in cases {
            let raw = CLEAN.replacen(from, to, 1);
            assert_eq!(fired(&raw), Vec::<&str>::new(), "{to}");
        }
    }

    /// The links of plain text are the words that begin with a web scheme, as splitting the
    /// text into words and testing each finds them.
    #[test]
    fn plain_links_are_whole_words_with_a_web_scheme() {
        let text = "see http://a.test/x and HTTPS://b.test, xhttp://c.test \
                    \u{a0}https://d.test\u{2003}end (http://e.test) https://\nhttp:/f.test \
                    café://g.test https://h.test://i http://";
        let by_words: Vec<&str> = text
            .split_whitespace()
            .filter(|w| {
                let l = w.to_ascii_lowercase();
                l.starts_with("http://") || l.starts_with("https://")
            })
            .collect();
        assert_eq!(plain_links(text).collect::<Vec<_>>(), by_words);
        assert_eq!(
            by_words,
            [
                "http://a.test/x",
                "HTTPS://b.test,",
                "https://d.test",
                "https://",
                "https://h.test://i",
                "http://"
            ]
        );
    }

    #[test]
    fn hosts_and_domains() {
        let hosts: &[(&str, Option<&str>)] = &[
            ("http://a.test/x", Some("a.test")),
            ("https://user@b.test:8080?q", Some("b.test")),
            ("http://bank.test@evil.test/", Some("evil.test")),
            ("http://[2001:db8::1]/", Some("2001:db8::1")),
            ("www.c.test.", Some("www.c.test")),
            ("ftp://d.test", None),
            ("http://", None),
        ];
        for (url, want) in hosts {
            assert_eq!(url_host(url).as_deref(), *want, "{url}");
        }
        let orgs = [
            ("mail.example.com", "example.com"),
            ("example.com", "example.com"),
            ("com", "com"),
            ("a.b.example.co.uk", "example.co.uk"),
            ("www.example.fr", "example.fr"),
            ("x.example.gouv.fr", "example.gouv.fr"),
            ("mail.ibm.de", "ibm.de"),
        ];
        for (host, org) in orgs {
            assert_eq!(org_domain(host), org, "{host}");
        }
        for ip in ["192.0.2.1", "2001:db8::1", "3221225985", "0xc0000201"] {
            assert!(is_ip(ip), "{ip}");
        }
        assert!(!is_ip("example.com") && !is_ip("0x"));
    }
}
