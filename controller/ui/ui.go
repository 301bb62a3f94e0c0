// Package ui holds the operator console's templates and static assets,
// embedded in the binary: the console loads nothing from the internet.
// The controller (controller/console*.go) renders and serves them at /ui/.
package ui

import "embed"

// Templates are the console's html/template files: layout.html and one
// file per page, each defining "title" and "content".
//
//go:embed templates/*.html
var Templates embed.FS

// Static is the console's CSS and JS, served under /ui/static/.
//
//go:embed static
var Static embed.FS
