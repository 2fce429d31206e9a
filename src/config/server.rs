use serde::Deserialize;

/// `[server]`: who this node is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// The name in our greeting, EHLO reply and `Received:` headers. Default: the system host name.
    pub hostname: String,
    /// This node's name in events and queue leases; unique among nodes sharing one store.
    /// Default: the host name.
    pub node: String,
}

impl Default for Server {
    fn default() -> Self {
        let host = gethostname();
        Server {
            hostname: host.clone(),
            node: host,
        }
    }
}

/// The system host name. Validation refuses an empty one rather than guessing: two nodes both
/// called "localhost" would take each other's queue leases.
fn gethostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_owned()
}
