//! A real OpenLDAP `slapd` (Debian's package) per test: its own slapd.conf and mdb database in a
//! temporary folder, loaded with `slapadd` before it starts, listening on a loopback port. The
//! Debian `slapd` service is never used. `scripts/test` installs slapd when it is missing and
//! sets `PASSERELLE_REQUIRE_LDAP=1`, under which a missing slapd fails the test instead of
//! skipping it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const SCHEMAS: &str = "/etc/ldap/schema";

pub const SUFFIX: &str = "dc=example,dc=test";
pub const BASE: &str = "ou=people,dc=example,dc=test";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
pub const ADMIN_PASSWORD: &str = "directory-secret";

/// Whether LDAP tests can run. Without slapd they are skipped with a note, unless
/// `PASSERELLE_REQUIRE_LDAP=1` (set by `scripts/test`), where a missing slapd is a failure.
pub fn slapd_available() -> bool {
    if Path::new(SLAPD).exists() && Path::new(SLAPADD).exists() {
        return true;
    }
    assert!(
        std::env::var("PASSERELLE_REQUIRE_LDAP").is_err(),
        "PASSERELLE_REQUIRE_LDAP is set but {SLAPD} is not installed (apt-get install slapd)"
    );
    eprintln!("slapd is not installed: LDAP test skipped (scripts/test installs it)");
    false
}

pub struct TestLdap {
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl TestLdap {
    /// A directory with one `inetOrgPerson` under `BASE` per `(uid, mail)`.
    pub async fn start(people: &[(&str, &str)]) -> TestLdap {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, slapd_conf(dir.path(), &data)).unwrap();
        let ldif = dir.path().join("people.ldif");
        std::fs::write(&ldif, people_ldif(people)).unwrap();
        let out = Command::new(SLAPADD)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut ldap = TestLdap {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child: None,
        };
        ldap.restart().await;
        ldap
    }

    pub fn url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    /// The `[directory]` section pointing at this server, bound as its administrator.
    pub fn config(&self) -> String {
        format!(
            "[directory]\nenabled = true\n\n[directory.ldap]\nurl = {:?}\nbase = {BASE:?}\n\
             filter = \"(&(objectClass=inetOrgPerson)(mail={{address}}))\"\n\
             bind_dn = {ADMIN_DN:?}\nbind_password = {ADMIN_PASSWORD:?}\ntimeout = \"2s\"\n",
            self.url()
        )
    }

    /// Kills slapd: the directory becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: slapd still accepts connections (the kernel does) but answers nothing.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
            // kill() returns before every thread has stopped: wait until the kernel says so, or
            // a request sent at once may still be answered.
            let stopped = || {
                std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
                    .unwrap_or(false)
            };
            for _ in 0..200 {
                if stopped() == frozen {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Starts slapd (again) on the same port and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        // `-d 0`: stay in the foreground (a child we can kill), log nothing extra.
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://{}/", self.addr))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("slapd exited ({status}):\n{}", self.log());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slapd did not accept connections:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for TestLdap {
    fn drop(&mut self) {
        self.freeze(false);
        self.stop();
    }
}

fn slapd_conf(dir: &Path, data: &Path) -> String {
    format!(
        "include {SCHEMAS}/core.schema\n\
         include {SCHEMAS}/cosine.schema\n\
         include {SCHEMAS}/inetorgperson.schema\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         pidfile {pid}\n\
         argsfile {args}\n\
         database mdb\n\
         maxsize 10485760\n\
         suffix \"{SUFFIX}\"\n\
         rootdn \"{ADMIN_DN}\"\n\
         rootpw {ADMIN_PASSWORD}\n\
         directory {data}\n\
         access to * by dn.exact=\"{ADMIN_DN}\" read by * none\n",
        pid = dir.join("slapd.pid").display(),
        args = dir.join("slapd.args").display(),
        data = data.display(),
    )
}

fn people_ldif(people: &[(&str, &str)]) -> String {
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: {BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
    );
    for (uid, mail) in people {
        ldif.push_str(&format!(
            "dn: uid={uid},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
             mail: {mail}\n\n"
        ));
    }
    ldif
}
