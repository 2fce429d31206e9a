//! The scorer as the pipeline and `passerelle score` use it, with the shipped model.

use super::*;
use std::time::{Duration, Instant};

fn scorer() -> Scorer {
    Scorer::new(&SpamConfig::default()).expect("built-in model loads")
}

fn names(s: &Score) -> Vec<&str> {
    s.rules.iter().map(|r| r.name.as_str()).collect()
}

fn rule(name: &str, points: i32) -> Rule {
    Rule {
        name: name.into(),
        points,
        detail: String::new(),
    }
}

const BUSINESS: &str = "From: Anna Martin <anna.martin@example.com>\r\n\
To: Tom Weber <tom@example.org>\r\n\
Subject: Re: budget review on Thursday\r\n\
Date: Tue, 3 Jun 2025 10:12:00 +0200\r\n\
Message-ID: <20250603101200.4711@mail.example.com>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hi Tom,\r\n\
\r\n\
thanks for the draft. I went through the numbers with Paul yesterday and I think\r\n\
the travel line is still too high; could you check it against last year's report\r\n\
before we meet? Thursday at 10 works for me, otherwise Friday afternoon.\r\n\
\r\n\
I also attached my notes from the call with the auditors. Nothing urgent, but we\r\n\
should agree on who writes the summary for the board.\r\n\
\r\n\
Best regards,\r\n\
Anna\r\n";

const SPAM: &str = "From: \"Best Deals\" <offers4you8821@bestdeals.example>\r\n\
To: undisclosed-recipients:;\r\n\
Subject: MAKE MONEY FAST FROM HOME\r\n\
Content-Type: text/html; charset=iso-8859-1\r\n\
\r\n\
<html><body><font size=5 color=red><b>Dear Friend,</b></font><br>\r\n\
You have been selected to receive this EXCLUSIVE offer! Earn $5000 a week from home,\r\n\
no experience needed. This is 100% FREE and 100% legal. Act now, limited time offer!<br>\r\n\
Click here to order now:\r\n\
<a href=\"http://203.0.113.9/order\">http://www.bestdeals.example</a><br>\r\n\
Millions of dollars are waiting for you. Get paid, guaranteed income, risk free!<br>\r\n\
To be removed from our mailing list, click here to unsubscribe\r\n\
and reply with REMOVE in the subject.\r\n\
</body></html>\r\n";

#[test]
fn shipped_model_separates_plain_business_from_spam() {
    let s = scorer();
    let business = s.score(BUSINESS.as_bytes(), &[]);
    assert!(business.total < 50, "{}", business.header_value());
    let spam = s.score(SPAM.as_bytes(), &[]);
    assert!(spam.total >= 50, "{}", spam.header_value());
    assert!(
        names(&spam).iter().any(|n| n.starts_with("BAYES_9")),
        "{}",
        spam.header_value()
    );
}

#[test]
fn gtube_scores_100_whatever_else() {
    let gtube = std::str::from_utf8(rules::GTUBE).unwrap();
    let s = scorer();
    let plain = BUSINESS.replace("Best regards", gtube);
    let b64 = format!(
        "Subject: test\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        base64(gtube.as_bytes())
    );
    for raw in [plain, b64] {
        let score = s.score(raw.as_bytes(), &[rule("DKIM_PASS", -50)]);
        assert_eq!(score.total, 100, "{}", score.header_value());
        assert_eq!(score.rules[0].name, "GTUBE");
    }
}

#[test]
fn content_alone_never_reaches_100_and_totals_are_clamped() {
    let s = scorer();
    // Every content rule at once, and a spammy text.
    let worst = SPAM
        .replace("From: \"Best Deals\"", "From: \"service@paypal.com\"")
        .replace(
            "To: undisclosed",
            "Reply-To: x@elsewhere.example\r\nTo: undisclosed",
        );
    let score = s.score(worst.as_bytes(), &[]);
    let content: i32 = score.rules.iter().map(|r| r.points).sum();
    assert!(content > 100, "{}", score.header_value());
    assert_eq!(score.total, CONTENT_CAP as u8, "{}", score.header_value());
    // Non-content evidence from other stages takes it over the line.
    let with_dnsbl = s.score(worst.as_bytes(), &[rule("DNSBL_LISTED", 10)]);
    assert_eq!(with_dnsbl.total, 100);
    assert_eq!(s.score(BUSINESS.as_bytes(), &[rule("X", -500)]).total, 0);
    assert_eq!(s.score(BUSINESS.as_bytes(), &[rule("X", 500)]).total, 100);
    let extreme = [
        rule("A", i32::MAX),
        rule("B", i32::MAX),
        rule("C", i32::MIN),
    ];
    assert_eq!(s.score(BUSINESS.as_bytes(), &extreme).total, 100);
}

#[test]
fn extra_rules_add_and_are_listed() {
    let s = scorer();
    let base = s.score(BUSINESS.as_bytes(), &[]);
    let extra = [rule("SPF_FAIL", 20), rule("DMARC_FAIL", 25)];
    let with = s.score(BUSINESS.as_bytes(), &extra);
    let content: i32 = base.rules.iter().map(|r| r.points).sum();
    assert_eq!(
        i32::from(with.total),
        (content + 45).clamp(0, 100),
        "{} / {}",
        base.header_value(),
        with.header_value()
    );
    for e in &extra {
        assert!(with.rules.contains(e));
    }
    assert!(with.rules.windows(2).all(|w| w[0].points >= w[1].points));
}

#[test]
fn header_value_format() {
    let score = Score {
        total: 62,
        rules: vec![
            rule("BAYES_95", 55),
            rule("MISSING_DATE", 10),
            rule("DNSBL zen\r\nX-Evil: 1", 5),
        ],
    };
    assert_eq!(
        score.header_value(),
        "62 (BAYES_95=55, MISSING_DATE=10, DNSBL_zen__X-Evil__1=5)"
    );
    let none = Score {
        total: 0,
        rules: vec![],
    };
    assert_eq!(none.header_value(), "0 ()");
}

#[test]
fn policy_points_override_and_turn_off() {
    let config = SpamConfig {
        rules: [
            ("HTML_ONLY".to_string(), 0),
            ("SUSPICIOUS_LINK".to_string(), 40),
        ]
        .into(),
        ..SpamConfig::default()
    };
    let s = Scorer::new(&config).unwrap();
    let score = s.score(SPAM.as_bytes(), &[]);
    assert!(
        !names(&score).contains(&"HTML_ONLY"),
        "{}",
        score.header_value()
    );
    assert!(score.rules.contains(&Rule {
        name: "SUSPICIOUS_LINK".into(),
        points: 40,
        detail: "link to IP address 203.0.113.9".into(),
    }));
}

#[test]
fn config_errors_name_their_key() {
    let cases: &[(&str, &str)] = &[
        (
            "tag_at = 140",
            "policy.spam.tag_at: expected 0..=100, got 140",
        ),
        (
            "delete_at = 40",
            "policy.spam.tag_at: must not be above delete_at (50 > 40)",
        ),
        (
            "rules = { NO_SUCH = 3 }",
            "policy.spam.rules.NO_SUCH: unknown rule; known rules: GTUBE, ",
        ),
        (
            "model = \"/nonexistent/spam.model\"",
            "policy.spam.model: reading /nonexistent",
        ),
    ];
    for (toml_text, want) in cases {
        let config: SpamConfig = toml::from_str(toml_text).unwrap();
        let err = format!("{:#}", Scorer::new(&config).unwrap_err());
        assert!(err.contains(want), "{toml_text}: {err}");
    }
    assert!(toml::from_str::<SpamConfig>("tag = 3").is_err());
    let defaults: SpamConfig = toml::from_str("").unwrap();
    assert_eq!(defaults, SpamConfig::default());
}

/// Each hostile message is scored quickly and without panicking, in a debug build.
#[test]
fn hostile_inputs_are_quick() {
    let s = scorer();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    let mut huge_header = b"Subject: ".to_vec();
    huge_header.resize(10 << 20, b'a');
    huge_header.extend_from_slice(b"\r\n\r\nbody\r\n");
    cases.push(("10 MB header line", huge_header));

    let mut many_headers = Vec::new();
    while many_headers.len() < 10 << 20 {
        many_headers.extend_from_slice(b"X-A: b\r\n");
    }
    cases.push(("10 MB of headers", many_headers));

    let mut nested = b"Subject: x\r\n".to_vec();
    for i in 0..10_000 {
        nested.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    nested.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhello\r\n");
    cases.push(("10k nested multiparts", nested));

    // mail-parser's full parse takes seconds on this: each part's boundary is never found.
    let mut missing = b"Content-Type: multipart/mixed; boundary=p\r\n\r\n".to_vec();
    while missing.len() < 10 << 20 {
        missing.extend_from_slice(b"--p\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\nx\r\n");
    }
    cases.push(("10 MB of parts with missing boundaries", missing));

    let mut rfc822 = b"Subject: x\r\n".to_vec();
    for _ in 0..10_000 {
        rfc822.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    cases.push(("10k nested messages", rfc822));

    let mut html = b"Content-Type: text/html\r\n\r\n".to_vec();
    while html.len() < 10 << 20 {
        html.extend_from_slice(b"<a href=\"http://1.2.3.4/\">http://x.test</a><!-- <'\"&#x;&");
    }
    cases.push(("10 MB of links, comments and entities", html));

    let mut gtube_prefixes = b"Subject: x\r\n\r\n".to_vec();
    while gtube_prefixes.len() < 10 << 20 {
        gtube_prefixes.extend_from_slice(&rules::GTUBE[..60]);
    }
    cases.push(("10 MB of near-GTUBE", gtube_prefixes));

    let garbage: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    cases.push(("1 MB of binary noise", garbage));
    cases.push(("empty", Vec::new()));
    cases.push(("mbox line only", b"From x".to_vec()));

    for (name, raw) in cases {
        let started = Instant::now();
        let score = s.score(&raw, &[]);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{name}: {took:?} ({})",
            score.header_value()
        );
    }
}

#[test]
fn train_then_cross_validate_a_synthetic_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let (ham_dir, spam_dir) = (dir.path().join("ham"), dir.path().join("spam"));
    let ham_words = [
        "meeting",
        "agenda",
        "project",
        "schedule",
        "budget",
        "minutes",
        "review",
        "thursday",
        "colleagues",
        "draft",
        "report",
        "invoice",
    ];
    let spam_words = [
        "viagra",
        "casino",
        "winner",
        "lottery",
        "cheap",
        "pills",
        "bonus",
        "jackpot",
        "prize",
        "unclaimed",
        "rolex",
        "replica",
    ];
    for (folder, words) in [(&ham_dir, &ham_words), (&spam_dir, &spam_words)] {
        std::fs::create_dir_all(folder.join("nested")).unwrap();
        for i in 0..20 {
            let body: Vec<&str> = (0..30)
                .map(|j| words[(i * 7 + j * 5) % words.len()])
                .collect();
            let raw = format!(
                "From: a{i}@example.com\r\nDate: Tue, 3 Jun 2025 10:00:00 +0200\r\n\
                 Message-ID: <{i}@example.com>\r\nSubject: {}\r\n\r\n{}\r\n",
                words[i % words.len()],
                body.join(" ")
            );
            let sub = if i % 2 == 0 { "nested" } else { "" };
            std::fs::write(folder.join(sub).join(format!("{i}.eml")), raw).unwrap();
        }
    }

    let (ham, spam) = ([ham_dir], [spam_dir]);
    let bytes = train(&ham, &spam).unwrap();
    let model = bayes::Model::load(&bytes).unwrap();
    assert_eq!(model.messages(), (20, 20));
    assert_eq!(model.save(), bytes, "model round-trips through save/load");

    let path = dir.path().join("spam.model");
    std::fs::write(&path, &bytes).unwrap();
    let s = Scorer::new(&SpamConfig {
        model: Some(path),
        ..SpamConfig::default()
    })
    .unwrap();
    let spammy = "Subject: jackpot winner\r\n\r\ncheap pills casino bonus prize lottery rolex\r\n";
    assert!(s.score(spammy.as_bytes(), &[]).total >= 50);

    let report = cross_validate(&ham, &spam, 5).unwrap();
    assert_eq!((report.ham.messages, report.spam.messages), (20, 20));
    assert_eq!(report.messages.len(), 40);
    assert_eq!((report.ham.tagged, report.ham.deleted), (0, 0), "{report}");
    assert_eq!(report.spam.tagged, 20, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("spam scored >= 50  100.00 %  (20 of 20)"),
        "{text}"
    );

    assert!(train(&ham, &[]).is_err());
    assert!(cross_validate(&ham, &spam, 1).is_err());
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
