//! Good and broken policy files → exact errors, each with its key path.

use super::*;

const MINIMAL: &str = r#"
[tls]
generate_if_missing = true
certificate = "/nonexistent/cert.pem"
private_key = "/nonexistent/key.pem"

[[listeners]]
name = "mx"
address = "127.0.0.1:0"
"#;

fn errors(text: &str) -> Vec<String> {
    match parse(text.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../config/passerelle.example.toml");
    let c = parse(text.as_bytes()).expect("the example config must be valid");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[1].tls, ListenerTls::Implicit);
    assert_eq!(c.relay.domains["example.test"].next_hop, "127.0.0.1:2526");
    assert_eq!(c.queue.lifetime, std::time::Duration::from_secs(5 * 86400));
    assert_eq!(c.session.max_message_size, 52_428_800);
}

#[test]
fn minimal_file_gets_defaults() {
    let c = parse(MINIMAL.as_bytes()).unwrap();
    assert_eq!(c.session.bare_lf, BareLf::Reject);
    assert_eq!(c.queue.retry.len(), 5);
    assert_eq!(c.store.url, "sqlite://var/passerelle.db");
    assert_eq!(c.hash.len(), 16);
}

#[test]
fn every_error_is_reported_with_its_key_path() {
    let text = format!(
        r#"{MINIMAL}
[[listeners]]
name = "mx"
address = "not an address"
tsl = "implicit"

[session]
max_connections = "many"
bare_lf = "ignore"
data_timeout = "soon"
max_hops = 0

[relay]
networks = ["10.0.0.0/8", "10.0.0.0/33"]
[relay.domains."example.test"]
next_hop = "mail.example.test"
[relay.domains."bad domain"]
next_hop = "127.0.0.1:25"
color = "blue"

[queue]
retry = []

[store]
url = "mysql://x"

[dns]
nameservers = ["8.8.8.8"]

[admni]
x = 1
"#
    );
    let got = errors(&text);
    let want = [
        "admni: unknown section",
        "listeners[1].tsl: unknown field `tsl`",
        "session.max_connections: invalid type: string \"many\", expected usize",
        "session.data_timeout: ",
        "session.bare_lf: unknown variant `ignore`",
        "relay.domains.\"bad domain\".color: unknown field `color`",
        "listeners[1].name: \"mx\" is used twice",
        "listeners[1].address: expected ip:port, got \"not an address\"",
        "relay.networks[1]: expected a network like",
        "relay.domains.\"bad domain\": not a valid domain name",
        "relay.domains.\"example.test\".next_hop: expected host:port, got \"mail.example.test\"",
        "queue.retry: needs at least one wait",
        "session.max_hops: must be at least 1",
        "store.url: expected sqlite://PATH or postgres://…, got \"mysql://x\"",
        "dns.nameservers[0]: expected ip:port, got \"8.8.8.8\"",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
}

#[test]
fn syntax_errors_name_the_line() {
    let got = errors("[server]\nhostname = \n");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("TOML syntax:") && got[0].contains("line 2"),
        "{got:?}"
    );
}

#[test]
fn missing_certificate_is_an_error_unless_generated() {
    let text = MINIMAL.replace("generate_if_missing = true", "");
    let got = errors(&text);
    assert_eq!(
        got,
        [
            "tls.certificate: file not found: /nonexistent/cert.pem",
            "tls.private_key: file not found: /nonexistent/key.pem"
        ]
    );
}

#[test]
fn store_password_is_not_printed() {
    assert_eq!(
        redact_url("postgres://app:s3cret@db/mail"),
        "postgres://app:***@db/mail"
    );
    assert_eq!(redact_url("sqlite://var/p.db"), "sqlite://var/p.db");
}

#[test]
fn trust_space_needs_its_ca_and_lists_only_peers() {
    let text = format!(
        "{MINIMAL}\n[relay.domains.\"example.org\"]\nnext_hop = \"127.0.0.1:25\"\n\
         [trust]\ndomains = [\"hopital-a.example\", \"example.org\", \"Bad..Name\"]\n\
         ca = \"/nonexistent/trust-ca.pem\"\n\
         [delivery]\ntls = \"trust-space\"\n\
         [store]\nretention = \"0s\"\n"
    );
    let got = errors(&text);
    for want in [
        "trust.domains[1]: \"example.org\" is one of our own domains",
        "trust.domains[2]: \"Bad..Name\" is not a lower-case domain name",
        "trust.ca: file not found: /nonexistent/trust-ca.pem",
        "trust.certificate: required when trust.domains is set",
        "trust.key: required when trust.domains is set",
        "delivery.tls: \"trust-space\" is chosen by itself",
        "store.retention: must be at least 1s",
    ] {
        assert!(
            got.iter().any(|e| e.starts_with(want)),
            "{want:?} not in {got:#?}"
        );
    }
}
