package imageref

import (
	"strings"
	"testing"
)

var dg = "sha256:" + strings.Repeat("ab", 32)

func TestParseCanonical(t *testing.T) {
	tests := []struct {
		in, registry, repo, str string
	}{
		{"nginx", "docker.io", "docker.io/library/nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.25", "docker.io", "docker.io/library/nginx", "docker.io/library/nginx:1.25"},
		{"docker.io/nginx:1.25", "docker.io", "docker.io/library/nginx", "docker.io/library/nginx:1.25"},
		{"index.docker.io/library/nginx", "docker.io", "docker.io/library/nginx", "docker.io/library/nginx:latest"},
		{"registry-1.docker.io/nginx", "docker.io", "docker.io/library/nginx", "docker.io/library/nginx:latest"},
		{"docker.io:443/library/nginx", "docker.io", "docker.io/library/nginx", "docker.io/library/nginx:latest"},
		{"INDEX.Docker.IO/team/app", "docker.io", "docker.io/team/app", "docker.io/team/app:latest"},
		// The red team's bypass: a leading zero in the port.
		{"127.0.0.1:05199/team/x", "127.0.0.1:5199", "127.0.0.1:5199/team/x", "127.0.0.1:5199/team/x:latest"},
		{"127.0.0.1:0005199/team/x:v1", "127.0.0.1:5199", "127.0.0.1:5199/team/x", "127.0.0.1:5199/team/x:v1"},
		// Upper-case hosts are the same host.
		{"Registry.Example.COM/team/x", "registry.example.com", "registry.example.com/team/x", "registry.example.com/team/x:latest"},
		{"LOCALHOST:5000/x", "localhost:5000", "localhost:5000/x", "localhost:5000/x:latest"},
		// Default ports: HTTPS registries drop :443, loopback (plain HTTP) ones :80.
		{"registry.example.com:443/x", "registry.example.com", "registry.example.com/x", "registry.example.com/x:latest"},
		{"registry.example.com:0443/x", "registry.example.com", "registry.example.com/x", "registry.example.com/x:latest"},
		{"registry.example.com:80/x", "registry.example.com:80", "registry.example.com:80/x", "registry.example.com:80/x:latest"},
		{"127.0.0.1:80/x", "127.0.0.1", "127.0.0.1/x", "127.0.0.1/x:latest"},
		{"127.0.0.1:443/x", "127.0.0.1:443", "127.0.0.1:443/x", "127.0.0.1:443/x:latest"},
		{"localhost:80/x", "localhost", "localhost/x", "localhost/x:latest"},
		// IPv6 literals: shortest form; IPv4-mapped is the IPv4 address.
		{"[0:0:0:0:0:0:0:1]:5000/x", "[::1]:5000", "[::1]:5000/x", "[::1]:5000/x:latest"},
		{"[::1]:05000/x", "[::1]:5000", "[::1]:5000/x", "[::1]:5000/x:latest"},
		{"[2001:DB8::1]/x", "[2001:db8::1]", "[2001:db8::1]/x", "[2001:db8::1]/x:latest"},
		{"[::ffff:127.0.0.1]:5199/team/x", "127.0.0.1:5199", "127.0.0.1:5199/team/x", "127.0.0.1:5199/team/x:latest"},
		{"[::1]:80/x", "[::1]", "[::1]/x", "[::1]/x:latest"},
		// Digests; name:tag@digest keeps both.
		{"ghcr.io/a/b@" + dg, "ghcr.io", "ghcr.io/a/b", "ghcr.io/a/b@" + dg},
		{"ghcr.io/a/b:v1@" + dg, "ghcr.io", "ghcr.io/a/b", "ghcr.io/a/b:v1@" + dg},
		{"ghcr.io/a/b:V1_2.3-rc", "ghcr.io", "ghcr.io/a/b", "ghcr.io/a/b:V1_2.3-rc"},
		{"ghcr.io/a/b:" + strings.Repeat("t", 128), "ghcr.io", "ghcr.io/a/b", "ghcr.io/a/b:" + strings.Repeat("t", 128)},
	}
	for _, tt := range tests {
		r, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if r.Registry() != tt.registry || r.Repository() != tt.repo || r.String() != tt.str {
			t.Errorf("Parse(%q) = registry %q repo %q string %q; want %q %q %q", tt.in, r.Registry(), r.Repository(), r.String(), tt.registry, tt.repo, tt.str)
		}
		// Canonical is a fixed point: parsing it again changes nothing.
		again, err := Parse(r.String())
		if err != nil || again.String() != r.String() {
			t.Errorf("Parse(%q) is not stable: %q -> %q (%v)", tt.in, r.String(), again.String(), err)
		}
	}
}

func TestParseRefusesWhatCannotBeCanonical(t *testing.T) {
	for _, in := range []string{
		"",
		" nginx",
		"nginx ",
		"127.1/x",                 // inet_aton shorthand
		"0177.0.0.1/x",            // octal
		"127.000.0.1/x",           // leading zeros in an octet
		"0x7f.0.0.1/x",            // hex
		"2130706433:5000/x",       // one number
		"[fe80::1%25eth0]:5000/x", // zone
		"[::1/x",                  // unclosed literal
		"127.0.0.1:0/x",           // port 0
		"127.0.0.1:65536/x",       // port out of range
		"127.0.0.1:+80/x",         // sign
		"127.0.0.1:/x",            // empty port
		"ghcr.io/a/b@sha384:" + strings.Repeat("a", 96),
		"ghcr.io/a/b@sha512:" + strings.Repeat("a", 128),
		"ghcr.io/a/b@sha256:" + strings.Repeat("A", 64),
		"sha256:" + strings.Repeat("a", 64), // an image ID
		strings.Repeat("a", 64),             // a bare image ID
		"ghcr.io/A/b",                       // upper case path
		"ghcr.io/a/b:",                      // empty tag
		"ghcr.io/a/b:.v1",                   // tags start with a word character
		"ghcr.io/a/b:-v1",
		"ghcr.io/a/b:v1+x",
		"ghcr.io/a/b:" + strings.Repeat("t", 129), // longer than 128
		strings.Repeat("a", MaxLength+1),
	} {
		if r, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %q, want an error", in, r.String())
		}
	}
}

func TestValidDigest(t *testing.T) {
	tests := []struct {
		d    string
		want bool
	}{
		{"sha256:" + strings.Repeat("a", 64), true},
		{"sha256:" + strings.Repeat("0123456789abcdef", 4), true},
		{"", false},
		{"sha256:", false},
		{"sha512:" + strings.Repeat("a", 64), false},
		{"sha384:" + strings.Repeat("a", 96), false},
		{"sha512:" + strings.Repeat("a", 128), false},
		{"sha256:" + strings.Repeat("A", 64), false},
		{"sha256:" + strings.Repeat("a", 63), false},
		{"sha256:" + strings.Repeat("a", 65), false},
		{"sha256:" + strings.Repeat("g", 64), false},
		{strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		if got := ValidDigest(tt.d); got != tt.want {
			t.Errorf("ValidDigest(%q) = %v, want %v", tt.d, got, tt.want)
		}
		if err := CheckDigest(tt.d); (err == nil) != tt.want {
			t.Errorf("CheckDigest(%q) = %v", tt.d, err)
		}
	}
}

func TestSpellings(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"nginx:1.25", []string{"docker.io/library/nginx:1.25", "docker.io/nginx:1.25"}},
		{"docker.io/nginx:1.25", []string{"docker.io/library/nginx:1.25", "docker.io/nginx:1.25"}},
		// Written in full, the image has only the full spelling: a pattern
		// docker.io/nginx:* does not match it (as in Kyverno).
		{"docker.io/library/nginx:1.25", []string{"docker.io/library/nginx:1.25"}},
		{"ghcr.io/a/b:v1@" + dg, []string{"ghcr.io/a/b@" + dg}},
		{"127.0.0.1:05199/team/x", []string{"127.0.0.1:5199/team/x:latest"}},
	}
	for _, tt := range tests {
		r, err := Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Spellings(); strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("Spellings(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCanonicalPattern(t *testing.T) {
	tests := []struct{ in, want string }{
		{"*", "*"},
		{"nginx:*", "nginx:*"},
		{"library/nginx:*", "library/nginx:*"},
		{"127.0.0.1:05199/team/*", "127.0.0.1:5199/team/*"},
		{"Registry.Example.com:443/*", "registry.example.com/*"},
		{"index.docker.io/library/*", "docker.io/library/*"},
		{"*.Example.com/*", "*.example.com/*"},
	}
	for _, tt := range tests {
		got, err := CanonicalPattern(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("CanonicalPattern(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := CanonicalPattern("127.1/*"); err == nil {
		t.Error("CanonicalPattern(127.1/*): want an error")
	}
}

func TestNameForGoContainerregistry(t *testing.T) {
	r, err := Parse("nginx@" + dg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Name()
	if err != nil {
		t.Fatal(err)
	}
	if n.Context().RegistryStr() != "index.docker.io" || n.Identifier() != dg {
		t.Errorf("Name() = %s", n)
	}
	at, err := Parse("127.0.0.1:5199/x:v1")
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := at.AtDigest(dg)
	if err != nil || pinned.String() != "127.0.0.1:5199/x@"+dg {
		t.Errorf("AtDigest = %q, %v", pinned.String(), err)
	}
	if _, err := at.AtDigest("sha512:" + strings.Repeat("a", 128)); err == nil {
		t.Error("AtDigest accepted a sha512 digest")
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1:5199": true, "127.0.0.1": true, "[::1]:5000": true,
		"reg.localhost": true, "[::ffff:127.0.0.1]:5000": true,
		"127.example.com": false, "ghcr.io": false, "10.0.0.1:5000": false, "index.docker.io": false,
		"localhost.example.com:443": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
