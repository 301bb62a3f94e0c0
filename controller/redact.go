package controller

import "net/url"

// redactDSN hides a DSN's password in API answers.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return ""
	}
	return u.Redacted()
}
