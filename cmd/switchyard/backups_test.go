package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/backup"
)

func TestParseStoreSpec(t *testing.T) {
	for _, tc := range []struct {
		spec, name, loc, region string
		ok                      bool
	}{
		{"eu=/var/backups@eu-west", "eu", "/var/backups", "eu-west", true},
		{"s3=127.0.0.1:9000/bucket@us", "s3", "127.0.0.1:9000/bucket", "us", true},
		{"x=/a@b@c", "x", "/a@b", "c", true},
		{"/var/backups@eu", "", "", "", false},
		{"eu=/var/backups", "", "", "", false},
		{"eu=/var/backups@", "", "", "", false},
		{"=/x@eu", "", "", "", false},
	} {
		name, loc, region, err := parseStoreSpec(tc.spec)
		if (err == nil) != tc.ok || name != tc.name || loc != tc.loc || region != tc.region {
			t.Errorf("%q: %q %q %q %v", tc.spec, name, loc, region, err)
		}
	}
}

func TestDrawBar(t *testing.T) {
	for _, tc := range []struct {
		job  cliJob
		want string
	}{
		{cliJob{Kind: "backup", State: "running", Progress: backup.Progress{Phase: "backup", RowsDone: 50, RowsTotal: 100}}, "[" + strings.Repeat("=", 15) + strings.Repeat(" ", 15) + "] 50/100 rows"},
		{cliJob{Kind: "restore", State: "running"}, "restore  [" + strings.Repeat(" ", 30) + "] 0/0 rows"},
		{cliJob{Kind: "backup", State: "done", Progress: backup.Progress{RowsDone: 7, RowsTotal: 7}}, "[" + strings.Repeat("=", 30) + "] 7/7 rows"},
	} {
		var b bytes.Buffer
		drawBar(&b, tc.job)
		if !strings.HasSuffix(b.String(), tc.want) {
			t.Errorf("%+v: %q, want suffix %q", tc.job, b.String(), tc.want)
		}
	}
}
