//! The test DNS server answers real resolver queries over the wire, as the daemon will see them:
//! records, NXDOMAIN inside and outside served zones, no-data, null MX, DNSBL, SERVFAIL.

mod support;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use support::TestDns;

fn resolver(addr: SocketAddr) -> TokioResolver {
    passerelle::dns::resolver(&passerelle::config::Dns {
        nameservers: vec![addr.to_string()],
        timeout: Duration::from_secs(1),
        attempts: 1,
    })
    .unwrap()
}

async fn served() -> TestDns {
    TestDns::new()
        .mx("example.test", 20, "mx2.example.test")
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", "192.0.2.1")
        .aaaa("mx1.example.test", "2001:db8::1")
        .a("mx2.example.test", "192.0.2.2")
        .txt("example.test", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("long.example.test", &"k".repeat(600))
        .mx("nomail.test", 0, ".")
        .ptr("192.0.2.1", "mx1.example.test")
        .ptr("2001:db8::1", "mx1.example.test")
        .dnsbl_listed("zen.test", "127.0.0.2", "127.0.0.4")
        .servfail("broken.test")
        .start()
        .await
}

#[tokio::test]
async fn records_are_served() {
    support::install_provider();
    let dns = served().await;
    let r = resolver(dns.addr);

    let mut mx: Vec<(u16, String)> = r
        .mx_lookup("example.test.")
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            hickory_resolver::proto::rr::RData::MX(mx) => {
                Some((mx.preference, mx.exchange.to_ascii()))
            }
            _ => None,
        })
        .collect();
    mx.sort();
    assert_eq!(
        mx,
        vec![
            (10, "mx1.example.test.".to_string()),
            (20, "mx2.example.test.".to_string())
        ]
    );

    let a: Vec<Ipv4Addr> = r
        .ipv4_lookup("mx1.example.test.")
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            hickory_resolver::proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(a, vec!["192.0.2.1".parse::<Ipv4Addr>().unwrap()]);

    let aaaa: Vec<Ipv6Addr> = r
        .ipv6_lookup("mx1.example.test.")
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            hickory_resolver::proto::rr::RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(aaaa, vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]);

    assert_eq!(
        txt(&r, "example.test.").await,
        vec!["v=spf1 ip4:192.0.2.0/24 -all"]
    );
    // Longer than 255 bytes: served as several character-strings, joined back here.
    assert_eq!(txt(&r, "long.example.test.").await, vec!["k".repeat(600)]);

    let ptr = |ip: &str| {
        let r = r.clone();
        let ip: std::net::IpAddr = ip.parse().unwrap();
        async move {
            r.reverse_lookup(ip)
                .await
                .unwrap()
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    hickory_resolver::proto::rr::RData::PTR(p) => Some(p.0.to_ascii()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ptr("192.0.2.1").await, vec!["mx1.example.test."]);
    assert_eq!(ptr("2001:db8::1").await, vec!["mx1.example.test."]);
}

async fn txt(r: &TokioResolver, name: &str) -> Vec<String> {
    r.txt_lookup(name)
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            hickory_resolver::proto::rr::RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn null_mx_and_dnsbl() {
    support::install_provider();
    let dns = served().await;
    let r = resolver(dns.addr);

    let null: Vec<(u16, String)> = r
        .mx_lookup("nomail.test.")
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            hickory_resolver::proto::rr::RData::MX(mx) => {
                Some((mx.preference, mx.exchange.to_ascii()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(null, vec![(0, ".".to_string())]);

    let listed: Vec<Ipv4Addr> = r
        .ipv4_lookup("2.0.0.127.zen.test.")
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            hickory_resolver::proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(listed, vec!["127.0.0.4".parse::<Ipv4Addr>().unwrap()]);

    // Not listed: NXDOMAIN, as a real DNSBL answers.
    let e = r.ipv4_lookup("3.0.0.127.zen.test.").await.unwrap_err();
    assert!(e.is_nx_domain(), "{e:?}");
}

#[tokio::test]
async fn missing_names_are_nxdomain_and_missing_types_are_no_data() {
    support::install_provider();
    let dns = served().await;
    let r = resolver(dns.addr);

    // Under a served zone.
    let e = r.mx_lookup("nothing.example.test.").await.unwrap_err();
    assert!(e.is_nx_domain(), "{e:?}");
    // Under no served zone: the root zone answers NXDOMAIN, not REFUSED.
    let e = r.mx_lookup("elsewhere.invalid.").await.unwrap_err();
    assert!(e.is_nx_domain(), "{e:?}");
    let e = r.ipv4_lookup("unknown.test.").await.unwrap_err();
    assert!(e.is_nx_domain(), "{e:?}");

    // The name exists with other types: NOERROR, no data.
    let e = r.mx_lookup("mx1.example.test.").await.unwrap_err();
    assert!(e.is_no_records_found() && !e.is_nx_domain(), "{e:?}");
    let e = r.ipv6_lookup("mx2.example.test.").await.unwrap_err();
    assert!(e.is_no_records_found() && !e.is_nx_domain(), "{e:?}");
}

#[tokio::test]
async fn servfail_is_a_temporary_failure() {
    support::install_provider();
    let dns = served().await;
    let r = resolver(dns.addr);

    for name in ["broken.test.", "mx.broken.test.", "a.b.broken.test."] {
        let e = r.mx_lookup(name).await.unwrap_err();
        assert!(
            !e.is_nx_domain() && !e.is_no_records_found(),
            "{name}: {e:?}"
        );
        assert!(
            matches!(
                e,
                NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
            ),
            "{name}: {e:?}"
        );
    }
    // Other names are unaffected.
    assert!(r.mx_lookup("example.test.").await.is_ok());
}

#[tokio::test]
async fn stops_on_drop() {
    support::install_provider();
    let dns = TestDns::new()
        .a("host.example.test", "192.0.2.9")
        .start()
        .await;
    let addr = dns.addr;
    assert!(
        resolver(addr)
            .ipv4_lookup("host.example.test.")
            .await
            .is_ok()
    );
    drop(dns);
    // Nothing listens any more: TCP is refused, and the resolver fails without an answer.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let e = resolver(addr)
        .ipv4_lookup("host.example.test.")
        .await
        .unwrap_err();
    assert!(!e.is_nx_domain() && !e.is_no_records_found(), "{e:?}");
}

/// One raw query, over UDP or TCP (2-byte length prefix), answered by the test server.
async fn raw_query(
    addr: SocketAddr,
    tcp: bool,
    name: &str,
    rtype: hickory_resolver::proto::rr::RecordType,
) -> hickory_resolver::proto::op::Message {
    use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query};
    use hickory_resolver::proto::rr::Name;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut query = Message::new(4242, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let bytes = query.to_vec().unwrap();
    let reply = if tcp {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&bytes).await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0; len as usize];
        s.read_exact(&mut buf).await.unwrap();
        buf
    } else {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&bytes, addr).await.unwrap();
        let mut buf = vec![0; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf.truncate(n);
        buf
    };
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, 4242);
    reply
}

#[tokio::test]
async fn answers_over_udp_and_tcp_on_one_port() {
    use hickory_resolver::proto::rr::RecordType;
    support::install_provider();
    let dns = served().await;
    for tcp in [false, true] {
        let how = if tcp { "tcp" } else { "udp" };
        let m = raw_query(dns.addr, tcp, "example.test.", RecordType::MX).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{how}");
        assert!(m.metadata.authoritative, "{how}");
        assert_eq!(m.answers.len(), 2, "{how}");

        let m = raw_query(dns.addr, tcp, "nothing.example.test.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{how}");
        assert!(m.metadata.authoritative, "{how}");

        let m = raw_query(dns.addr, tcp, "elsewhere.invalid.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{how}");
        assert!(m.metadata.authoritative, "{how}");

        let m = raw_query(dns.addr, tcp, "mx1.example.test.", RecordType::MX).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{how}");
        assert!(m.answers.is_empty(), "{how}");

        let m = raw_query(dns.addr, tcp, "x.broken.test.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{how}");
    }
}
