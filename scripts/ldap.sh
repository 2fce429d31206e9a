# Sourced by scripts/test: makes sure Debian's slapd and ldap-utils are installed (as root), for
# the LDAP tests, which start their own slapd per test on loopback with a generated slapd.conf
# in a temporary folder (tests/support/ldap.rs). The Debian slapd service is never used: it is
# kept from starting at install time, and stopped if it runs anyway.

ldap_install() {
    if [ -x /usr/sbin/slapd ] && [ -x /usr/sbin/slapadd ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts/test: slapd is not installed; install slapd and ldap-utils" >&2
        return 1
    fi
    echo "scripts/test: installing slapd and ldap-utils from Debian's packages" >&2
    # policy-rc.d answering 101 keeps invoke-rc.d from starting the service; one already
    # there (container images have one) is left as it is.
    local policy=/usr/sbin/policy-rc.d made="" status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made=1
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd ldap-utils >/dev/null || status=$?
    if [ -n "$made" ]; then
        rm -f "$policy"
    fi
    if command -v service >/dev/null 2>&1 && service slapd status >/dev/null 2>&1; then
        service slapd stop >/dev/null 2>&1 || true
    fi
    return "$status"
}
