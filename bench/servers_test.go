package bench

import (
	"os/exec"
	"strings"
	"testing"
)

// curlStatus runs curl with args and returns the status code it printed.
func curlStatus(t *testing.T, args ...string) string {
	t.Helper()
	args = append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"}, args...)
	out, err := exec.Command("curl", args...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	return string(out)
}

var fixtureUsers = map[string]string{"alice": "wonderland"}

func TestSquidFixture(t *testing.T) {
	ngx := StartNginx(t, NginxOptions{})
	plain := StartSquid(t, SquidOptions{})
	if got := curlStatus(t, "-x", plain.URL(), ngx.URL("/small")); got != "200" {
		t.Errorf("through plain squid: status %s, want 200", got)
	}
	for _, scheme := range []string{"basic", "digest"} {
		sq := StartSquid(t, SquidOptions{Auth: scheme, Users: fixtureUsers})
		flag := "--proxy-" + scheme
		if scheme == "basic" {
			flag = "--proxy-basic"
		}
		if got := curlStatus(t, "-x", sq.URL(), ngx.URL("/small")); got != "407" {
			t.Errorf("%s squid without credentials: status %s, want 407", scheme, got)
		}
		if got := curlStatus(t, "-x", sq.URL(), flag, "-U", "alice:wrong", ngx.URL("/small")); got != "407" {
			t.Errorf("%s squid with a wrong password: status %s, want 407", scheme, got)
		}
		if got := curlStatus(t, "-x", sq.URL(), flag, "-U", "alice:wonderland", ngx.URL("/small")); got != "200" {
			t.Errorf("%s squid with credentials: status %s, want 200", scheme, got)
		}
	}
	ntlm := StartSquid(t, SquidOptions{Auth: "ntlm"})
	if got := curlStatus(t, "-x", ntlm.URL(), ngx.URL("/small")); got != "407" {
		t.Errorf("ntlm squid without credentials: status %s, want 407", got)
	}
	if got := curlStatus(t, "-x", ntlm.URL(), "--proxy-ntlm", "-U", "alice:any", ngx.URL("/small")); got != "200" {
		t.Errorf("ntlm squid with an NTLM handshake: status %s, want 200", got)
	}
	accel := StartSquid(t, SquidOptions{Origin: ngx.Addr()})
	if got := curlStatus(t, "http://"+accel.Addr()+"/small"); got != "200" {
		t.Errorf("squid as an accelerator: status %s, want 200", got)
	}
	if n := len(plain.AccessLog()); n != 1 {
		t.Errorf("plain squid logged %d requests, want 1:\n%s", n, strings.Join(plain.AccessLog(), "\n"))
	}
}

func TestApacheFixture(t *testing.T) {
	open := StartApache(t, ApacheOptions{})
	if got := curlStatus(t, open.URL("/small")); got != "200" {
		t.Errorf("open apache: status %s, want 200", got)
	}
	for _, scheme := range []string{"basic", "digest"} {
		a := StartApache(t, ApacheOptions{Auth: scheme, Users: fixtureUsers})
		if got := curlStatus(t, a.URL("/small")); got != "401" {
			t.Errorf("%s apache without credentials: status %s, want 401", scheme, got)
		}
		if got := curlStatus(t, "--"+scheme, "-u", "alice:wrong", a.URL("/small")); got != "401" {
			t.Errorf("%s apache with a wrong password: status %s, want 401", scheme, got)
		}
		if got := curlStatus(t, "--"+scheme, "-u", "alice:wonderland", a.URL("/small")); got != "200" {
			t.Errorf("%s apache with credentials: status %s, want 200", scheme, got)
		}
	}
	if n := len(open.AccessLog()); n != 1 {
		t.Errorf("open apache logged %d requests, want 1", n)
	}
}

// TestKerberosFixture: a user logged in to the throwaway realm gets
// Apache's (mod_auth_gssapi) and Squid's (negotiate_kerberos_auth) pages
// with curl's Negotiate; without a login, the challenges stay.
func TestKerberosFixture(t *testing.T) {
	ngx := StartNginx(t, NginxOptions{})
	krb := StartKerberos(t, KerberosOptions{Users: map[string]string{"alice": "wonderland"}})
	ap := StartApache(t, ApacheOptions{Auth: "gssapi", Keytab: krb.Keytab()})
	sq := StartSquid(t, SquidOptions{Auth: "negotiate"})
	if got := curlStatus(t, "--negotiate", "-u", ":", ap.URL("/small")); got != "401" {
		t.Errorf("apache before kinit: status %s, want 401", got)
	}
	krb.Kinit(t, "alice", "wonderland")
	if got := curlStatus(t, "--negotiate", "-u", ":", ap.URL("/small")); got != "200" {
		t.Errorf("apache with a ticket: status %s, want 200", got)
	}
	if got := curlStatus(t, ap.URL("/small")); got != "401" {
		t.Errorf("apache without Negotiate: status %s, want 401", got)
	}
	if got := curlStatus(t, "-x", sq.URL(), ngx.URL("/small")); got != "407" {
		t.Errorf("squid without Negotiate: status %s, want 407", got)
	}
	if got := curlStatus(t, "-x", sq.URL(), "--proxy-negotiate", "-U", ":", ngx.URL("/small")); got != "200" {
		t.Errorf("squid with a ticket: status %s, want 200", got)
	}
	if l := ap.AccessLog(); len(l) == 0 || !strings.Contains(l[len(l)-2], Principal("alice")) {
		t.Errorf("apache's log names no Kerberos user:\n%s", strings.Join(l, "\n"))
	}
}
